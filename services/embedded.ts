import type { Config } from '../shared/config.ts';
import { startHttpServer, type HttpService } from '../shared/http.ts';
import type { Logger } from '../shared/logger.ts';
import { collectorRoutes } from './collector/collector-routes.ts';
import { createPipeline, type Pipeline } from './pipeline.ts';

/** A running embedded server: the pipeline plus the collectors' HTTP endpoints. */
export interface EmbeddedServer {
  pipeline: Pipeline;
  http: HttpService;
  /** Stops accepting requests, then stops the pipeline (commits and flushes). Idempotent. */
  shutdown(): Promise<void>;
}

/** Starts the embedded mode (what `runtrail start` runs). */
export async function startEmbedded(cfg: Readonly<Config>, log: Logger): Promise<EmbeddedServer> {
  const pipeline = await createPipeline({ cfg, log, mode: 'live' });
  let http: HttpService;
  try {
    http = await startHttpServer({
      host: cfg.collector.host,
      port: cfg.collector.port,
      routes: collectorRoutes({ cfg: cfg.collector, ingestor: pipeline.ingestor, log: log.child({ component: 'collector' }), metrics: pipeline.metrics }),
      log,
      metrics: pipeline.metrics,
      requestTimeoutMs: cfg.collector.requestTimeoutMs,
      readiness: async () => {
        const storeOk = await pipeline.store.ping();
        return { ready: pipeline.bus.ready() && storeOk, checks: { bus: pipeline.bus.ready(), store: storeOk } };
      },
    });
  } catch (err) {
    await pipeline.shutdown();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    pipeline,
    http,
    shutdown() {
      stopped ??= (async () => {
        await http.close();
        await pipeline.shutdown();
      })();
      return stopped;
    },
  };
}
