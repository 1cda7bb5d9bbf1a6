import { mkdtempSync, readdirSync, readFileSync, rmSync, write } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalBus, type LogFileOps } from '../../shared/bus/local-bus.ts';
import { StorageError } from '../../shared/errors.ts';
import { CredentialBindingSchema, type CredentialBinding } from '../../shared/event.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { TOPIC } from '../../shared/names.ts';
import { parseConfig } from '../../shared/config.ts';
import { startHttpServer } from '../../shared/http.ts';
import { collectorRoutes } from '../../services/collector/collector-routes.ts';
import { Ingestor } from '../../services/collector/ingest.ts';
import { stsScenario } from '../fixtures/scenario.ts';

/**
 * The write-ahead log on a disk that fills up: the writes really land in the file up to the point
 * where the "disk" is full, as the kernel's short writes do, then fail with ENOSPC. What a
 * publisher was told failed must leave no trace (a restart reads back exactly what was
 * acknowledged, no torn or extra lines), the refusal must be retriable, and the bus must take
 * publishes again once space is back. A failed fsync stops the log for good and the bus says so.
 */

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function binding(i: number): CredentialBinding {
  return CredentialBindingSchema.parse({ credential_id: `cred-${i}`, kind: 'aws-access-key', task_id: `t${i}`, issued_at: i, event_id: `e${i}` });
}

const messages = (from: number, n: number) => Array.from({ length: n }, (_, k) => ({ key: `k${from + k}`, value: binding(from + k) }));

function realWrite(fd: number, buf: Buffer, offset: number, length: number): Promise<number> {
  return new Promise((resolve, reject) => write(fd, buf, offset, length, null, (err, n) => (err ? reject(err) : resolve(n))));
}

function enospc(): NodeJS.ErrnoException {
  return Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
}

/** A disk with `free` bytes left (Infinity = not full): writes what fits, then fails as a full disk does. */
class FillingDisk implements LogFileOps {
  free = Number.POSITIVE_INFINITY;
  fsyncFails = false;
  async write(fd: number, buf: Buffer, offset: number): Promise<number> {
    const want = buf.length - offset;
    if (this.free <= 0) throw enospc();
    const n = await realWrite(fd, buf, offset, Math.min(want, this.free));
    this.free -= n;
    return n;
  }
  async fsync(): Promise<void> {
    if (this.fsyncFails) throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
  }
}

function openBus(dir: string, disk?: LogFileOps, metrics?: MetricsRegistry): LocalBus {
  return new LocalBus({ dir, fsync: true, maxBatch: 1000, maxBacklog: 10_000, segmentBytes: 1 << 20, log: silentLogger(), metrics, fileOps: disk });
}

async function readAll(dir: string): Promise<string[]> {
  const b = openBus(dir);
  await b.start();
  const ids: string[] = [];
  const sub = await b.subscribe({ groupId: 'reader', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => void ids.push(...batch.messages.map((m) => m.value.credential_id)) });
  const end = Date.now() + 3000;
  while (Date.now() < end && ids.length < b.endOffset(TOPIC.bindings)) await new Promise((r) => setTimeout(r, 5));
  await sub.shutdown();
  await b.shutdown();
  return ids;
}

function segmentText(dir: string): string {
  const tdir = join(dir, TOPIC.bindings);
  return readdirSync(tdir)
    .sort()
    .map((f) => readFileSync(join(tdir, f), 'utf8'))
    .join('');
}

