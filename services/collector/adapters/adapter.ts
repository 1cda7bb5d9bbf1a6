import {
  CanonicalEventSchema,
  CREDENTIAL_KINDS,
  EVENT_SOURCES,
  EVENT_TIME_RANGE,
  EVENT_TYPES,
  INGEST_FORMATS,
  MAX_EVENT_TIME_MS,
  SENSITIVITY_LEVELS,
  type CanonicalEvent,
  type CanonicalEventInput,
  type IngestFormat,
} from '../../../shared/event.ts';
import { BodyError, RecordError, errorMessage } from '../../../shared/errors.ts';

/**
 * Collector adapters turn one request body (already decompressed) of a given source format into
 * canonical events. A body that cannot be read at all throws {@link BodyError}; a single bad record
 * becomes a {@link Rejection} and the rest of the body is still converted.
 */

/** A rejected record: where it was, which field, and why. */
export interface Rejection {
  /** 0-based index of the record in the body (line for NDJSON, element for arrays, span/log for OTLP). */
  index: number;
  /** Dotted path of the offending field, `''` when the record as a whole is bad. */
  field: string;
  reason: string;
}

/** What an adapter made of one body. */
export interface AdapterResult {
  events: CanonicalEvent[];
  /** The first {@link MAX_LISTED_REJECTIONS} rejections, in record order. */
  rejected: Rejection[];
  /** All rejections, listed or not. */
  rejectedCount: number;
  /** Records read (accepted + rejected + skipped). */
  records: number;
  /** Records deliberately ignored (e.g. Vault `request` entries whose `response` carries the same data). */
  skipped: number;
}

/** A source-format adapter. */
export interface Adapter {
  readonly format: IngestFormat;
  /** Content types (lowercase, without parameters) this adapter accepts. */
  readonly contentTypes: readonly string[];
  /**
   * How a body that declares no content type is read outside HTTP (replayed files, raw Kafka
   * messages). Default `application/json` (HTTP requests without one are read as JSON too).
   */
  readonly undeclaredContentType?: string;
  /** Converts one decompressed body. */
  parse(body: Buffer, contentType: string): AdapterResult;
}

/** Decodes UTF-8 strictly, so invalid byte sequences are reported rather than silently replaced. */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes a body as UTF-8, throwing a BodyError that says where the bad bytes are. */
export function decodeUtf8(body: Buffer): string {
  try {
    return strictUtf8.decode(body);
  } catch {
    // Locate the first bad byte cheaply for the message: decode prefixes by halving.
    let lo = 0;
    let hi = body.length;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      try {
        strictUtf8.decode(body.subarray(0, mid));
        lo = mid;
      } catch {
        hi = mid;
      }
    }
    throw new BodyError(`body is not valid UTF-8 (first invalid byte near offset ${lo})`);
  }
}

/** One record read from a JSON / NDJSON body, or the reason (and field, `''` for the whole record) it could not be read. */
export type FramedRecord = { index: number; value: unknown } | { index: number; field: string; error: string };

/**
 * Deepest nesting of objects and arrays a JSON record may have; the record itself is level 1.
 * Real audit records stay within a few dozen levels. Beyond this, the recursive walks that map,
 * redact, hash and serialize records would exhaust the stack (a record nested a few thousand
 * levels deep did), so such a record is rejected up front, naming the field that holds the nesting.
 * Same bound as the OTLP protobuf decoder's.
 */
export const MAX_RECORD_DEPTH = 100;

/**
 * The top-level field under which `value` nests deeper than `max` levels (`''` when the record
 * itself is, e.g. an array of arrays), or undefined when it does not. Iterative, so it cannot
 * overflow the stack it protects.
 */
export function tooDeepField(value: unknown, max: number = MAX_RECORD_DEPTH): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const stack: Array<{ v: object; depth: number; top: string }> = [{ v: value, depth: 1, top: '' }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    if (item.depth > max) return item.top;
    const { v, depth, top } = item;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const inner: unknown = v[i];
        if (typeof inner === 'object' && inner !== null) stack.push({ v: inner, depth: depth + 1, top: depth === 1 ? String(i) : top });
      }
    } else {
      for (const k in v) {
        const inner: unknown = (v as Record<string, unknown>)[k];
        if (typeof inner === 'object' && inner !== null) stack.push({ v: inner, depth: depth + 1, top: depth === 1 ? k : top });
      }
    }
  }
  return undefined;
}

