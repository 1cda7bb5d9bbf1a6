import { deadLetterUndecodable, storeOrDeadLetter } from '../dead-letters.ts';
import type { Bus, MessageBatch, Subscription, UndecodableMessage } from '../../shared/bus/bus.ts';
import { errorMessage } from '../../shared/errors.ts';
import { retryUntilStopped } from '../../shared/retry.ts';
import { RateLimitedLog, type Logger } from '../../shared/logger.ts';
import { consumerBatchSizes, type MetricsRegistry } from '../../shared/metrics.ts';
import { Mutex } from '../../shared/mutex.ts';
import { GROUP, SOURCE_TOPIC, TOPIC, type TopicId } from '../../shared/names.ts';
import type { Store } from '../storage/store.ts';
import { Correlator, type CorrelatorConfig, type CorrelatorOutput } from './correlator.ts';
import { OffsetTracker } from './offset-tracker.ts';
import { RedeliveryGuard } from './redelivery-guard.ts';

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
  /**
   * Publish a task-closed marker on the timeline topic for each task that closes, after its events
   * (distributed mode: the detector service is another process and learns of closes only from the
   * topic). Default false.
   */
  publishTaskCloses?: boolean;
  /**
   * Batches whose output may be in storage or on its way downstream at once, while the next batch
   * is correlated. Default `cfg.maxInFlight`; 1 handles one batch at a time.
   */
  maxInFlight?: number;
  /** First retry delay when storing or publishing a batch's output failed, ms; doubles up to 5 s. Default 200. */
  retryBaseMs?: number;
  /**
   * Given when the detector runs in this process (embedded mode): called right after an output is
   * published, it resolves once the detector has handled and committed everything published on
   * the timeline so far. An output that closes tasks tells `onTasksClosed` only then, so
   * close-time rules (absence sequences) always judge the task's whole timeline, however far the
   * detector lags. With {@link commitAfterHandled} every output waits for it.
   */
  timelineHandled?: () => Promise<void>;
  /**
   * The timeline topic is not durable (embedded mode keeps it in memory): every output's inputs
   * are marked done and its offsets committed only once the detector handled it
   * ({@link timelineHandled}), so a crash before that redelivers the inputs and nothing the
   * detector needed is lost. Default false.
   */
  commitAfterHandled?: boolean;
  /** How long shutdown waits for the detector to handle published timeline events, ms. Default 10 000. */
  shutdownGraceMs?: number;
}

const INGEST_TOPICS = [SOURCE_TOPIC.agent, SOURCE_TOPIC.workload, SOURCE_TOPIC.resource] as const;

/**
 * Runs the {@link Correlator} on the bus: consumes canonical events, stores resolved timeline events
 * and bindings, publishes them downstream, and commits an input offset only once everything derived
 * from it is stored and published (and no earlier event of its partition is still waiting).
 *
 * Pipelined: correlating is synchronous and runs under the stage's mutex; storing and publishing a
 * batch's output run after it, while the next batches are correlated (at most `maxInFlight`
 * outputs outstanding). Inserts start at once and may overlap. Publishes run strictly in output
 * order without waiting for the inserts, so downstream sees outputs in correlation order and a
 * detector sees an event as soon as it is resolved (a finding does not wait out the storage
 * batch delay). Done-marking, task closing and commit of each output run strictly in order, each
 * after its own inserts and publish resolved, so the offset tracker never marks an input done
 * before what came of it is stored and published. A failed insert or publish is retried (with
 * backoff, as long as the stage runs); its inputs stay uncommitted meanwhile, so a crash redelivers
 * them.
 */
export class CorrelatorStage {
  readonly correlator: Correlator;
  private readonly tracker = new OffsetTracker();
  private readonly guard: RedeliveryGuard;
  private readonly mutex = new Mutex();
  private sub?: Subscription;
  private bindingsSub?: Subscription;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly log: Logger;
  private readonly maxInFlight: number;
  /** The last output's ordered step (after its inserts and publish: done, close, commit); the next one chains after it. */
  private tail: Promise<void> = Promise.resolve();
  /** The last output's publish; the next one's publish chains after it, so the timeline keeps output order. */
  private publishTail: Promise<unknown> = Promise.resolve();
  private inFlight = 0;
  /** Callers waiting for an output slot. */
  private roomWaiters: Array<() => void> = [];
  /** Outputs' final part (done, close, commit), in order; waits for the detector when `timelineHandled` is given. */
  private finishTail: Promise<void> = Promise.resolve();
  private finishing = 0;
  /** Resolved `shutdownGraceMs` after shutdown starts: outputs still waiting for the detector then stay uncommitted. */
  private readonly giveUp: Promise<'give-up'>;
  private resolveGiveUp: (v: 'give-up') => void = () => undefined;
  private readonly retryLog: RateLimitedLog;