describe('LocalBus write-ahead log on a full disk', () => {
  it('undoes a partial write, refuses with a retriable error, and takes publishes again once space is back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'runtrail-bus-full-'));
    dirs.push(dir);
    const disk = new FillingDisk();
    const metrics = new MetricsRegistry();
    const b = openBus(dir, disk, metrics);
    await b.start();
    await b.publish(TOPIC.bindings, messages(0, 3));
    const acknowledged = segmentText(dir);

    // Room for a line and a half of the next publish: the kernel writes that much, then ENOSPC.
    disk.free = Math.floor(acknowledged.length / 2);
    const err = await b.publish(TOPIC.bindings, messages(3, 3)).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).retriable).toBe(true);
    expect((err as StorageError).message).toMatch(/ENOSPC/);
    // Cut back to the last acknowledged byte; still ready, offsets unchanged.
    expect(segmentText(dir)).toBe(acknowledged);
    expect(b.ready()).toBe(true);
    expect(b.endOffset(TOPIC.bindings)).toBe(3);
    // A full disk with nothing written at all is refused the same way.
    disk.free = 0;
    await expect(b.publish(TOPIC.bindings, messages(3, 3))).rejects.toMatchObject({ retriable: true });
    expect(segmentText(dir)).toBe(acknowledged);

    // Space is back: the retry is stored, after exactly the acknowledged lines.
    disk.free = Number.POSITIVE_INFINITY;
    await b.publish(TOPIC.bindings, messages(3, 3));
    await b.publish(TOPIC.bindings, messages(6, 2));
    expect(b.endOffset(TOPIC.bindings)).toBe(8);
    expect(metrics.render().match(/^runtrail_bus_log_write_errors_total\{code="ENOSPC",topic="bindings"\} (\d+)$/m)?.[1]).toBe('2');
    await b.shutdown();

    // A restart reads back what was acknowledged, once each, in order, and nothing else.
    expect(await readAll(dir)).toEqual(Array.from({ length: 8 }, (_, i) => `cred-${i}`));
  });

  it('stops the log after a failed fsync: publishes refused, not ready; a restart recovers what was acknowledged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'runtrail-bus-fsync-'));
    dirs.push(dir);
    const disk = new FillingDisk();
    const b = openBus(dir, disk);
    await b.start();
    await b.publish(TOPIC.bindings, messages(0, 2));
    disk.fsyncFails = true;
    await expect(b.publish(TOPIC.bindings, messages(2, 2))).rejects.toMatchObject({ code: 'storage_failed', retriable: false });
    expect(b.ready()).toBe(false);
    disk.fsyncFails = false;
    // The file can no longer be trusted, so even with the disk healthy again nothing is taken.
    await expect(b.publish(TOPIC.bindings, messages(4, 1))).rejects.toMatchObject({ retriable: false });
    await b.shutdown();
    // Unacknowledged lines that did reach the file may come back (at least once); acknowledged ones always do.
    const ids = await readAll(dir);
    expect(ids.slice(0, 2)).toEqual(['cred-0', 'cred-1']);
    expect(ids).not.toContain('cred-4');
  });
});

describe('the collector on a full disk', () => {
  it('answers 503 with Retry-After (not 400: a shipper would drop the batch) and stores the retry once; after a failed fsync, 503 and not ready', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'runtrail-collector-full-'));
    dirs.push(dir);
    const disk = new FillingDisk();
    const metrics = new MetricsRegistry();
    const bus = openBus(dir, disk, metrics);
    await bus.start();
    const ingestor = new Ingestor(bus, metrics);
    const cfg = parseConfig({ dataDir: dir, collector: { port: 0, retryAfterS: 7 } });
    const http = await startHttpServer({
      host: '127.0.0.1',
      port: 0,
      routes: collectorRoutes({ cfg: cfg.collector, ingestor, log: silentLogger(), metrics }),
      log: silentLogger(),
      metrics,
      readiness: () => ({ ready: bus.ready(), checks: { bus: bus.ready() } }),
    });
    try {
      const body = JSON.stringify(stsScenario({ task: 'task-full-disk', key: 'ASIAFULLDISK00000001', idPrefix: 'fd-' }));
      const post = () => fetch(`${http.url}/v1/ingest/cloudtrail`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
      disk.free = 100;
      const refused = await post();
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('7');
      expect(await refused.json()).toMatchObject({ error: 'storage_failed' });
      expect((await fetch(`${http.url}/readyz`)).status).toBe(200);
      expect(bus.endOffset(TOPIC.eventsResource)).toBe(0);

      disk.free = Number.POSITIVE_INFINITY;
      const stored = await post();
      expect(stored.status).toBe(200);
      expect(await stored.json()).toMatchObject({ accepted: 2 });
      expect(bus.endOffset(TOPIC.eventsResource)).toBe(2);

      // A failed fsync stops the log: still 503 (the records were fine), and /readyz now says so.
      disk.fsyncFails = true;
      const broken = await fetch(`${http.url}/v1/ingest/cloudtrail`, {
        method: 'POST',
        body: JSON.stringify(stsScenario({ task: 'task-full-disk-2', key: 'ASIAFULLDISK00000002', idPrefix: 'fe-' })),
        headers: { 'content-type': 'application/json' },
      });
      expect(broken.status).toBe(503);
      expect(await broken.json()).toMatchObject({ error: 'storage_failed' });
      expect((await fetch(`${http.url}/readyz`)).status).toBe(503);
    } finally {
      await http.close();
      await bus.shutdown();
    }
  });
});
