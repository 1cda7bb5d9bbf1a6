import type { IncomingMessage, ServerResponse } from 'node:http';
import { gunzip, inflate, brotliDecompress, type ZlibOptions } from 'node:zlib';
import { promisify } from 'node:util';
import type { Config } from '../../shared/config.ts';
import { BackpressureError, BodyError, RuntrailError, TooLargeError, UnsupportedFormatError, errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { sendJson, type Route } from '../../shared/http.ts';
import type { IngestFormat } from '../../shared/event.ts';
import type { Adapter } from './adapters/adapter.ts';
import { ADAPTERS } from './adapters/index.ts';
import type { IngestResult, Ingestor } from './ingest.ts';

const gunzipAsync = promisify<Buffer, ZlibOptions, Buffer>(gunzip);
const inflateAsync = promisify<Buffer, ZlibOptions, Buffer>(inflate);
const brotliAsync = promisify<Buffer, ZlibOptions, Buffer>(brotliDecompress);

/** Ingest endpoints and the format each accepts. */
export const INGEST_ENDPOINTS: Readonly<Record<string, IngestFormat>> = Object.freeze({
  '/v1/traces': 'otlp-traces',
  '/v1/logs': 'otlp-logs',
  '/v1/ingest/cloudtrail': 'cloudtrail',
  '/v1/ingest/vault': 'vault',
  '/v1/ingest/k8s-audit': 'k8s-audit',
  '/v1/ingest/falco': 'falco',
  '/v1/ingest/spire': 'spire',
  '/v1/events': 'runtrail',
});

/** Dependencies of the collector routes. */
export interface CollectorDeps {
  cfg: Config['collector'];
  ingestor: Ingestor;
  log: Logger;
  metrics: MetricsRegistry;
}

/**
 * Bytes of request bodies in progress (on the wire and decompressed), across the collector's
 * requests, bounded by `collector.maxInflightBytes`: many large bodies at once would otherwise
 * hold memory without limit. A request takes its declared `Content-Length` when it starts, and
 * whatever more it turns out to need (a chunked body, the decompressed body) as it goes. Over the
 * bound it is refused with 503 + Retry-After, unless no other request holds anything, so a body
 * larger than the bound alone still gets through.
 */
export class InflightBudget {
  private used = 0;

  constructor(private readonly max: number) {}

  /** Takes `n` more bytes for a request that holds `own` already, or throws a {@link BackpressureError}. */
  reserve(n: number, own: number, retryAfterS: number): void {
    if (this.used - own > 0 && this.used + n > this.max) {
      throw new BackpressureError(`the collector holds ${this.used} bytes of request bodies in progress (collector.maxInflightBytes ${this.max}); retry shortly`, retryAfterS);
    }
    this.used += n;
  }

  release(n: number): void {
    this.used = Math.max(0, this.used - n);
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.used;
  }
}

/**
 * Reads a request body, refusing more than `limit` bytes on the wire. `onChunk` sees each chunk's
 * size first and may refuse it by throwing (the in-flight budget).
 */
export function readBody(req: IncomingMessage, limit: number, onChunk?: (bytes: number) => void): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      reject(new TooLargeError(`body of ${declared} bytes exceeds the limit of ${limit} bytes (collector.maxBodyBytes)`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > limit) {
        failed = true;
        req.resume();
        reject(new TooLargeError(`body exceeds the limit of ${limit} bytes (collector.maxBodyBytes)`));
        return;
      }
      try {
        onChunk?.(c.length);
      } catch (err) {
        failed = true;
        req.resume();
        reject(err);
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks, size));
    });
    req.on('error', (err) => {
      if (!failed) reject(new BodyError(`request body could not be read: ${err.message}`, err));
    });
  });
}