  constructor(private readonly deps: CorrelatorStageDeps) {
    this.giveUp = new Promise((resolve) => (this.resolveGiveUp = resolve));
    this.correlator = new Correlator(deps.cfg);
    this.guard = new RedeliveryGuard({ store: deps.store });
    this.log = deps.log.child({ component: 'correlator' });
    this.maxInFlight = Math.max(1, deps.maxInFlight ?? deps.cfg.maxInFlight);
    this.retryLog = new RateLimitedLog(this.log, 'storing or publishing correlator output failed; retrying');
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
    m.gauge('runtrail_correlator_released_pending', 'Pending events let go at a rebalance because their partition moved to another instance').collect(() => this.correlator.stats.pendingReleased);
    m.gauge('runtrail_correlator_redelivery', 'Partitions taken over: batches looked up in storage, events found already stored, emitted events set back to their stored attribution, remembered attributions evicted').collect(() => {
      const g = this.guard.stats;
      return [
        [{ what: 'batches_checked' }, g.batchesChecked],
        [{ what: 'found_stored' }, g.foundStored],
        [{ what: 'rewritten' }, g.rewritten],
        [{ what: 'evicted' }, g.evicted],
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
          await this.enqueue(out);
        }),
    });
    this.sub = await bus.subscribe({
      groupId: GROUP.correlator,
      topics: INGEST_TOPICS,
      fromBeginning: true,
      onBatch: (batch) => this.mutex.run(() => this.handleBatch(batch)),
      onRevoke: (parts) =>
        this.mutex.run(async () => {
          await this.idle();
          await this.commit();
          for (const p of parts) this.tracker.forget(p.topic, p.partition);
          this.guard.forget(parts);
          const released = this.correlator.releasePartitions(parts);
          if (released > 0) this.log.info({ released, partitions: parts.length }, 'pending events of revoked partitions released to their new owner');
        }),
    });
    const tickMs = this.deps.tickMs ?? 1000;
    this.timer = setInterval(() => {
      this.tick().catch((err: unknown) => this.log.error({ err }, 'correlator tick failed'));
    }, tickMs);
    this.timer.unref();
  }

  private async handleBatch(batch: MessageBatch<(typeof INGEST_TOPICS)[number]>): Promise<void> {
    // Stopping: a batch queued behind the shutdown's revoke would track its partition afresh and
    // commit past events the revoke released. Left unhandled and uncommitted, it is redelivered.
    if (this.stopped) return;
    const received = this.deps.metrics.counter('runtrail_events_in_total', 'Events consumed, by stage and topic');
    received.inc({ stage: 'correlator', topic: batch.topic }, batch.messages.length);
    consumerBatchSizes(this.deps.metrics).observe(batch.messages.length + batch.undecodable.length, { stage: 'correlator' });
    this.tracker.received(
      batch.topic,
      batch.partition,
      [...batch.messages.map((m) => m.offset), ...batch.undecodable.map((u) => u.offset)].sort((a, b) => Number(a) - Number(b)),
      batch.nextOffset,
    );
    if (batch.undecodable.length > 0) await this.retrying('dead-letter poison messages', () => this.deadLetter(batch.undecodable));
    if (this.guard.isChecking(batch.topic, batch.partition)) {
      // A partition this instance starts reading may redeliver events already stored (see RedeliveryGuard).
      await this.retrying('look up redelivered events', () => this.guard.check(batch.topic, batch.partition, batch.messages.map((m) => m.value)));
    }
    const out = this.correlator.ingest(
      batch.messages.map((m) => ({ event: m.value, position: { topic: m.topic, partition: m.partition, offset: m.offset } })),
      this.deps.wallClock === false ? 0 : Date.now(),
    );
    // Dead letters were marked done above: commit them with this output even when it is empty.
    await this.enqueue(out, batch.undecodable.length > 0);
  }

  /** Poison messages: stored and published as dead letters, then the partition moves on. */
  private async deadLetter(bad: readonly UndecodableMessage[]): Promise<void> {
    await deadLetterUndecodable('correlator', bad, this.deps);
    for (const u of bad) this.tracker.done(u.topic, u.partition, u.offset);
    this.log.warn({ count: bad.length, first: bad[0]?.reason }, 'poison messages dead-lettered');
  }

  /**
   * Hands one output to the pipeline: its inserts start now, its publish is chained after the
   * previous output's publish (not after its own inserts: detectors see an event as soon as it is
   * resolved, so a finding does not wait for the storage batch), and its final step (done, close,
   * commit) after both its inserts and its publish, in output order. Resolves once there is room
   * for another output in flight.
   */
  private async enqueue(out: CorrelatorOutput, commitEvenIfEmpty = false): Promise<void> {
    if (!commitEvenIfEmpty && out.events.length === 0 && out.bindings.length === 0 && out.done.length === 0 && out.closedTasks.length === 0) return;
    this.guard.apply(out.events);
    const { store } = this.deps;
    const stored = Promise.all([
      out.events.length > 0 ? this.storeRows('store events', out.events, (rows) => store.insertEvents(rows), (e) => e.event_id) : undefined,
      out.bindings.length > 0
        ? this.storeRows('store bindings', out.bindings, (rows) => store.insertBindings(rows), (b) => b.credential_id)
        : undefined,
    ]).then(() => this.observeStored(out));
    const prevPublish = this.publishTail;
    const published = (this.publishTail = (async () => {
      await prevPublish.catch(() => undefined);
      return this.publish(out);
    })());
    const prev = this.tail;
    this.inFlight++;
    this.tail = (async () => {
      try {
        const [{ handled }] = await Promise.all([published, stored]);
        await prev;
        this.finishInOrder(out, handled);
      } catch (err) {
        // Only when stopping: the inputs stay uncommitted and are redelivered on the next start.
        this.log.warn({ err: errorMessage(err), events: out.events.length }, 'correlator output abandoned at shutdown');
      } finally {
        this.inFlight--;
        this.roomWaiters.shift()?.();
      }
    })();
    while (this.inFlight >= this.maxInFlight) await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
  }

  private observeStored(out: CorrelatorOutput): void {
    if (out.events.length === 0) return;
    const stored = Date.now();
    const lat = this.deps.metrics.histogram('runtrail_arrival_to_stored_seconds', 'Collector arrival to stored, seconds', [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]);
    for (const e of out.events) lat.observe((stored - e.ingested_at) / 1000);
  }

  /**
   * Publishes an output's timeline events and bindings. Returns, when the detector's handling is
   * tracked (`timelineHandled`), the promise that it handled everything published up to here.
   */
  private async publish(out: CorrelatorOutput): Promise<{ handled: Promise<void> | undefined }> {
    const { bus, metrics } = this.deps;
    if (out.events.length > 0) {
      // Re-keyed by task so every event of a task lands on one partition downstream.
      const messages = out.events.map((e) => ({ key: e.task_id || e.event_id, value: e }));
      await this.retrying('publish timeline', () => bus.publish(TOPIC.timeline, messages));
      metrics.counter('runtrail_events_out_total', 'Events produced, by stage').inc({ stage: 'correlator' }, out.events.length);
    }
    if (out.bindings.length > 0) {
      const messages = out.bindings.map((b) => ({ key: b.credential_id, value: b }));
      await this.retrying('publish bindings', () => bus.publish(TOPIC.bindings, messages));
    }
    // Wrapped: an async function returning a promise would wait for it here.
    const wait = out.closedTasks.length > 0 || (this.deps.commitAfterHandled === true && out.events.length > 0);
    return { handled: wait ? this.deps.timelineHandled?.() : undefined };
  }

  /** Chains an output's final part (after the detector handled it, when tracked) behind the previous one's. */
  private finishInOrder(out: CorrelatorOutput, handled: Promise<void> | undefined): void {
    const prev = this.finishTail;
    this.finishing++;
    this.finishTail = (async () => {
      try {
        await prev;
        if (handled && (await Promise.race([handled, this.giveUp])) === 'give-up') {
          // Shutting down and the detector did not get to these: left uncommitted, redelivered on restart.
          this.log.warn({ events: out.events.length }, 'detector did not handle correlator output before shutdown; inputs left uncommitted');
          return;
        }
        await this.finish(out);
      } finally {
        this.finishing--;
      }
    })();
  }

  /** Marks an output's inputs done, reports its closed tasks, and commits what is now contiguous. */
  private async finish(out: CorrelatorOutput): Promise<void> {
    for (const p of out.done) this.tracker.done(p.topic as TopicId, p.partition, p.offset);
    if (out.closedTasks.length > 0 && this.deps.onTasksClosed) {
      try {
        await this.deps.onTasksClosed(out.closedTasks);
      } catch (err) {
        this.log.error({ err: errorMessage(err), tasks: out.closedTasks.length }, 'close-time evaluation failed');
      }
    }
    if (out.closedTasks.length > 0 && this.deps.publishTaskCloses) {
      // Keyed by task id: on the task's partition, after the events this output and earlier ones
      // published for it (outputs finish in order). Retried until done or stopping; a marker lost
      // at shutdown costs the detector that task's close-time rules, never stored data.
      const markers = out.closedTasks.map((id) => ({ key: id, value: { control: 'task_closed' as const, task_id: id } }));
      await this.retrying('publish task closes', () => this.deps.bus.publish(TOPIC.timeline, markers)).catch((err: unknown) =>
        this.log.warn({ err: errorMessage(err), tasks: markers.length }, 'task-closed markers not published'),
      );
    }
    try {
      await this.commit();
    } catch (err) {
      // Harmless: the offsets are still marked done, the next output's commit carries them.
      this.log.warn({ err: errorMessage(err) }, 'offset commit failed; the next commit will carry it');
    }
  }

  private retrying(what: string, fn: () => Promise<void>): Promise<void> {
    return retryUntilStopped(fn, { what, baseMs: this.deps.retryBaseMs ?? 200, stopped: () => this.stopped, log: this.retryLog });
  }

  /** Stores rows; rows the store refuses for their content are dead-lettered (see {@link storeOrDeadLetter}). */
  private storeRows<T>(what: string, rows: readonly T[], insert: (rows: readonly T[]) => Promise<void>, key: (row: T) => string): Promise<void> {
    const retry = { baseMs: this.deps.retryBaseMs ?? 200, stopped: () => this.stopped, log: this.retryLog };
    return storeOrDeadLetter({ stage: 'correlator', topic: TOPIC.timeline, what, rows, insert, key, retry, deps: this.deps, log: this.log });
  }

  private async commit(): Promise<void> {
    const offsets = this.tracker.commitable();
    if (offsets.length > 0 && this.sub) {
      await this.sub.commit(offsets);
      this.tracker.committed(offsets);
    }
  }

  /** Waits until every output handed to the pipeline has been stored, published and committed. */
  async idle(): Promise<void> {
    while (this.inFlight > 0 || this.finishing > 0) await Promise.all([this.tail, this.finishTail]);
  }

  /** Outputs in the pipeline (not yet stored, published, handled downstream and committed). */
  get inFlightOutputs(): number {
    return this.inFlight + this.finishing;
  }

  /** Expires waiting events and idle tasks. */
  async tick(flushAll = false): Promise<void> {
    await this.mutex.run(async () => {
      const out = this.correlator.tick(this.deps.wallClock === false ? 0 : Date.now(), flushAll);
      await this.enqueue(out);
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
    const grace = this.deps.shutdownGraceMs ?? 10_000;
    // One promise from the start: outputs that began waiting before shutdown race against it too.
    setTimeout(() => this.resolveGiveUp('give-up'), grace).unref();
    // onRevoke (in the subscription's shutdown) lets the outputs in flight finish (failing ones are
    // abandoned now that `stopped` is set) and commits what they completed.
    await this.sub?.shutdown();
    await this.bindingsSub?.shutdown();
    await this.idle();
  }
}
