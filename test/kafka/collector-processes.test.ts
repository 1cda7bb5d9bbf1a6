import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventId } from '../../shared/ids.ts';
import { kafkaConfigInput, runId, waitFor } from './helpers.ts';
import { openProcessHarness, writeConfig, type ProcessHarness } from './processes.ts';

/**
 * The collector as a real process on a real broker: killed with SIGKILL while a shipper is
 * sending, restarted, and the shipper re-sending whatever got no answer (as OpenTelemetry
 * Collector, Vector and Fluent Bit do) ends with every event stored exactly once by a correlator
 * process, including the batches Kafka already had when the collector died.
 */

let h: ProcessHarness;

beforeAll(async () => {
  h = await openProcessHarness('runtrail-kcol-');
});

afterAll(async () => {
  await h?.close();
});

const T0 = Date.parse('2026-10-01T08:00:00Z');
const BATCH = 200;

function batch(run: string, n: number): { ids: string[]; body: string } {
  const ids: string[] = [];
  const lines: string[] = [];
  for (let i = 0; i < BATCH; i++) {
    const id = eventId('kcol', run, n, i);
    ids.push(id);
    lines.push(JSON.stringify({ event_id: id, source: 'agent', type: 'tool.call', time: T0 + n * 1000 + i, task_id: `${run}-task-${n % 25}`, tool: { name: 'search' } }));
  }
  return { ids, body: lines.join('\n') };
}

describe('collector process on a real broker', () => {
  it('killed with SIGKILL mid-stream and restarted, loses nothing a shipper sent and stores nothing twice', async () => {
    const run = runId();
    const database = `${run}_col`;
    const cfgFile = writeConfig(h.dir, `${run}-col`, kafkaConfigInput(run, join(h.dir, run), { storage: { clickhouseUrl: h.chdb.url, database } }));
    let collector = await h.start('collector', cfgFile);
    const correlator = await h.start('correlator', cfgFile);

    const total = 60;
    const sent = new Set<string>();
    let acknowledged = 0;
    let failedSends = 0;
    let killed = false;
    for (let n = 0; n < total; n++) {
      const b = batch(run, n);
      if (n === 20) {
        // Crash while this batch is in flight: the shipper gets no answer for it.
        const inFlight = fetch(`${collector.url}/v1/events`, { method: 'POST', body: b.body, headers: { 'content-type': 'application/x-ndjson' } }).then(
          (r) => r.status,
          () => 0,
        );
        await collector.kill();
        killed = true;
        const status = await inFlight;
        if (status === 200) acknowledged++;
      }
      for (let attempt = 0; ; attempt++) {
        expect(attempt).toBeLessThan(20);
        try {
          const res = await fetch(`${collector.url}/v1/events`, { method: 'POST', body: b.body, headers: { 'content-type': 'application/x-ndjson' } });
          const json = (await res.json()) as { accepted?: number };
          if (res.status === 200) {
            expect(json.accepted).toBe(BATCH);
            acknowledged++;
            break;
          }
          expect(res.status).toBe(503);
        } catch {
          failedSends++;
          // The collector is gone: the shipper waits and tries again (here: once it is back).
          if (collector.child.exitCode !== null || collector.child.signalCode !== null) {
            collector = await h.start('collector', cfgFile);
          }
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      b.ids.forEach((id) => sent.add(id));
    }
    expect(killed).toBe(true);
    expect(failedSends).toBeGreaterThan(0);
    expect(acknowledged).toBeGreaterThanOrEqual(total);

    const store = h.store(database);
    await store.start();
    const n = await waitFor(() => store.countEvents(), (v) => v >= sent.size, 90_000);
    expect(n).toBe(sent.size);
    const rows = await store.querySql('SELECT toString(event_id) AS id FROM events FINAL', {}, { maxRows: 100_000 });
    expect(rows).toHaveLength(sent.size);
    expect(new Set(rows.map((r) => String(r.id)))).toEqual(sent);
    expect(await collector.stop()).toBe(0);
    expect(await correlator.stop()).toBe(0);
    await store.shutdown();
  }, 240_000);
});
