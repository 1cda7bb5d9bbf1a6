import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { parseConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { startEmbedded, type EmbeddedServer } from '../../services/embedded.ts';
import { MAX_LISTED_REJECTIONS } from '../../services/collector/adapters/adapter.ts';

/**
 * Test-only plumbing for the ingest fuzz suites (issue 7, hostile input): the real embedded
 * server on an ephemeral port with a temporary data directory and small body limits, an HTTP
 * client that never throws on a bad status, the seed and run counts, and the check that what the
 * server acknowledged is what the store holds.
 *
 * The seed is fixed so a failure reproduces; `FUZZ_SEED=<int>` explores another part of the input
 * space and `FUZZ_RUNS=<factor>` scales every property's run count. This is the only place the fuzz
 * suites read the environment: product code reads it in `shared/config.ts` alone.
 */

/** Default seed: the issue number. */
const DEFAULT_SEED = 7;

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** The fast-check seed for this run (`FUZZ_SEED`, default 7). */
export const FUZZ_SEED = envInt('FUZZ_SEED', DEFAULT_SEED);

const RUN_FACTOR = Math.max(1, envInt('FUZZ_RUNS', 1));

/**
 * fast-check parameters for one property: the shared seed, offset per property so that no two
 * properties walk the same stream, and `runs` scaled by `FUZZ_RUNS`.
 */
export function fcParams(property: number, runs: number): { seed: number; numRuns: number } {
  return { seed: FUZZ_SEED + property * 1_000_003, numRuns: runs * RUN_FACTOR };
}

/** Wire limit of the fuzz servers, bytes. */
export const MAX_BODY_BYTES = 256 * 1024;
/** Limit after decompression, bytes. */
export const MAX_DECOMPRESSED_BYTES = 1024 * 1024;

/** Every status the ingest endpoints document (README, response contract). */
export const DOCUMENTED_STATUSES: ReadonlySet<number> = new Set([200, 400, 404, 405, 413, 415, 503]);

/** A rejection as the response contract lists it. */
export interface WireRejection {
  index: number;
  field: string;
  reason: string;
}

/** A response, read whole. */
export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  /** The body as JSON, `undefined` when it is not JSON. */
  json: Record<string, unknown> | undefined;
}

/** A running fuzz server plus the tally of what it acknowledged. */
export interface FuzzServer {
  server: EmbeddedServer;
  base: string;
  /** Sum of `accepted` over every acknowledged request so far. */
  acknowledged: number;
  post(path: string, body: string | Uint8Array, headers?: Record<string, string>): Promise<Reply>;
  stop(): Promise<void>;
}

