import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.ts';
import { eventId } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/logger.ts';
import { startEmbedded, type EmbeddedServer } from '../../services/embedded.ts';

/**
 * Faults in the embedded mode, with exact counts of what is stored.
 *
 * Storage down for a while under load: the embedded pipeline writes to a ClickHouse server (chDB
 * behind ClickHouse's HTTP interface, in a child process) that is killed mid-stream and brought
 * back. While it is down the collector keeps answering: first accepting onto its log, then 503 +
 * Retry-After once the backlog is full. A shipper that re-sends what was refused ends with every
 * acknowledged event stored exactly once. A burst ten times the bus's backlog bound: the excess
 * is refused (503 + Retry-After) rather than buffered without bound, and everything re-sent is
 * stored once.
 */

const MAIN = fileURLToPath(new URL('../../services/storage/chdb-http-main.ts', import.meta.url));
const dirs: string[] = [];
const children: ChildProcess[] = [];
let server: EmbeddedServer | undefined;

afterAll(async () => {
  await server?.shutdown();
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Starts the ClickHouse HTTP stand-in; resolves with its URL once it listens. */
function startClickHouse(path: string, port: number): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--path', path, '--port', String(port), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const err: string[] = [];
  child.stderr?.on('data', (d: Buffer) => err.push(d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ClickHouse stand-in did not start:\n${err.join('')}`)), 60_000);
    child.stdout?.on('data', (d: Buffer) => {
      const m = /listening (http:\/\/\S+)/.exec(d.toString());
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1] as string, child });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ClickHouse stand-in exited with ${code}:\n${err.join('')}`));
    });
  });
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Largest per-topic in-memory bus backlog, from the metrics endpoint. */
async function backlog(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  let max = 0;
  for (const m of text.matchAll(/^runtrail_bus_backlog_messages\{topic="events\.[a-z]+"\} (\d+)$/gm)) max = Math.max(max, Number(m[1]));
  return max;
}

const T0 = Date.parse('2026-09-01T12:00:00Z');
const BATCH = 250;

function batch(n: number, tag = 'outage'): { ids: string[]; body: string } {
  const ids: string[] = [];
  const lines: string[] = [];
  for (let i = 0; i < BATCH; i++) {
    const id = eventId(tag, n, i);
    ids.push(id);
    lines.push(JSON.stringify({ event_id: id, source: 'agent', type: 'tool.call', time: T0 + n * 1000 + i, task_id: `outage-task-${n % 40}`, tool: { name: 'lookup' } }));
  }
  return { ids, body: lines.join('\n') };
}

