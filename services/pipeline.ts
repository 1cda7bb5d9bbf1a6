import type { Bus } from '../shared/bus/bus.ts';
import { createBus } from '../shared/bus/create-bus.ts';
import type { Config } from '../shared/config.ts';
import type { Logger } from '../shared/logger.ts';
import { MetricsRegistry } from '../shared/metrics.ts';
import { createDetectorEngine, loadPolicy } from '../detectors/policy.ts';
import { Ingestor } from './collector/ingest.ts';
import { CorrelatorStage } from './correlator/correlator-stage.ts';
import { DetectorStage } from './detector/detector-stage.ts';
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

/** A running pipeline. */
export interface Pipeline {
  bus: Bus;
  store: Store;
  ingestor: Ingestor;
  correlator: CorrelatorStage;
  detector: DetectorStage;
  metrics: MetricsRegistry;
  /** Waits until everything published so far is correlated, stored and evaluated; `final` expires all pending. */
  drain(final: boolean): Promise<void>;
  /** Graceful stop: stop consuming, commit, flush storage. Idempotent. */
  shutdown(): Promise<void>;
}

/** Builds and starts the pipeline. */
export async function createPipeline(opts: PipelineOptions): Promise<Pipeline> {
  const { cfg, log } = opts;
  const metrics = opts.metrics ?? new MetricsRegistry();
  const store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, metrics);
  await store.start();
  const bus = createBus(cfg, log, metrics, { durable: opts.mode === 'live', forceLocal: opts.mode === 'replay' });
  await bus.start();
  const engine = createDetectorEngine(loadPolicy(cfg.policyFile), { ...cfg.engine, maxTasks: Math.min(cfg.correlator.maxOpenTasks, cfg.engine.maxTasks) });
  const detector = new DetectorStage({ bus, store, engine, log, metrics });
  const correlator = new CorrelatorStage({
    bus,
    store,
    cfg: cfg.correlator,
    log,
    metrics,
    wallClock: opts.mode === 'live',
    onTasksClosed: (ids) => detector.closeTasks(ids),
  });
  await detector.start();
  await correlator.start();
  const ingestor = new Ingestor(bus, metrics);

  async function waitIdle(): Promise<void> {
    // A subscription's position advances only after its batch is handled, so lag 0 means handled.
    for (;;) {
      const [cl, dl] = await Promise.all([correlator.lag(), detector.lag()]);
      if (cl === 0 && dl === 0) {
        await sleep(20);
        const [cl2, dl2] = await Promise.all([correlator.lag(), detector.lag()]);
        if (cl2 === 0 && dl2 === 0) return;
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
    metrics,
    async drain(final: boolean) {
      await waitIdle();
      if (final) {
        await correlator.tick(true);
        await waitIdle();
      }
    },
    shutdown() {
      stopped ??= (async () => {
        await correlator.shutdown();
        await detector.shutdown();
        await bus.shutdown();
        await store.shutdown();
      })();
      return stopped;
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
