import type { TimelineEvent } from '../shared/event.ts';
import type { Finding, Severity } from '../shared/finding.ts';
import { contentHash } from '../shared/ids.ts';
import { Interner } from '../shared/intern.ts';
import type { DetectorMeta } from './detector.ts';

/**
 * What a finding needs of an evidence event. A whole {@link TimelineEvent} qualifies; detectors that
 * keep evidence for a long time keep only this (a full event copy is ten times the size).
 */
export type EvidenceEvent = Pick<TimelineEvent, 'event_id' | 'time' | 'type' | 'agent_id' | 'workload_id'> & {
  readonly tool?: { readonly name: string } | undefined;
};

/**
 * The evidence copy of an event, for detectors that hold evidence for a while (per task, scope or
 * credential): a fixed six-field shape, ~100 B, its ids and tool object shared, where a spread of the whole
 * event is ~45 fields. Per-task state is what bounds how many concurrent tasks a detector can
 * follow (docs/performance.md), so hold one copy per event and share it.
 */
export function evidenceCopy(e: TimelineEvent): EvidenceEvent {
  return {
    event_id: e.event_id,
    time: e.time,
    type: e.type,
    agent_id: e.agent_id === undefined ? undefined : NAMES.get(e.agent_id),
    workload_id: e.workload_id === undefined ? undefined : NAMES.get(e.workload_id),
    tool: e.tool ? TOOLS.get(e.tool.name) : undefined,
  };
}

/**
 * Agent and workload ids of evidence copies, and their tool objects, shared across copies: a copy
 * per event otherwise held its event's own strings (~100 B) and a `{ name }` object (32 B) that
 * thousands of other copies repeat. Few distinct values in practice; bounded for hostile input.
 */
const NAMES = new Interner<string>(20_000, (s) => s);
const TOOLS = new Interner<{ readonly name: string }>(20_000, (name) => Object.freeze({ name }));

/** What a detector states about one finding; the builder fills in ids, tags and identities. */
export interface FindingInput {
  rule: string;
  severity: Severity;
  title: string;
  summary: string;
  taskId: string;
  /** Evidence events; sorted by event time in the finding. The last is the one that completed the pattern. */
  evidence: readonly EvidenceEvent[];
  joinKeys?: Record<string, string>;
  windowStart?: number;
  windowEnd?: number;
  /** Numbers that crossed the threshold, e.g. `{ score: 42, threshold: 30 }`. */
  metrics?: Record<string, number>;
  /** Extra tags beyond the detector's own. */
  tags?: readonly string[];
  /**
   * What makes this finding distinct within its task and rule (defaults to the evidence ids), so
   * re-evaluation of the same pattern yields the same finding id.
   */
  dedupKey?: string;
}

/** Builds a finding with a deterministic id. */
export function makeFinding(meta: DetectorMeta, f: FindingInput): Finding {
  const evidence = [...f.evidence].sort((a, b) => a.time - b.time || (a.event_id < b.event_id ? -1 : 1));
  const last = f.evidence[f.evidence.length - 1] ?? evidence[evidence.length - 1];
  const ids = evidence.map((e) => e.event_id);
  const key = f.dedupKey ?? ids.join(',');
  const agent = evidence.find((e) => e.agent_id)?.agent_id ?? '';
  const workload = evidence.find((e) => e.workload_id)?.workload_id ?? '';
  return {
    id: contentHash(`${meta.id}|${f.rule}|${f.taskId}|${key}`),
    detector: meta.id,
    rule: f.rule,
    severity: f.severity,
    title: f.title,
    summary: f.summary,
    task_id: f.taskId,
    agent_id: agent,
    workload_id: workload,
    time: last?.time ?? 0,
    evidence: ids,
    join_keys: f.joinKeys ?? {},
    window_start: f.windowStart ?? evidence[0]?.time,
    window_end: f.windowEnd ?? last?.time,
    metrics: f.metrics ?? {},
    tags: [...new Set([...meta.tags, ...(f.tags ?? [])])],
  };
}