/**
 * A JSON object carried as text inside a record (a line a shipper wrapped under `log` or
 * `message`), held to the same depth bound as framed records, which it escaped. Errors name
 * `field` (`''` for a record that is the line itself), or the too-deep path under it.
 */
export function embeddedJsonObject(text: string, field: string, what = 'not valid JSON'): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new RecordError(field, `${what} (${errorMessage(err)})`);
  }
  const deep = tooDeepField(parsed);
  if (deep !== undefined) throw new RecordError(deep === '' ? field : field === '' ? deep : `${field}.${deep}`, `nested deeper than ${MAX_RECORD_DEPTH} levels of objects and arrays`);
  return read.obj(parsed, field);
}

/** The record as a framed record, or a framing error when it nests deeper than {@link MAX_RECORD_DEPTH}. */
function framed(index: number, value: unknown, where: string): FramedRecord {
  const field = tooDeepField(value);
  if (field === undefined) return { index, value };
  return { index, field, error: `${where}nested deeper than ${MAX_RECORD_DEPTH} levels of objects and arrays` };
}

/**
 * Splits a JSON body into records. Accepts a JSON array, a single JSON object, a wrapper object
 * with an array under one of `wrapperKeys` (e.g. CloudTrail's `Records`), or NDJSON (one value per
 * line; a bad line is one rejected record). Throws BodyError when no record can be read at all.
 */
export function frameJsonRecords(body: Buffer, wrapperKeys: readonly string[] = []): FramedRecord[] {
  const text = decodeUtf8(body);
  const trimmed = text.trim();
  if (trimmed === '') return [];
  // Whole-document parse first: arrays, single objects and wrapper objects.
  if (trimmed[0] === '[' || trimmed[0] === '{') {
    let doc: unknown;
    let parsed = false;
    try {
      doc = JSON.parse(trimmed);
      parsed = true;
    } catch {
      // Not one document: fall through to NDJSON (a multi-line `{...}\n{...}` body).
    }
    if (parsed) {
      if (Array.isArray(doc)) return doc.map((value, index) => framed(index, value, ''));
      if (typeof doc === 'object' && doc !== null) {
        for (const k of wrapperKeys) {
          const inner = (doc as Record<string, unknown>)[k];
          if (Array.isArray(inner)) return inner.map((value, index) => framed(index, value, ''));
        }
      }
      return [framed(0, doc, '')];
    }
    if (trimmed[0] === '[') throw new BodyError('body is not valid JSON: a JSON array that does not parse');
  }
  const out: FramedRecord[] = [];
  const lines = text.split('\n');
  let index = 0;
  let good = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      out.push({ index, field: '', error: `line ${i + 1}: not valid JSON (${(err as Error).message})` });
      index++;
      continue;
    }
    out.push(framed(index, value, `line ${i + 1}: `));
    good++;
    index++;
  }
  if (good === 0) throw new BodyError('body is not valid JSON or NDJSON: no record could be parsed');
  return out;
}

/**
 * How {@link finalizeEvent} checks adapter output (`collector.eventValidation`):
 * - `full`: the canonical zod schema on every event. The default of this module, so adapter tests
 *   catch a mapping bug with zod's own message.
 * - `structural`: {@link checkCanonicalEvent}, a hand-written check of the same constraints (types,
 *   enums, ids, finite times and counts, nested objects) without zod's generic machinery; several
 *   times cheaper. What the pipeline runs with by default.
 */
export type EventValidation = 'full' | 'structural';

let validation: EventValidation = 'full';

/** Sets how adapter output is validated in this process (the pipeline sets it from its config). */
export function setEventValidation(mode: EventValidation): void {
  validation = mode;
}

/** The current {@link EventValidation} mode. */
export function eventValidation(): EventValidation {
  return validation;
}

/**
 * Validates adapter output against the canonical schema and applies its defaults. Used by every
 * adapter, so a mapping bug becomes a clear rejection naming the field rather than a bad row
 * downstream (or a batch ClickHouse refuses). See {@link EventValidation} for the two modes.
 */
