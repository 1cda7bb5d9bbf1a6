import { z } from 'zod';
import { CredentialBindingSchema, TimelineEventSchema } from '../../shared/event.ts';
import { FindingSchema, SeveritySchema } from '../../shared/finding.ts';

/** A finding as stored and served: the evidence summaries travel on the bus only (join `events` for them). */
const StoredFindingSchema = FindingSchema.omit({ evidence_events: true });

/**
 * The analyst API's request and response models. Handlers validate with these, the CLI's API
 * client parses answers with them, and the OpenAPI document is generated from them.
 */

/** A time bound: epoch milliseconds or RFC 3339. */
export const TimeParamSchema = z
  .string()
  .min(1)
  .transform((v, ctx) => {
    const ms = /^\d+(\.\d+)?$/.test(v) ? Number(v) : Date.parse(v);
    if (!Number.isFinite(ms)) {
      ctx.addIssue({ code: 'custom', message: 'expected epoch milliseconds or RFC 3339' });
      return z.NEVER;
    }
    return ms;
  });

const pageParams = {
  /** Items per page (default 50, at most `api.maxPageSize`). */
  limit: z.coerce.number().int().positive().optional(),
  /** Opaque cursor from a previous page's `next_cursor`. */
  cursor: z.string().min(1).optional(),
};

/** `GET /v1/tasks` query. */
export const TaskQuerySchema = z.strictObject({
  /** Tasks active at or after this time. */
  from: TimeParamSchema.optional(),
  /** Tasks active at or before this time. */
  to: TimeParamSchema.optional(),
  /** Agent id taking part. */
  agent: z.string().min(1).optional(),
  /** Workload identity taking part (SPIFFE ID, service account). */
  workload: z.string().min(1).optional(),
  /** Credential id used or issued in the task. */
  credential: z.string().min(1).optional(),
  /** Substring of a resource id the task touched. */
  resource: z.string().min(1).optional(),
  /** `true`: only tasks with findings; `false`: only tasks without. */
  has_findings: z.enum(['true', 'false']).optional(),
  ...pageParams,
});
export type TaskQuery = z.infer<typeof TaskQuerySchema>;

/** One task's summary. Times are epoch ms. */
export const TaskSummarySchema = z.object({
  task_id: z.string(),
  first_seen: z.number(),
  last_seen: z.number(),
  events: z.number(),
  agents: z.array(z.string()),
  workloads: z.array(z.string()),
  credentials: z.array(z.string()),
  principals: z.array(z.string()),
  data_classes: z.array(z.string()),
  max_sensitivity: z.string(),
  ended: z.boolean(),
  findings: z.number(),
  /** Highest finding severity, absent without findings. */
  max_severity: SeveritySchema.optional(),
});
export type TaskSummary = z.infer<typeof TaskSummarySchema>;

/** A page of items; `next_cursor` is null on the last page. */
export function pageSchema<T extends z.ZodType>(item: T) {
  return z.object({ items: z.array(item), next_cursor: z.string().nullable() });
}

/** `GET /v1/tasks` answer. */
export const TaskPageSchema = pageSchema(TaskSummarySchema);
export type TaskPage = z.infer<typeof TaskPageSchema>;

/** `GET /v1/tasks/{taskId}/timeline`: events in time order across sources, bindings, findings. */
export const TimelineResponseSchema = z.object({
  task: TaskSummarySchema.nullable(),
  events: z.array(TimelineEventSchema),
  /** True when the task has more events than `api.maxTimelineEvents`. */
  truncated: z.boolean(),
  bindings: z.array(CredentialBindingSchema),
  findings: z.array(StoredFindingSchema),
});
export type TimelineResponse = z.infer<typeof TimelineResponseSchema>;

