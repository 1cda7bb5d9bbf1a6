import { z } from 'zod';
import { CanonicalEventSchema, type CanonicalEventInput } from '../../../shared/event.ts';
import { RecordError } from '../../../shared/errors.ts';
import { contentHash, eventId } from '../../../shared/ids.ts';
import { ResultBuilder, frameJsonRecords, isoToEpochMs, read, typeName, type Adapter, type AdapterResult } from './adapter.ts';

/**
 * Runtrail's own JSON event format: the canonical event with friendlier input rules, for anything
 * without a dedicated adapter (SPIRE server events, custom agents, scripts). A SPIRE forwarder
 * reports an issued X.509-SVID as
 * `{"source":"workload","type":"credential.issued","time":"...","workload_id":"spiffe://...",
 *   "credential":{"id":"<serial>","kind":"x509-svid","subject":"spiffe://..."}}`.
 *
 * Bodies are one object, a JSON array or NDJSON. Each bad record is rejected with its index and
 * the offending field; the others are kept.
 */

const TIME_REASON = 'expected RFC 3339 or epoch milliseconds';

/** RFC 3339 date-time (`T` or space separator, optional fraction, `Z` or numeric offset). */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** Epoch milliseconds sent as a string, as protobuf-JSON mappers do for 64-bit integers. */
const EPOCH_MS_STRING = /^\d+(\.\d+)?$/;

/** Epoch ms of an RFC 3339 string or epoch-ms number/string; undefined when it is neither. */
function toEpochMs(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? v : undefined;
  if (EPOCH_MS_STRING.test(v)) return Number(v);
  const m = RFC3339.exec(v);
  if (!m) return undefined;
  // Date.parse rolls 2024-02-31 over into March; a real calendar date must survive a round trip.
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const day = new Date(Date.UTC(y, mo - 1, d));
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== d) return undefined;
  if (Number(m[4]) > 23 || Number(m[5]) > 59 || Number(m[6]) > 60) return undefined;
  // Keeps the sub-millisecond digits Date.parse drops; the range is checked with the canonical event, naming the field.
  return isoToEpochMs(v);
}

/** A time field: RFC 3339 string or epoch milliseconds (number, or digits in a string). */
const TimeInputSchema = z
  .union([z.string(), z.number()], {
    error: (iss) => (iss.input === undefined ? 'missing' : `${TIME_REASON}, got ${typeName(iss.input)}`),
  })
  .transform((v, ctx) => {
    const ms = toEpochMs(v);
    if (ms === undefined) {
      ctx.issues.push({ code: 'custom', message: `${TIME_REASON}, got ${JSON.stringify(v).slice(0, 60)}`, input: v });
      return z.NEVER;
    }
    return ms;
  });

/**
 * One record of Runtrail's JSON event format: {@link CanonicalEventSchema} with
 * - `event_id` optional: derived from `id` when given, else from the record's content, so a
 *   re-sent record maps to the same id;
 * - `id`: the producer's own record id (string or integer), e.g. a SPIRE event id; it must be
 *   unique across producers, since two records with the same `id` get the same event id;
 * - `time` / `end_time` as RFC 3339 strings or epoch milliseconds;
 * - `format` ignored (always recorded as `runtrail`).
 * `source`, `type` and `time` are required; everything else is optional as in the canonical model.
 * Top-level fields the schema does not know are kept in `attributes` rather than dropped.
 */
export const RuntrailEventInputSchema = CanonicalEventSchema.extend({
  event_id: CanonicalEventSchema.shape.event_id.optional(),
  id: z.union([z.string().min(1), z.number().int()]).optional(),
  time: TimeInputSchema,
  end_time: TimeInputSchema.optional(),
  format: z.string().optional(),
});
/** A Runtrail-format record as a producer writes it. */
export type RuntrailEventInput = z.input<typeof RuntrailEventInputSchema>;

const KNOWN_FIELDS: ReadonlySet<string> = new Set(Object.keys(RuntrailEventInputSchema.shape));

/** The Runtrail JSON event adapter. */
export const runtrailAdapter: Adapter = {
  format: 'runtrail',
  contentTypes: ['application/json', 'application/x-ndjson'],
  parse(body: Buffer): AdapterResult {
    const out = new ResultBuilder();
    for (const rec of frameJsonRecords(body)) {
      if ('error' in rec) out.reject(rec.index, rec.field, rec.error);
      else out.record(rec.index, () => [convertRecord(rec.value)]);
    }
    return out.result();
  },
};

function convertRecord(value: unknown): CanonicalEventInput {
  const raw = read.obj(value, '');
  const res = RuntrailEventInputSchema.safeParse(raw, { reportInput: true });
  if (!res.success) throw recordError(res.error.issues);
  const { id, event_id: givenId, format: _ignored, attributes, ...fields } = res.data;

  const unknown = Object.fromEntries(Object.entries(raw).filter(([k]) => !KNOWN_FIELDS.has(k)));
  const derivedId = id !== undefined ? eventId('runtrail', String(id)) : eventId('runtrail', contentHash(canonicalJson(raw)));
  return {
    ...fields,
    event_id: givenId ?? derivedId,
    format: 'runtrail',
    // Explicit attributes win over same-named stray fields.
    attributes: { ...unknown, ...(id !== undefined ? { id } : {}), ...attributes },
  };
}

/** The first zod issue as a RecordError naming its field; the count of the others is appended. */
function recordError(issues: readonly z.core.$ZodIssue[]): RecordError {
  const first = issues[0];
  if (!first) return new RecordError('', 'invalid record');
  const missing = first.input === undefined && (first.code === 'invalid_type' || first.code === 'invalid_value' || first.code === 'invalid_union');
  const reason = missing ? 'missing' : first.message.replace(/^Invalid input: /, '');
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? 's' : ''})` : '';
  return new RecordError(first.path.map(String).join('.'), reason + more);
}

/**
 * JSON with object keys sorted at every level, so the same record hashes the same whatever key
 * order its producer wrote.
 */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const entries = Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
