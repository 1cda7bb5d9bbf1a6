import { z } from 'zod';
import {
  AttributesSchema,
  CredentialBindingSchema,
  CredentialInfoSchema,
  DelegationInfoSchema,
  MessagesSchema,
  NetworkInfoSchema,
  ProcessInfoSchema,
  MAX_EVENT_TIME_MS,
  TimelineEventSchema,
  type CredentialBinding,
  type TimelineEvent,
  type ToolCallRecord,
} from '../../shared/event.ts';
import { FindingSchema, compactSummary, type EvidenceSummary, type Finding } from '../../shared/finding.ts';
import type { AlertDelivery, DeadLetter } from '../../shared/bus/bus.ts';
import { IncidentSchema, OutboxEntrySchema, type Incident, type OutboxEntry } from '../../shared/alert.ts';
import { TABLE, type TableName } from '../../shared/names.ts';
import { RecordError } from '../../shared/errors.ts';

/**
 * Row codecs: how each stored model maps onto its ClickHouse columns and back.
 *
 * Writes: `events` uses TabSeparated, the other tables JSONCompactEachRow. Measured on chDB with
 * the full `events` schema (20k-row batches, rows per CPU-second of the whole process):
 * TabSeparated ~75k, JSONCompactEachRow ~56k, JSONEachRow ~40k; stored rows identical. Encoding
 * in JS costs about the same for both. The low-volume tables keep JSON, which needs no escaping
 * code of our own.
 * Reads select explicit expressions (times as integer microseconds) and are validated with zod
 * twice: the raw row shape, then the model schema, so nothing leaves storage unchecked.
 *
 * Times: the canonical model carries epoch milliseconds with a fractional part. Columns are
 * `DateTime64(6, 'UTC')` and are written as integer microsecond ticks (ClickHouse reads an integer
 * for a DateTime64 as a scaled Unix timestamp), so no string formatting and no float parsing is
 * involved. Microseconds are the stored precision: finer fractions are rounded.
 */

/** Insert formats the codecs produce. */
export type InsertFormat = 'TabSeparated' | 'JSONCompactEachRow';

/** How one table's rows are encoded for insert. */
export interface TableCodec<T> {
  readonly table: TableName;
  /** Insert column list; each encoded row holds its values in this order. */
  readonly columns: readonly string[];
  readonly format: InsertFormat;
  /** One line of the insert body in {@link format}, without the trailing newline. */
  encode(row: T): string;
  /** Short dedup-token key of a row (see `BatchWriterOptions.tokenKey`); absent = hash the encoded body. */
  tokenKey?(row: T): string;
}

