import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_EVENT_TIME_MS } from '../../shared/event.ts';
import { tsvDateTime64 } from '../../services/storage/rows.ts';
import { expectStoredExactly, startFuzzServer, type FuzzServer } from '../fuzz/fuzz-harness.ts';

/*
 * Regressions (issue 7, found by the ingest fuzz suite). An event at epoch ms 0, 1000 or
 * 99 999 000 (years 1970-1973), anywhere from 1973 to 2001, or after 2286 was acknowledged, then
 * its insert failed (ClickHouse read the bare microsecond integer as a compact date) and the
 * correlator retried the batch forever: that event and every later one were never stored. Each
 * time the collector accepts must now be stored, at the same instant. And one insert batch whose
 * events spanned more than 100 months (event-time partitions) failed for good, wedging storage the
 * same way.
 */

let fz: FuzzServer;

beforeAll(async () => {
  fz = await startFuzzServer({ parseWorkers: 0 });
}, 60_000);

afterAll(async () => {
  await fz?.stop();
});

/** Every digit count of microseconds, around each power of ten, plus the ends of the range. */
const TIMES_MS: number[] = [0, 0.001, 0.5, 1, 999.999, 1000, 99_999, 100_000, 1e8 - 1, 1e8, 1e9, 1e10, 1e11, 654_321_987.654, 1e12 - 0.001, 1e12, 1_777_636_800_123.456, 1e13 - 1, 1e13, MAX_EVENT_TIME_MS - 0.001];

describe('event times across the whole storable range', () => {
  it('stores one batch whose events span more months than ClickHouse allows partitions per insert by default', async () => {
    // 150 months: events are partitioned by month, and the default limit is 100 per insert.
    const task = 'task-many-months';
    const body = Array.from({ length: 150 }, (_, i) => JSON.stringify({ id: `month-${i}`, source: 'agent', type: 'model.call', task_id: task, time: Date.UTC(2010, i, 15) })).join('\n');
    const r = await fz.post('/v1/events', body, { 'content-type': 'application/x-ndjson' });
    expect(r.json?.accepted, r.text).toBe(150);
    await expectStoredExactly(fz);
    expect(await fz.server.pipeline.store.timeline(task)).toHaveLength(150);
  }, 120_000);

  it('writes DateTime64 text ClickHouse cannot misread', () => {
    expect(tsvDateTime64('time', 1_777_636_800_123.456)).toBe('1777636800123456');
    expect(tsvDateTime64('time', 0)).toBe('1970-01-01 00:00:00.000000');
    expect(tsvDateTime64('time', 654_321_987.654)).toBe('1970-01-08 13:45:21.987654');
    expect(tsvDateTime64('time', 1e13)).toBe('2286-11-20 17:46:40.000000');
    expect(() => tsvDateTime64('time', MAX_EVENT_TIME_MS + 1)).toThrow(/year 2299/);
  });

  it('stores every accepted time, at the same instant, and keeps storing afterwards', async () => {
    const task = 'task-time-range';
    const body = TIMES_MS.map((time, i) => JSON.stringify({ id: `time-${i}`, source: 'agent', type: 'model.call', task_id: task, time, end_time: time })).join('\n');
    const r = await fz.post('/v1/events', body, { 'content-type': 'application/x-ndjson' });
    expect(r.status, r.text).toBe(200);
    expect(r.json?.accepted).toBe(TIMES_MS.length);
    // An ordinary event after them must get stored too: the pipeline is not wedged.
    const after = await fz.post('/v1/events', JSON.stringify({ id: 'after', source: 'agent', type: 'model.call', task_id: task, time: '2026-05-01T12:00:00Z' }));
    expect(after.json?.accepted).toBe(1);
    await expectStoredExactly(fz);
    const tl = await fz.server.pipeline.store.timeline(task);
    const stored = tl.map((e) => e.time).sort((a, b) => a - b);
    const want = [...TIMES_MS, Date.parse('2026-05-01T12:00:00Z')].sort((a, b) => a - b);
    expect(stored).toHaveLength(want.length);
    // Microsecond precision, as DateTime64(6) stores it (doubles beyond 2^53 µs round to 2 µs).
    stored.forEach((t, i) => expect(Math.abs(t - (want[i] as number)), `stored ${t}, sent ${want[i]}`).toBeLessThanOrEqual(0.002));
  }, 120_000);
});
