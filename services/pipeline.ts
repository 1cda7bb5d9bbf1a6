import { sleep } from '../shared/sleep.ts';
import type { Bus } from '../shared/bus/bus.ts';
import { createBus } from '../shared/bus/create-bus.ts';
import { LocalBus } from '../shared/bus/local-bus.ts';
import type { Config } from '../shared/config.ts';
import type { Logger } from '../shared/logger.ts';
import { MetricsRegistry } from '../shared/metrics.ts';
import { GROUP, TOPIC } from '../shared/names.ts';
import type { DetectorEngine } from '../detectors/engine.ts';
import { loadPolicy } from '../detectors/policy.ts';
import { redactionOptions } from '../shared/redaction-key.ts';
import { alerterWanted, createAlerterStage, type AlerterStage } from './alerter/index.ts';
import { setEventValidation } from './collector/adapters/adapter.ts';
import { Ingestor } from './collector/ingest.ts';
import { defaultParseWorkers } from './collector/parse-pool.ts';
import { CorrelatorStage } from './correlator/correlator-stage.ts';
import type { DetectorStage } from './detector/detector-stage.ts';
import { detectorFromConfig } from './detector/detector-from-config.ts';
import { ClickHouseStore, type Store } from './storage/store.ts';

/**
 * Assembles the stages of the embedded pipeline (also used by `runtrail replay` and the
 * benchmark): in-process bus, ClickHouse store, correlator and detector stages, and the ingestor
 * the collectors feed. Each stage only knows the Bus and Store interfaces.
 */

/** Options for {@link createPipeline}. */
export interface PipelineOptions {
  cfg: Readonly<Config>;
  log: Logger;
  metrics?: MetricsRegistry;
  /**
   * `live`: durable write-ahead log, wall-clock grace bound (a running server).
   * `replay`: input files are the source of truth, so no log; event time only.
   */
  mode: 'live' | 'replay';
}

/** Options for {@link Pipeline.drain}. */
export interface DrainOptions {
  /** Also wait until the alerter has delivered what is due (default true). */
  alerts?: boolean;
}

/** A running pipeline. */
export interface Pipeline {
  bus: Bus;
  store: Store;
  ingestor: Ingestor;
  correlator: CorrelatorStage;
  detector: DetectorStage;
  /** The alerter stage; absent when alerting is off (and in replay mode without configured channels). */
  alerter?: AlerterStage;
  /** The detector stage's engine (for its memory figures). */
  engine: DetectorEngine;
  metrics: MetricsRegistry;
  /** Waits until everything published so far is correlated, stored and evaluated; `final` expires all pending. */
  drain(final: boolean, opts?: DrainOptions): Promise<void>;
  /** Graceful stop: stop consuming, commit, flush storage. Idempotent. */
  shutdown(): Promise<void>;
}

/** Builds and starts the pipeline. */
export async function createPipeline(opts: PipelineOptions): Promise<Pipeline> {
  const { cfg, log } = opts;
  const metrics = opts.metrics ?? new MetricsRegistry();
  // Process-wide: the adapters that feed this pipeline run in this process.
  setEventValidation(cfg.collector.eventValidation);
  const store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, metrics);
  await store.start();
  const bus = createBus(cfg, log, metrics, { durable: opts.mode === 'live', forceLocal: opts.mode === 'replay' });
  // The in-process bus can say what the detector has handled; Kafka (embedded with `kafka.brokers`) cannot.
  const localBus = bus instanceof LocalBus ? bus : undefined;
  // With a write-ahead log, the timeline can stay in memory: the correlator then commits its input
  // only once the detector has committed what came of it (see `bus.timelineInMemory`).
  const timelineInMemory = localBus !== undefined && opts.mode === 'live' && cfg.bus.durable && cfg.bus.timelineInMemory;
  if (timelineInMemory) localBus?.keepInMemoryOnly(TOPIC.timeline);
  await bus.start();
  const policy = loadPolicy(cfg.policyFile);
  // Read (or made) once: the collector redacts with it, detectors match through its markers.
  const redaction = redactionOptions(cfg, policy.redaction);
  const { engine, stage: detector } = detectorFromConfig(cfg, policy, { bus, store, log, metrics }, redaction, { learnHistory: opts.mode === 'live' });
  const correlator = new CorrelatorStage({
    bus,
    store,
    cfg: cfg.correlator,
    log,
    metrics,
    wallClock: opts.mode === 'live',
    // On the LocalBus closes wait until the detector has handled the task's events, and with the
    // timeline in memory so does every commit of the correlator's input. On Kafka the task-closed
    // marker behind the task's events orders the close instead.
    onTasksClosed: localBus ? (ids) => detector.closeTasks(ids) : undefined,
    timelineHandled: localBus ? () => localBus.whenCommitted(GROUP.detector, TOPIC.timeline, localBus.endOffset(TOPIC.timeline)) : undefined,
    commitAfterHandled: timelineInMemory,
    publishTaskCloses: !localBus,
  });
  const alerter = alerterWanted(cfg, opts.mode === 'live' ? 'embedded' : 'replay')
    ? createAlerterStage({ cfg, mode: opts.mode === 'live' ? 'embedded' : 'replay', bus, store, log, metrics })
    : undefined;
  await alerter?.start();
  await detector.start();
  await correlator.start();
  // Parse workers pay off when the bus writes their serialized lines to its log (live mode).
  const ingestor = new Ingestor(bus, metrics, {
    parseWorkers: opts.mode === 'live' ? (cfg.collector.parseWorkers ?? defaultParseWorkers()) : 0,
    redaction,
    maxEventBytes: cfg.collector.maxEventBytes,
  });
  ingestor.start();

  async function waitIdle(alerts: boolean): Promise<void> {
    // A subscription's position advances once its batch is handed over; the correlator's outputs
    // may still be on their way to storage then, so its pipeline must be empty as well.
    const busy = async (): Promise<boolean> => {
      const a = alerts ? alerter : undefined;
      const [cl, dl, al] = await Promise.all([correlator.lag(), detector.lag(), a?.lag() ?? 0]);
      return cl > 0 || dl > 0 || al > 0 || correlator.inFlightOutputs > 0 || detector.inFlightBatches > 0 || (a !== undefined && !a.idle());
    };
    for (;;) {
      if (!(await busy())) {
        await sleep(20);
        if (!(await busy())) return;
      }
      await sleep(10);
    }
  }

  let stopped: Promise<void> | undefined;
  return {
    bus,
    store,
    ingestor,
    correlator,
    detector,
    alerter,
    engine,
    metrics,
    async drain(final: boolean, opts: DrainOptions = {}) {
      const alerts = opts.alerts ?? true;
      await waitIdle(alerts);
      if (final) {
        await correlator.tick(true);
        await waitIdle(alerts);
      }
    },
    shutdown() {
      stopped ??= (async () => {
        await ingestor.shutdown();
        await correlator.shutdown();
        await detector.shutdown();
        await alerter?.shutdown();
        await bus.shutdown();
        await store.shutdown();
      })();
      return stopped;
    },
  };
}
