import { TimelineEventSchema, type TimelineEvent } from '../shared/event.ts';
import { eventId } from '../shared/ids.ts';

/** Input for {@link tev}: whichever timeline fields a fixture needs; sensible defaults for the rest. */
export type TimelineEventInput = Partial<Omit<TimelineEvent, 'time'>> & { time?: number | string; source: TimelineEvent['source']; type: TimelineEvent['type'] };

let counter = 0;

/**
 * Builds a validated timeline event for fixtures and tests. `time` may be ISO or epoch ms; the event
 * id is derived from `id` (or a counter), so fixtures are deterministic when they name their events.
 */
export function tev(e: TimelineEventInput & { id?: string }): TimelineEvent {
  const { id, time, ...rest } = e;
  const t = typeof time === 'string' ? Date.parse(time) : (time ?? Date.parse('2026-05-01T10:00:00Z') + counter * 1000);
  counter++;
  return TimelineEventSchema.parse({
    event_id: eventId('fixture', id ?? String(counter)),
    format: 'runtrail',
    task_id: '',
    attribution: e.task_id ? 'direct' : 'unattributed',
    ingested_at: t,
    ...rest,
    time: t,
  });
}
