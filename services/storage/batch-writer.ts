import { sleep } from '../../shared/sleep.ts';
import { createHash } from 'node:crypto';
import { RecordError, StorageError, errorCode, errorMessage, isRetriable } from '../../shared/errors.ts';
import { RateLimitedLog, type Logger } from '../../shared/logger.ts';
import type { Counter, Gauge, Histogram, MetricsRegistry } from '../../shared/metrics.ts';
import { clickhouseErrorCode } from './clickhouse.ts';

/**
 * Batches rows for one table into large inserts (ClickHouse wants few big inserts, not many
 * small ones) while keeping each caller's promise honest: it resolves only once every row the
 * caller handed in is stored, so the caller may commit its offsets then, and it rejects with a
 * StorageError if any of them could not be stored after all attempts. Nothing is dropped silently.
 *
 * - Flushes when `maxRows` rows are buffered, `maxDelayMs` after the first buffered row, or at
 *   once when the writer is idle and `eagerRows` rows are buffered.
 * - Backpressure: rows accepted but not yet stored are capped at `maxPendingRows`; callers beyond
 *   that wait (FIFO) until a flush frees room. A single call larger than the cap is admitted
 *   once nothing else is pending, so it cannot wait forever.
 * - Retries retriable failures with exponential backoff and jitter, up to `attempts` tries. Each
 *   batch carries an insert_deduplication_token derived from its content, so a retry of an
 *   insert that did land (timeout after commit) is dropped by ClickHouse rather than duplicated,
 *   while a batch with the same rows but different content (a binding's revocation) is not. The
 *   token hashes the encoded body, or, when the table gives a `tokenKey`, each row's short key
 *   (id plus the fields that can change between deliveries): the same guarantee for ~2% of the
 *   bytes on the events table.
 * - Inserts for one table run one at a time by default, so rows are stored in arrival order (the
 *   next batch is encoded while the current one is written).
 */

/** Counters and gauges shared by all writers of a store. */
export class StorageMetrics {
  readonly rowsWritten: Counter;
  readonly insertErrors: Counter;
  readonly insertRetries: Counter;
  readonly flushSeconds: Histogram;
  readonly batchRows: Histogram;
  private readonly buffered: Gauge;
  private readonly sources = new Map<string, () => number>();

