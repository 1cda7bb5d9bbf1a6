import { z } from 'zod';
import { EvidenceSummarySchema, SeveritySchema } from './finding.ts';

export { EvidenceSummarySchema, type EvidenceSummary } from './finding.ts';

/**
 * The alerter's models: incidents (findings grouped by fingerprint), outbox entries (one delivery
 * of one notification to one channel) and the channel-neutral alert message every channel renders.
 * They live in `shared/` because storage encodes them and the CLI reads them, as with findings.
 */

/** Incident lifecycle states. */
export const INCIDENT_STATUSES = ['open', 'resolved'] as const;
export const IncidentStatusSchema = z.enum(INCIDENT_STATUSES);

/**
 * What a notification tells a channel: `trigger` = first notice of the incident on this channel,
 * `escalate` = its severity rose since the channel was last told (re-notifies), `update` = more
 * findings at the same severity (coalesced, never pages), `resolve` = the incident went quiet.
 */
export const NOTIFICATION_KINDS = ['trigger', 'escalate', 'update', 'resolve'] as const;
export const NotificationKindSchema = z.enum(NOTIFICATION_KINDS);
export type NotificationKind = z.infer<typeof NotificationKindSchema>;

/** An incident: every finding with the same fingerprint while it stays open. */
export const IncidentSchema = z.object({
  /** Unique per lifetime: a fingerprint that resolves and fires again opens a new incident id. */
  id: z.string().min(1),
  /** Hash of the configured grouping fields (`alerting.incidents.groupBy`); PagerDuty's `dedup_key`. */
  fingerprint: z.string().min(1),
  status: IncidentStatusSchema,
  /** Highest severity seen so far. */
  severity: SeveritySchema,
  detector: z.string(),
  rule: z.string(),
  /** Title and summary of the most severe (latest among equals) finding. */
  title: z.string(),
  summary: z.string(),
  task_id: z.string(),
  agent_id: z.string(),
  workload_id: z.string(),
  /** Findings rolled up into the incident. */
  finding_count: z.number().int().nonnegative(),
  /** Event time of the first and last finding, epoch ms. */
  first_seen: z.number(),
  last_seen: z.number(),
  /** Wall clock, epoch ms: when it opened, last changed, resolved (0 = not resolved). */
  opened_at: z.number(),
  updated_at: z.number(),
  resolved_at: z.number(),
  /** Most recent finding ids (bounded), newest last; also skips redelivered findings. */
  recent_findings: z.array(z.string()),
  /** Evidence ids of the most severe finding. */
  evidence: z.array(z.string()),
  /** Framework tags of all findings (bounded). */
  tags: z.array(z.string()),
  /** Suppression reason when notifications are muted; '' = not suppressed. */
  suppressed: z.string(),
  /** Severity each channel was last told, by channel name (absent = never told). */
  notified: z.record(z.string(), SeveritySchema),
  /** Notifications created so far: the sequence number in outbox ids. */
  seq: z.number().int().nonnegative(),
});
export type Incident = z.infer<typeof IncidentSchema>;

/** Outbox entry states: `pending` (to deliver or retry), `delivered`, `dead` (gave up, with reason). */
export const OUTBOX_STATUSES = ['pending', 'delivered', 'dead'] as const;
export const OutboxStatusSchema = z.enum(OUTBOX_STATUSES);
export type OutboxStatus = z.infer<typeof OutboxStatusSchema>;

/** One notification for one channel, stored before it is attempted so a restart resumes it. */
export const OutboxEntrySchema = z.object({
  /** `<incident id>:<channel>:<seq>`. */
  id: z.string().min(1),
  incident_id: z.string().min(1),
  fingerprint: z.string(),
  channel: z.string().min(1),
  kind: NotificationKindSchema,
  status: OutboxStatusSchema,
  attempts: z.number().int().nonnegative(),
  /** Epoch ms before which no attempt is made (backoff, Retry-After, update spacing). */
  next_attempt_at: z.number(),
  /** Why the last attempt failed; for dead entries, why it was given up. */
  last_error: z.string(),
  /** The channel's handle of what it created (Slack `channel|ts`), for later updates in place. */
  ref: z.string(),
  /** JSON of the {@link AlertMessage}. */
  payload: z.string(),
  /** Epoch ms. */
  created_at: z.number(),
  /** Row version (monotonic per process, above the previous process's): the latest wins. */
  version: z.number().int().nonnegative(),
});
export type OutboxEntry = z.infer<typeof OutboxEntrySchema>;


/** The channel-neutral message: every channel renders this, and the webhook sends it as is. */
export const AlertMessageSchema = z.object({
  /** Message format version. */
  version: z.literal(1),
  kind: NotificationKindSchema,
  incident: z.object({
    id: z.string(),
    fingerprint: z.string(),
    status: IncidentStatusSchema,
    severity: SeveritySchema,
    title: z.string(),
    summary: z.string(),
    detector: z.string(),
    rule: z.string(),
    finding_count: z.number(),
    first_seen: z.number(),
    last_seen: z.number(),
  }),
  task_id: z.string(),
  agent_id: z.string(),
  workload_id: z.string(),
  /** Top evidence events (looked up in the store), in event-time order. */
  evidence: z.array(EvidenceSummarySchema),
  /** Evidence ids beyond those shown. */
  evidence_omitted: z.number().int().nonnegative(),
  /** Framework mappings (OWASP Agentic, MAESTRO, NIST AI RMF, MITRE ATT&CK). */
  frameworks: z.array(z.string()),
  links: z.object({ timeline: z.string(), ui: z.string() }),
  /** Epoch ms the message was composed. */
  composed_at: z.number(),
});
export type AlertMessage = z.infer<typeof AlertMessageSchema>;
