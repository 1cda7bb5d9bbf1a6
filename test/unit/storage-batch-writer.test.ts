import { ClickHouseError } from '@clickhouse/client';
import { describe, expect, it } from 'vitest';
import { RecordError, StorageError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { BatchWriter, StorageMetrics, isRetriableInsertError, type BatchWriterOptions } from '../../services/storage/batch-writer.ts';

/**
 * Unit tests of the batching, backpressure and retry logic against a recording `write` function.
 * The integration test (test/integration/storage.test.ts) runs the same writer against chDB.
 */

interface Call {
  rows: string[];
  token: string;
  at: number;
}

function recorder(opts: { delayMs?: number; fail?: (n: number) => Error | undefined } = {}) {
  const calls: Call[] = [];
  let attempts = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const write = async (body: string, rows: number, token: string): Promise<void> => {
    attempts++;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
      const err = opts.fail?.(attempts);
      if (err) throw err;
      const lines = body.trimEnd().split('\n');
      expect(lines).toHaveLength(rows);
      calls.push({ rows: lines, token, at: Date.now() });
    } finally {
      inFlight--;
    }
  };
  return {
    calls,
    write,
    attempts: () => attempts,
    maxInFlight: () => maxInFlight,
    stored: () => calls.flatMap((c) => c.rows),
  };
}

function writer(
  write: BatchWriterOptions<number>['write'],
  over: Partial<BatchWriterOptions<number>> = {},
): BatchWriter<number> {
  return new BatchWriter<number>({
    name: 'test',
    maxRows: 100,
    maxDelayMs: 50,
    maxPendingRows: 1000,
    attempts: 3,
    encode: (n) => JSON.stringify([n]),
    write,
    log: silentLogger(),
    backoffBaseMs: 1,
    backoffMaxMs: 5,
    eagerRows: Number.MAX_SAFE_INTEGER,
    ...over,
  });
}

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

