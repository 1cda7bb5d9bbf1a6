import type { TimelineEvent, ToolCallRecord } from '../shared/event.ts';
import { summarizeEvidence, type EvidenceSummary, type Finding } from '../shared/finding.ts';
import { BoundedMap } from '../shared/lru.ts';
import type { DetectorInstance, TaskView } from './detector.ts';

/**
 * Engine limits. The engine keeps, per task, only a short window of recent events, and a global
 * budget of events across all tasks, so its memory is bounded whatever the number of open tasks
 * (see `engine` in the config reference for the production values).
 */
export interface EngineOptions {
  /** Tasks whose windows are kept (LRU by last event); the least recently active is dropped beyond it. */
  maxTasks: number;
  /** Most recent events kept per task (event-time order; the oldest is dropped beyond it). */
  maxEventsPerTask: number;
  /**
   * Events kept across all tasks. Beyond it, the windows of the least recently active tasks are
   * dropped whole (counted in {@link DetectorEngine.evictedTasks}). Default
   * `maxTasks * maxEventsPerTask`, i.e. no budget beyond the two limits above.
   */
  maxEvents?: number;
  /**
   * Keep slim copies of events in the windows: `messages`, `tool.result` and `attributes` (the bulk
   * of an event's memory) are dropped from kept copies. The event being evaluated is always passed
   * whole as the first argument of `onEvent`. Default true.
   */
  slimEvents?: boolean;
  /**
   * Event ids remembered to skip a redelivered event (a batch handed over again after a failed
   * store). Only the most recent ones matter: a redelivery repeats at most the last batches.
   * Default 100 000.
   */
  dedupWindow?: number;
  /**
   * Evidence events summarised on each finding (`evidence_events`, the first this many of its
   * evidence that the task's window still holds), so the alerter need not read them back from
   * storage. The alerter shows `alerting.incidents.evidenceLimit` of them. Default 0 (none).
   */
  evidenceSummaries?: number;
}

/** Counters of what the engine dropped to stay within its limits. */
export interface EngineStats {
  /** Events dropped from the head of windows longer than `maxEventsPerTask`. */
  truncatedEvents: number;
  /** Task windows dropped whole to stay within `maxTasks` or `maxEvents`. */
  evictedTasks: number;
  /** Events those dropped windows held. */
  evictedEvents: number;
  /** Events skipped because their id was seen recently (redeliveries). */
  duplicateEvents: number;
  /** Detector calls that threw: that detector's verdict on that event is lost; the others still run. */
  detectorErrors: number;
}

/** Shared by every slim copy: `attributes` is required by the type, and nobody may write to it. */
const NO_ATTRIBUTES: TimelineEvent['attributes'] = Object.freeze({}) as TimelineEvent['attributes'];

/**
 * An event without the fields that dominate its memory (see {@link EngineOptions.slimEvents}).
 * Written as one literal with every field, absent ones `undefined`: all copies then share one
 * hidden class (~370 bytes a copy); an object spread of a canonical event gets a map of its own and
 * costs two to three times that. Measured with the bench's traffic: a full event ~2.3 KB of heap, a
 * slim copy ~0.95 KB including the strings it keeps.
 */
function slimEvent(e: TimelineEvent): TimelineEvent {
  const t = e.tool;
  return {
    event_id: e.event_id,
    source: e.source,
    type: e.type,
    time: e.time,
    end_time: e.end_time,
    format: e.format,
    task_id: e.task_id,
    agent_id: e.agent_id,
    agent_name: e.agent_name,
    workload_id: e.workload_id,
    credential_id: e.credential_id,
    trace_id: e.trace_id,
    span_id: e.span_id,
    parent_span_id: e.parent_span_id,
    request_id: e.request_id,
    session_id: e.session_id,
    principal: e.principal,
    action: e.action,
    resources: e.resources,
    outcome: e.outcome,
    sensitivity: e.sensitivity,
    data_classes: e.data_classes,
    src_ip: e.src_ip,
    host: e.host,
    user_agent: e.user_agent,
    tool:
      t === undefined
        ? undefined
        : { name: t.name, call_id: t.call_id, arguments: t.arguments, result: undefined, error: t.error, annotations: t.annotations, server: t.server },
    model: e.model,
    messages: undefined,
    credential: e.credential,
    process: e.process,
    network: e.network,
    delegation: e.delegation,
    attributes: NO_ATTRIBUTES,
    attribution: e.attribution,
    join_key: e.join_key,
    unattributed_reason: e.unattributed_reason,
    ingested_at: e.ingested_at,
    late: e.late,
  };
}

