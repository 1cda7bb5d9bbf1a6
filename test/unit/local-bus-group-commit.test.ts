import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LocalBus } from '../../shared/bus/local-bus.ts';
import { CredentialBindingSchema, type CredentialBinding } from '../../shared/event.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { TOPIC } from '../../shared/names.ts';

/**
 * Group commit of the LocalBus write-ahead log: fsyncs are shared by the publishes of one flush
 * cycle, but a publish still resolves (and its messages become visible) only after an fsync that
 * covers its bytes. `fsync` is wrapped so a test can hold it, fail it, and see which bytes were on
 * the file when it ran.
 */
const fsyncGate = vi.hoisted(() => ({
  hold: false,
  held: [] as Array<() => void>,
  fail: undefined as Error | undefined,
  /** Size of the file at each fsync, in call order. */
  sizes: [] as number[],
}));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const fsync = (fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void => {
    fsyncGate.sizes.push(fs.fstatSync(fd).size);
    const run = (): void => {
      if (fsyncGate.fail) cb(fsyncGate.fail);
      else fs.fsync(fd, cb);
    };
    if (fsyncGate.hold) fsyncGate.held.push(run);
    else run();
  };
  return { ...fs, fsync, default: { ...fs, fsync } };
});

const dirs: string[] = [];
afterEach(() => {
  fsyncGate.hold = false;
  fsyncGate.held = [];
  fsyncGate.fail = undefined;
  fsyncGate.sizes = [];
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'runtrail-bus-gc-'));
  dirs.push(d);
  return d;
}

function durableBus(dir: string, metrics?: MetricsRegistry): LocalBus {
  return new LocalBus({ dir, fsync: true, maxBatch: 100, maxBacklog: 10_000, segmentBytes: 1 << 20, log: silentLogger(), metrics });
}

function binding(i: number): CredentialBinding {
  return CredentialBindingSchema.parse({ credential_id: `cred-${i}`, kind: 'aws-access-key', task_id: `t${i}`, issued_at: i, event_id: `e${i}` });
}

function logBytes(dir: string): number {
  const tdir = join(dir, TOPIC.bindings);
  return readdirSync(tdir).reduce((n, f) => n + readFileSync(join(tdir, f)).length, 0);
}

/** Lets queued microtasks and pending I/O callbacks run. */
async function settle(ms = 20): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

function track(p: Promise<void>): { settled: () => 'pending' | 'resolved' | 'rejected'; promise: Promise<void> } {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  const promise = p.then(
    () => void (state = 'resolved'),
    (err: unknown) => {
      state = 'rejected';
      throw err;
    },
  );
  promise.catch(() => undefined);
  return { settled: () => state, promise };
}

describe('LocalBus group commit', () => {
  it('shares one fsync among publishes made in the same tick', async () => {
    const dir = tempDir();
    const metrics = new MetricsRegistry();
    const b = durableBus(dir, metrics);
    await b.start();
    await Promise.all(Array.from({ length: 20 }, (_, i) => b.publish(TOPIC.bindings, [{ key: `k${i}`, value: binding(i) }])));
    const syncs = metrics.counter('runtrail_bus_log_fsyncs_total', '').get({ topic: TOPIC.bindings });
    expect(syncs).toBe(1);
    // Every line is on disk, in publish order.
    const lines = readFileSync(join(dir, TOPIC.bindings, readdirSync(join(dir, TOPIC.bindings))[0] as string), 'utf8').trim().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as [string, unknown])[0])).toEqual(Array.from({ length: 20 }, (_, i) => `k${i}`));
    await b.shutdown();
  });

  it('resolves a publish, and shows its messages to consumers, only after an fsync that covers its bytes', async () => {
    const dir = tempDir();
    const b = durableBus(dir);
    await b.start();
    const seen: string[] = [];
    await b.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => void seen.push(...batch.messages.map((m) => m.value.credential_id)) });

    fsyncGate.hold = true;
    const first = track(b.publish(TOPIC.bindings, [{ key: 'a', value: binding(1) }]));
    await settle();
    // Written, fsync in progress: not acknowledged, not visible.
    expect(fsyncGate.held).toHaveLength(1);
    const bytesAtFirstSync = fsyncGate.sizes[0] as number;
    expect(bytesAtFirstSync).toBe(logBytes(dir));
    expect(first.settled()).toBe('pending');
    expect(seen).toEqual([]);

    // A publish arriving while that fsync runs waits for the next one, even when the first completes.
    const second = track(b.publish(TOPIC.bindings, [{ key: 'b', value: binding(2) }]));
    await settle();
    expect(fsyncGate.held).toHaveLength(1);
    (fsyncGate.held.shift() as () => void)();
    await first.promise;
    await settle();
    expect(seen).toEqual(['cred-1']);
    expect(second.settled()).toBe('pending');
    // The second cycle's fsync saw the second publish's bytes on the file.
    expect(fsyncGate.held).toHaveLength(1);
    expect(fsyncGate.sizes[1]).toBeGreaterThan(bytesAtFirstSync);
    expect(fsyncGate.sizes[1]).toBe(logBytes(dir));

    (fsyncGate.held.shift() as () => void)();
    await second.promise;
    await settle();
    expect(seen).toEqual(['cred-1', 'cred-2']);
    fsyncGate.hold = false;
    await b.shutdown();
  });

  it('recovers every acknowledged message without a clean shutdown', async () => {
    const dir = tempDir();
    const b1 = durableBus(dir);
    await b1.start();
    await Promise.all(Array.from({ length: 50 }, (_, i) => b1.publish(TOPIC.bindings, [{ key: `k${i}`, value: binding(i) }])));
    // No shutdown: the process "dies" here. A second bus reads the same directory.
    const b2 = durableBus(dir);
    await b2.start();
    const again: string[] = [];
    await b2.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => void again.push(...batch.messages.map((m) => m.value.credential_id)) });
    await vi.waitFor(() => expect(again).toHaveLength(50));
    expect(again).toEqual(Array.from({ length: 50 }, (_, i) => `cred-${i}`));
    await b2.shutdown();
  });

  it('fails the publishes of a cycle whose fsync fails, shows none of them, and refuses later publishes', async () => {
    const dir = tempDir();
    const b = durableBus(dir);
    await b.start();
    const seen: string[] = [];
    await b.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => void seen.push(...batch.messages.map((m) => m.value.credential_id)) });
    await b.publish(TOPIC.bindings, [{ key: 'ok', value: binding(0) }]);
    fsyncGate.fail = Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    const results = await Promise.allSettled([1, 2, 3].map((i) => b.publish(TOPIC.bindings, [{ key: `k${i}`, value: binding(i) }])));
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    const reason = (results[0] as PromiseRejectedResult).reason as { code: string; retriable: boolean };
    expect(reason.code).toBe('storage_failed');
    expect(reason.retriable).toBe(false);
    fsyncGate.fail = undefined;
    await expect(b.publish(TOPIC.bindings, [{ key: 'later', value: binding(9) }])).rejects.toThrow(/write-ahead log failed/);
    await settle();
    expect(seen).toEqual(['cred-0']);
    await b.shutdown();
  });
});
