import type { Bus } from '../shared/bus/bus.ts';
import { createBus } from '../shared/bus/create-bus.ts';
import type { Config } from '../shared/config.ts';
import { startHttpServer, type HttpService, type Readiness, type Route } from '../shared/http.ts';
import type { Logger } from '../shared/logger.ts';
import { MetricsRegistry } from '../shared/metrics.ts';
import { redactionOptions } from '../shared/redaction-key.ts';
import { loadPolicy } from '../detectors/policy.ts';
import { startApiServer, httpSecurity } from './api/api-server.ts';
import { assertAccessConfigured } from './api/auth.ts';
import { createAlerterStage } from './alerter/index.ts';
import { collectorRoutes } from './collector/collector-routes.ts';
import { Ingestor } from './collector/ingest.ts';
import { RawTopicSource } from './collector/raw-topic-source.ts';
import { CorrelatorStage } from './correlator/correlator-stage.ts';
import { detectorFromConfig } from './detector/detector-from-config.ts';
import { ClickHouseStore, type Store } from './storage/store.ts';

/**
 * The distributed-mode services, one per process (`runtrail collector|correlator|detector|alerter|
 * api`). Each builds only what it needs from the shared stages, exposes `/healthz`, `/readyz` and
 * `/metrics`, and shuts down in order: stop taking work, commit, flush storage, close the bus.
 */

/** A running service. */
export interface RunningService {
  name: string;
  http: HttpService;
  bus?: Bus;
  store?: Store;
  /** Graceful, idempotent shutdown. */
  shutdown(): Promise<void>;
}

/** Service names. */
export const SERVICE_NAMES = ['collector', 'correlator', 'detector', 'alerter', 'api'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

interface Parts {
  bus?: Bus;
  store?: Store;
  routes?: Route[];
  readiness?: () => Promise<Readiness>;
  stop: () => Promise<void>;
}

async function withHttp(name: ServiceName, cfg: Readonly<Config>, log: Logger, metrics: MetricsRegistry, parts: Parts, host: string, port: number): Promise<RunningService> {
  const http = await startHttpServer({
    ...(name === 'collector' ? httpSecurity(cfg, log, metrics) : {}),
    host,
    port,
    routes: parts.routes ?? [],
    log,
    metrics,
    requestTimeoutMs: cfg.collector.requestTimeoutMs,
    readiness: async () => {
      if (parts.readiness) return parts.readiness();
      const busOk = parts.bus ? parts.bus.ready() : true;
      const storeOk = parts.store ? await parts.store.ping() : true;
      return { ready: busOk && storeOk, checks: { bus: busOk, store: storeOk } };
    },
  });
  log.info({ service: name, url: http.url }, 'service listening');
  let stopped: Promise<void> | undefined;
  return {
    name,
    http,
    bus: parts.bus,
    store: parts.store,
    shutdown() {
      stopped ??= (async () => {
        await http.close();
        await parts.stop();
        log.info({ service: name }, 'service stopped');
      })();
      return stopped;
    },
  };
}

async function openStore(cfg: Readonly<Config>, log: Logger, metrics: MetricsRegistry): Promise<Store> {
  const store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, metrics);
  await store.start();
  return store;
}

/** Collector: HTTP ingest onto the bus. Needs no storage: acknowledged = on the bus. */
export async function startCollectorService(cfg: Readonly<Config>, log: Logger): Promise<RunningService> {
  assertAccessConfigured(cfg.api, cfg.collector.host, 'collector');
  const metrics = new MetricsRegistry();
  const bus = createBus(cfg, log, metrics, { durable: true });
  await bus.start();
  const ingestor = new Ingestor(bus, metrics, { redaction: redactionOptions(cfg, loadPolicy(cfg.policyFile).redaction), maxEventBytes: cfg.collector.maxEventBytes });
  const routes = collectorRoutes({ cfg: cfg.collector, ingestor, log: log.child({ component: 'collector' }), metrics });
  // Shippers that write their records straight to Kafka (kafka.rawTopics; none by default).
  const raw = new RawTopicSource({ kafka: cfg.kafka, ingestor, bus, log, metrics });
  await raw.start();
  const stop = async (): Promise<void> => {
    await raw.shutdown();
    await bus.shutdown();
  };
  return withHttp('collector', cfg, log, metrics, { bus, routes, stop }, cfg.collector.host, cfg.collector.port);
}

/**
 * Exports a stage's consumer lag as `runtrail_consumer_lag_messages{stage}`, refreshed every 5 s
 * (a lag query may cost a broker round trip, so not on every scrape). Returns the timer to clear.
 */
