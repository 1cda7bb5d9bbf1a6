import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CanonicalEventSchema } from '../../shared/event.ts';
import { eventId } from '../../shared/ids.ts';
import { SOURCE_TOPIC } from '../../shared/names.ts';
import { connectedProducer, kafkaConfigInput, runId, topicsFor, waitFor } from './helpers.ts';
import { metricTotal, openProcessHarness, writeConfig } from './processes.ts';

/**
 * A consumer that falls behind: the correlator process writes to a ClickHouse that holds every
 * insert for 20 s (the consumer all but stops), while 60,000 events of about 6 KB each (some
 * 350 MB) arrive. Its lag grows into tens of thousands of messages, and its memory stays bounded: the heap stays below what is
 * waiting for it (the fetch size, the in-flight outputs and `storage.maxPendingRows` bound it,
 * not the backlog). Once storage is fast again, every event is stored exactly once.
 */

const T0 = Date.parse('2026-07-01T08:00:00Z');
const EVENTS = 60_000;
const HEAP_BOUND = 192 * 1024 * 1024;

describe('slow consumer on a real broker', () => {
  it('lets lag grow while memory stays bounded, then stores every event once', async () => {
    const h = await openProcessHarness('runtrail-slow-');
    const run = runId();
    const database = `${run}_slow`;
    const cfg = kafkaConfigInput(run, join(h.dir, 'data'), {
      // The writer's buffer is the configured bound on what waits for storage in memory.
      storage: { clickhouseUrl: h.chdb.url, database, batchMaxRows: 2_000, maxPendingRows: 5_000 },
      correlator: { maxInFlight: 2 },
    });
    const proc = await h.start('correlator', writeConfig(h.dir, run, cfg));
    // Slow from now on (its start-up writes its schema versions, which must not wait).
    h.chdb.setInsertDelayMs(20_000);
    const producer = await connectedProducer('slow-test');
    const store = h.store(database);
    let maxLag = 0;
    let maxHeap = 0;
    let sampling = true;
    // Sampled while the consumer is slow; the drain afterwards is not what this test bounds.
    const sampler = (async () => {
      while (sampling) {
        maxLag = Math.max(maxLag, await metricTotal(proc.url, 'runtrail_consumer_lag_messages', 'stage="correlator"'));
        maxHeap = Math.max(maxHeap, await metricTotal(proc.url, 'nodejs_heap_used_bytes'));
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    try {
      const filler = 'x'.repeat(5_800);
      let bytes = 0;
      const topic = topicsFor(run)[SOURCE_TOPIC.agent] as string;
      for (let i = 0; i < EVENTS; i += 500) {
        const messages = Array.from({ length: 500 }, (_, j) => {
          const n = i + j;
          const task = `${run}-task-${n % 400}`;
          const e = CanonicalEventSchema.parse({
            event_id: eventId('slow', run, n),
            source: 'agent',
            type: 'tool.call',
            format: 'runtrail',
            time: T0 + n,
            task_id: task,
            tool: { name: 'summarise_text', arguments: JSON.stringify({ text: `${n} ${filler}` }) },
          });
          const value = JSON.stringify(e);
          bytes += value.length;
          return { key: task, value };
        });
        await producer.send({ topic, acks: -1, messages });
      }
      // The lag gauge is refreshed every 5 s: give it time to show the backlog, until what waits
      // in Kafka is well beyond the heap bound.
      const avg = bytes / EVENTS;
      await waitFor(async () => maxLag, (v) => v * avg >= 1.25 * HEAP_BOUND, 60_000);
      expect(maxLag, `heap ${maxHeap}`).toBeGreaterThanOrEqual(30_000);
      expect(maxLag * avg, `lag ${maxLag}, heap ${maxHeap}`).toBeGreaterThan(1.25 * HEAP_BOUND);
      // ...while the process's heap (live and not yet collected objects alike) stayed under it.
      expect(maxHeap).toBeGreaterThan(0);
      expect(maxHeap, `lag ${maxLag}, heap ${maxHeap}`).toBeLessThan(HEAP_BOUND);

      // Storage is fast again: the backlog drains, and every event is stored once.
      sampling = false;
      await sampler;
      h.chdb.setInsertDelayMs(0);
      await store.start();
      const stored = await waitFor(() => store.countEvents(), (n) => n >= EVENTS, 180_000);
      expect(stored).toBe(EVENTS);
      const distinct = await store.querySql('SELECT uniqExact(event_id) AS n, count() AS rows FROM events FINAL');
      expect(distinct[0]).toEqual({ n: String(EVENTS), rows: String(EVENTS) });
      expect(await proc.stop()).toBe(0);
    } finally {
      sampling = false;
      await sampler.catch(() => undefined);
      await producer.disconnect();
      await store.shutdown().catch(() => undefined);
      await h.close();
    }
  }, 300_000);
});