// TabSeparated escaping, as ClickHouse itself writes it: backslash escapes for the characters
// that would end a field or a row, and for `'` so the same function quotes strings inside arrays,
// tuples and maps (`['a\'b']`).
const TSV_ESCAPES: Readonly<Record<string, string>> = {
  '\\': '\\\\',
  '\t': '\\t',
  '\n': '\\n',
  '\r': '\\r',
  "'": "\\'",
  '\0': '\\0',
};
const TSV_SPECIAL = /[\\\t\n\r'\0]/;
const TSV_SPECIAL_ALL = /[\\\t\n\r'\0]/g;

/** A String field of a TabSeparated row. */
export function tsvEscape(s: string): string {
  return TSV_SPECIAL.test(s) ? s.replace(TSV_SPECIAL_ALL, (c) => TSV_ESCAPES[c] as string) : s;
}

// A top-level String field needs no `'` escape (only array/tuple/map literals quote with it).
const TSV_FIELD_SPECIAL = /[\\\t\n\r\0]/;

/** A top-level String field of a TabSeparated row: escapes only what would end the field or the row. */
function tsvField(s: string): string {
  return TSV_FIELD_SPECIAL.test(s) ? s.replace(TSV_SPECIAL_ALL, (c) => (c === "'" ? c : (TSV_ESCAPES[c] as string))) : s;
}

/**
 * JSON as a top-level String field. JSON.stringify never writes a raw tab, newline, carriage
 * return or NUL (it escapes them with a backslash), so doubling backslashes is all the escaping
 * needed, and a plain string replace is much cheaper than a per-match callback on these large
 * values.
 */
function tsvJsonText(json: string): string {
  return json.includes('\\') ? json.replaceAll('\\', '\\\\') : json;
}

/** A string inside a TabSeparated array/tuple/map literal. */
function tsvQuote(s: string): string {
  return `'${tsvEscape(s)}'`;
}

/** TabSeparated NULL. */
const TSV_NULL = '\\N';

/** Epoch ms (fractional) -> integer microseconds, the DateTime64(6) tick. */
export function msToMicros(ms: number): number {
  return Math.round(ms * 1000);
}

/** Largest instant a `DateTime64(6)` holds (2299-12-31 23:59:59.999999 UTC), epoch ms. */
export const MAX_DATETIME64_MS = MAX_EVENT_TIME_MS;

/**
 * Like {@link msToMicros}, but refuses instants the column cannot hold: ClickHouse would fail the
 * whole batch on them, or wrap them silently. A nanosecond timestamp passed as milliseconds is
 * the usual cause.
 */
export function timeToMicros(field: string, ms: number): number {
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_DATETIME64_MS) {
    throw new RecordError(field, `expected epoch milliseconds between 0 and ${MAX_DATETIME64_MS} (year 2299), got ${ms}`);
  }
  return msToMicros(ms);
}

/** Integer microseconds (number or 64-bit decimal string) -> epoch ms. */
export function microsToMs(us: number | string): number {
  // Division of an exact integer by 1000 yields the double nearest to the decimal value, which is
  // what the producer's literal parsed to, so fractional-ms times round-trip exactly.
  return Number(us) / 1000;
}

const nullableMicros = (field: string, ms: number | undefined): number | null =>
  ms === undefined ? null : timeToMicros(field, ms);

/** Microseconds in a bare 16-digit integer: from 2001-09-09 01:46:40 UTC to 2286-11-20 17:46:39.999999 UTC. */
const TSV_TICKS_MIN_US = 1e15;
const TSV_TICKS_MAX_US = 1e16;

/**
 * A `DateTime64(6)` value as TabSeparated text. ClickHouse reads a bare integer there as
 * microsecond ticks only when it has 16 digits (measured on chdb 3.4.0); a shorter or longer one
 * it parses as a compact date (`YYYYMMDD...`) or as seconds, so an event of 1990 or of 2290
 * failed its whole insert batch, or was stored at another instant. Those get the explicit
 * `YYYY-MM-DD hh:mm:ss.ffffff` form; the common case keeps the cheap integer.
 */
export function tsvDateTime64(field: string, ms: number): string {
  const us = timeToMicros(field, ms);
  if (us >= TSV_TICKS_MIN_US && us < TSV_TICKS_MAX_US) return String(us);
  const seconds = Math.floor(us / 1e6);
  const fraction = Math.min(999_999, Math.max(0, us - seconds * 1e6));
  return `${new Date(seconds * 1000).toISOString().slice(0, 19).replace('T', ' ')}.${String(fraction).padStart(6, '0')}`;
}
const orUndefined = (s: string): string | undefined => (s === '' ? undefined : s);

/** Parses a JSON string column; `''` stands for an absent object. */
function parseJsonColumn(column: string, text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`column \`${column}\` holds invalid JSON: ${(err as Error).message}`);
  }
}

// 64-bit integers arrive as JSON strings (HTTP default) or numbers (chDB default); accept both.
const int64 = z.union([z.number(), z.string().regex(/^-?\d+$/)]);
const nullableInt64 = int64.nullable();

// ---------------------------------------------------------------------------------------------
// events

/** Column order for `events` inserts; `stored_at` is filled by its DEFAULT. */
export const EVENT_COLUMNS = [
  'task_id',
  'event_time',
  'end_time',
  'event_id',
  'source',
  'type',
  'format',
  'attribution',
  'outcome',
  'sensitivity',
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
  'resources',
  'data_classes',
  'src_ip',
  'host',
  'user_agent',
  'tool_name',
  'tool_call_id',
  'tool_arguments',
  'tool_result',
  'tool_error',
  'tool_server',
  'tool_annotations',
  'model_name',
  'model_provider',
  'model_input_tokens',
  'model_output_tokens',
  'messages',
  'credential',
  'process',
  'network',
  'delegation',
  'attributes',
  'join_key',
  'unattributed_reason',
  'ingested_at',
  'late',
] as const;

