import { deadLetterUndecodable, storeOrDeadLetter } from '../dead-letters.ts';
import type { Bus, MessageBatch, Subscription } from '../../shared/bus/bus.ts';
import { EVENT_TYPE, isTaskClosedMarker, type TimelineEvent } from '../../shared/event.ts';
import { errorMessage } from '../../shared/errors.ts';
import { BoundedMap } from '../../shared/lru.ts';
import type { Finding } from '../../shared/finding.ts';
import { RateLimitedLog, type Logger } from '../../shared/logger.ts';
import { consumerBatchSizes, type Histogram, type MetricsRegistry } from '../../shared/metrics.ts';
import { Mutex } from '../../shared/mutex.ts';
import { GROUP, TABLE, TOPIC } from '../../shared/names.ts';
import { retryUntilStopped, type RetryUntilStoppedOptions } from '../../shared/retry.ts';
import type { DetectorEngine } from '../../detectors/engine.ts';
import type { Store } from '../storage/store.ts';


/** Dependencies of the detector stage. */
export interface DetectorStageDeps {
  bus: Bus;
  store: Store;
  engine: DetectorEngine;
  log: Logger;
  metrics: MetricsRegistry;
  /** Batches whose findings may be on their way to storage and the bus at once. Default 4. */
  maxInFlight?: number;
  /** First retry delay when storing or publishing findings failed, ms; doubles up to 5 s. Default 200. */
  retryBaseMs?: number;
  /**
   * After a start, how long tasks the engine does not hold are rebuilt from storage before their
   * first event is evaluated, ms. Default 600 000 (10 min); 0 disables. See {@link DetectorStage}.
   */
  recoveryWindowMs?: number;
  /** Stored events replayed per task when rebuilding. Default 200. */
  recoveryEventsPerTask?: number;
  /**
   * Rebuild per-agent baselines at start from the stored tool calls of this many days (event time)
   * before now, at most `maxCalls` of the most recent. Unset or `days: 0`: none (replays, tests).
   */
  baselineHistory?: { days: number; maxCalls: number };
}

/** Tasks remembered as already considered for rebuilding. */
const RECOVERY_CHECKED_MAX = 100_000;

/**
 * Consumes resolved timeline events, runs the detector engine on each as it arrives, stores and
 * publishes the findings, then commits. Poison timeline messages are dead-lettered.
 *
 * Pipelined like the correlator stage: a batch's findings are stamped (`emitted_at`) the moment
 * the engine returns them, then published and stored in the background while the next batch is
 * evaluated, so one batch's storage delay (the writer's batch window) does not hold up
 * the next batch's findings. Commits run strictly in batch order, each after its own findings
 * are stored and published (retried with backoff until they are, or the stage stops and leaves
 * the batch uncommitted for redelivery; finding ids are deterministic, so a redelivered batch
 * stores nothing twice).
 *
 * Restarts: the engine's per-task state lives in memory, so after a crash (or a rebalance that
 * hands this instance a partition) a running task's next events would be evaluated without what
 * came before them, and a pattern spanning the restart would be missed. For a while after start
 * and after every rebalance (`recoveryWindowMs`), the first event (or close) of a task the engine
 * does not hold, unless it is the task's start, makes the stage load the task's recent stored
 * events and replay them through the engine first, with the findings already stored marked as
 * emitted. Identity-wide windows (blast radius per identity) are not rebuilt: they refill from new
 * traffic.
 */
export class DetectorStage {
  private sub?: Subscription;
  private readonly mutex = new Mutex();
  private readonly log: Logger;
  private stopped = false;
  private readonly maxInFlight: number;
  /** The last batch's commit step; the next one chains after it. */
  private tail: Promise<void> = Promise.resolve();
  private inFlight = 0;
  private roomWaiters: Array<() => void> = [];
  private readonly retryLog: RateLimitedLog;
  /** How every storage and bus call of the stage is retried: with backoff, until it succeeds or the stage stops. */
  private readonly retryOpts: Omit<RetryUntilStoppedOptions, 'what' | 'permanent'>;
  private readonly evictionLog: RateLimitedLog;
  /** Detector state evictions already reported by {@link noteEvictions}. */
  private evictionsSeen = 0;
  private readonly batchSizes: Histogram;
  private readonly findingLatency: Histogram;
  /** Since when tasks are rebuilt from storage: the start, and every rebalance (see {@link recover}). */
  private recoveryFrom = Date.now();
  /** Whether tasks may still need rebuilding (see {@link recover}). */
  private recovering = false;
  /** A batch's findings were abandoned (stopping): no later commit may cover its offsets. */
  private abandoned = false;
  private readonly errorLog: RateLimitedLog;
  /** Tasks already considered for rebuilding in this run (bounded; a forgotten one is only looked up again). */
  private recoveryChecked = new BoundedMap<string, true>(RECOVERY_CHECKED_MAX);