/** Decompresses per Content-Encoding, bounded by `limit` bytes of output (decompression-bomb guard). */
export async function decodeContent(body: Buffer, encoding: string | undefined, limit: number): Promise<Buffer> {
  const enc = (encoding ?? 'identity').trim().toLowerCase();
  const opts: ZlibOptions = { maxOutputLength: limit };
  try {
    switch (enc) {
      case '':
      case 'identity':
        return body;
      case 'gzip':
      case 'x-gzip':
        return await gunzipAsync(body, opts);
      case 'deflate':
        return await inflateAsync(body, opts);
      case 'br':
        return await brotliAsync(body, opts);
      default:
        throw new UnsupportedFormatError(`unsupported Content-Encoding "${enc}" (accepted: gzip, deflate, br, identity)`);
    }
  } catch (err) {
    if (err instanceof RuntrailError) throw err;
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
      throw new TooLargeError(`decompressed body exceeds the limit of ${limit} bytes (collector.maxDecompressedBytes)`);
    }
    throw new BodyError(`body is not valid ${enc} data: ${errorMessage(err)}`, err);
  }
}

/** Lowercase media type without parameters; JSON when absent. */
export function mediaType(header: string | undefined): string {
  if (!header) return 'application/json';
  return (header.split(';')[0] ?? '').trim().toLowerCase();
}

const PROTOBUF_TYPES = new Set(['application/x-protobuf', 'application/protobuf']);

/** Builds the collector's routes; with tokens configured they need the `ingest` role. */
export function collectorRoutes(deps: CollectorDeps): Route[] {
  const budget = new InflightBudget(deps.cfg.maxInflightBytes);
  deps.metrics.gauge('runtrail_collector_inflight_bytes', 'Bytes of request bodies in progress (wire and decompressed), bounded by collector.maxInflightBytes').collect(() => budget.bytes);
  return Object.entries(INGEST_ENDPOINTS).map(([path, format]) => ({
    method: 'POST' as const,
    path,
    role: 'ingest' as const,
    handler: (req: IncomingMessage, res: ServerResponse) => handleIngest(deps, budget, ADAPTERS[format], path, req, res),
  }));
}

async function handleIngest(deps: CollectorDeps, budget: InflightBudget, adapter: Adapter, path: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const ctype = mediaType(req.headers['content-type']);
  const isOtlp = adapter.format === 'otlp-traces' || adapter.format === 'otlp-logs';
  const protobuf = isOtlp && PROTOBUF_TYPES.has(ctype);
  const errors = deps.metrics.counter('runtrail_collector_errors_total', 'Collector request errors, by code');
  let held = 0;
  try {
    if (!adapter.contentTypes.includes(ctype)) {
      throw new UnsupportedFormatError(`${path} does not accept Content-Type "${ctype}" (accepted: ${adapter.contentTypes.join(', ')})`);
    }
    const take = (n: number): void => {
      budget.reserve(n, held, deps.cfg.retryAfterS);
      held += n;
    };
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > 0 && declared <= deps.cfg.maxBodyBytes) take(declared);
    let read = 0;
    const wire = await readBody(req, deps.cfg.maxBodyBytes, (n) => {
      read += n;
      if (read > held) take(read - held);
    });
    const body = await decodeContent(wire, headerValue(req.headers['content-encoding']), deps.cfg.maxDecompressedBytes);
    if (body !== wire) take(body.length);
    const result = await deps.ingestor.ingest(adapter, body, ctype);
    const status = result.records > 0 && result.accepted === 0 && result.rejectedCount > 0 ? 400 : 200;
    if (result.rejectedCount > 0) {
      deps.log.warn({ path, rejected: result.rejectedCount, first: result.rejected[0] }, 'records rejected');
    }
    if (protobuf) return sendOtlpProto(res, status, result);
    sendJson(res, status, responseBody(result, isOtlp), { 'x-runtrail-accepted': String(result.accepted), 'x-runtrail-rejected': String(result.rejectedCount) });
  } catch (err) {
    const { status, code, headers } = classify(err, deps.cfg.retryAfterS);
    errors.inc({ code });
    if (status >= 500 && !(err instanceof RuntrailError && err.retriable)) deps.log.error({ err, path }, 'ingest failed');
    else if (status >= 500) deps.log.warn({ path, code, reason: errorMessage(err) }, 'ingest deferred: asked the shipper to retry');
    else deps.log.info({ path, code, reason: errorMessage(err) }, 'ingest request refused');
    // Drain whatever is left of the body so keep-alive connections stay usable.
    req.resume();
    sendJson(res, status, { error: code, message: errorMessage(err), accepted: 0 }, headers);
  } finally {
    budget.release(held);
  }
}