const tsvOpt = (v: string | undefined): string => (v === undefined ? '' : tsvField(v));
const tsvJson = (v: object | undefined): string => (v === undefined ? '' : tsvJsonText(JSON.stringify(v)));
const tsvNullableString = (v: string | undefined): string => (v === undefined ? TSV_NULL : tsvField(v));
const tsvNullableNumber = (v: number | undefined): string => (v === undefined ? TSV_NULL : String(v));

function tsvResources(rs: TimelineEvent['resources']): string {
  if (rs.length === 0) return '[]';
  let out = '[';
  for (let i = 0; i < rs.length; i++) {
    const r = rs[i] as TimelineEvent['resources'][number];
    out += `${i > 0 ? ',' : ''}(${tsvQuote(r.type ?? '')},${tsvQuote(r.id)},${tsvQuote(r.account ?? '')})`;
  }
  return `${out}]`;
}

/** Codec for the `events` table (TabSeparated, the fastest format to parse; see module comment). */
export const EVENTS_CODEC: TableCodec<TimelineEvent> = {
  table: TABLE.events,
  columns: EVENT_COLUMNS,
  format: 'TabSeparated',
  // One concatenation in column order. The enum columns (source, type, format, attribution,
  // outcome, sensitivity) hold validated enum values, which need no escaping.
  encode(e) {
    const t = e.tool;
    const m = e.model;
    return (
      `${tsvField(e.task_id)}\t${tsvDateTime64('time', e.time)}\t${e.end_time === undefined ? TSV_NULL : tsvDateTime64('end_time', e.end_time)}\t${tsvField(e.event_id)}\t` +
      `${e.source}\t${e.type}\t${e.format}\t${e.attribution}\t${e.outcome}\t${e.sensitivity}\t` +
      `${tsvOpt(e.agent_id)}\t${tsvOpt(e.agent_name)}\t${tsvOpt(e.workload_id)}\t${tsvOpt(e.credential_id)}\t` +
      `${tsvOpt(e.trace_id)}\t${tsvOpt(e.span_id)}\t${tsvOpt(e.parent_span_id)}\t${tsvOpt(e.request_id)}\t` +
      `${tsvOpt(e.session_id)}\t${tsvOpt(e.principal)}\t${tsvOpt(e.action)}\t` +
      `${tsvResources(e.resources)}\t${e.data_classes.length === 0 ? '[]' : `[${e.data_classes.map(tsvQuote).join(',')}]`}\t` +
      `${tsvOpt(e.src_ip)}\t${tsvOpt(e.host)}\t${tsvOpt(e.user_agent)}\t` +
      `${tsvOpt(t?.name)}\t${tsvOpt(t?.call_id)}\t${tsvNullableString(t?.arguments)}\t${tsvNullableString(t?.result)}\t` +
      `${tsvOpt(t?.error)}\t${tsvOpt(t?.server)}\t${tsvJson(t?.annotations)}\t` +
      `${tsvOpt(m?.name)}\t${tsvOpt(m?.provider)}\t${tsvNullableNumber(m?.input_tokens)}\t${tsvNullableNumber(m?.output_tokens)}\t` +
      `${tsvJson(e.messages)}\t${tsvJson(e.credential)}\t${tsvJson(e.process)}\t${tsvJson(e.network)}\t${tsvJson(e.delegation)}\t` +
      `${tsvJsonText(JSON.stringify(e.attributes))}\t${tsvField(e.join_key)}\t${tsvField(e.unattributed_reason)}\t` +
      `${tsvDateTime64('ingested_at', e.ingested_at)}\t${e.late ? 'true' : 'false'}`
    );
  },
  // The source record's content is fixed by its event id (ids derive from the record); what can
  // differ between two deliveries is the arrival stamp and what the correlator made of it.
  tokenKey(e) {
    return `${e.event_id}\t${e.ingested_at}\t${e.task_id}\t${e.attribution}\t${e.join_key}\t${e.late ? 1 : 0}\t${e.unattributed_reason}`;
  },
};

const EVENT_TIMES: ReadonlySet<string> = new Set(['event_time', 'end_time', 'ingested_at']);

/**
 * SELECT list that {@link decodeEvent} reads. Times come as integer microseconds under a `_us`
 * alias: an alias named like its column would shadow the column in WHERE and ORDER BY.
 */
export const EVENT_SELECT = EVENT_COLUMNS.map((c) => (EVENT_TIMES.has(c) ? `toUnixTimestamp64Micro(${c}) AS ${c}_us` : c)).join(', ');