describe('storage outage', () => {
  it('applies backpressure while ClickHouse is down and stores every acknowledged event once after it returns', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'runtrail-outage-'));
    dirs.push(dir);
    const chPath = join(dir, 'clickhouse');
    let ch = await startClickHouse(chPath, 0);
    const port = Number(new URL(ch.url).port);
    const cfg = parseConfig({
      dataDir: join(dir, 'data'),
      storage: { clickhouseUrl: ch.url, batchMaxDelayMs: 20, insertAttempts: 2, maxPendingRows: 2_000 },
      bus: { fsync: false, maxBacklog: 3_000, maxBatch: 500 },
      collector: { port: 0, retryAfterS: 1 },
      // The embedded server also serves the analyst API: a free port, not 8080.
      api: { port: 0 },
      correlator: { graceWallMs: 2_000 },
    });
    server = await startEmbedded(cfg, silentLogger());
    const base = server.http.url;
    const post = (body: string) => fetch(`${base}/v1/events`, { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson' } });

    const acknowledged = new Set<string>();
    const refused: number[] = [];
    let n = 0;
    // Healthy: a few batches go through.
    for (; n < 4; n++) {
      const b = batch(n);
      const res = await post(b.body);
      expect(res.status).toBe(200);
      b.ids.forEach((id) => acknowledged.add(id));
    }

    await kill(ch.child);
    // Down: keep shipping until the collector pushes back (bounded: the backlog holds 3,000).
    let retryAfter: string | null = null;
    for (; n < 60 && refused.length < 3; n++) {
      const b = batch(n);
      const res = await post(b.body);
      const json = (await res.json()) as { accepted?: number };
      if (res.status === 200) {
        expect(json.accepted).toBe(BATCH);
        b.ids.forEach((id) => acknowledged.add(id));
      } else {
        expect(res.status).toBe(503);
        retryAfter = res.headers.get('retry-after');
        refused.push(n);
      }
    }
    expect(refused.length).toBeGreaterThan(0);
    expect(retryAfter).toBe('1');
    // The consumer is stuck, so lag grew; what the bus holds in memory stayed within its bound.
    expect(await backlog(base)).toBeGreaterThan(0);
    expect(await backlog(base)).toBeLessThanOrEqual(3_000 + BATCH);
    expect((await fetch(`${base}/readyz`)).status).toBe(503);

    // Back: the shipper re-sends what was refused; everything acknowledged is stored once.
    ch = await startClickHouse(chPath, port);
    for (const r of refused) {
      const b = batch(r);
      for (let attempt = 0; ; attempt++) {
        const res = await post(b.body);
        await res.text();
        if (res.status === 200) break;
        expect(res.status).toBe(503);
        expect(attempt).toBeLessThan(120);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      b.ids.forEach((id) => acknowledged.add(id));
    }
    await server.pipeline.drain(false);
    const store = server.pipeline.store;
    const deadline = Date.now() + 60_000;
    while ((await store.countEvents()) < acknowledged.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    const rows = await store.querySql('SELECT toString(event_id) AS id FROM events FINAL', {}, { maxRows: 100_000 });
    const stored = rows.map((r) => String(r.id));
    expect(new Set(stored)).toEqual(acknowledged);
    expect(stored).toHaveLength(acknowledged.size);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    await server.shutdown();
    server = undefined;
    await kill(ch.child);
  }, 240_000);

  it('takes a burst ten times its backlog: refuses the excess with 503, keeps its bound, and stores every retried event once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'runtrail-burst-'));
    dirs.push(dir);
    const cfg = parseConfig({
      dataDir: dir,
      bus: { fsync: false, maxBacklog: 2_000, maxBatch: 500 },
      collector: { port: 0, retryAfterS: 1 },
      api: { port: 0 },
      correlator: { graceWallMs: 2_000 },
    });
    const burst = await startEmbedded(cfg, silentLogger());
    try {
      const base = burst.http.url;
      const post = (body: string) => fetch(`${base}/v1/events`, { method: 'POST', body, headers: { 'content-type': 'application/x-ndjson' } });
      const batches = Array.from({ length: 80 }, (_, n) => batch(n, 'burst')); // 20,000 events at once
      let refusals = 0;
      let peakBacklog = 0;
      // Every batch at once, each re-sent until accepted, as a fleet of shippers would.
      await Promise.all(
        batches.map(async (b) => {
          for (let attempt = 0; ; attempt++) {
            expect(attempt).toBeLessThan(200);
            const res = await post(b.body);
            await res.text();
            if (res.status === 200) return;
            expect(res.status).toBe(503);
            expect(res.headers.get('retry-after')).toBe('1');
            refusals++;
            peakBacklog = Math.max(peakBacklog, await backlog(base));
            await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
          }
        }),
      );
      expect(refusals).toBeGreaterThan(0);
      expect(peakBacklog).toBeLessThanOrEqual(2_000 + BATCH);
      await burst.pipeline.drain(false);
      const want = new Set(batches.flatMap((b) => b.ids));
      const rows = await burst.pipeline.store.querySql('SELECT toString(event_id) AS id FROM events FINAL', {}, { maxRows: 100_000 });
      expect(rows).toHaveLength(want.size);
      expect(new Set(rows.map((r) => String(r.id)))).toEqual(want);
    } finally {
      await burst.shutdown();
    }
  }, 240_000);
});