function exportLag(metrics: MetricsRegistry, stage: string, lag: () => Promise<number>): NodeJS.Timeout {
  let last = 0;
  metrics.gauge('runtrail_consumer_lag_messages', 'Messages not yet consumed, by stage').collect(() => [[{ stage }, last]]);
  // A failed query (broker unreachable) keeps the last figure rather than rejecting unhandled.
  const timer = setInterval(() => void lag().then((n) => (last = n), () => undefined), 5000);
  timer.unref();
  return timer;
}

/** Correlator: ingest topics -> task timelines in storage and on the timeline topic. */
export async function startCorrelatorService(cfg: Readonly<Config>, log: Logger): Promise<RunningService> {
  const metrics = new MetricsRegistry();
  const store = await openStore(cfg, log, metrics);
  const bus = createBus(cfg, log, metrics, { durable: true });
  await bus.start();
  // The detector service learns of task closes from markers on the timeline topic.
  const stage = new CorrelatorStage({ bus, store, cfg: cfg.correlator, log, metrics, wallClock: true, publishTaskCloses: true });
  await stage.start();
  const lagTimer = exportLag(metrics, 'correlator', () => stage.lag());
  return withHttp('correlator', cfg, log, metrics, {
    bus,
    store,
    stop: async () => {
      clearInterval(lagTimer);
      await stage.shutdown();
      await bus.shutdown();
      await store.shutdown();
    },
  }, cfg.service.healthHost, cfg.service.healthPort);
}

/** Detector: timeline topic -> findings in storage and on the findings topic. */
export async function startDetectorService(cfg: Readonly<Config>, log: Logger): Promise<RunningService> {
  const metrics = new MetricsRegistry();
  const store = await openStore(cfg, log, metrics);
  const bus = createBus(cfg, log, metrics, { durable: true });
  await bus.start();
  const policy = loadPolicy(cfg.policyFile);
  const { stage } = detectorFromConfig(cfg, policy, { bus, store, log, metrics }, redactionOptions(cfg, policy.redaction), { learnHistory: true });
  await stage.start();
  const lagTimer = exportLag(metrics, 'detector', () => stage.lag());
  return withHttp('detector', cfg, log, metrics, {
    bus,
    store,
    stop: async () => {
      clearInterval(lagTimer);
      await stage.shutdown();
      await bus.shutdown();
      await store.shutdown();
    },
  }, cfg.service.healthHost, cfg.service.healthPort);
}

/** Alerter: findings topic -> incidents -> channels (see `services/alerter/`). */
export async function startAlerterService(cfg: Readonly<Config>, log: Logger, out?: (line: string) => void): Promise<RunningService> {
  const metrics = new MetricsRegistry();
  const store = await openStore(cfg, log, metrics);
  const bus = createBus(cfg, log, metrics, { durable: true });
  await bus.start();
  const stage = createAlerterStage({ cfg, mode: 'distributed', bus, store, log, metrics, stdout: out });
  await stage.start();
  return withHttp('alerter', cfg, log, metrics, {
    bus,
    store,
    stop: async () => {
      await stage.shutdown();
      await bus.shutdown();
      await store.shutdown();
    },
  }, cfg.service.healthHost, cfg.service.healthPort);
}

/** API: analysts' read access (`services/api/`), on `api.host:api.port`, with `/healthz` `/readyz` `/metrics`. */
export async function startApiService(cfg: Readonly<Config>, log: Logger): Promise<RunningService> {
  const metrics = new MetricsRegistry();
  const store = await openStore(cfg, log, metrics);
  const readiness = async (): Promise<Readiness> => {
    const ok = await store.ping();
    return { ready: ok, checks: { store: ok } };
  };
  let http: HttpService;
  try {
    http = await startApiServer({ cfg, store, log, metrics, readiness });
  } catch (err) {
    await store.shutdown();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    name: 'api',
    http,
    store,
    shutdown() {
      stopped ??= (async () => {
        await http.close();
        await store.shutdown();
        log.info({ service: 'api' }, 'service stopped');
      })();
      return stopped;
    },
  };
}

/** Starts a service by name. */
export function startService(name: ServiceName, cfg: Readonly<Config>, log: Logger): Promise<RunningService> {
  switch (name) {
    case 'collector':
      return startCollectorService(cfg, log);
    case 'correlator':
      return startCorrelatorService(cfg, log);
    case 'detector':
      return startDetectorService(cfg, log);
    case 'alerter':
      return startAlerterService(cfg, log);
    case 'api':
      return startApiService(cfg, log);
  }
}