/** SELECT list that {@link decodeEvidence} reads: what an alert shows of an event. */
export const EVIDENCE_SELECT =
  'event_id, toUnixTimestamp64Micro(event_time) AS event_time_us, source, type, agent_id, workload_id, tool_name, action, resources.id AS resource_ids, principal, outcome';

const EvidenceRowSchema = z.object({
  event_id: z.string(),
  event_time_us: int64,
  source: z.string(),
  type: z.string(),
  agent_id: z.string(),
  workload_id: z.string(),
  tool_name: z.string(),
  action: z.string(),
  resource_ids: z.array(z.string()),
  principal: z.string(),
  outcome: z.string(),
});

/** A stored event as an alert shows it (see `Store.evidenceByIds`). */
export interface StoredEvidence {
  summary: EvidenceSummary;
  /** Every resource id the event touched (the summary shows the first). */
  resources: string[];
}

/** Decodes one row selected with {@link EVIDENCE_SELECT}: what `summarizeEvidence` makes of the event. */
export function decodeEvidence(raw: unknown): StoredEvidence {
  const r = EvidenceRowSchema.parse(raw);
  const summary = compactSummary({ ...r, time: microsToMs(r.event_time_us), tool: r.tool_name, resource: r.resource_ids[0] });
  return { summary, resources: r.resource_ids };
}

/** SELECT list that {@link decodeToolCall} reads, over a subquery of the `events` columns. */
export const TOOL_CALL_SELECT = 'task_id, agent_id, tool_name, toUnixTimestamp64Micro(event_time) AS event_time_us';

const ToolCallRowSchema = z.object({ task_id: z.string(), agent_id: z.string(), tool_name: z.string(), event_time_us: int64 });

/** Decodes one row selected with {@link TOOL_CALL_SELECT}. */
export function decodeToolCall(raw: unknown): ToolCallRecord {
  const r = ToolCallRowSchema.parse(raw);
  return { task_id: r.task_id, agent_id: r.agent_id, tool: r.tool_name, time: microsToMs(r.event_time_us) };
}

const EventRowSchema = z.object({
  task_id: z.string(),
  event_time_us: int64,
  end_time_us: nullableInt64,
  event_id: z.string(),
  source: z.string(),
  type: z.string(),
  format: z.string(),
  attribution: z.string(),
  outcome: z.string(),
  sensitivity: z.string(),
  agent_id: z.string(),
  agent_name: z.string(),
  workload_id: z.string(),
  credential_id: z.string(),
  trace_id: z.string(),
  span_id: z.string(),
  parent_span_id: z.string(),
  request_id: z.string(),
  session_id: z.string(),
  principal: z.string(),
  action: z.string(),
  resources: z.array(z.object({ type: z.string(), id: z.string(), account: z.string() })),
  data_classes: z.array(z.string()),
  src_ip: z.string(),
  host: z.string(),
  user_agent: z.string(),
  tool_name: z.string(),
  tool_call_id: z.string(),
  tool_arguments: z.string().nullable(),
  tool_result: z.string().nullable(),
  tool_error: z.string(),
  tool_server: z.string(),
  tool_annotations: z.string(),
  model_name: z.string(),
  model_provider: z.string(),
  model_input_tokens: nullableInt64,
  model_output_tokens: nullableInt64,
  messages: z.string(),
  credential: z.string(),
  process: z.string(),
  network: z.string(),
  delegation: z.string(),
  attributes: z.string(),
  join_key: z.string(),
  unattributed_reason: z.string(),
  ingested_at_us: int64,
  late: z.boolean(),
});

/**
 * Turns one `events` row (selected with {@link EVENT_SELECT}) back into a TimelineEvent.
 * Nested objects whose every field is empty (`model: {}`) come back absent: they carry nothing.
 */