export function finalizeEvent(input: CanonicalEventInput): CanonicalEvent {
  if (validation === 'structural') return checkCanonicalEvent(input);
  const res = CanonicalEventSchema.safeParse(input);
  if (!res.success) {
    const issue = res.error.issues[0];
    throw new RecordError(issue?.path.join('.') ?? '', issue?.message ?? 'invalid event');
  }
  return res.data;
}

const SOURCES: ReadonlySet<unknown> = new Set(EVENT_SOURCES);
const TYPES: ReadonlySet<unknown> = new Set(EVENT_TYPES);
const FORMATS: ReadonlySet<unknown> = new Set(INGEST_FORMATS);
const OUTCOMES: ReadonlySet<unknown> = new Set(['success', 'failure', 'unknown']);
const SENSITIVITIES: ReadonlySet<unknown> = new Set(SENSITIVITY_LEVELS);
const KINDS: ReadonlySet<unknown> = new Set(CREDENTIAL_KINDS);
const DIRECTIONS: ReadonlySet<unknown> = new Set(['inbound', 'outbound', 'unknown']);
const EVENT_ID = /^[0-9a-f]{32}$/;

/** Optional non-empty strings at the top level of a canonical event. */
const OPTIONAL_STRINGS = [
  'task_id',
  'agent_id',
  'agent_name',
  'workload_id',
  'credential_id',
  'trace_id',
  'span_id',
  'parent_span_id',
  'request_id',
  'session_id',
  'principal',
  'action',
  'src_ip',
  'host',
  'user_agent',
] as const;

function fail(field: string, reason: string): never {
  throw new RecordError(field, reason);
}

function optStr(o: Record<string, unknown>, key: string, path: string): void {
  const v = o[key];
  if (v !== undefined && (typeof v !== 'string' || v === '')) fail(`${path}${key}`, `expected a non-empty string, got ${typeName(v)}`);
}

function optText(o: Record<string, unknown>, key: string, path: string): void {
  const v = o[key];
  if (v !== undefined && typeof v !== 'string') fail(`${path}${key}`, `expected a string, got ${typeName(v)}`);
}

