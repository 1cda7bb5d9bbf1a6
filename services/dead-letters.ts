import type { Bus, DeadLetter, UndecodableMessage } from '../shared/bus/bus.ts';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { MetricsRegistry } from '../shared/metrics.ts';
import { retryUntilStopped, type RetryUntilStoppedOptions } from '../shared/retry.ts';
import { isBadDataInsertError } from './storage/batch-writer.ts';
import { TOPIC } from '../shared/names.ts';
import type { Store } from './storage/store.ts';

/**
 * Routes poison messages (payloads that fail their topic's schema) to the dead-letter table and
 * topic with their reason, so the consuming stage can move its partition on. Shared by every stage.
 */
export async function deadLetterUndecodable(
  stage: string,
  bad: readonly UndecodableMessage[],
  deps: { store: Store; bus: Bus; metrics: MetricsRegistry },
): Promise<DeadLetter[]> {
  if (bad.length === 0) return [];
  const now = Date.now();
  const rows: DeadLetter[] = bad.map((u) => ({
    stage,
    topic: u.topic,
    partition: u.partition,
    offset: u.offset,
    key: u.key,
    code: 'payload_invalid',
    reason: u.reason,
    payload: u.raw,
    time: now,
  }));
  await recordDeadLetters(stage, rows, deps);
  return rows;
}

/**
 * Stores dead letters in the `dead_letters` table, publishes them on the dead-letter topic and
 * counts them by stage and code.
 */
export async function recordDeadLetters(stage: string, rows: readonly DeadLetter[], deps: { store: Store; bus: Bus; metrics: MetricsRegistry }): Promise<void> {
  if (rows.length === 0) return;
  await deps.store.insertDeadLetters(rows);
  await deps.bus.publish(TOPIC.deadLetter, rows.map((r) => ({ key: `${r.topic}/${r.partition}/${r.offset}`, value: r })));
  const counter = deps.metrics.counter('runtrail_dead_letters_total', 'Messages dead-lettered, by stage and code');
  for (const r of rows) counter.inc({ stage, code: r.code });
}

/** Options for {@link storeOrDeadLetter}. */
export interface StoreOrDeadLetterOptions<T> {
  /** Stage that gives up on a refused row (`dead_letters.stage`). */
  stage: string;
  /** Logical topic the rows belong to (`dead_letters.topic`). */
  topic: string;
  /** What is stored, for logs and the dead letter's reason (`store events`). */
  what: string;
  rows: readonly T[];
  insert: (rows: readonly T[]) => Promise<void>;
  /** The dead letter's key for a row (its id). */
  key: (row: T) => string;
  /** Retry policy: base delay, stop flag and rate-limited log (see {@link retryUntilStopped}). */
  retry: Omit<RetryUntilStoppedOptions, 'what' | 'permanent'>;
  deps: { store: Store; bus: Bus; metrics: MetricsRegistry };
  log: Logger;
}

/**
 * Stores rows, retrying what may pass later (an outage, and also a schema or credentials fault an
 * operator must fix). Rows the store refuses for what they hold (see `isBadDataInsertError`) must
 * not hold their partition forever: the batch is halved until each refused row stands alone, and
 * that row becomes a dead letter (table and topic, code `storage_rejected`) with the store's
 * reason, while every other row is stored. Rejects only when the retry policy says it is stopping.
 */
export async function storeOrDeadLetter<T>(o: StoreOrDeadLetterOptions<T>): Promise<void> {
  try {
    await retryUntilStopped(() => o.insert(o.rows), { ...o.retry, what: o.what, permanent: isBadDataInsertError });
  } catch (err) {
    if (o.retry.stopped() || !isBadDataInsertError(err)) throw err;
    if (o.rows.length > 1) {
      const mid = o.rows.length >> 1;
      await Promise.all([storeOrDeadLetter({ ...o, rows: o.rows.slice(0, mid) }), storeOrDeadLetter({ ...o, rows: o.rows.slice(mid) })]);
      return;
    }
    const row = o.rows[0] as T;
    const key = o.key(row);
    const letter: DeadLetter = {
      stage: o.stage,
      topic: o.topic,
      partition: -1,
      offset: '',
      key,
      code: 'storage_rejected',
      reason: `${o.what}: ${errorMessage(err)}`,
      payload: JSON.stringify(row),
      time: Date.now(),
    };
    o.log.error({ key, err: errorMessage(err) }, 'row refused by storage; dead-lettered');
    await retryUntilStopped(() => recordDeadLetters(o.stage, [letter], o.deps), { ...o.retry, what: 'store dead letter' });
  }
}