export function decodeEvent(raw: unknown): TimelineEvent {
  const r = EventRowSchema.parse(raw);
  const tool =
    r.tool_name === ''
      ? undefined
      : {
          name: r.tool_name,
          call_id: orUndefined(r.tool_call_id),
          arguments: r.tool_arguments ?? undefined,
          result: r.tool_result ?? undefined,
          error: orUndefined(r.tool_error),
          server: orUndefined(r.tool_server),
          annotations: parseJsonColumn('tool_annotations', r.tool_annotations),
        };
  const hasModel =
    r.model_name !== '' || r.model_provider !== '' || r.model_input_tokens !== null || r.model_output_tokens !== null;
  const model = hasModel
    ? {
        name: orUndefined(r.model_name),
        provider: orUndefined(r.model_provider),
        input_tokens: r.model_input_tokens === null ? undefined : Number(r.model_input_tokens),
        output_tokens: r.model_output_tokens === null ? undefined : Number(r.model_output_tokens),
      }
    : undefined;
  const event = {
    event_id: r.event_id,
    source: r.source,
    type: r.type,
    time: microsToMs(r.event_time_us),
    end_time: r.end_time_us === null ? undefined : microsToMs(r.end_time_us),
    format: r.format,
    task_id: r.task_id,
    agent_id: orUndefined(r.agent_id),
    agent_name: orUndefined(r.agent_name),
    workload_id: orUndefined(r.workload_id),
    credential_id: orUndefined(r.credential_id),
    trace_id: orUndefined(r.trace_id),
    span_id: orUndefined(r.span_id),
    parent_span_id: orUndefined(r.parent_span_id),
    request_id: orUndefined(r.request_id),
    session_id: orUndefined(r.session_id),
    principal: orUndefined(r.principal),
    action: orUndefined(r.action),
    resources: r.resources.map((x) => ({ type: orUndefined(x.type), id: x.id, account: orUndefined(x.account) })),
    outcome: r.outcome,
    sensitivity: r.sensitivity,
    data_classes: r.data_classes,
    src_ip: orUndefined(r.src_ip),
    host: orUndefined(r.host),
    user_agent: orUndefined(r.user_agent),
    tool,
    model,
    messages: MessagesSchema.optional().parse(parseJsonColumn('messages', r.messages)),
    credential: CredentialInfoSchema.optional().parse(parseJsonColumn('credential', r.credential)),
    process: ProcessInfoSchema.optional().parse(parseJsonColumn('process', r.process)),
    network: NetworkInfoSchema.optional().parse(parseJsonColumn('network', r.network)),
    delegation: DelegationInfoSchema.optional().parse(parseJsonColumn('delegation', r.delegation)),
    attributes: AttributesSchema.parse(parseJsonColumn('attributes', r.attributes) ?? {}),
    attribution: r.attribution,
    join_key: r.join_key,
    unattributed_reason: r.unattributed_reason,
    ingested_at: microsToMs(r.ingested_at_us),
    late: r.late,
  };
  return stripUndefined(TimelineEventSchema.parse(event));
}

/**
 * zod keeps keys whose value is `undefined`; drop them so a decoded event is structurally equal
 * to the event as the producer built it (optional fields absent, not present-and-undefined).
 * `attributes` is the source's own data and is left exactly as parsed.
 */
function stripUndefined<T extends object>(obj: T): T {
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) {
      delete (obj as Record<string, unknown>)[k];
    } else if (k === 'attributes') {
      continue;
    } else if (Array.isArray(v)) {
      for (const item of v) if (isPlainObject(item)) stripUndefined(item);
    } else if (isPlainObject(v)) {
      stripUndefined(v);
    }
  }
  return obj;
}

