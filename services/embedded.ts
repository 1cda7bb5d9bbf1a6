import type { Config } from '../shared/config.ts';
import { startHttpServer, type HttpService } from '../shared/http.ts';
import type { Logger } from '../shared/logger.ts';
import { assertAccessConfigured } from './api/auth.ts';
import { httpSecurity, startApiServer } from './api/api-server.ts';
import { collectorRoutes } from './collector/collector-routes.ts';
import { RawTopicSource } from './collector/raw-topic-source.ts';
import { createPipeline, type Pipeline } from './pipeline.ts';

/** A running embedded server: the pipeline, the collectors' HTTP endpoints and the analyst API. */
export interface EmbeddedServer {
  pipeline: Pipeline;
  /** The collectors (`collector.host:collector.port`). */
  http: HttpService;
  /** The analyst API and the `/ui` page (`api.host:api.port`), on the pipeline's store. */
  api: HttpService;
  /** Stops accepting requests, then stops the pipeline (commits and flushes). Idempotent. */
  shutdown(): Promise<void>;
}

/** Starts the embedded mode (what `runtrail start` runs). */
export async function startEmbedded(cfg: Readonly<Config>, log: Logger): Promise<EmbeddedServer> {
  assertAccessConfigured(cfg.api, cfg.collector.host, 'collector');
  assertAccessConfigured(cfg.api, cfg.api.host, 'API');
  const pipeline = await createPipeline({ cfg, log, mode: 'live' });
  let http: HttpService | undefined;
  let api: HttpService;
  // With `kafka.brokers`, shippers may also write raw records to Kafka (`kafka.rawTopics`);
  // the config refuses raw topics without brokers, so the in-process bus never gets here.
  const raw = new RawTopicSource({ kafka: cfg.kafka, ingestor: pipeline.ingestor, bus: pipeline.bus, log, metrics: pipeline.metrics });
  const readiness = async () => {
    const storeOk = await pipeline.store.ping();
    return { ready: pipeline.bus.ready() && storeOk, checks: { bus: pipeline.bus.ready(), store: storeOk } };
  };
  try {
    http = await startHttpServer({
      host: cfg.collector.host,
      port: cfg.collector.port,
      routes: collectorRoutes({ cfg: cfg.collector, ingestor: pipeline.ingestor, log: log.child({ component: 'collector' }), metrics: pipeline.metrics }),
      log,
      metrics: pipeline.metrics,
      requestTimeoutMs: cfg.collector.requestTimeoutMs,
      readiness,
      ...httpSecurity(cfg, log, pipeline.metrics),
    });
    api = await startApiServer({ cfg, store: pipeline.store, log, metrics: pipeline.metrics, readiness });
    await raw.start();
  } catch (err) {
    await raw.shutdown();
    await http?.close();
    await pipeline.shutdown();
    throw err;
  }
  const collectorHttp = http;
  let stopped: Promise<void> | undefined;
  return {
    pipeline,
    http: collectorHttp,
    api,
    shutdown() {
      stopped ??= (async () => {
        await Promise.all([collectorHttp.close(), api.close(), raw.shutdown()]);
        await pipeline.shutdown();
      })();
      return stopped;
    },
  };
}
