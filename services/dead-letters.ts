import type { Bus, DeadLetter, UndecodableMessage } from '../shared/bus/bus.ts';
import type { MetricsRegistry } from '../shared/metrics.ts';
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
