import { readFile } from 'node:fs/promises';
import type { Config } from '../../shared/config.ts';
import { sendJson, startHttpServer, type HttpService, type Readiness, type Route } from '../../shared/http.ts';
import type { Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import type { Store } from '../storage/store.ts';
import { assertAccessConfigured, createGuard } from './auth.ts';
import { openApiDocument } from './openapi.ts';
import { AnalystQueries } from './queries.ts';
import { apiRoutes } from './routes.ts';

/**
 * The analyst API server: `/v1/...` (JSON), `/v1/openapi.json`, and the timeline page under
 * `/ui`. Used by the distributed `api` service and, on the same store as the pipeline, by the
 * embedded server.
 */

/** Static files of the timeline page: URL path -> file and content type. */
const UI_FILES: Readonly<Record<string, { file: string; type: string }>> = {
  '/ui': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/ui/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/ui/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/ui/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

/** Routes serving the page's static files. Public: they hold no data; every data call needs a token. */
export function uiRoutes(): Route[] {
  return Object.entries(UI_FILES).map(([path, f]) => ({
    method: 'GET' as const,
    path,
    public: true,
    handler: async (_req, res) => {
      const body = await readFile(new URL(`./ui/${f.file}`, import.meta.url));
      res.writeHead(200, {
        'content-type': f.type,
        'content-length': body.length,
        'cache-control': 'no-cache',
        // The page loads only its own files and talks only to this server.
        'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
        'x-content-type-options': 'nosniff',
      });
      res.end(body);
    },
  }));
}

/** Options for {@link startApiServer}. */
export interface ApiServerOptions {
  cfg: Readonly<Config>;
  store: Store;
  log: Logger;
  metrics: MetricsRegistry;
  readiness: () => Promise<Readiness>;
}

/** Every route of the API server. */
export function apiServerRoutes(cfg: Readonly<Config>, store: Store): Route[] {
  const queries = new AnalystQueries(
    store,
    { defaultPageSize: Math.min(50, cfg.api.maxPageSize), maxPageSize: cfg.api.maxPageSize, maxTimelineEvents: cfg.api.maxTimelineEvents },
    { maxRows: cfg.api.sqlMaxRows, maxSeconds: cfg.api.sqlMaxSeconds },
  );
  const doc = openApiDocument();
  return [
    ...apiRoutes(queries),
    { method: 'GET', path: '/v1/openapi.json', public: true, handler: async (_req, res) => sendJson(res, 200, doc) },
    ...uiRoutes(),
  ];
}

/**
 * Starts the API on `api.host:api.port`. Refuses (ConfigError) to listen beyond loopback without
 * tokens.
 */
export async function startApiServer(opts: ApiServerOptions): Promise<HttpService> {
  const { cfg, log, metrics } = opts;
  assertAccessConfigured(cfg.api, cfg.api.host, 'API');
  const alog = log.child({ component: 'api' });
  const http = await startHttpServer({
    host: cfg.api.host,
    port: cfg.api.port,
    routes: apiServerRoutes(cfg, opts.store),
    log: alog,
    metrics,
    requestTimeoutMs: cfg.collector.requestTimeoutMs,
    readiness: opts.readiness,
    ...httpSecurity(cfg, alog, metrics),
  });
  alog.info({ url: http.url, tokens: cfg.api.tokens.length }, 'API listening');
  return http;
}

/** Guard, CORS and TLS options shared by the API and the collector servers. */
export function httpSecurity(cfg: Readonly<Config>, log: Logger, metrics: MetricsRegistry): Pick<Parameters<typeof startHttpServer>[0], 'guard' | 'corsOrigins' | 'tls'> {
  const { tlsCertFile, tlsKeyFile } = cfg.api;
  return {
    guard: createGuard(cfg.api, log, metrics),
    corsOrigins: cfg.api.corsOrigins,
    ...(tlsCertFile !== undefined && tlsKeyFile !== undefined ? { tls: { certFile: tlsCertFile, keyFile: tlsKeyFile } } : {}),
  };
}
