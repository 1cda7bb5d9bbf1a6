import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalBus } from '../../shared/bus/local-bus.ts';
import { parseConfig } from '../../shared/config.ts';
import { CanonicalEventSchema, type CanonicalEvent, type TimelineEvent } from '../../shared/event.ts';
import { eventId } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { SOURCE_TOPIC } from '../../shared/names.ts';
import { CorrelatorStage } from '../../services/correlator/correlator-stage.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';
import { openTempStore, type TempStore } from './temp-store.ts';

/**
 * A correlator that takes over a partition reads again what its previous owner read but did not
 * commit. When the previous owner had attributed an event through state the new one lacks (here a
 * request-id join), the new owner would store it a second time under another task. The takeover
 * check finds the stored copy and keeps its attribution: one row per event. Real chDB store.
 */

let temp: TempStore<ClickHouseStore> | undefined;
let store: ClickHouseStore;

beforeAll(async () => {
  temp = await openTempStore('runtrail-redeliver-');
  store = temp.store;
}, 60_000);

afterAll(async () => {
  await temp?.close();
});

const T0 = Date.parse('2026-10-11T10:00:00Z');

function event(i: number, over: Record<string, unknown>): CanonicalEvent {
  return CanonicalEventSchema.parse({ event_id: eventId('redeliver', i), time: T0 + i * 10, format: 'runtrail', ingested_at: T0, ...over });
}

function asStored(e: CanonicalEvent, over: Partial<TimelineEvent>): TimelineEvent {
  return { ...e, task_id: e.task_id ?? '', attribution: 'direct', join_key: '', unattributed_reason: '', ingested_at: T0, late: false, ...over } as TimelineEvent;
}

describe('correlator taking over a partition', () => {
  it('keeps the attribution a redelivered event was stored with, so it is stored once', async () => {
    // What the previous owner stored before it crashed: a resource call it had joined to its task
    // through the agent span's request id (a span this instance never sees), and an agent event.
    const joined = event(0, { source: 'resource', type: 'resource.access', credential_id: 'AKIAINSTANCEPROFILE', request_id: 'req-77', action: 's3:GetObject' });
    const direct = event(1, { source: 'agent', type: 'tool.call', task_id: 'task-direct', tool: { name: 'lookup' } });
    await store.insertEvents([
      asStored(joined, { task_id: 'task-joined', attribution: 'request', join_key: 'req-77' }),
      asStored(direct, { task_id: 'task-direct', attribution: 'direct' }),
    ]);
    // The uncommitted tail it read: those two again, then events it never got to.
    const fresh = Array.from({ length: 40 }, (_, i) => event(10 + i, { source: 'agent', type: 'tool.call', task_id: `task-new-${i % 4}`, tool: { name: 'lookup' } }));

    const bus = new LocalBus({ dir: null, fsync: false, maxBatch: 4, maxBacklog: 10_000, segmentBytes: 1 << 20, log: silentLogger() });
    await bus.start();
    const metrics = new MetricsRegistry();
    const cfg = parseConfig({ correlator: { graceMs: 1_000 } }).correlator;
    const stage = new CorrelatorStage({ bus, store, cfg, log: silentLogger(), metrics, wallClock: false, tickMs: 3_600_000, retryBaseMs: 5 });
    await stage.start();
    await bus.publish(SOURCE_TOPIC.resource, [{ key: 'AKIAINSTANCEPROFILE', value: joined }]);
    await bus.publish(SOURCE_TOPIC.agent, [direct, ...fresh].map((e) => ({ key: e.task_id ?? '', value: e })));
    for (let i = 0; i < 400 && (await store.countEvents()) < 41; i++) await new Promise((r) => setTimeout(r, 25));
    // Nothing else will ever join the resource call here: its grace period ends.
    await stage.tick(true);
    await stage.idle();
    for (let i = 0; i < 400 && (await store.countEvents()) < 42; i++) await new Promise((r) => setTimeout(r, 25));

    const rows = await store.querySql('SELECT task_id, attribution, join_key FROM events FINAL WHERE event_id = {id:String}', { id: joined.event_id });
    expect(rows).toEqual([{ task_id: 'task-joined', attribution: 'request', join_key: 'req-77' }]);
    expect(await store.countEvents()).toBe(42);
    const dupes = await store.querySql('SELECT count() AS n FROM (SELECT event_id FROM events FINAL GROUP BY event_id HAVING count() > 1)');
    expect(Number(dupes[0]?.n)).toBe(0);
    const text = metrics.render();
    expect(text).toContain('runtrail_correlator_redelivery{what="found_stored"} 2');
    expect(text).toContain('runtrail_correlator_redelivery{what="rewritten"} 1');
    // The check stops once the partition reads only new events: 11 agent batches, not all looked up.
    const checked = Number(/runtrail_correlator_redelivery\{what="batches_checked"\} (\d+)/.exec(text)?.[1]);
    expect(checked).toBeGreaterThanOrEqual(3);
    expect(checked).toBeLessThan(8);
    await stage.shutdown();
    await bus.shutdown();
  });
});