describe('BatchWriter', () => {
  it('flushes on size without waiting for the delay', async () => {
    const r = recorder();
    const w = writer(r.write, { maxRows: 100, maxDelayMs: 600_000 });
    // With a 10 min delay, a writer that waited for it would run into the test's timeout.
    await w.add(range(0, 200));
    expect(r.calls.map((c) => c.rows.length)).toEqual([100, 100]);
    await w.close();
  });

  it('flushes on time when the size is not reached, resolving only after the write', async () => {
    const r = recorder();
    const w = writer(r.write, { maxRows: 1000, maxDelayMs: 80 });
    const started = Date.now();
    const p = w.add([1, 2, 3]);
    await new Promise((res) => setTimeout(res, 20));
    expect(r.calls).toHaveLength(0);
    await p;
    expect(Date.now() - started).toBeGreaterThanOrEqual(70);
    expect(r.stored()).toEqual(['[1]', '[2]', '[3]']);
    await w.close();
  });

  it('sends at once when idle and eagerRows are buffered', async () => {
    const r = recorder();
    const w = writer(r.write, { maxRows: 1000, maxDelayMs: 60_000, eagerRows: 10 });
    await w.add(range(0, 10));
    expect(r.calls).toHaveLength(1);
    await w.close();
  });

  it('batches concurrent callers together and resolves each once its rows are stored', async () => {
    const r = recorder({ delayMs: 10 });
    const w = writer(r.write, { maxRows: 100, maxDelayMs: 20 });
    const calls = range(0, 30).map((i) => w.add(range(i * 10, 10)));
    await Promise.all(calls);
    const stored = r.stored().map((l) => (JSON.parse(l) as number[])[0]);
    expect(stored).toEqual(range(0, 300));
    expect(r.calls.length).toBeLessThanOrEqual(4);
    expect(r.maxInFlight()).toBe(1);
    await w.close();
  });

  it('holds callers back when pending rows exceed maxPendingRows, then admits them in order', async () => {
    const r = recorder({ delayMs: 30 });
    const w = writer(r.write, { maxRows: 50, maxDelayMs: 5, maxPendingRows: 100 });
    let thirdDone = false;
    const a = w.add(range(0, 60));
    const b = w.add(range(60, 40));
    expect(w.pendingRows).toBe(100);
    const c = w.add(range(100, 50)).then(() => {
      thirdDone = true;
    });
    // Still 100 pending: the third call waits for room, not in the buffer.
    expect(w.pendingRows).toBe(100);
    await a;
    await b;
    await c;
    expect(thirdDone).toBe(true);
    expect(r.stored().map((l) => (JSON.parse(l) as number[])[0])).toEqual(range(0, 150));
    await w.close();
  });

  it('admits a single call larger than maxPendingRows once nothing else is pending', async () => {
    const r = recorder();
    const w = writer(r.write, { maxRows: 100, maxPendingRows: 50 });
    await w.add(range(0, 300));
    expect(r.stored()).toHaveLength(300);
    await w.close();
  });

  it('retries retriable failures with the same token and stores the batch once', async () => {
    const r = recorder({ fail: (n) => (n <= 2 ? new Error('ECONNRESET') : undefined) });
    const tokens: string[] = [];
    const w = writer(
      async (body, rows, token) => {
        tokens.push(token);
        await r.write(body, rows, token);
      },
      { attempts: 3 },
    );
    await w.add([1, 2, 3]);
    expect(r.attempts()).toBe(3);
    expect(new Set(tokens).size).toBe(1);
    expect(r.stored()).toHaveLength(3);
    await w.close();
  });

  it('rejects every caller of a batch with StorageError after the last attempt, never dropping silently', async () => {
    const metrics = new MetricsRegistry();
    const r = recorder({ fail: () => new Error('connection refused') });
    const w = writer(r.write, { attempts: 4, metrics: new StorageMetrics(metrics) });
    const results = await Promise.allSettled([w.add([1]), w.add([2])]);
    for (const res of results) {
      expect(res.status).toBe('rejected');
      const err = (res as PromiseRejectedResult).reason as StorageError;
      expect(err).toBeInstanceOf(StorageError);
      expect(err.retriable).toBe(true);
      expect(err.message).toMatch(/insert into test failed after 4 attempts \(2 rows\): connection refused/);
    }
    expect(r.attempts()).toBe(4);
    expect(metrics.render()).toMatch(/runtrail_storage_insert_errors_total\{code="internal",retried="true",table="test"\} 3/);
    await w.close();
  });

  it('does not retry permanent ClickHouse errors', async () => {
    const syntax = new ClickHouseError({ message: 'Syntax error', code: '62', type: 'SYNTAX_ERROR' });
    expect(isRetriableInsertError(syntax)).toBe(false);
    expect(isRetriableInsertError(new ClickHouseError({ message: 'Too many parts', code: '252', type: 'TOO_MANY_PARTS' }))).toBe(true);
    // chDB throws client-common's ClickHouseError, another class with the same shape.
    expect(isRetriableInsertError(Object.assign(new Error('Cannot parse input'), { code: '27' }))).toBe(false);
    expect(isRetriableInsertError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))).toBe(true);
    const r = recorder({ fail: () => syntax });
    const w = writer(r.write, { attempts: 5 });
    const err = await w.add([1]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).retriable).toBe(false);
    expect(r.attempts()).toBe(1);
    await w.close();
  });

  it('derives the token from content: same rows same token, changed rows another', async () => {
    const r = recorder();
    const w = writer(r.write, { maxDelayMs: 1 });
    await w.add([1, 2]);
    await w.add([1, 2]);
    await w.add([1, 3]);
    const [a, b, c] = r.calls.map((x) => x.token);
    expect(a).toBe(b);
    expect(a).not.toBe(c);
    await w.close();
  });

  it('rejects a row that cannot be encoded with its index, buffering nothing of that call', async () => {
    const r = recorder();
    const w = new BatchWriter<number>({
      name: 'test',
      maxRows: 10,
      maxDelayMs: 1,
      maxPendingRows: 100,
      attempts: 1,
      encode: (n) => {
        if (n < 0) throw new RecordError('time', 'negative');
        return String(n);
      },
      write: r.write,
      log: silentLogger(),
    });
    const err = await w.add([1, -1]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RecordError);
    expect((err as RecordError).field).toBe('[1].time');
    expect(w.pendingRows).toBe(0);
    await w.close();
    expect(r.calls).toHaveLength(0);
  });

  it('close stores what was accepted and refuses new rows', async () => {
    const r = recorder({ delayMs: 5 });
    const w = writer(r.write, { maxRows: 1000, maxDelayMs: 60_000 });
    const p = w.add([1, 2, 3]);
    await w.close();
    await p;
    expect(r.stored()).toHaveLength(3);
    await expect(w.add([4])).rejects.toThrow(/shut down/);
    await w.close();
  });

  it('reports buffered rows on the gauge and rows written on the counter', async () => {
    const registry = new MetricsRegistry();
    const r = recorder({ delayMs: 20 });
    const w = writer(r.write, { metrics: new StorageMetrics(registry), maxDelayMs: 1 });
    const p = w.add([1, 2, 3]);
    expect(registry.render()).toMatch(/runtrail_storage_buffered_rows\{table="test"\} 3/);
    await p;
    const text = registry.render();
    expect(text).toMatch(/runtrail_storage_buffered_rows\{table="test"\} 0/);
    expect(text).toMatch(/runtrail_storage_rows_written_total\{table="test"\} 3/);
    expect(text).toMatch(/runtrail_storage_flush_duration_seconds_count\{table="test"\} 1/);
    await w.close();
  });
});