  constructor(private readonly deps: DetectorStageDeps) {
    this.log = deps.log.child({ component: 'detector' });
    this.maxInFlight = Math.max(1, deps.maxInFlight ?? 4);
    this.batchSizes = consumerBatchSizes(deps.metrics);
    this.findingLatency = deps.metrics.histogram(
      'runtrail_arrival_to_finding_seconds',
      'Arrival of the event that completed a pattern to its finding, seconds',
      [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    this.retryLog = new RateLimitedLog(this.log, 'storing or publishing findings failed; retrying');
    this.retryOpts = { baseMs: deps.retryBaseMs ?? 200, stopped: () => this.stopped, log: this.retryLog };
    this.errorLog = new RateLimitedLog(this.log, 'a detector threw: its verdict on that event is lost (a bug to report); the other detectors went on', 60_000);
    deps.metrics.gauge('runtrail_detector_errors', 'Detector calls that threw (that verdict lost; the other detectors and the batch went on)').collect(() => deps.engine.stats.detectorErrors);
    this.evictionLog = new RateLimitedLog(this.log, 'detector state full: patterns whose earlier events were evicted are missed; raise these limits in the policy', 60_000);
    deps.metrics
      .gauge('runtrail_detector_state_evictions', "Evicted so far from the detectors' own bounded state, by detector and the policy limit that bounds it")
      .collect(() => deps.engine.stateEvictions().map((e) => [{ detector: e.detector, limit: e.limit }, e.evicted]));
    deps.metrics.gauge('runtrail_detector_tasks', 'Task timelines held by the detector engine').collect(() => deps.engine.taskCount);
    deps.metrics.gauge('runtrail_detector_events_held', 'Events held across the detector engine\'s task windows').collect(() => deps.engine.eventCount);
    deps.metrics.gauge('runtrail_detector_evictions', 'Dropped so far by the detector engine to stay within its bounds, by kind').collect(() => {
      const s = deps.engine.stats;
      return [
        [{ kind: 'task_windows' }, s.evictedTasks],
        [{ kind: 'window_events' }, s.evictedEvents],
        [{ kind: 'truncated_events' }, s.truncatedEvents],
        [{ kind: 'duplicate_events' }, s.duplicateEvents],
      ];
    });
  }

  async start(): Promise<void> {
    // A store without events (a fresh deployment, a benchmark) has no task to rebuild.
    const windowMs = this.deps.recoveryWindowMs ?? 600_000;
    const hasEvents = (await this.deps.store.querySql(`SELECT 1 AS x FROM ${TABLE.events} LIMIT 1`, {}, { maxRows: 1 })).length > 0;
    this.recovering = windowMs > 0 && hasEvents;
    if (hasEvents) await this.learnHistory();
    this.sub = await this.deps.bus.subscribe({
      groupId: GROUP.detector,
      topics: [TOPIC.timeline],
      fromBeginning: true,
      onBatch: (batch) => this.mutex.run(() => this.handle(batch)),
      // Partitions moved (or, on Kafka, are read again from their committed offsets: every
      // rebalance revokes all): let findings in flight land and their batches commit, then rebuild
      // from storage the running tasks this instance has not seen, as after a start.
      onRevoke: () =>
        this.mutex.run(async () => {
          await this.idle();
          this.rearmRecovery();
        }),
    });
  }

  private async handle(batch: MessageBatch<typeof TOPIC.timeline>): Promise<void> {
    const { store, bus, engine, metrics } = this.deps;
    const events: TimelineEvent[] = [];
    const closed: string[] = [];
    for (const m of batch.messages) {
      if (isTaskClosedMarker(m.value)) closed.push(m.value.task_id);
      else events.push(m.value);
    }
    metrics.counter('runtrail_events_in_total', 'Events consumed, by stage and topic').inc({ stage: 'detector', topic: batch.topic }, events.length);
    await deadLetterUndecodable('detector', batch.undecodable, { store, bus, metrics });
    this.batchSizes.observe(events.length, { stage: 'detector' });
    const recovered = await this.recover(events, closed);
    const found = engine.process(events);
    // Task-closed markers (distributed mode) follow their task's events on its partition; a late
    // event of the task in the same batch only reopens what the close releases.
    if (closed.length > 0) found.push(...engine.close(closed));
    this.observeLatency(found, events);
    this.noteEvictions();
    for (const e of engine.takeErrors()) this.errorLog.hit(e);
    const emitted = this.emit([...recovered, ...found]);
    const prev = this.tail;
    this.inFlight++;
    this.tail = (async () => {
      try {
        let stored = true;
        try {
          await emitted;
        } catch (err) {
          // Only when stopping: the batch stays uncommitted and is redelivered on the next start.
          stored = false;
          this.abandoned = true;
          this.log.warn({ err: errorMessage(err), partition: batch.partition, offset: batch.nextOffset }, 'detector batch abandoned at shutdown');
        }
        await prev;
        // After an abandoned batch nothing more is committed: a later offset would cover it.
        if (!stored || this.abandoned) return;
        try {
          await this.sub?.commit([{ topic: batch.topic, partition: batch.partition, offset: batch.nextOffset }]);
        } catch (err) {
          this.log.warn({ err: errorMessage(err), partition: batch.partition, offset: batch.nextOffset }, "offset commit failed; the partition's next commit carries it");
        }
      } finally {
        this.inFlight--;
        this.roomWaiters.shift()?.();
      }
    })();
    while (this.inFlight >= this.maxInFlight) await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
  }

  /** Rebuilds the detectors' per-agent baselines from stored tool calls (see `baselineHistory`). */
  private async learnHistory(): Promise<void> {
    const h = this.deps.baselineHistory;
    if (!h || h.days <= 0) return;
    const started = Date.now();
    const since = started - h.days * 86_400_000;
    const calls = await retryUntilStopped(() => this.deps.store.toolCallHistory(since, h.maxCalls), { ...this.retryOpts, what: 'load tool-call history' });
    this.deps.engine.learnHistory(calls);
    this.deps.metrics.counter('runtrail_detector_history_calls_total', 'Stored tool calls the detectors rebuilt per-agent baselines from at start').inc({}, calls.length);
    this.log.info({ calls: calls.length, tasks: new Set(calls.map((c) => c.task_id)).size, days: h.days, ms: Date.now() - started }, 'baselines rebuilt from stored tool calls');
  }

  /**
   * Warns (at most once a minute) while the detectors' own state evicts: each eviction may be a
   * missed finding, and only a policy limit can fix it, so the warning names the limits.
   */
  private noteEvictions(): void {
    const limits = this.deps.engine.stateEvictionsByPolicyPath();
    const total = Object.values(limits).reduce((a, b) => a + b, 0);
    if (total > this.evictionsSeen) {
      this.evictionLog.hit({ evicted: limits }, total - this.evictionsSeen);
      this.evictionsSeen = total;
    }
  }

  /**
   * Rebuilds the state of tasks that were running before this start (see the class comment).
   * Returns findings the replayed history completes that were not stored before.
   */
  private async recover(events: readonly TimelineEvent[], closed: readonly string[] = []): Promise<Finding[]> {
    if (!this.recovering) return [];
    if (Date.now() - this.recoveryFrom > (this.deps.recoveryWindowMs ?? 600_000)) {
      this.recovering = false;
      return [];
    }
    const { engine, store, metrics } = this.deps;
    const tasks: string[] = [];
    /** Whether a task is seen here for the first time and not held by the engine (then remembered). */
    const unseen = (id: string | undefined): id is string => {
      if (!id || engine.hasTask(id) || this.recoveryChecked.has(id)) return false;
      this.recoveryChecked.set(id, true);
      return true;
    };
    // A task whose first event here is its start has no history to rebuild.
    for (const e of events) if (unseen(e.task_id) && e.type !== EVENT_TYPE.taskStarted) tasks.push(e.task_id);
    // A task that closes before any event of it arrives here still needs its history, or its
    // close-time rules would judge an empty window.
    for (const id of closed) if (unseen(id)) tasks.push(id);
    if (tasks.length === 0) return [];
    const opts = this.retryOpts;
    const [history, done] = await Promise.all([
      retryUntilStopped(() => store.recentEvents(tasks, this.deps.recoveryEventsPerTask ?? 200), { ...opts, what: 'load task history' }),
      retryUntilStopped(() => store.findingIds(tasks), { ...opts, what: 'load task findings' }),
    ]);
    if (history.length === 0) return [];
    engine.markEmitted(done);
    metrics.counter('runtrail_detector_recovered_tasks_total', 'Tasks whose detector state was rebuilt from storage after a start').inc({}, new Set(history.map((e) => e.task_id)).size);
    return engine.process(history);
  }

  /**
   * Arrival-to-finding latency: from the arrival (`ingested_at`) of the latest-arriving evidence
   * event in this batch, i.e. the one that completed the pattern, to now.
   */
  private observeLatency(found: readonly Finding[], events: readonly TimelineEvent[]): void {
    if (found.length === 0) return;
    const arrived = new Map(events.map((e) => [e.event_id, e.ingested_at]));
    const now = Date.now();
    for (const f of found) {
      let last = -1;
      for (const id of f.evidence) last = Math.max(last, arrived.get(id) ?? -1);
      if (last >= 0) this.findingLatency.observe((now - last) / 1000, { detector: f.detector });
    }
  }

  /** Runs close-time rules for tasks the correlator closed; resolves once their findings are stored and published. */
  async closeTasks(taskIds: readonly string[]): Promise<void> {
    if (taskIds.length === 0) return;
    await this.mutex.run(async () => {
      const recovered = await this.recover([], taskIds);
      await this.emit([...recovered, ...this.deps.engine.close(taskIds)]);
    });
  }

  /** Rebuilds from storage, for another recovery window, the running tasks this instance has not seen. */
  private rearmRecovery(): void {
    if (this.stopped) return;
    this.recovering = (this.deps.recoveryWindowMs ?? 600_000) > 0;
    this.recoveryFrom = Date.now();
    this.recoveryChecked = new BoundedMap<string, true>(RECOVERY_CHECKED_MAX);
  }

  /** Stamps findings now, then publishes and stores them (retried until done or stopping). */
  private async emit(findings: Finding[]): Promise<void> {
    if (findings.length === 0) return;
    const { store, bus, metrics } = this.deps;
    const now = Date.now();
    const stamped = findings.map((f) => ({ ...f, emitted_at: f.emitted_at ?? now }));
    const counter = metrics.counter('runtrail_findings_total', 'Findings emitted, by detector and severity');
    for (const f of stamped) counter.inc({ detector: f.detector, severity: f.severity });
    const opts = this.retryOpts;
    // Published, then stored: a restart rebuilds a task's state from storage and counts stored
    // findings as emitted, so a finding stored but never published would never reach the alerter.
    // This way "stored" implies "published" (a crash in between publishes it again: at least once).
    await retryUntilStopped(() => bus.publish(TOPIC.findings, stamped.map((f) => ({ key: f.task_id || f.id, value: f }))), { ...opts, what: 'publish findings' });
    await storeOrDeadLetter({ stage: 'detector', topic: TOPIC.findings, what: 'store findings', rows: stamped, insert: (rows) => store.insertFindings(rows), key: (f) => f.id, retry: opts, deps: this.deps, log: this.log });
    this.log.debug({ count: stamped.length }, 'findings emitted');
  }

  /** Batches evaluated whose findings are not yet stored, published and committed. */
  get inFlightBatches(): number {
    return this.inFlight;
  }

  /** Waits until every evaluated batch is stored, published and committed. */
  async idle(): Promise<void> {
    while (this.inFlight > 0) await this.tail;
  }

  async lag(): Promise<number> {
    return this.sub ? this.sub.lag() : 0;
  }

  async shutdown(): Promise<void> {
    if (this.stopped) return;
    // From here a failing insert or publish gives up instead of retrying: its batch stays
    // uncommitted and is redelivered on the next start. Batches whose findings succeed still commit.
    this.stopped = true;
    await this.sub?.shutdown();
    await this.idle();
  }
}
