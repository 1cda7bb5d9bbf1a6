import { z } from 'zod';
import type { TimelineEvent } from './event.ts';

/** Finding severities, lowest to highest. */
export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'] as const;
export const SeveritySchema = z.enum(SEVERITIES);
export type Severity = z.infer<typeof SeveritySchema>;

/** Numeric rank of a severity (info = 0 ... critical = 4), for comparisons. */
export function severityRank(s: Severity): number {
  return SEVERITIES.indexOf(s);
}

/** An evidence event as a message shows it: the few fields an on-call engineer reads. */
export const EvidenceSummarySchema = z.object({
  event_id: z.string(),
  time: z.number(),
  source: z.string(),
  type: z.string(),
  agent_id: z.string().optional(),
  workload_id: z.string().optional(),
  tool: z.string().optional(),
  action: z.string().optional(),
  resource: z.string().optional(),
  principal: z.string().optional(),
  outcome: z.string().optional(),
});
export type EvidenceSummary = z.infer<typeof EvidenceSummarySchema>;

/** The summary of an event that a message shows. */
export function summarizeEvidence(e: TimelineEvent): EvidenceSummary {
  return compactSummary({ ...e, tool: e.tool?.name, resource: e.resources[0]?.id });
}

/**
 * A summary from its fields, leaving out empty ones and an `unknown` outcome (what an event that
 * lacks them shows), so the same event summarises the same from memory and from storage.
 */
export function compactSummary(f: {
  event_id: string;
  time: number;
  source: string;
  type: string;
  agent_id?: string | undefined;
  workload_id?: string | undefined;
  tool?: string | undefined;
  action?: string | undefined;
  resource?: string | undefined;
  principal?: string | undefined;
  outcome?: string | undefined;
}): EvidenceSummary {
  const out: EvidenceSummary = { event_id: f.event_id, time: f.time, source: f.source, type: f.type };
  for (const k of OPTIONAL_SUMMARY_FIELDS) {
    const v = f[k];
    if (v && !(k === 'outcome' && v === 'unknown')) out[k] = v;
  }
  return out;
}

const OPTIONAL_SUMMARY_FIELDS = ['agent_id', 'workload_id', 'tool', 'action', 'resource', 'principal', 'outcome'] as const;

/** A detector's output: what crossed which threshold, with the evidence that shows it. */
export const FindingSchema = z.object({
  /** Deterministic id (detector, rule, task, evidence), so re-evaluation does not duplicate. */
  id: z.string().min(1),
  detector: z.string().min(1),
  /** Rule within the detector, e.g. `injection-to-action`. */
  rule: z.string().default(''),
  severity: SeveritySchema,
  /** One line. */
  title: z.string().min(1),
  summary: z.string().default(''),
  task_id: z.string(),
  agent_id: z.string().default(''),
  workload_id: z.string().default(''),
  /** Epoch ms of the event that completed the pattern. */
  time: z.number().nonnegative(),
  /** Evidence event ids in event-time order. */
  evidence: z.array(z.string()),
  /** Join keys used, e.g. `{ credential_id: 'ASIA...' }`. */
  join_keys: z.record(z.string(), z.string()).default({}),
  /** Window considered, epoch ms. */
  window_start: z.number().nonnegative().optional(),
  window_end: z.number().nonnegative().optional(),
  /** Numbers that crossed the threshold, e.g. `{ score: 42, threshold: 30 }`. */
  metrics: z.record(z.string(), z.number()).default({}),
  /** Framework tags (OWASP Agentic, MAESTRO, NIST AI RMF, MITRE ATT&CK). */
  tags: z.array(z.string()).default([]),
  /** Epoch ms the finding was emitted (for arrival-to-finding latency). */
  emitted_at: z.number().nonnegative().optional(),
  /**
   * Summaries of the first evidence events (`alerting.incidents.evidenceLimit`), attached by the
   * detector engine from the task window it holds, so the alerter need not read them back from
   * storage. In transit only (the findings topic), not stored; an event no longer in the window is
   * left out, and the alerter looks that one up.
   */
  evidence_events: z.array(EvidenceSummarySchema).optional(),
});
export type Finding = z.infer<typeof FindingSchema>;