/**
 * Keeps a bounded, event-time-ordered window of recent events per task and runs every detector
 * instance on each event as it arrives, so a finding is emitted by the event that completes its
 * pattern. Findings are de-duplicated by id, so a redelivered event does not produce a second
 * finding.
 *
 * Memory is bounded on three axes: events per task (`maxEventsPerTask`), tasks (`maxTasks`) and
 * events overall (`maxEvents`); kept copies are slim (`slimEvents`). So `TaskView.events` is the
 * task's RECENT history, not all of it: a task may have more events than its view holds, and a
 * task whose window was evicted starts again with an empty one. Detectors that need facts from a
 * task's whole history (first agent id, capabilities reached so far, counts) must keep their own
 * compact, bounded per-task state, updated in `onEvent`, rather than rescanning the view.
 */
export class DetectorEngine {
  private readonly tasks: BoundedMap<string, TimelineEvent[]>;
  private readonly seenEvents: BoundedMap<string, true>;
  private readonly emitted: BoundedMap<string, true>;
  private readonly maxEvents: number;
  private readonly slim: boolean;
  /** Events currently held across all windows. */
  private held = 0;
  readonly stats: EngineStats = { truncatedEvents: 0, evictedTasks: 0, evictedEvents: 0, duplicateEvents: 0, detectorErrors: 0 };
  /** The last error each failing detector threw, for the stage to report (cleared when read). */
  private readonly lastErrors = new Map<string, string>();

  /**
   * @param ids Detector id of each instance, in the same order (for {@link stateEvictions});
   *   default `detector-<index>`.
   */
  constructor(
    private readonly instances: readonly DetectorInstance[],
    private readonly opts: EngineOptions,
    private readonly ids: readonly string[] = instances.map((_, i) => `detector-${i}`),
  ) {
    if (opts.maxEventsPerTask < 1) throw new RangeError('maxEventsPerTask must be at least 1');
    this.maxEvents = Math.max(1, opts.maxEvents ?? opts.maxTasks * opts.maxEventsPerTask);
    this.slim = opts.slimEvents ?? true;
    this.tasks = new BoundedMap(opts.maxTasks, (_id, tl) => this.dropped(tl));
    this.seenEvents = new BoundedMap(Math.max(1, opts.dedupWindow ?? 100_000));
    this.emitted = new BoundedMap(Math.max(1000, opts.maxTasks));
  }

  get taskCount(): number {
    return this.tasks.size;
  }

  /** Whether the engine holds a window for this task. */
  hasTask(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  /** Hands stored tool calls of earlier tasks (grouped by task, in time order) to detectors that learn from history. */
  learnHistory(calls: readonly ToolCallRecord[]): void {
    if (calls.length === 0) return;
    for (const inst of this.instances) inst.learnHistory?.(calls);
  }

  /** Records findings as already emitted (stored by an earlier run), so rebuilding state does not emit them again. */
  markEmitted(ids: readonly string[]): void {
    for (const id of ids) this.emitted.set(id, true);
  }

  /**
   * Evictions from the detectors' own bounded state so far, one entry per detector and limit
   * (zeros included), in registry order.
   */
  stateEvictions(): Array<{ detector: string; limit: string; evicted: number }> {
    const out: Array<{ detector: string; limit: string; evicted: number }> = [];
    this.instances.forEach((inst, i) => {
      const ev = inst.stateEvictions?.() ?? {};
      for (const limit of Object.keys(ev)) out.push({ detector: this.ids[i] ?? `detector-${i}`, limit, evicted: ev[limit] ?? 0 });
    });
    return out;
  }

  /** Non-zero evictions keyed by the policy setting to raise, `detectors.<id>.<limit>`. */
  stateEvictionsByPolicyPath(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.stateEvictions()) if (e.evicted > 0) out[`detectors.${e.detector}.${e.limit}`] = e.evicted;
    return out;
  }

  /** Events held across all task windows. */
  get eventCount(): number {
    return this.held;
  }

  /** Task windows dropped to stay within limits (see {@link EngineStats.evictedTasks}). */
  get evictedTasks(): number {
    return this.stats.evictedTasks;
  }

  /** Events dropped from the head of over-long windows. */
  get truncatedEvents(): number {
    return this.stats.truncatedEvents;
  }

