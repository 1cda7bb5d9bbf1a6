import type { TimelineEvent } from '../shared/event.ts';
import type { Finding } from '../shared/finding.ts';
import { BoundedMap } from '../shared/lru.ts';
import type { DetectorInstance, TaskView } from './detector.ts';

/** Engine limits. */
export interface EngineOptions {
  /** Tasks whose timelines are kept in memory (LRU). */
  maxTasks: number;
  /** Events kept per task timeline (oldest dropped beyond it). */
  maxEventsPerTask: number;
}

/**
 * Keeps a bounded, event-time-ordered timeline per task and runs every detector instance on each
 * event as it arrives, so a finding is emitted by the event that completes its pattern. Findings are
 * de-duplicated by id, so a redelivered event does not produce a second finding.
 */
export class DetectorEngine {
  private readonly tasks: BoundedMap<string, TimelineEvent[]>;
  private readonly seenEvents: BoundedMap<string, true>;
  private readonly emitted: BoundedMap<string, true>;
  /** Events dropped from the head of over-long timelines. */
  truncatedEvents = 0;

  constructor(
    private readonly instances: readonly DetectorInstance[],
    private readonly opts: EngineOptions,
  ) {
    this.tasks = new BoundedMap(opts.maxTasks);
    this.seenEvents = new BoundedMap(opts.maxTasks * 4);
    this.emitted = new BoundedMap(opts.maxTasks);
  }

  get taskCount(): number {
    return this.tasks.size;
  }

  get evictedTasks(): number {
    return this.tasks.evicted;
  }

  /** Adds events (any order) and returns new findings. */
  process(events: readonly TimelineEvent[]): Finding[] {
    const out: Finding[] = [];
    for (const e of events) {
      if (this.seenEvents.has(e.event_id)) continue;
      this.seenEvents.set(e.event_id, true);
      if (!e.task_id) {
        // Unattributed events have no timeline, but are still evaluated on their own (a credential
        // nobody issued to a task is itself a signal).
        const view: TaskView = { taskId: '', events: [e] };
        for (const inst of this.instances) this.collect(inst.onEvent(e, view), out);
        continue;
      }
      let tl = this.tasks.get(e.task_id);
      if (!tl) this.tasks.set(e.task_id, (tl = []));
      insertByTime(tl, e);
      if (tl.length > this.opts.maxEventsPerTask) {
        tl.shift();
        this.truncatedEvents++;
      }
      if (this.instances.length === 0) continue;
      const view: TaskView = { taskId: e.task_id, events: tl };
      for (const inst of this.instances) this.collect(inst.onEvent(e, view), out);
    }
    return out;
  }

  /** Runs close-time rules for the given tasks and forgets their timelines. */
  close(taskIds: readonly string[]): Finding[] {
    const out: Finding[] = [];
    for (const id of taskIds) {
      const tl = this.tasks.peek(id);
      if (!tl) continue;
      const view: TaskView = { taskId: id, events: tl };
      for (const inst of this.instances) if (inst.onTaskClosed) this.collect(inst.onTaskClosed(view), out);
      this.tasks.delete(id);
    }
    return out;
  }

  private collect(found: readonly Finding[], out: Finding[]): void {
    for (const f of found) {
      if (this.emitted.has(f.id)) continue;
      this.emitted.set(f.id, true);
      out.push(f);
    }
  }
}

/** Inserts keeping event-time order; late events land in their place (usually appended). */
function insertByTime(tl: TimelineEvent[], e: TimelineEvent): void {
  let i = tl.length;
  while (i > 0 && (tl[i - 1] as TimelineEvent).time > e.time) i--;
  tl.splice(i, 0, e);
}