/** Starts the embedded server for a fuzz suite. `parseWorkers` 0 runs adapters on the main thread. */
export async function startFuzzServer(opts: { parseWorkers?: number } = {}): Promise<FuzzServer> {
  const dir = mkdtempSync(join(tmpdir(), 'runtrail-fuzz-'));
  const cfg = parseConfig({
    dataDir: dir,
    collector: { port: 0, maxBodyBytes: MAX_BODY_BYTES, maxDecompressedBytes: MAX_DECOMPRESSED_BYTES, requestTimeoutMs: 20_000, ...(opts.parseWorkers === undefined ? {} : { parseWorkers: opts.parseWorkers }) },
    bus: { fsync: false },
  });
  const server = await startEmbedded(cfg, silentLogger());
  const base = server.http.url;
  const fs: FuzzServer = {
    server,
    base,
    acknowledged: 0,
    async post(path, body, headers = { 'content-type': 'application/json' }) {
      const res = await fetch(`${base}${path}`, { method: 'POST', body, headers, signal: AbortSignal.timeout(30_000) });
      const text = await res.text();
      let json: Record<string, unknown> | undefined;
      try {
        const v: unknown = JSON.parse(text);
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) json = v as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      if (res.status === 200 || res.status === 400) {
        const n = Number(res.headers.get('x-runtrail-accepted') ?? json?.accepted ?? 0);
        fs.acknowledged += n;
      }
      return { status: res.status, headers: res.headers, text, json };
    },
    async stop() {
      await server.shutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fs;
}

/**
 * The response contract for any body: a documented status (never 500), and for JSON answers
 * either the ingest result (`accepted`, `rejected`, `skipped`) or an error naming what is wrong.
 */
export function expectContract(r: Reply, what: string): void {
  expect(DOCUMENTED_STATUSES.has(r.status), `${what}: status ${r.status} ${r.text.slice(0, 300)}`).toBe(true);
  // 503 is documented for backpressure and failing storage, neither of which a lone fuzzer causes:
  // here it would mean a body that a shipper is told to retry, and would retry forever.
  expect(r.status, `${what}: ${r.text.slice(0, 300)}`).not.toBe(503);
  if (r.headers.get('content-type') === 'application/x-protobuf') return;
  expect(r.json, `${what}: body is not a JSON object: ${r.text.slice(0, 200)}`).toBeDefined();
  const j = r.json as Record<string, unknown>;
  if (typeof j.error === 'string') {
    expect(r.status, `${what}: error body with status ${r.status}`).not.toBe(200);
    expect(typeof j.message === 'string' && j.message.length > 0, `${what}: error without a message`).toBe(true);
    return;
  }
  expect(typeof j.accepted, `${what}: ${r.text.slice(0, 200)}`).toBe('number');
  expect(Array.isArray(j.rejected), `${what}: ${r.text.slice(0, 200)}`).toBe(true);
  expect(typeof j.skipped).toBe('number');
  // Every rejection is counted; at most MAX_LISTED_REJECTIONS are listed.
  expect(typeof j.rejected_total, `${what}: ${r.text.slice(0, 200)}`).toBe('number');
  expect((j.rejected as unknown[]).length, what).toBeLessThanOrEqual(Math.min(j.rejected_total as number, MAX_LISTED_REJECTIONS));
  for (const x of j.rejected as WireRejection[]) {
    expect(Number.isInteger(x.index) && x.index >= 0, `${what}: rejection index ${JSON.stringify(x)}`).toBe(true);
    expect(typeof x.field).toBe('string');
    expect(typeof x.reason === 'string' && x.reason.length > 0, `${what}: rejection without a reason ${JSON.stringify(x)}`).toBe(true);
  }
  if (r.status === 400) expect(j.accepted).toBe(0);
}

/** `/healthz` still answers 200. */
export async function expectHealthy(fs: FuzzServer): Promise<void> {
  const res = await fetch(`${fs.base}/healthz`, { signal: AbortSignal.timeout(10_000) });
  expect(res.status).toBe(200);
}

/**
 * Nothing acknowledged is lost, nothing is duplicated: once the pipeline has drained, the store
 * holds exactly as many distinct event ids, and rows after deduplication, as the server accepted.
 */
export async function expectStoredExactly(fs: FuzzServer): Promise<{ distinct: number; rows: number }> {
  const store = fs.server.pipeline.store;
  const read = async () => {
    const rows = await store.querySql('SELECT uniqExact(event_id) AS d FROM events');
    return { distinct: Number(rows[0]?.d ?? 0), rows: await store.countEvents() };
  };
  // A wedged pipeline never drains: bound the wait, so the counts below fail instead of the test hanging.
  const drain = (): Promise<unknown> => Promise.race([fs.server.pipeline.drain(true), new Promise((r) => setTimeout(r, 20_000))]);
  await drain();
  // Storage is asynchronous behind the bus: poll until the count stops being short, then compare.
  const end = Date.now() + 40_000;
  let got = await read();
  while (got.distinct < fs.acknowledged && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 200));
    await drain();
    got = await read();
  }
  let why = '';
  if (got.distinct !== fs.acknowledged) {
    // Say where the events went missing: insert errors, dead letters, what is stored per format.
    const metrics = await (await fetch(`${fs.base}/metrics`)).text();
    const lines = metrics.split('\n').filter((l) => !l.startsWith('#') && /insert_errors|dead_letters|pending|evictions/.test(l));
    const byFormat = await store.querySql('SELECT format, count() AS n, min(event_time) AS first, max(event_time) AS last FROM events GROUP BY format');
    why = `\n${lines.join('\n')}\nstored: ${JSON.stringify(byFormat)}`;
  }
  expect(got.distinct, `distinct event ids stored vs acknowledged${why}`).toBe(fs.acknowledged);
  expect(got.rows, 'rows after deduplication vs acknowledged').toBe(fs.acknowledged);
  return got;
}