function optInt(o: Record<string, unknown>, key: string, path: string, min: number, max: number): void {
  const v = o[key];
  if (v !== undefined && !(typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max)) fail(`${path}${key}`, `expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
}

function time(v: unknown, field: string, optional: boolean): void {
  if (v === undefined && optional) return;
  if (!(typeof v === 'number' && Number.isFinite(v) && v >= 0)) fail(field, `expected finite non-negative epoch milliseconds, got ${JSON.stringify(v)}`);
  if (v > MAX_EVENT_TIME_MS) fail(field, `${EVENT_TIME_RANGE}, got ${v}`);
}

function nested(v: unknown, field: string): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(field, `expected an object, got ${typeName(v)}`);
  return v as Record<string, unknown>;
}

function record(v: unknown, field: string, valueType: 'string' | 'boolean'): void {
  const o = nested(v, field);
  if (!o) return;
  for (const k in o) if (typeof o[k] !== valueType) fail(`${field}.${k}`, `expected a ${valueType}, got ${typeName(o[k])}`);
}

/**
 * The `structural` check: every constraint of `CanonicalEventSchema` (which stays the definition;
 * a unit test holds the two to the same verdicts), written out by hand, with the schema's defaults
 * applied in place. Adapters build fresh objects with typed literals, so there are no unknown keys
 * to strip. Throws RecordError naming the first bad field.
 */
export function checkCanonicalEvent(input: CanonicalEventInput): CanonicalEvent {
  const e = input as Record<string, unknown>;
  if (typeof e.event_id !== 'string' || !EVENT_ID.test(e.event_id)) fail('event_id', 'expected 32 lowercase hex characters');
  if (!SOURCES.has(e.source)) fail('source', `expected one of ${EVENT_SOURCES.join(', ')}`);
  if (!TYPES.has(e.type)) fail('type', `expected one of ${EVENT_TYPES.join(', ')}`);
  time(e.time, 'time', false);
  time(e.end_time, 'end_time', true);
  if (!FORMATS.has(e.format)) fail('format', `expected one of ${INGEST_FORMATS.join(', ')}`);
  for (const k of OPTIONAL_STRINGS) optStr(e, k, '');
  if (e.resources === undefined) e.resources = [];
  else if (!Array.isArray(e.resources)) fail('resources', `expected an array, got ${typeName(e.resources)}`);
  else {
    for (let i = 0; i < e.resources.length; i++) {
      const r = nested(e.resources[i], `resources.${i}`) ?? fail(`resources.${i}`, 'expected an object');
      if (typeof r.id !== 'string' || r.id === '') fail(`resources.${i}.id`, `expected a non-empty string, got ${typeName(r.id)}`);
      optStr(r, 'type', `resources.${i}.`);
      optStr(r, 'account', `resources.${i}.`);
    }
  }
  if (e.outcome === undefined) e.outcome = 'unknown';
  else if (!OUTCOMES.has(e.outcome)) fail('outcome', 'expected success, failure or unknown');
  if (e.sensitivity === undefined) e.sensitivity = 'unknown';
  else if (!SENSITIVITIES.has(e.sensitivity)) fail('sensitivity', `expected one of ${SENSITIVITY_LEVELS.join(', ')}`);
  if (e.data_classes === undefined) e.data_classes = [];
  else if (!Array.isArray(e.data_classes)) fail('data_classes', `expected an array, got ${typeName(e.data_classes)}`);
  else for (let i = 0; i < e.data_classes.length; i++) if (typeof e.data_classes[i] !== 'string' || e.data_classes[i] === '') fail(`data_classes.${i}`, 'expected a non-empty string');
  const tool = nested(e.tool, 'tool');
  if (tool) {
    if (typeof tool.name !== 'string' || tool.name === '') fail('tool.name', `expected a non-empty string, got ${typeName(tool.name)}`);
    optStr(tool, 'call_id', 'tool.');
    optText(tool, 'arguments', 'tool.');
    optText(tool, 'result', 'tool.');
    optStr(tool, 'error', 'tool.');
    optStr(tool, 'server', 'tool.');
    record(tool.annotations, 'tool.annotations', 'boolean');
  }
  const model = nested(e.model, 'model');
  if (model) {
    optStr(model, 'name', 'model.');
    optStr(model, 'provider', 'model.');
    optInt(model, 'input_tokens', 'model.', 0, Number.MAX_SAFE_INTEGER);
    optInt(model, 'output_tokens', 'model.', 0, Number.MAX_SAFE_INTEGER);
  }
  const messages = nested(e.messages, 'messages');
  if (messages) for (const k of ['system', 'input', 'output']) optText(messages, k, 'messages.');
  const cred = nested(e.credential, 'credential');
  if (cred) {
    if (typeof cred.id !== 'string' || cred.id === '') fail('credential.id', `expected a non-empty string, got ${typeName(cred.id)}`);
    if (!KINDS.has(cred.kind)) fail('credential.kind', `expected one of ${CREDENTIAL_KINDS.join(', ')}`);
    for (const k of ['parent_id', 'subject', 'session_name']) optStr(cred, k, 'credential.');
    record(cred.tags, 'credential.tags', 'string');
    time(cred.expires_at, 'credential.expires_at', true);
  }
  const proc = nested(e.process, 'process');
  if (proc) {
    optInt(proc, 'pid', 'process.', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
    optText(proc, 'cmdline', 'process.');
    for (const k of ['name', 'exe', 'parent', 'user', 'container_id']) optStr(proc, k, 'process.');
  }
  const net = nested(e.network, 'network');
  if (net) {
    optStr(net, 'dst_ip', 'network.');
    optStr(net, 'protocol', 'network.');
    optInt(net, 'dst_port', 'network.', 0, 65535);
    optInt(net, 'src_port', 'network.', 0, 65535);
    if (net.direction !== undefined && !DIRECTIONS.has(net.direction)) fail('network.direction', 'expected inbound, outbound or unknown');
  }
  const del = nested(e.delegation, 'delegation');
  if (del) for (const k of ['to_agent_id', 'to_agent_name', 'to_task_id']) optStr(del, k, 'delegation.');
  if (e.attributes === undefined) e.attributes = {};
  else nested(e.attributes, 'attributes');
  time(e.ingested_at, 'ingested_at', true);
  return e as CanonicalEvent;
}

/**
 * Rejections listed per body; beyond it they are only counted. A 64 KiB gzip body can decompress
 * to millions of one-byte bad records: listing every one took gigabytes and a minute, and the
 * answer grew past the longest string V8 can build (a 503 that the shipper retried forever).
 */
export const MAX_LISTED_REJECTIONS = 1000;

/** Collects events and rejections while an adapter walks its records. */
export class ResultBuilder {
  readonly events: CanonicalEvent[] = [];
  readonly rejected: Rejection[] = [];
  rejectedCount = 0;
  records = 0;
  skipped = 0;

  /** Runs `fn` for one record; a thrown RecordError (or any error) becomes a rejection of that record. */
  record(index: number, fn: () => CanonicalEventInput[] | null): void {
    this.records++;
    try {
      const produced = fn();
      if (produced === null) {
        this.skipped++;
        return;
      }
      for (const e of produced) this.events.push(finalizeEvent(e));
    } catch (err) {
      if (err instanceof RecordError) this.addRejection(index, err.field, err.reason);
      else this.addRejection(index, '', err instanceof Error ? err.message : String(err));
    }
  }

  /** Records a framing error (the record could not even be parsed). */
  reject(index: number, field: string, reason: string): void {
    this.records++;
    this.addRejection(index, field, reason);
  }

  result(): AdapterResult {
    return { events: this.events, rejected: this.rejected, rejectedCount: this.rejectedCount, records: this.records, skipped: this.skipped };
  }

  private addRejection(index: number, field: string, reason: string): void {
    this.rejectedCount++;
    if (this.rejected.length < MAX_LISTED_REJECTIONS) this.rejected.push({ index, field, reason });
  }
}

/** Narrowing helpers for reading untyped JSON records with field-naming errors. */
export const read = {
  obj(v: unknown, field: string): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RecordError(field, `expected an object, got ${typeName(v)}`);
    return v as Record<string, unknown>;
  },
  optObj(v: unknown, field: string): Record<string, unknown> | undefined {
    return v === undefined || v === null ? undefined : read.obj(v, field);
  },
  str(v: unknown, field: string): string {
    if (typeof v !== 'string' || v === '') throw new RecordError(field, v === undefined ? 'missing' : `expected a non-empty string, got ${typeName(v)}`);
    return v;
  },
  optStr(v: unknown, field: string): string | undefined {
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw new RecordError(field, `expected a string, got ${typeName(v)}`);
    return v;
  },
  /**
   * Accepts RFC 3339 strings (with their time zone) or epoch milliseconds, within the storable
   * range (0..MAX_EVENT_TIME_MS); returns epoch ms. A string without a zone is refused: Date.parse
   * would read it in the server's local time zone ("2026-05-01 12:00:00", even "1", year 2001).
   */
  time(v: unknown, field: string): number {
    let t: number | undefined;
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0) t = v;
    else if (typeof v === 'string' && RFC3339_WITH_ZONE.test(v)) t = isoToEpochMs(v);
    if (t === undefined) {
      const zone = typeof v === 'string' ? ' (a date and time with its zone, e.g. 2026-05-01T12:00:00Z)' : '';
      throw new RecordError(field, v === undefined ? 'missing' : `expected RFC 3339 or epoch milliseconds, got ${JSON.stringify(v)?.slice(0, 60)}${zone}`);
    }
    if (t < 0 || t > MAX_EVENT_TIME_MS) throw new RecordError(field, `${EVENT_TIME_RANGE}, got ${JSON.stringify(v)?.slice(0, 60)}`);
    return t;
  },
};

/** RFC 3339 date-time with its zone (`Z` or a numeric offset); `T`, `t` or a space between date and time. */
const RFC3339_WITH_ZONE = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:?\d{2})$/;

/** Epoch ms of an ISO 8601 date-time, sub-millisecond digits kept; undefined when Date.parse cannot read it. No range check. */
export function isoToEpochMs(iso: string): number | undefined {
  const parsed = Date.parse(iso);
  return Number.isNaN(parsed) ? undefined : parsed + subMillis(iso);
}

/** Fractional milliseconds beyond Date.parse's precision (`.123456789Z` -> 0.456789). */
function subMillis(iso: string): number {
  const m = /\.(\d{4,9})(?:Z|[+-]\d\d:?\d\d)?$/.exec(iso);
  if (!m) return 0;
  const digits = (m[1] as string).padEnd(9, '0');
  return Number(digits.slice(3)) / 1e6;
}

/** Human-readable JSON type name for error messages. */
export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}