  /** Adds events (any order) and returns new findings. */
  process(events: readonly TimelineEvent[]): Finding[] {
    const out: Finding[] = [];
    for (const e of events) {
      if (this.seenEvents.has(e.event_id)) {
        this.stats.duplicateEvents++;
        continue;
      }
      this.seenEvents.set(e.event_id, true);
      if (!e.task_id) {
        // Unattributed events have no timeline, but are still evaluated on their own (a credential
        // nobody issued to a task is itself a signal).
        const view: TaskView = { taskId: '', events: [e] };
        this.evaluate(e, view, out);
        continue;
      }
      let tl = this.tasks.get(e.task_id);
      if (!tl) this.tasks.set(e.task_id, (tl = []));
      insertByTime(tl, this.slim ? slimEvent(e) : e);
      this.held++;
      if (this.instances.length > 0) {
        // The view includes the event being evaluated, even a late one that falls off next.
        const view: TaskView = { taskId: e.task_id, events: tl };
        this.evaluate(e, view, out);
      }
      if (tl.length > this.opts.maxEventsPerTask) {
        tl.shift();
        this.held--;
        this.stats.truncatedEvents++;
      }
      if (this.held > this.maxEvents) {
        // Over the global budget: drop the windows of the least recently active tasks, never the
        // one just evaluated.
        this.tasks.touch(e.task_id);
        while (this.held > this.maxEvents && this.tasks.size > 1) this.tasks.evictOldest();
      }
    }
    return out;
  }

  /**
   * Runs close-time rules for the given tasks and forgets their windows. A task whose window was
   * evicted (or never seen) is still closed, with an empty view, so detectors can release the
   * per-task state they keep themselves.
   */
  close(taskIds: readonly string[]): Finding[] {
    const out: Finding[] = [];
    for (const id of taskIds) {
      const tl = this.tasks.peek(id);
      const view: TaskView = { taskId: id, events: tl ?? [] };
      for (let i = 0; i < this.instances.length; i++) {
        const inst = this.instances[i] as DetectorInstance;
        if (!inst.onTaskClosed) continue;
        let found: readonly Finding[];
        try {
          found = inst.onTaskClosed(view);
        } catch (err) {
          found = this.failed(i, err);
        }
        this.collect(found, out, view);
      }
      if (tl) {
        this.tasks.delete(id);
        this.held -= tl.length;
      }
    }
    return out;
  }

  /**
   * Every detector's verdict on one event, each call isolated: a detector that throws (a bug, data
   * it did not expect) loses its own verdict on that event, counted and reported, while the other
   * detectors, the batch and the findings already made go on. Otherwise the batch would fail after
   * its events were marked seen, and its redelivery would skip them: every finding of it lost.
   */
  private evaluate(e: TimelineEvent, view: TaskView, out: Finding[]): void {
    for (let i = 0; i < this.instances.length; i++) {
      let found: readonly Finding[];
      try {
        found = (this.instances[i] as DetectorInstance).onEvent(e, view);
      } catch (err) {
        found = this.failed(i, err);
      }
      this.collect(found, out, view);
    }
  }

  private failed(i: number, err: unknown): readonly Finding[] {
    this.stats.detectorErrors++;
    this.lastErrors.set(this.ids[i] ?? `detector-${i}`, err instanceof Error ? `${err.name}: ${err.message}` : String(err));
    return [];
  }

  /** Detectors that threw since the last call, with the last error of each. */
  takeErrors(): Array<{ detector: string; error: string }> {
    const out = [...this.lastErrors].map(([detector, error]) => ({ detector, error }));
    this.lastErrors.clear();
    return out;
  }

  /** Bookkeeping for a window the task map dropped (size cap or budget). */
  private dropped(tl: readonly TimelineEvent[]): void {
    this.held -= tl.length;
    this.stats.evictedTasks++;
    this.stats.evictedEvents += tl.length;
  }

  private collect(found: readonly Finding[], out: Finding[], view: TaskView): void {
    for (const f of found) {
      if (this.emitted.has(f.id)) continue;
      this.emitted.set(f.id, true);
      const limit = this.opts.evidenceSummaries ?? 0;
      out.push(limit > 0 && f.evidence.length > 0 ? { ...f, evidence_events: summaries(f.evidence, limit, view.events) } : f);
    }
  }
}

/**
 * Summaries of the first `limit` evidence ids that `events` (a task's window) holds, in evidence
 * order. A finding is rare next to events, and a window is short, so a scan costs nothing.
 */
function summaries(evidence: readonly string[], limit: number, events: readonly TimelineEvent[]): EvidenceSummary[] {
  const wanted = evidence.length <= limit ? evidence : evidence.slice(0, limit);
  const out: EvidenceSummary[] = [];
  for (const id of wanted) {
    for (let i = events.length - 1; i >= 0; i--) {
      const e = events[i] as TimelineEvent;
      if (e.event_id === id) {
        out.push(summarizeEvidence(e));
        break;
      }
    }
  }
  return out;
}

/** Inserts keeping event-time order; late events land in their place (usually appended). */
function insertByTime(tl: TimelineEvent[], e: TimelineEvent): void {
  let i = tl.length;
  while (i > 0 && (tl[i - 1] as TimelineEvent).time > e.time) i--;
  if (i === tl.length) tl.push(e);
  else tl.splice(i, 0, e);
}
