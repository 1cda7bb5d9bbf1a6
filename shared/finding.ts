import { z } from 'zod';

/** Finding severities, lowest to highest. */
export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'] as const;
export const SeveritySchema = z.enum(SEVERITIES);
export type Severity = z.infer<typeof SeveritySchema>;

/** Numeric rank of a severity (info = 0 ... critical = 4), for comparisons. */
export function severityRank(s: Severity): number {
  return SEVERITIES.indexOf(s);
}

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
});
export type Finding = z.infer<typeof FindingSchema>;
