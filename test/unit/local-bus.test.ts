import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeliveredMessage, MessageBatch } from '../../shared/bus/bus.ts';
import { LocalBus } from '../../shared/bus/local-bus.ts';
import { BackpressureError } from '../../shared/errors.ts';
import { CredentialBindingSchema, type CredentialBinding } from '../../shared/event.ts';
import { silentLogger } from '../../shared/logger.ts';
import { TOPIC } from '../../shared/names.ts';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'runtrail-bus-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function bus(dir: string | null, maxBacklog = 1000): LocalBus {
  return new LocalBus({ dir, fsync: false, maxBatch: 100, maxBacklog, segmentBytes: 4096, log: silentLogger() });
}

function binding(i: number): CredentialBinding {
  return CredentialBindingSchema.parse({ credential_id: `cred-${i}`, kind: 'aws-access-key', task_id: `t${i}`, issued_at: i, event_id: `e${i}` });
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('LocalBus', () => {
  it('delivers published messages in order to a group and to a group-less reader', async () => {
    const b = bus(null);
    await b.start();
    const seenGroup: string[] = [];
    const seenFree: string[] = [];
    await b.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => void seenGroup.push(...batch.messages.map((m) => m.value.credential_id)) });
    await b.subscribe({ topics: [TOPIC.bindings], onBatch: async (batch) => void seenFree.push(...batch.messages.map((m) => m.value.credential_id)) });
    await b.publish(TOPIC.bindings, [0, 1, 2].map((i) => ({ key: `k${i}`, value: binding(i) })));
    await until(() => seenGroup.length === 3 && seenFree.length === 3);
    expect(seenGroup).toEqual(['cred-0', 'cred-1', 'cred-2']);
    expect(seenFree).toEqual(seenGroup);
    await b.shutdown();
  });

  it('redelivers uncommitted messages after a restart, and not committed ones', async () => {
    const dir = tempDir();
    const b1 = bus(dir);
    await b1.start();
    const batches: MessageBatch<'bindings'>[] = [];
    const sub = await b1.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => void batches.push(batch) });
    await b1.publish(TOPIC.bindings, [0, 1, 2, 3, 4].map((i) => ({ key: `k${i}`, value: binding(i) })));
    await until(() => batches.flatMap((x) => x.messages).length === 5);
    await sub.commit([{ topic: TOPIC.bindings, partition: 0, offset: '2' }]);
    await b1.shutdown();

    const b2 = bus(dir);
    await b2.start();
    const again: DeliveredMessage<'bindings'>[] = [];
    await b2.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => void again.push(...batch.messages) });
    await until(() => again.length === 3);
    expect(again.map((m) => [m.offset, m.value.credential_id])).toEqual([
      ['2', 'cred-2'],
      ['3', 'cred-3'],
      ['4', 'cred-4'],
    ]);
    // New messages continue the offset sequence.
    await b2.publish(TOPIC.bindings, [{ key: 'k5', value: binding(5) }]);
    await until(() => again.length === 4);
    expect(again[3]?.offset).toBe('5');
    await b2.shutdown();
  });

  it('cuts a torn last line (never acknowledged) and reports corrupt lines as undecodable', async () => {
    const dir = tempDir();
    const b1 = bus(dir);
    await b1.start();
    await b1.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async () => undefined });
    await b1.publish(TOPIC.bindings, [{ key: 'a', value: binding(1) }]);
    await b1.shutdown();
    const seg = readdirSync(join(dir, TOPIC.bindings))[0] as string;
    appendFileSync(join(dir, TOPIC.bindings, seg), '["b",{"credential_id":"x"}]\n["c",{"trunc');
    const b2 = bus(dir);
    await b2.start();
    const good: string[] = [];
    const bad: string[] = [];
    await b2.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => {
      good.push(...batch.messages.map((m) => m.offset));
      bad.push(...batch.undecodable.map((u) => `${u.offset}:${u.reason}`));
    } });
    await until(() => good.length + bad.length === 2);
    expect(good).toEqual(['0']);
    expect(bad).toHaveLength(1);
    expect(bad[0]).toMatch(/^1:field `kind`/);
    await b2.shutdown();
  });

  it('refuses to start on a damaged offsets file, naming the file and what to do', async () => {
    const dir = tempDir();
    const b1 = bus(dir);
    await b1.start();
    const sub = await b1.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async () => undefined });
    await b1.publish(TOPIC.bindings, [{ key: 'a', value: binding(1) }]);
    await sub.commit([{ topic: TOPIC.bindings, partition: 0, offset: '1' }]);
    await b1.shutdown();
    writeFileSync(join(dir, 'offsets.json'), '{"g":{"bind');
    await expect(bus(dir).start()).rejects.toThrow(/bus offsets file .*offsets\.json is not readable JSON .*delete it to have every consumer group re-read/);
  });

  it('refuses a log directory another live process holds, and takes over the lock of one that is gone', async () => {
    const dir = tempDir();
    // Another process holding the directory: a real one, alive until killed.
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    const exited = new Promise((r) => other.once('exit', r));
    writeFileSync(join(dir, 'LOCK'), `${other.pid}\n`);
    await expect(bus(dir).start()).rejects.toThrow(new RegExp(`bus directory .* is in use by process ${other.pid} .*run one Runtrail process per data directory`));
    other.kill('SIGKILL');
    await exited;
    // Gone (a crash leaves its lock behind): taken over, and released at shutdown.
    const b = bus(dir);
    await b.start();
    expect(readFileSync(join(dir, 'LOCK'), 'utf8').trim()).toBe(String(process.pid));
    await b.shutdown();
    expect(existsSync(join(dir, 'LOCK'))).toBe(false);
  });

  it('refuses publishes beyond the backlog limit with a retriable BackpressureError', async () => {
    const b = bus(null, 5);
    await b.start();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    await b.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: () => gate });
    await b.publish(TOPIC.bindings, [0, 1, 2, 3].map((i) => ({ key: `k${i}`, value: binding(i) })));
    const err = await b.publish(TOPIC.bindings, [4, 5].map((i) => ({ key: `k${i}`, value: binding(i) }))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackpressureError);
    expect((err as BackpressureError).retriable).toBe(true);
    release();
    await b.shutdown();
  });

  it('deletes log segments once every group has committed past them', async () => {
    const dir = tempDir();
    const b = bus(dir);
    await b.start();
    let n = 0;
    const sub = await b.subscribe({ groupId: 'g', topics: [TOPIC.bindings], fromBeginning: true, onBatch: async (batch) => void (n += batch.messages.length) });
    for (let i = 0; i < 200; i++) await b.publish(TOPIC.bindings, [{ key: `k${i}`, value: binding(i) }]);
    await until(() => n === 200);
    const before = readdirSync(join(dir, TOPIC.bindings)).length;
    expect(before).toBeGreaterThan(3);
    await sub.commit([{ topic: TOPIC.bindings, partition: 0, offset: '200' }]);
    expect(readdirSync(join(dir, TOPIC.bindings)).length).toBe(1);
    await b.shutdown();
  });
});
