import { describe, expect, it } from 'vitest';
import { formatKafkaBenchTable, runKafkaBench } from '../../services/bench/kafka-bench.ts';
import { parseConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { brokers } from './helpers.ts';

/**
 * `runtrail bench --kafka` at a small scale on the real broker, with correlators as real child
 * processes: every generated event is accounted for in the live phase and in each drain phase
 * (stored, or inside its grace period), once. Asserts counts, never speed.
 */
describe('kafka benchmark', () => {
  it('runs the live phase and drains with one then two correlator processes, accounting for every event', async () => {
    const r = await runKafkaBench({
      // A short wall-clock grace, so that every drain settles within the test.
      cfg: parseConfig({ kafka: { brokers: brokers() }, correlator: { graceWallMs: 1_000 } }),
      log: silentLogger(),
      events: 3000,
      openTasks: 60,
      eventsPerTask: 12,
      seed: 4,
      partitions: 3,
      correlators: [1, 2],
    });
    expect(r.events).toBeGreaterThanOrEqual(3000);
    expect(r.drain.map((d) => d.correlators)).toEqual([1, 2]);
    for (const d of r.drain) {
      // Every event stored, and none twice (under two attributions), with one instance or two.
      expect(d.settled_pending).toBe(0);
      expect(d.settled_events).toBe(r.events);
      expect(d.settled_rows).toBe(r.events);
      expect(d.stored + d.pending).toBeGreaterThanOrEqual(r.events);
    }
    expect(r.events_per_s).toBe(r.drain[0]?.events_per_s);
    // Published events reach storage some time after they were sent.
    expect(r.lag_p50_ms).toBeGreaterThan(0);
    expect(r.lag_p99_ms).toBeGreaterThanOrEqual(r.lag_p50_ms);
    const table = formatKafkaBenchTable(r);
    expect(table).toContain('drain: 2  correlators');
  }, 240_000);
});