  constructor(registry: MetricsRegistry) {
    this.rowsWritten = registry.counter('runtrail_storage_rows_written_total', 'Rows stored, by table.');
    this.insertErrors = registry.counter(
      'runtrail_storage_insert_errors_total',
      'Failed insert attempts, by table, error code and whether it will be retried.',
    );
    this.insertRetries = registry.counter('runtrail_storage_insert_retries_total', 'Insert attempts that were retries, by table.');
    this.flushSeconds = registry.histogram(
      'runtrail_storage_flush_duration_seconds',
      'Time to store one batch including retries, seconds, by table.',
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    this.batchRows = registry.histogram('runtrail_storage_batch_rows', 'Rows per insert, by table.', [
      1, 10, 100, 1000, 5000, 10_000, 20_000, 50_000, 100_000,
    ]);
    this.buffered = registry.gauge('runtrail_storage_buffered_rows', 'Rows accepted but not yet stored, by table.');
    this.buffered.collect(() => [...this.sources].map(([table, fn]) => [{ table }, fn()]));
  }

  /** Reports a writer's pending rows on the buffered-rows gauge. */
  track(table: string, pending: () => number): void {
    this.sources.set(table, pending);
  }
}

/** Options of a {@link BatchWriter}. */
export interface BatchWriterOptions<T> {
  /** Table name, for logs, metrics, errors and the dedup token. */
  name: string;
  /** Rows per insert at most (`storage.batchMaxRows`). */
  maxRows: number;
  /** Longest a row waits before its batch is flushed, ms (`storage.batchMaxDelayMs`). */
  maxDelayMs: number;
  /** Rows accepted but not yet stored before callers wait (`storage.maxPendingRows`). */
  maxPendingRows: number;
  /** Tries per batch, the first included (`storage.insertAttempts`). */
  attempts: number;
  /** Encodes one row as one line of the insert body (no newline). May throw RecordError. */
  encode: (row: T) => string;
  /**
   * A short key per row for the dedup token instead of the whole encoded line: it must change
   * whenever anything stored for the row can differ between two deliveries of it (so it is the
   * row's id plus the fields derived after the source record). Default: hash the body.
   */
  tokenKey?: (row: T) => string;
  /** Stores one batch. `body` is newline-separated encoded rows; `token` names its content. */
  write: (body: string, rows: number, token: string) => Promise<void>;
  log: Logger;
  metrics?: StorageMetrics;
  /** Backoff before the second try, ms; doubles each retry. Default 100. */
  backoffBaseMs?: number;
  /** Backoff cap, ms. Default 5 000. */
  backoffMaxMs?: number;
  /** Decides whether a failed insert is worth retrying. Default {@link isRetriableInsertError}. */
  isRetriable?: (err: unknown) => boolean;
  /** Inserts in flight at once. Default 1 (keeps arrival order). */
  concurrency?: number;
  /**
   * When no insert is in flight, flush as soon as this many rows are buffered instead of waiting
   * for `maxDelayMs`. Default `ceil(maxRows / 10)`. A caller that awaits each call before the next
   * (a consumer loop) would otherwise pay the full delay on every call; tiny trickles still wait
   * and go out together, so ClickHouse is not fed one small part per call.
   */
  eagerRows?: number;
}

/** One caller's `add` call: settles when all of its rows are stored or one batch failed. */
interface Ticket {
  /** Rows of this call still in the buffer (not yet cut into a batch). */
  uncut: number;
  /** Batches holding rows of this call that have not finished. */
  open: number;
  settled: boolean;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Batch {
  lines: string[];
  /** Rows' token keys, when the table has them (see {@link BatchWriterOptions.tokenKey}). */
  keys: string[] | undefined;
  tickets: Set<Ticket>;
}

interface Waiter {
  rows: number;
  admit: () => void;
}

/**
 * ClickHouse error codes that no retry can fix (bad SQL, bad data, missing objects, permissions).
 * Anything else, including network errors, is treated as transient.
 */
const PERMANENT_CLICKHOUSE_CODES = new Set([
  '6', // CANNOT_PARSE_TEXT
  '16', // NO_SUCH_COLUMN_IN_TABLE
  '26', // CANNOT_PARSE_QUOTED_STRING
  '27', // CANNOT_PARSE_INPUT_ASSERTION_FAILED
  '38', // CANNOT_PARSE_DATE
  '41', // CANNOT_PARSE_DATETIME
  '47', // UNKNOWN_IDENTIFIER
  '53', // TYPE_MISMATCH
  '60', // UNKNOWN_TABLE
  '62', // SYNTAX_ERROR
  '69', // ARGUMENT_OUT_OF_BOUND
  '72', // CANNOT_PARSE_NUMBER
  '81', // UNKNOWN_DATABASE
  '117', // INCORRECT_DATA
  '164', // READONLY
  '497', // ACCESS_DENIED
  '516', // AUTHENTICATION_FAILED
]);

/**
 * The subset of {@link PERMANENT_CLICKHOUSE_CODES} that says the rows themselves are wrong (as
 * opposed to the schema, the SQL or the credentials, which an operator fixes while the writer
 * keeps retrying).
 */
const BAD_DATA_CLICKHOUSE_CODES = new Set(['6', '26', '27', '38', '41', '53', '69', '72', '117']);

/**
 * True when an insert failed because of its rows: a row that cannot be encoded (RecordError) or
 * that ClickHouse refuses to parse or hold. Callers isolate and dead-letter such rows; any other
 * failure, permanent or not, is worth waiting out.
 */
export function isBadDataInsertError(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; e instanceof Error && depth < 5; depth++) {
    if (e instanceof RecordError) return true;
    const code = clickhouseErrorCode(e);
    if (code !== undefined) return BAD_DATA_CLICKHOUSE_CODES.has(code);
    e = e.cause;
  }
  return false;
}

/** Default retry decision for inserts. */
export function isRetriableInsertError(err: unknown): boolean {
  const code = clickhouseErrorCode(err);
  if (code !== undefined) return !PERMANENT_CLICKHOUSE_CODES.has(code);
  return isRetriable(err);
}

/** A batching, retrying, backpressured writer for one table. */
export class BatchWriter<T> {
  private readonly opts: Required<Omit<BatchWriterOptions<T>, 'metrics' | 'tokenKey'>> & Pick<BatchWriterOptions<T>, 'metrics' | 'tokenKey'>;
  private buffer: string[] = [];
  /** Token keys of the buffered rows, parallel to `buffer` (only with a `tokenKey`). */
  private keyBuffer: string[] = [];
  /** Which ticket each buffered row belongs to, as runs: [ticket, row count] in buffer order. */
  private runs: Array<[Ticket, number]> = [];
  private readonly ready: Batch[] = [];
  private readonly waiters: Waiter[] = [];
  private inFlight = 0;
  /** Rows accepted (buffered, queued or being inserted) and not yet finished. */
  private pending = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  private readonly retryLog: RateLimitedLog;