function isPlainObject(v: unknown): v is object {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// ---------------------------------------------------------------------------------------------
// bindings

/** Column order for `bindings` inserts. */
export const BINDING_COLUMNS = [
  'credential_id',
  'kind',
  'task_id',
  'agent_id',
  'workload_id',
  'principal',
  'subject',
  'session_name',
  'parent_credential_id',
  'issued_at',
  'expires_at',
  'revoked_at',
  'src_ip',
  'host',
  'event_id',
  'bound_by',
  'updated_at',
] as const;

/**
 * The `bindings` version column. A binding only moves forward (issued, then revoked), so the later
 * of the two lifecycle times orders its versions: a replayed issuance can never replace a stored
 * revocation, whatever order the rows arrive in. Equal versions keep the last inserted row.
 */
export function bindingVersion(b: CredentialBinding): number {
  return Math.max(b.issued_at, b.revoked_at);
}

/** Codec for the `bindings` table. */
export const BINDINGS_CODEC: TableCodec<CredentialBinding> = {
  table: TABLE.bindings,
  columns: BINDING_COLUMNS,
  format: 'JSONCompactEachRow',
  encode(b) {
    return JSON.stringify([
      b.credential_id,
      b.kind,
      b.task_id,
      b.agent_id,
      b.workload_id,
      b.principal,
      b.subject,
      b.session_name,
      b.parent_credential_id,
      timeToMicros('issued_at', b.issued_at),
      timeToMicros('expires_at', b.expires_at),
      timeToMicros('revoked_at', b.revoked_at),
      b.src_ip,
      b.host,
      b.event_id,
      b.bound_by,
      msToMicros(bindingVersion(b)),
    ]);
  },
};

/** SELECT list for {@link decodeBinding}. */
export const BINDING_SELECT = BINDING_COLUMNS.filter((c) => c !== 'updated_at')
  .map((c) => (c.endsWith('_at') ? `toUnixTimestamp64Micro(${c}) AS ${c}_us` : c))
  .join(', ');

const BindingRowSchema = z.object({
  credential_id: z.string(),
  kind: z.string(),
  task_id: z.string(),
  agent_id: z.string(),
  workload_id: z.string(),
  principal: z.string(),
  subject: z.string(),
  session_name: z.string(),
  parent_credential_id: z.string(),
  issued_at_us: int64,
  expires_at_us: int64,
  revoked_at_us: int64,
  src_ip: z.string(),
  host: z.string(),
  event_id: z.string(),
  bound_by: z.string(),
});

/** Turns one `bindings` row back into a CredentialBinding. */
export function decodeBinding(raw: unknown): CredentialBinding {
  const { issued_at_us, expires_at_us, revoked_at_us, ...r } = BindingRowSchema.parse(raw);
  return CredentialBindingSchema.parse({
    ...r,
    issued_at: microsToMs(issued_at_us),
    expires_at: microsToMs(expires_at_us),
    revoked_at: microsToMs(revoked_at_us),
  });
}

// ---------------------------------------------------------------------------------------------
// findings

/** Column order for `findings` inserts. */
export const FINDING_COLUMNS = [
  'id',
  'detector',
  'rule',
  'severity',
  'title',
  'summary',
  'task_id',
  'agent_id',
  'workload_id',
  'time',
  'evidence',
  'join_keys',
  'window_start',
  'window_end',
  'metrics',
  'tags',
  'emitted_at',
] as const;

/** Codec for the `findings` table. */
export const FINDINGS_CODEC: TableCodec<Finding> = {
  table: TABLE.findings,
  columns: FINDING_COLUMNS,
  format: 'JSONCompactEachRow',
  encode(f) {
    return JSON.stringify([
      f.id,
      f.detector,
      f.rule,
      f.severity,
      f.title,
      f.summary,
      f.task_id,
      f.agent_id,
      f.workload_id,
      timeToMicros('time', f.time),
      f.evidence,
      f.join_keys,
      nullableMicros('window_start', f.window_start),
      nullableMicros('window_end', f.window_end),
      f.metrics,
      f.tags,
      nullableMicros('emitted_at', f.emitted_at),
    ]);
  },
};

const FINDING_TIMES = new Set(['time', 'window_start', 'window_end', 'emitted_at']);

/** SELECT list for {@link decodeFinding}. */
export const FINDING_SELECT = FINDING_COLUMNS.map((c) =>
  FINDING_TIMES.has(c) ? `toUnixTimestamp64Micro(${c}) AS ${c}_us` : c,
).join(', ');

const FindingRowSchema = z.object({
  id: z.string(),
  detector: z.string(),
  rule: z.string(),
  severity: z.string(),
  title: z.string(),
  summary: z.string(),
  task_id: z.string(),
  agent_id: z.string(),
  workload_id: z.string(),
  time_us: int64,
  evidence: z.array(z.string()),
  join_keys: z.record(z.string(), z.string()),
  window_start_us: nullableInt64,
  window_end_us: nullableInt64,
  metrics: z.record(z.string(), z.number()),
  tags: z.array(z.string()),
  emitted_at_us: nullableInt64,
});

/** Turns one `findings` row back into a Finding. */
export function decodeFinding(raw: unknown): Finding {
  const { time_us, window_start_us, window_end_us, emitted_at_us, ...r } = FindingRowSchema.parse(raw);
  const opt = (v: number | string | null): number | undefined => (v === null ? undefined : microsToMs(v));
  return stripUndefined(
    FindingSchema.parse({
      ...r,
      time: microsToMs(time_us),
      window_start: opt(window_start_us),
      window_end: opt(window_end_us),
      emitted_at: opt(emitted_at_us),
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// alerts and dead letters

/** Codec for the `alerts` table. */
export const ALERTS_CODEC: TableCodec<AlertDelivery> = {
  table: TABLE.alerts,
  columns: ['id', 'incident_id', 'channel', 'status', 'time', 'payload'],
  format: 'JSONCompactEachRow',
  encode(a) {
    return JSON.stringify([a.id, a.incident_id, a.channel, a.status, timeToMicros('time', a.time), a.payload]);
  },
};

/** Codec for the `dead_letters` table. */
export const DEAD_LETTERS_CODEC: TableCodec<DeadLetter> = {
  table: TABLE.deadLetters,
  columns: ['stage', 'topic', 'partition', 'offset', 'key', 'code', 'reason', 'payload', 'time'],
  format: 'JSONCompactEachRow',
  encode(d) {
    return JSON.stringify([d.stage, d.topic, d.partition, d.offset, d.key, d.code, d.reason, d.payload, timeToMicros('time', d.time)]);
  },
};

// ---------------------------------------------------------------------------------------------
// incidents and the alert outbox (times as integer epoch milliseconds into DateTime64(3))

/**
 * Codec for `incidents`. The whole incident is kept as JSON in `state` (decoded with its schema);
 * the other columns repeat the fields the CLI and analysts filter on.
 */
export const INCIDENTS_CODEC: TableCodec<Incident> = {
  table: TABLE.incidents,
  columns: ['id', 'fingerprint', 'status', 'severity', 'detector', 'rule', 'task_id', 'agent_id', 'workload_id', 'title', 'finding_count', 'first_seen', 'last_seen', 'opened_at', 'updated_at', 'suppressed', 'state', 'version'],
  format: 'JSONCompactEachRow',
  encode(i) {
    return JSON.stringify([
      i.id, i.fingerprint, i.status, i.severity, i.detector, i.rule, i.task_id, i.agent_id, i.workload_id, i.title, i.finding_count,
      Math.round(i.first_seen), Math.round(i.last_seen), Math.round(i.opened_at), Math.round(i.updated_at), i.suppressed, JSON.stringify(i),
      // The alerter keeps updated_at strictly increasing per incident, so it orders the versions.
      Math.round(i.updated_at),
    ]);
  },
};

/** Columns selected to decode an incident. */
export const INCIDENT_SELECT = 'state';

/** Decodes a stored incident. */
export function decodeIncident(raw: unknown): Incident {
  const { state } = z.object({ state: z.string() }).parse(raw);
  return IncidentSchema.parse(parseJsonColumn('state', state));
}

const OUTBOX_COLUMNS = ['id', 'incident_id', 'fingerprint', 'channel', 'kind', 'status', 'attempts', 'next_attempt_at', 'last_error', 'ref', 'payload', 'created_at', 'version'] as const;

/** Codec for `alert_outbox`. */
export const OUTBOX_CODEC: TableCodec<OutboxEntry> = {
  table: TABLE.alertOutbox,
  columns: OUTBOX_COLUMNS,
  format: 'JSONCompactEachRow',
  encode(o) {
    return JSON.stringify([
      o.id, o.incident_id, o.fingerprint, o.channel, o.kind, o.status, o.attempts, Math.round(o.next_attempt_at), o.last_error, o.ref, o.payload,
      Math.round(o.created_at), o.version,
    ]);
  },
};

const OUTBOX_TIMES: ReadonlySet<string> = new Set(['next_attempt_at', 'created_at']);

/** Select list for {@link decodeOutbox}. */
export const OUTBOX_SELECT = OUTBOX_COLUMNS.map((c) => (OUTBOX_TIMES.has(c) ? `toUnixTimestamp64Milli(${c}) AS ${c}` : c)).join(', ');

const OutboxRowSchema = z.object({
  attempts: int64,
  next_attempt_at: int64,
  created_at: int64,
  version: int64,
}).loose();

/** Decodes a stored outbox row. */
export function decodeOutbox(raw: unknown): OutboxEntry {
  const r = OutboxRowSchema.parse(raw);
  return OutboxEntrySchema.parse({
    ...r,
    attempts: Number(r.attempts),
    next_attempt_at: Number(r.next_attempt_at),
    created_at: Number(r.created_at),
    version: Number(r.version),
  });
}
