import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalBus } from '../../shared/bus/local-bus.ts';
import { parseConfig } from '../../shared/config.ts';
import { CanonicalEventSchema, type TimelineEvent } from '../../shared/event.ts';
import { StorageError } from '../../shared/errors.ts';
import { eventId } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { GROUP, SOURCE_TOPIC } from '../../shared/names.ts';
import { CorrelatorStage } from '../../services/correlator/correlator-stage.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';
import { openTempStore, type TempStore } from './temp-store.ts';

/**
 * Rows the store refuses for what they hold must not wedge the pipeline: the correlator isolates
 * them (halving the batch), dead-letters each with the store's reason, stores every other row and
 * commits. An outage-like failure, by contrast, is retried until it passes. Real chDB store; the
 * refusal itself is injected (the schema now stops every bad value the fuzzers found before it
 * reaches storage), shaped as chDB reports a row it cannot parse (code 27).
 */

class RefusingStore extends ClickHouseStore {
  refusals = 0;
  transientLeft = 0;

  override async insertEvents(rows: readonly TimelineEvent[]): Promise<void> {
    if (this.transientLeft > 0) {
      this.transientLeft--;
      throw new StorageError('connect ECONNREFUSED 127.0.0.1:8123', { retriable: true });
    }
    if (rows.some((r) => r.tool?.name === 'poison')) {
      this.refusals++;
      const cause = Object.assign(new Error('Cannot parse input: expected \t before: poison'), { code: '27' });
      throw new StorageError(`insert into events failed after 1 attempt (${rows.length} rows): ${cause.message}`, { retriable: false, cause });
    }
    return super.insertEvents(rows);
  }
}

let temp: TempStore<RefusingStore> | undefined;
let store: RefusingStore;

beforeAll(async () => {
  temp = await openTempStore('runtrail-refused-', RefusingStore);
  store = temp.store;
}, 60_000);

afterAll(async () => {
  await temp?.close();
});

const T0 = Date.parse('2026-10-10T10:00:00Z');

describe('correlator and rows the store refuses', () => {
  it('dead-letters exactly the refused rows, stores the rest and moves on; retries transient failures', async () => {
    const bus = new LocalBus({ dir: null, fsync: false, maxBatch: 64, maxBacklog: 10_000, segmentBytes: 1 << 20, log: silentLogger() });
    await bus.start();
    const metrics = new MetricsRegistry();
    const stage = new CorrelatorStage({ bus, store, cfg: parseConfig({}).correlator, log: silentLogger(), metrics, wallClock: false, tickMs: 3_600_000, retryBaseMs: 5 });
    await stage.start();
    store.transientLeft = 2;
    const events = Array.from({ length: 50 }, (_, i) =>
      CanonicalEventSchema.parse({
        event_id: eventId('refused', i),
        source: 'agent',
        type: 'tool.call',
        time: T0 + i,
        format: 'runtrail',
        task_id: `refused-task-${i % 5}`,
        tool: { name: i === 17 || i === 41 ? 'poison' : 'lookup' },
        ingested_at: T0,
      }),
    );
    await bus.publish(SOURCE_TOPIC.agent, events.map((e) => ({ key: e.task_id ?? '', value: e })));
    for (let i = 0; i < 400 && (await store.countEvents()) < 48; i++) await new Promise((r) => setTimeout(r, 25));
    await stage.idle();

    expect(await store.countEvents()).toBe(48);
    const letters = await store.querySql("SELECT key, code, reason, payload FROM dead_letters WHERE stage = 'correlator' ORDER BY key");
    expect(letters.map((l) => String(l.key)).sort()).toEqual([eventId('refused', 17), eventId('refused', 41)].sort());
    for (const l of letters) {
      expect(l.code).toBe('storage_rejected');
      expect(String(l.reason)).toMatch(/store events: .*Cannot parse input/);
      expect(JSON.parse(String(l.payload))).toMatchObject({ tool: { name: 'poison' } });
    }
    expect(store.refusals).toBeGreaterThan(2);
    expect(metrics.render()).toContain(`runtrail_dead_letters_total{code="storage_rejected",stage="correlator"} 2`);
    // The partition moved on: everything is committed.
    const committed = bus.whenCommitted(GROUP.correlator, SOURCE_TOPIC.agent, bus.endOffset(SOURCE_TOPIC.agent)).then(() => 'committed');
    expect(await Promise.race([committed, new Promise((r) => setTimeout(() => r('not committed'), 5000))])).toBe('committed');
    await stage.shutdown();
    await bus.shutdown();
  });
});
