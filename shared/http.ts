import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { ApiRole } from './config.ts';
import { AccessError, RequestError } from './errors.ts';
import type { Logger } from './logger.ts';
import type { MetricsRegistry } from './metrics.ts';

/**
 * The small HTTP server every Runtrail service uses: its own routes plus `/healthz` (liveness),
 * `/readyz` (readiness: dependencies reachable, not shutting down) and `/metrics` (Prometheus).
 */

/** A route handler; it writes the response itself. `params` holds `:name` path segments. */
export type RouteHandler = (req: IncomingMessage, res: ServerResponse, params: Readonly<Record<string, string>>) => Promise<void>;

/** A route: method + path; segments written `:name` match any one segment. */
export interface Route {
  method: 'GET' | 'POST';
  path: string;
  handler: RouteHandler;
  /**
   * Role a caller needs when the server has a {@link HttpServerOptions.guard} (`admin` passes
   * every check). Unset = `admin`. Ignored when `public` is true.
   */
  role?: ApiRole;
  /** Served without a token (static assets holding no data, the OpenAPI document). */
  public?: boolean;
}

/** Access control run before every non-public route; throws {@link AccessError} to refuse. */
export type RouteGuard = (req: IncomingMessage, route: Route) => void;

/** Readiness check result. */
export interface Readiness {
  ready: boolean;
  checks: Record<string, boolean | number | string>;
}

/** Options for {@link startHttpServer}. */
export interface HttpServerOptions {
  host: string;
  port: number;
  routes: readonly Route[];
  log: Logger;
  metrics: MetricsRegistry;
  readiness: () => Promise<Readiness> | Readiness;
  /** Request timeout, ms. */
  requestTimeoutMs?: number;
  /** Access control for routes; none = every route is open (loopback development). */
  guard?: RouteGuard;
  /** Origins allowed by CORS (exact, or `*`); empty or unset = no CORS headers at all. */
  corsOrigins?: readonly string[];
  /** PEM files: serve HTTPS instead of HTTP. */
  tls?: { certFile: string; keyFile: string };
}

/** A running HTTP server. */
export interface HttpService {
  readonly server: Server;
  /** Bound port (useful when configured as 0). */
  readonly port: number;
  readonly url: string;
  /** Stops accepting connections, waits for in-flight requests. Idempotent. */
  close(): Promise<void>;
}

