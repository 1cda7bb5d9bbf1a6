import type { Bus, DeadLetter, MessageBatch, Subscription, UndecodableMessage } from '../../shared/bus/bus.ts';
import type { Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { Mutex } from '../../shared/mutex.ts';
import { GROUP, SOURCE_TOPIC, TOPIC, type TopicId } from '../../shared/names.ts';
import type { Store } from '../storage/store.ts';
import { Correlator, type CorrelatorConfig, type CorrelatorOutput } from './correlator.ts';
import { OffsetTracker } from './offset-tracker.ts';

/** Dependencies of the correlator stage. */
export interface CorrelatorStageDeps {
  bus: Bus;
  store: Store;
  cfg: CorrelatorConfig;
  log: Logger;
  metrics: MetricsRegistry;
  /** Interval of grace/linger expiry checks, ms. Default 1 000. */
  tickMs?: number;
  /** Use the wall-clock grace bound (off for replays, which run on event time only). */
  wallClock?: boolean;
  /** Told which tasks closed, after their events are stored (the embedded detector uses it). */
  onTasksClosed?: (taskIds: readonly string[]) => Promise<void>;
}

const INGEST_TOPICS = [SOURCE_TOPIC.agent, SOURCE_TOPIC.workload, SOURCE_TOPIC.resource] as const;

/**
 * Runs the {@link Correlator} on the bus: consumes canonical events, stores resolved timeline events
 * and bindings, publishes them downstream, and commits an input offset only once everything derived
 * from it is stored and published (and no earlier event of its partition is still waiting).
 */
export class CorrelatorStage {
  readonly correlator: Correlator;
  private readonly tracker = new OffsetTracker();
  private readonly mutex = new Mutex();
  private sub?: Subscription;
  private bindingsSub?: Subscription;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly log: Logger;

  constructor(private readonly deps: CorrelatorStageDeps) {
    this.correlator = new Correlator(deps.cfg);
    this.log = deps.log.child({ component: 'correlator' });
    const m = deps.metrics;
    m.gauge('runtrail_correlator_pending_events', 'Unresolved events waiting for a binding').collect(() => this.correlator.pendingCount);
    m.gauge('runtrail_correlator_open_tasks', 'Open tasks tracked').collect(() => this.correlator.openTaskCount);
    m.gauge('runtrail_correlator_bindings', 'Credential bindings held in memory').collect(() => this.correlator.bindingCount);
    m.gauge('runtrail_correlator_evictions', 'Entries evicted so far from bounded correlator state, by structure').collect(() => {
      const s = this.correlator.stats;
      return [
        [{ structure: 'pending' }, s.pendingEvicted],
        [{ structure: 'tasks' }, s.tasksEvicted],
        [{ structure: 'bindings' }, s.bindingsEvicted],
        [{ structure: 'join_keys' }, s.joinKeysEvicted],
      ];
    });
    m.gauge('runtrail_correlator_resolved_events', 'Events resolved so far, by attribution').collect(() =>
      Object.entries(this.correlator.stats.resolved).map(([attribution, n]) => [{ attribution }, n]),
    );
  }

  async start(): Promise<void> {
    const { bus, store, cfg } = this.deps;
    // Bindings are a global table: every instance loads them whole (stored ones, then the topic).
    const known = await store.loadBindings(cfg.maxBindings);
    this.correlator.loadBindings(known);
    this.log.info({ bindings: known.length }, 'bindings loaded');
    this.bindingsSub = await bus.subscribe({
      topics: [TOPIC.bindings],
      fromBeginning: false,
      onBatch: (batch) =>
        this.mutex.run(async () => {
          const out = this.correlator.loadBindings(batch.messages.map((m) => m.value));
          await this.flush(out);
        }),
    });
    this.sub = await bus.subscribe({
      groupId: GROUP.correlator,
      topics: INGEST_TOPICS,
      fromBeginning: true,
      onBatch: (batch) => this.mutex.run(() => this.handleBatch(batch)),
      onRevoke: (parts) =>
        this.mutex.run(async () => {
          await this.commit();
          for (const p of parts) this.tracker.forget(p.topic, p.partition);
        }),
    });
    const tickMs = this.deps.tickMs ?? 1000;
    this.timer = setInterval(() => {
      this.tick().catch((err: unknown) => this.log.error({ err }, 'correlator tick failed'));
    }, tickMs);
    this.timer.unref();
  }

  private async handleBatch(batch: MessageBatch<(typeof INGEST_TOPICS)[number]>): Promise<void> {
    const received = this.deps.metrics.counter('runtrail_events_in_total', 'Events consumed, by stage and topic');
    received.inc({ stage: 'correlator', topic: batch.topic }, batch.messages.length);
    this.tracker.received(
      batch.topic,
      batch.partition,
      [...batch.messages.map((m) => m.offset), ...batch.undecodable.map((u) => u.offset)].sort((a, b) => Number(a) - Number(b)),
      batch.nextOffset,
    );
    if (batch.undecodable.length > 0) await this.deadLetter(batch.undecodable);
    const out = this.correlator.ingest(
      batch.messages.map((m) => ({ event: m.value, position: { topic: m.topic, partition: m.partition, offset: m.offset } })),
      this.deps.wallClock === false ? 0 : Date.now(),
    );
    await this.flush(out);
    await this.commit();
  }

  /** Poison messages: stored and published as dead letters, then the partition moves on. */
  private async deadLetter(bad: readonly UndecodableMessage[]): Promise<void> {
    const rows: DeadLetter[] = bad.map((u) => ({
      stage: 'correlator',
      topic: u.topic,
      partition: u.partition,
      offset: u.offset,
      key: u.key,
      code: 'payload_invalid',
      reason: u.reason,
      payload: u.raw,
      time: Date.now(),
    }));
    await this.deps.store.insertDeadLetters(rows);
    await this.deps.bus.publish(TOPIC.deadLetter, rows.map((r) => ({ key: `${r.topic}/${r.partition}/${r.offset}`, value: r })));
    for (const u of bad) this.tracker.done(u.topic, u.partition, u.offset);
    this.deps.metrics.counter('runtrail_dead_letters_total', 'Messages dead-lettered, by stage and code').inc({ stage: 'correlator', code: 'payload_invalid' }, bad.length);
    this.log.warn({ count: bad.length, first: bad[0]?.reason }, 'poison messages dead-lettered');
  }

  /** Stores and publishes what the correlator produced, then marks its inputs done. */
  private async flush(out: CorrelatorOutput): Promise<void> {
    const { store, bus, metrics } = this.deps;
    if (out.events.length > 0 || out.bindings.length > 0) {
      await Promise.all([
        out.events.length > 0 ? store.insertEvents(out.events) : undefined,
        out.bindings.length > 0 ? store.insertBindings(out.bindings) : undefined,
      ]);
      const stored = Date.now();
      const lat = metrics.histogram('runtrail_arrival_to_stored_seconds', 'Collector arrival to stored, seconds', [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]);
      for (const e of out.events) lat.observe((stored - e.ingested_at) / 1000);
      if (out.events.length > 0) {
        // Re-keyed by task so every event of a task lands on one partition downstream.
        await bus.publish(TOPIC.timeline, out.events.map((e) => ({ key: e.task_id || e.event_id, value: e })));
      }
      if (out.bindings.length > 0) {
        await bus.publish(TOPIC.bindings, out.bindings.map((b) => ({ key: b.credential_id, value: b })));
      }
      metrics.counter('runtrail_events_out_total', 'Events produced, by stage').inc({ stage: 'correlator' }, out.events.length);
    }
    for (const p of out.done) this.tracker.done(p.topic as TopicId, p.partition, p.offset);
    if (out.closedTasks.length > 0 && this.deps.onTasksClosed) await this.deps.onTasksClosed(out.closedTasks);
  }

  private async commit(): Promise<void> {
    const offsets = this.tracker.commitable();
    if (offsets.length > 0 && this.sub) await this.sub.commit(offsets);
  }

  /** Expires waiting events and idle tasks. */
  async tick(flushAll = false): Promise<void> {
    await this.mutex.run(async () => {
      const out = this.correlator.tick(this.deps.wallClock === false ? 0 : Date.now(), flushAll);
      await this.flush(out);
      await this.commit();
    });
  }

  /** Messages consumed but not yet committed (for readiness and drain checks). */
  get outstanding(): number {
    return this.tracker.outstanding;
  }

  /** Lag of the ingest subscription. */
  async lag(): Promise<number> {
    return this.sub ? this.sub.lag() : 0;
  }

  /**
   * Stops consuming and commits what is done. Events still waiting are not forced out: they are
   * uncommitted, so the next start redelivers them and they get their full grace period.
   */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.sub?.shutdown();
    await this.bindingsSub?.shutdown();
  }
}