/** `GET /v1/findings` and `GET /v1/incidents` query. */
export const FindingQuerySchema = z.strictObject({
  from: TimeParamSchema.optional(),
  to: TimeParamSchema.optional(),
  detector: z.string().min(1).optional(),
  rule: z.string().min(1).optional(),
  /** Minimum severity. */
  severity: SeveritySchema.optional(),
  task: z.string().min(1).optional(),
  agent: z.string().min(1).optional(),
  workload: z.string().min(1).optional(),
  ...pageParams,
});
export type FindingQuery = z.infer<typeof FindingQuerySchema>;

/** `GET /v1/findings` answer. */
export const FindingPageSchema = pageSchema(StoredFindingSchema);
export type FindingPage = z.infer<typeof FindingPageSchema>;

/** `GET /v1/incidents` query: the findings filters, plus the incident's status. */
export const IncidentQuerySchema = FindingQuerySchema.extend({
  status: z.enum(['open', 'resolved']).optional(),
});
export type IncidentQuery = z.infer<typeof IncidentQuerySchema>;

/**
 * An incident as the alerter keeps it: the findings of one fingerprint (by default detector, rule
 * and task; `alerting.incidents.groupBy`) while it stays open. Times are epoch ms.
 */
export const IncidentSchema = z.object({
  id: z.string(),
  /** Grouping hash; PagerDuty's `dedup_key`. */
  fingerprint: z.string(),
  status: z.enum(['open', 'resolved']),
  detector: z.string(),
  rule: z.string(),
  task_id: z.string(),
  agent_id: z.string(),
  workload_id: z.string(),
  /** Highest severity so far. */
  severity: SeveritySchema,
  title: z.string(),
  summary: z.string(),
  /** Findings rolled up. */
  findings: z.number(),
  /** The most recent of them. */
  finding_ids: z.array(z.string()),
  /** Evidence event ids of the most severe finding. */
  evidence: z.array(z.string()),
  tags: z.array(z.string()),
  /** Suppression reason when its notifications are muted; '' = not suppressed. */
  suppressed: z.string(),
  /** Event time of the first and last finding. */
  first_time: z.number(),
  last_time: z.number(),
  opened_at: z.number(),
  resolved_at: z.number().nullable(),
});
export type Incident = z.infer<typeof IncidentSchema>;

/** `GET /v1/incidents` answer. */
export const IncidentPageSchema = pageSchema(IncidentSchema);
export type IncidentPage = z.infer<typeof IncidentPageSchema>;

/** `GET /v1/identities/{id}` query. */
export const IdentityQuerySchema = z.strictObject({
  from: TimeParamSchema.optional(),
  to: TimeParamSchema.optional(),
});
export type IdentityQuery = z.infer<typeof IdentityQuerySchema>;

/** What one identity (agent, workload, principal or credential id) did. */
export const IdentityActivitySchema = z.object({
  identity: z.string(),
  first_seen: z.number().nullable(),
  last_seen: z.number().nullable(),
  events: z.number(),
  /** Credentials issued to it (or the credential itself). */
  credentials: z.array(CredentialBindingSchema),
  tasks: z.array(z.object({ task_id: z.string(), first_seen: z.number(), last_seen: z.number(), events: z.number() })),
  resources: z.array(
    z.object({ type: z.string(), id: z.string(), account: z.string(), events: z.number(), first_seen: z.number(), last_seen: z.number() }),
  ),
});
export type IdentityActivity = z.infer<typeof IdentityActivitySchema>;

/** `POST /v1/sql` body. */
export const SqlRequestSchema = z.strictObject({
  /** One read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS) with `{name:Type}` parameters. */
  sql: z.string().min(1),
  params: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
  /** At most `api.sqlMaxRows`. */
  max_rows: z.number().int().positive().optional(),
});

/** `POST /v1/sql` answer: the rows (64-bit integers as decimal strings) and their count. */
export const SqlResponseSchema = z.object({
  rows: z.array(z.record(z.string(), z.unknown())),
  row_count: z.number(),
});
export type SqlResponse = z.infer<typeof SqlResponseSchema>;

/** Every error answer. */
export const ErrorSchema = z.object({ error: z.string(), message: z.string() });