/** Writes a JSON response. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Starts the server; resolves once it listens. */
export async function startHttpServer(opts: HttpServerOptions): Promise<HttpService> {
  const requests = opts.metrics.counter('runtrail_http_requests_total', 'HTTP requests, by path and status');
  const byPath = new Map<string, Route[]>();
  const patterns: Array<{ parts: string[]; routes: Route[] }> = [];
  for (const r of opts.routes) {
    if (r.path.includes('/:')) {
      const parts = r.path.split('/');
      const existing = patterns.find((p) => p.parts.join('/') === parts.join('/'));
      if (existing) existing.routes.push(r);
      else patterns.push({ parts, routes: [r] });
      continue;
    }
    const list = byPath.get(r.path) ?? [];
    list.push(r);
    byPath.set(r.path, list);
  }
  /** Finds the routes for a path and the values of its `:name` segments. */
  function match(path: string): { routes: Route[]; params: Record<string, string>; label: string } | undefined {
    const exact = byPath.get(path);
    if (exact) return { routes: exact, params: {}, label: path };
    const segs = path.split('/');
    for (const p of patterns) {
      if (p.parts.length !== segs.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < segs.length && ok; i++) {
        const want = p.parts[i] as string;
        const got = segs[i] as string;
        if (want.startsWith(':')) {
          if (got === '') ok = false;
          else params[want.slice(1)] = decodeSegment(got);
        } else if (want !== got) ok = false;
      }
      if (ok) return { routes: p.routes, params, label: p.parts.join('/') };
    }
    return undefined;
  }
  /** Metrics label of a path: its route pattern, never the raw path (bounded label values). */
  function label(path: string): string {
    try {
      return match(path)?.label ?? (isBuiltin(path) ? path : 'other');
    } catch {
      return 'other';
    }
  }
  // Standard process metrics, so a scrape shows whether memory stays bounded under lag.
  opts.metrics.gauge('process_resident_memory_bytes', 'Resident memory size in bytes.').collect(() => process.memoryUsage.rss());
  opts.metrics.gauge('nodejs_heap_used_bytes', 'V8 heap in use, bytes.').collect(() => process.memoryUsage().heapUsed);
  let closing = false;
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    res.on('finish', () => requests.inc({ path: label(path), status: String(res.statusCode) }));
    void handle(path, req, res);
  };
  const server: Server = opts.tls
    ? createTlsServer({ cert: readFileSync(opts.tls.certFile), key: readFileSync(opts.tls.keyFile) }, onRequest)
    : createServer(onRequest);
  const cors = opts.corsOrigins ?? [];
  /** Adds CORS headers for an allowed origin; true when the request was a preflight (answered). */
  function applyCors(req: IncomingMessage, res: ServerResponse): boolean {
    const origin = req.headers.origin;
    if (cors.length === 0 || origin === undefined) return false;
    if (!cors.includes('*') && !cors.includes(origin)) return false;
    res.setHeader('access-control-allow-origin', cors.includes('*') ? '*' : origin);
    res.setHeader('vary', 'Origin');
    if (req.method !== 'OPTIONS') return false;
    res.writeHead(204, {
      'access-control-allow-methods': 'GET, POST',
      'access-control-allow-headers': 'authorization, content-type, content-encoding',
      'access-control-max-age': '600',
    });
    res.end();
    return true;
  }
  async function handle(path: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      // Closing: no keep-alive, so the client's next request goes elsewhere and the socket ends.
      if (closing) res.setHeader('connection', 'close');
      if (applyCors(req, res)) return;
      if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { status: 'ok' });
      if (req.method === 'GET' && path === '/readyz') {
        const r = closing ? { ready: false, checks: { shutting_down: true } } : await opts.readiness();
        return sendJson(res, r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', checks: r.checks });
      }
      if (req.method === 'GET' && path === '/metrics') {
        const text = opts.metrics.render();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        res.end(text);
        return;
      }
      const found = match(path);
      if (!found) return sendJson(res, 404, { error: 'not_found', message: `no endpoint ${path}` });
      const { routes, params } = found;
      const route = routes.find((r) => r.method === req.method);
      if (!route) {
        return sendJson(res, 405, { error: 'method_not_allowed', message: `${path} accepts ${routes.map((r) => r.method).join(', ')}` }, { allow: routes.map((r) => r.method).join(', ') });
      }
      if (closing) return sendJson(res, 503, { error: 'shutting_down', message: 'server is shutting down; retry on another instance' }, { 'retry-after': '5' });
      if (opts.guard && route.public !== true) opts.guard(req, route);
      await route.handler(req, res, params);
    } catch (err) {
      if (err instanceof AccessError && !res.headersSent) {
        const headers: Record<string, string> = {};
        if (err.status === 401) headers['www-authenticate'] = 'Bearer realm="runtrail"';
        if (err.retryAfterS !== undefined) headers['retry-after'] = String(err.retryAfterS);
        req.resume();
        return sendJson(res, err.status, { error: err.code, message: err.message }, headers);
      }
      if (err instanceof RequestError && !res.headersSent) return sendJson(res, 400, { error: err.code, message: err.message });
      opts.log.error({ err, path }, 'request handler failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal', message: 'internal error; see server logs' });
      else res.destroy();
    }
  }
  server.requestTimeout = opts.requestTimeoutMs ?? 30_000;
  // Node enforces the larger of the two (it swaps them when headers > request): keep the headers
  // deadline within the request's, or a body could take 60 s whatever requestTimeoutMs says.
  server.headersTimeout = Math.min(server.headersTimeout, server.requestTimeout);
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  let closed: Promise<void> | undefined;
  return {
    server,
    port,
    url: `${opts.tls ? 'https' : 'http'}://${hostForUrl === '0.0.0.0' ? '127.0.0.1' : hostForUrl}:${port}`,
    close() {
      closing = true;
      closed ??= new Promise<void>((resolve) => {
        // server.close() stops Node's request-timeout checks: a stalled upload, or a keep-alive
        // socket whose request was in flight, would hold the close (and the flush behind it) open
        // for ever. Idle sockets are closed as their requests finish; whatever is left after the
        // request timeout is cut.
        const sweep = setInterval(() => server.closeIdleConnections(), 100);
        const deadline = setTimeout(() => server.closeAllConnections(), server.requestTimeout + 1000);
        server.close(() => {
          clearInterval(sweep);
          clearTimeout(deadline);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closed;
    },
  };
}

/** A `:name` path segment, percent-decoded; a malformed escape is the client's fault (400). */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new RequestError(`path segment "${segment.slice(0, 100)}" is not valid percent-encoding`);
  }
}

function isBuiltin(path: string): boolean {
  return path === '/healthz' || path === '/readyz' || path === '/metrics';
}
