import { errorCode, errorMessage } from './errors.ts';
import type { RateLimitedLog } from './logger.ts';
import { sleep } from './sleep.ts';

/** Options for {@link retryUntilStopped}. */
export interface RetryUntilStoppedOptions {
  /** First delay, ms; doubles per attempt up to `maxDelayMs`. */
  baseMs: number;
  /** Longest delay between attempts, ms. Default 5 000. */
  maxDelayMs?: number;
  /** True once the caller is shutting down: the last error is then thrown instead of retried. */
  stopped: () => boolean;
  /** Where retries are counted and logged (rate-limited). */
  log: RateLimitedLog;
  /** What is being retried, for the log line. */
  what: string;
  /** Errors that no retry can fix (bad data): thrown at once instead of retried. Default none. */
  permanent?: (err: unknown) => boolean;
}

/**
 * Runs an insert or publish until it succeeds, with exponential backoff, the way the bus would
 * redeliver a failed batch: a stage's output is derived from input it has not committed, so
 * giving up would lose it. Rejects only once the stage is stopping (its input then stays
 * uncommitted and is redelivered on the next start).
 */
export async function retryUntilStopped<T>(fn: () => Promise<T>, opts: RetryUntilStoppedOptions): Promise<T> {
  const max = opts.maxDelayMs ?? 5_000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (opts.stopped() || opts.permanent?.(err) === true) throw err;
      opts.log.hit({ what: opts.what, attempt, code: errorCode(err), err: errorMessage(err) });
      await sleep(Math.min(max, opts.baseMs * 2 ** Math.min(attempt - 1, 10)));
    }
  }
}