function headerValue(h: string | string[] | undefined): string | undefined {
  return Array.isArray(h) ? h[0] : h;
}

/** Runtrail's response contract, plus OTLP's `partialSuccess` so OTLP clients understand it too. */
function responseBody(r: IngestResult, otlp: boolean): Record<string, unknown> {
  const body: Record<string, unknown> = { accepted: r.accepted, rejected: r.rejected, rejected_total: r.rejectedCount, records: r.records, skipped: r.skipped };
  if (otlp && r.rejectedCount > 0) {
    body.partialSuccess = { rejectedSpans: String(r.rejectedCount), errorMessage: summarizeRejections(r) };
  }
  return body;
}

function summarizeRejections(r: IngestResult): string {
  const shown = r.rejected.slice(0, 20).map((x) => `[${x.index}]${x.field ? ` field \`${x.field}\`:` : ''} ${x.reason}`);
  const more = r.rejectedCount > shown.length ? `; and ${r.rejectedCount - shown.length} more` : '';
  return `${r.rejectedCount} of ${r.records} records rejected: ${shown.join('; ')}${more}`;
}

/**
 * OTLP protobuf response (`Export*ServiceResponse { partial_success = 1 { int64 rejected = 1;
 * string error_message = 2; } }`), hand-encoded: trace and logs responses share this layout.
 */
function sendOtlpProto(res: ServerResponse, status: number, r: IngestResult): void {
  let payload = Buffer.alloc(0);
  if (r.rejectedCount > 0) {
    const msg = Buffer.from(summarizeRejections(r));
    const inner = Buffer.concat([Buffer.from([0x08]), varint(r.rejectedCount), Buffer.from([0x12]), varint(msg.length), msg]);
    payload = Buffer.concat([Buffer.from([0x0a]), varint(inner.length), inner]);
  }
  res.writeHead(status, {
    'content-type': 'application/x-protobuf',
    'content-length': payload.length,
    'x-runtrail-accepted': String(r.accepted),
    'x-runtrail-rejected': String(r.rejectedCount),
  });
  res.end(payload);
}

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** Error codes that mean the request itself is wrong: resending it unchanged cannot succeed. */
const CLIENT_ERROR_CODES: ReadonlySet<string> = new Set(['body_invalid', 'record_invalid', 'request_invalid', 'otlp_protobuf_invalid']);

/** Maps errors to HTTP statuses. */
function classify(err: unknown, retryAfterS: number): { status: number; code: string; headers: Record<string, string> } {
  if (err instanceof BackpressureError) {
    return { status: 503, code: err.code, headers: { 'retry-after': String(Math.max(retryAfterS, err.retryAfterS)) } };
  }
  if (err instanceof TooLargeError) return { status: 413, code: err.code, headers: {} };
  if (err instanceof UnsupportedFormatError) return { status: 415, code: err.code, headers: {} };
  if (err instanceof BodyError) return { status: 400, code: err.code, headers: {} };
  if (err instanceof RuntrailError && CLIENT_ERROR_CODES.has(err.code)) return { status: 400, code: err.code, headers: {} };
  // Anything else is the server's trouble (the bus, its log, a parse worker, Kafka), retriable or
  // not: a shipper drops a batch answered with 400 (or 500, for the OpenTelemetry Collector) but
  // keeps and re-sends one answered with 503, and the records themselves were fine.
  return { status: 503, code: err instanceof RuntrailError ? err.code : 'unavailable', headers: { 'retry-after': String(retryAfterS) } };
}
