import { afterEach, describe, expect, it } from 'vitest';
import { ParsePool, ParseWorkerError } from '../../services/collector/parse-pool.ts';

/**
 * The collector's parse workers: real worker threads. A worker that dies must not leave requests
 * hanging: they fail with a retriable error (the collector answers 503 + Retry-After) and the
 * pool replaces the worker, so the next request is served.
 */

const pools: ParsePool[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.shutdown();
});

const line = (i: number) => JSON.stringify({ source: 'agent', type: 'tool.call', time: '2026-05-01T12:00:00Z', task_id: `t-${i}`, tool: { name: 'lookup' } });

describe('parse pool', () => {
  it('converts bodies on a worker, and reports a bad record as the adapter does', async () => {
    const pool = new ParsePool(1, 'structural');
    pools.push(pool);
    const ok = await pool.parse('runtrail', 'application/x-ndjson', Buffer.from([line(1), line(2)].join('\n')));
    expect(ok.ok).toBe(true);
    if (ok.ok) expect(ok.accepted).toBe(2);
  });

  it('replaces a worker that dies, failing its requests with a retriable error instead of hanging', async () => {
    const pool = new ParsePool(1, 'structural');
    pools.push(pool);
    // A large body keeps the worker busy while it is killed.
    const big = Buffer.from(Array.from({ length: 40_000 }, (_, i) => line(i)).join('\n'));
    const inFlight = pool.parse('runtrail', 'application/x-ndjson', big);
    await pool.crashWorkerForTest(0);
    const err = await inFlight.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ParseWorkerError);
    expect((err as ParseWorkerError).retriable).toBe(true);
    expect(pool.restarts).toBe(1);
    // The replacement serves the next request.
    const next = await pool.parse('runtrail', 'application/x-ndjson', Buffer.from(line(7)));
    expect(next.ok && next.accepted).toBe(1);
  });
});