  constructor(opts: BatchWriterOptions<T>) {
    this.opts = {
      ...opts,
      backoffBaseMs: opts.backoffBaseMs ?? 100,
      backoffMaxMs: opts.backoffMaxMs ?? 5_000,
      isRetriable: opts.isRetriable ?? isRetriableInsertError,
      concurrency: Math.max(1, opts.concurrency ?? 1),
      eagerRows: opts.eagerRows ?? Math.ceil(opts.maxRows / 10),
    };
    this.retryLog = new RateLimitedLog(opts.log, 'insert failed, retrying');
    opts.metrics?.track(opts.name, () => this.pending);
  }

  /** Rows accepted and not yet stored. */
  get pendingRows(): number {
    return this.pending;
  }

  /**
   * Adds rows; resolves once all of them are stored. Rejects with RecordError (field
   * `[index].field`) without buffering anything when a row cannot be encoded, and with
   * StorageError when its batch could not be stored.
   */
  async add(rows: readonly T[]): Promise<void> {
    if (this.closed) throw new StorageError(`writer for ${this.opts.name} is shut down`, { retriable: false });
    if (rows.length === 0) return;
    const lines = new Array<string>(rows.length);
    for (let i = 0; i < rows.length; i++) {
      try {
        lines[i] = this.opts.encode(rows[i] as T);
      } catch (err) {
        if (err instanceof RecordError) throw new RecordError(`[${i}]${err.field ? `.${err.field}` : ''}`, err.reason, err);
        throw new RecordError(`[${i}]`, `cannot encode row for ${this.opts.name}: ${errorMessage(err)}`, err);
      }
    }
    const tokenKey = this.opts.tokenKey;
    const keys = tokenKey ? rows.map((r) => tokenKey(r)) : undefined;
    await this.admit(lines.length);

    const done = new Promise<void>((resolve, reject) => {
      const ticket: Ticket = { uncut: lines.length, open: 0, settled: false, resolve, reject };
      for (const line of lines) this.buffer.push(line);
      if (keys) for (const k of keys) this.keyBuffer.push(k);
      this.runs.push([ticket, lines.length]);
    });
    if (this.closed || this.waiters.length > 0) {
      // Shutting down, or callers are waiting for room: nothing is worth holding back.
      this.cut(false);
    } else if (this.buffer.length >= this.opts.maxRows) {
      this.cut(true);
    }
    this.eagerCut();
    if (this.buffer.length > 0 && this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.cut(false);
      }, this.opts.maxDelayMs);
    }
    return done;
  }

  /** Sends everything buffered now and waits until nothing is pending. */
  async flush(): Promise<void> {
    this.cut(false);
    await this.idle();
  }

  /** Refuses new rows, stores everything accepted, then resolves. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  /** Waits for room under maxPendingRows, then reserves it. FIFO, so large calls don't starve. */
  private admit(rows: number): Promise<void> {
    if (this.waiters.length === 0 && this.fits(rows)) {
      this.pending += rows;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.waiters.push({ rows, admit: resolve });
      // Rows waiting for their delay only hold the waiter up: send them now.
      this.cut(false);
    });
  }

  private fits(rows: number): boolean {
    return this.pending === 0 || this.pending + rows <= this.opts.maxPendingRows;
  }

  private wake(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0] as Waiter;
      if (!this.fits(w.rows)) break;
      this.waiters.shift();
      this.pending += w.rows;
      w.admit();
    }
  }

  /** Moves buffered rows into batches: only full ones when `fullOnly`, else everything. */
  private cut(fullOnly: boolean): void {
    const max = this.opts.maxRows;
    while (this.buffer.length >= (fullOnly ? max : 1)) {
      const n = Math.min(max, this.buffer.length);
      const lines = this.buffer.length === n ? this.buffer : this.buffer.slice(0, n);
      this.buffer = this.buffer.length === n ? [] : this.buffer.slice(n);
      let keys: string[] | undefined;
      if (this.opts.tokenKey) {
        keys = this.keyBuffer.length === n ? this.keyBuffer : this.keyBuffer.slice(0, n);
        this.keyBuffer = this.keyBuffer.length === n ? [] : this.keyBuffer.slice(n);
      }
      const tickets = new Set<Ticket>();
      let left = n;
      while (left > 0) {
        const run = this.runs[0] as [Ticket, number];
        const take = Math.min(left, run[1]);
        const ticket = run[0];
        if (!tickets.has(ticket)) {
          tickets.add(ticket);
          ticket.open += 1;
        }
        ticket.uncut -= take;
        run[1] -= take;
        left -= take;
        if (run[1] === 0) this.runs.shift();
      }
      this.ready.push({ lines, keys, tickets });
    }
    if (this.buffer.length === 0 && this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.pump();
  }

  /** Sends what is buffered when the writer is idle and enough has gathered (see `eagerRows`). */
  private eagerCut(): void {
    if (this.inFlight === 0 && this.ready.length === 0 && this.buffer.length >= this.opts.eagerRows) this.cut(false);
  }

  private pump(): void {
    while (this.inFlight < this.opts.concurrency && this.ready.length > 0) {
      const batch = this.ready.shift() as Batch;
      this.inFlight += 1;
      // send() settles its callers itself; this only reports a bug in that bookkeeping.
      this.send(batch).catch((err: unknown) => this.opts.log.error({ table: this.opts.name, err: errorMessage(err) }, 'batch writer bookkeeping failed'));
    }
  }

  /** Stores one batch with retries; never throws (outcome goes to the batch's tickets). */
  private async send(batch: Batch): Promise<void> {
    const { name, attempts, metrics, log } = this.opts;
    const rows = batch.lines.length;
    // One flat string: `${lines.join('\n')}\n` would be a rope, which chDB's client flattens into a
    // full copy (it trims the body) before copying it again into the engine.
    batch.lines.push('');
    const body = batch.lines.join('\n');
    batch.lines.pop();
    const token = createHash('sha256')
      .update(name)
      .update(batch.keys ? '\u0000keys\n' : '\n')
      .update(batch.keys ? batch.keys.join('\n') : body)
      .digest('hex');
    const started = performance.now();
    let failure: StorageError | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        if (attempt > 1) metrics?.insertRetries.inc({ table: name });
        await this.opts.write(body, rows, token);
        break;
      } catch (err) {
        const retriable = this.opts.isRetriable(err);
        const willRetry = retriable && attempt < attempts;
        metrics?.insertErrors.inc({ table: name, code: errorCode(err), retried: String(willRetry) });
        if (!willRetry) {
          failure = new StorageError(
            `insert into ${name} failed after ${attempt} attempt${attempt === 1 ? '' : 's'} (${rows} rows): ${errorMessage(err)}`,
            { retriable, cause: err },
          );
          log.error({ table: name, rows, attempt, code: errorCode(err), err: errorMessage(err) }, 'insert failed');
          break;
        }
        this.retryLog.hit({ table: name, rows, attempt, code: errorCode(err), err: errorMessage(err) });
        await sleep(this.backoff(attempt));
      }
    }
    const seconds = (performance.now() - started) / 1000;
    metrics?.flushSeconds.observe(seconds, { table: name });
    if (failure === undefined) {
      metrics?.rowsWritten.inc({ table: name }, rows);
      metrics?.batchRows.observe(rows, { table: name });
    }
    for (const ticket of batch.tickets) {
      ticket.open -= 1;
      if (ticket.settled) continue;
      if (failure !== undefined) {
        ticket.settled = true;
        ticket.reject(failure);
      } else if (ticket.open === 0 && ticket.uncut === 0) {
        ticket.settled = true;
        ticket.resolve();
      }
    }
    this.inFlight -= 1;
    this.pending -= rows;
    this.wake();
    this.pump();
    this.eagerCut();
    if (this.pending === 0 && this.waiters.length === 0) {
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const fn of idle) fn();
    }
  }

  /** Exponential backoff with jitter (half fixed, half random) so retries of peers spread out. */
  private backoff(attempt: number): number {
    const exp = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** (attempt - 1));
    return exp / 2 + Math.random() * (exp / 2);
  }

  private idle(): Promise<void> {
    if (this.pending === 0 && this.waiters.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
