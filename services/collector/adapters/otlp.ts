import {
  EVENT_SOURCES,
  EVENT_TYPE,
  EVENT_TYPES,
  type CanonicalEventInput,
  type EventSource,
  type EventType,
  type IngestFormat,
  type Messages,
  type ModelInfo,
  type Outcome,
  type ResourceRef,
  type ToolInfo,
} from '../../../shared/event.ts';
import { BodyError, RecordError } from '../../../shared/errors.ts';
import { contentHash, eventId } from '../../../shared/ids.ts';
import { OtlpProtoError, decodeLogsRequestProto, decodeTraceRequestProto } from '../otlp/otlp-proto.ts';
import { ResultBuilder, decodeUtf8, tooDeepField, typeName, type Adapter, type AdapterResult } from './adapter.ts';

/**
 * OTLP/HTTP adapters: `ExportTraceServiceRequest` and `ExportLogsServiceRequest` bodies, as
 * OTLP/JSON or protobuf, mapped onto canonical events following the OpenTelemetry GenAI and MCP
 * semantic conventions.
 *
 * Every span and every log record is one record for rejection indexes, numbered across the whole
 * body in document order. A JSON body may also hold several requests, one per line (what the
 * Collector's file exporter writes); numbering then continues across lines.
 */

/** Content types both adapters accept (lowercase, without parameters). */
export const OTLP_CONTENT_TYPES = ['application/json', 'application/x-protobuf', 'application/protobuf'] as const;

// ---------------------------------------------------------------------------------------------
// Body framing
// ---------------------------------------------------------------------------------------------

/** One request read from a body, or why a line of a multi-request body could not be read. */
type RequestFrame = { value: Record<string, unknown> } | { error: string };

/** True for `application/x-protobuf` and the `application/protobuf` spelling some senders use. */
function isProtobuf(contentType: string): boolean {
  const base = contentType.split(';', 1)[0]?.trim().toLowerCase() ?? '';
  return base === 'application/x-protobuf' || base === 'application/protobuf';
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Reads the requests in a body. Throws BodyError when nothing can be read: undecodable protobuf,
 * JSON that does not parse (a truncated upload), or a document that is not an object.
 */
function readRequests(body: Buffer, contentType: string, decodeProto: (buf: Uint8Array) => unknown, what: string): RequestFrame[] {
  if (isProtobuf(contentType)) {
    let decoded: unknown;
    try {
      decoded = decodeProto(body);
    } catch (err) {
      if (err instanceof OtlpProtoError) throw new BodyError(`body is not a valid ${what} protobuf: ${err.message}`, err);
      // The decoder promises OtlpProtoError; anything else is still bad input, not a retriable fault.
      throw new BodyError(`body is not a valid ${what} protobuf: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    if (!isPlainObject(decoded)) throw new BodyError(`body is not a valid ${what} protobuf: decoder returned ${typeName(decoded)}`);
    return [{ value: decoded }];
  }

  const text = decodeUtf8(body);
  const trimmed = text.trim();
  if (trimmed === '') return [];
  let whole: unknown;
  try {
    whole = JSON.parse(trimmed);
  } catch (err) {
    return readJsonLines(trimmed, what, err);
  }
  if (!isPlainObject(whole)) throw new BodyError(`body is not an OTLP/JSON ${what}: expected a JSON object, got ${typeName(whole)}`);
  return [{ value: whole }];
}

/**
 * Splits a body that is not one JSON document into one request per line. Only when the first line
 * is itself a complete JSON object: otherwise the body is one broken document (a truncated or
 * pretty-printed upload) and splitting it would turn fragments into bogus requests.
 */
function readJsonLines(trimmed: string, what: string, wholeError: unknown): RequestFrame[] {
  const reason = `body is not valid OTLP/JSON (${wholeError instanceof Error ? wholeError.message : String(wholeError)}); send one ${what} per body, or one per line`;
  const lines = trimmed.split('\n');
  if (lines.length < 2) throw new BodyError(reason, wholeError);
  const frames: RequestFrame[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      if (frames.length === 0) throw new BodyError(reason, wholeError);
      frames.push({ error: `line ${i + 1}: not valid JSON (${err instanceof Error ? err.message : String(err)})` });
      continue;
    }
    if (!isPlainObject(value)) {
      if (frames.length === 0) throw new BodyError(reason, wholeError);
      frames.push({ error: `line ${i + 1}: expected a JSON object, got ${typeName(value)}` });
      continue;
    }
    frames.push({ value });
  }
  return frames;
}

// ---------------------------------------------------------------------------------------------
// OTLP value readers
// ---------------------------------------------------------------------------------------------

/** Flattened attributes: AnyValues turned into plain JSON values. */
type Attrs = Record<string, unknown>;

/** Nesting cap for arrayValue / kvlistValue, so a hostile body cannot exhaust the stack. */
const MAX_ANY_VALUE_DEPTH = 32;

/**
 * Converts an OTLP AnyValue into a plain value: strings, booleans and doubles as is, `intValue`
 * as a number when it fits a double exactly (else its decimal string), arrays and kvlists
 * recursively, bytes as their base64 text. An empty AnyValue (OTLP's null) becomes null. A value
 * in no known shape is kept verbatim: one odd attribute must not cost the whole span.
 */
function anyValue(v: unknown, field: string, depth = 0): unknown {
  if (!isPlainObject(v)) return v === undefined ? null : verbatim(v, field, depth);
  if (depth > MAX_ANY_VALUE_DEPTH) throw new RecordError(field, `nested deeper than ${MAX_ANY_VALUE_DEPTH} levels`);
  const s = v['stringValue'];
  if (s !== undefined) return verbatim(s, `${field}.stringValue`, depth);
  const b = v['boolValue'];
  if (b !== undefined) return verbatim(b, `${field}.boolValue`, depth);
  const i = v['intValue'];
  if (i !== undefined) return verbatim(intValue(i), `${field}.intValue`, depth);
  const d = v['doubleValue'];
  if (d !== undefined) return typeof d === 'string' ? Number(d) : verbatim(d, `${field}.doubleValue`, depth);
  const arr = v['arrayValue'];
  if (arr !== undefined) {
    const values = isPlainObject(arr) ? arr['values'] : undefined;
    if (values === undefined || values === null) return [];
    if (!Array.isArray(values)) throw new RecordError(`${field}.arrayValue.values`, `expected an array, got ${typeName(values)}`);
    return values.map((item, k) => anyValue(item, `${field}.arrayValue.values[${k}]`, depth + 1));
  }
  const kv = v['kvlistValue'];
  if (kv !== undefined) {
    const out: Attrs = {};
    flattenInto(out, isPlainObject(kv) ? kv['values'] : undefined, `${field}.kvlistValue.values`, '', depth + 1);
    return out;
  }
  const bytes = v['bytesValue'];
  if (bytes !== undefined) return verbatim(bytes, `${field}.bytesValue`, depth);
  return null;
}

/**
 * A value in no AnyValue shape, kept as received, provided it nests no deeper than what is left
 * of the AnyValue depth budget: arbitrary JSON nested thousands of levels deep would overflow the
 * stack wherever the event is serialized later.
 */
function verbatim(v: unknown, field: string, depth: number): unknown {
  if (typeof v === 'object' && v !== null && tooDeepField(v, Math.max(1, MAX_ANY_VALUE_DEPTH - depth)) !== undefined) {
    throw new RecordError(field, `nested deeper than ${MAX_ANY_VALUE_DEPTH} levels`);
  }
  return v;
}

/** OTLP/JSON encodes int64 as a decimal string; keep it a string when a double would round it. */
function intValue(i: unknown): unknown {
  if (typeof i === 'number') return i;
  if (typeof i === 'string') {
    const n = Number(i);
    return Number.isSafeInteger(n) ? n : i;
  }
  return i;
}

/** Flattens a KeyValue list into `out` (keys prefixed with `prefix`); later duplicates win. */
function flattenInto(out: Attrs, list: unknown, field: string, prefix: string, depth = 0): void {
  if (list === undefined || list === null) return;
  if (!Array.isArray(list)) throw new RecordError(field, `expected an array of key/value pairs, got ${typeName(list)}`);
  for (let k = 0; k < list.length; k++) {
    const kv: unknown = list[k];
    if (!isPlainObject(kv) || typeof kv['key'] !== 'string') throw new RecordError(`${field}[${k}]`, 'expected {key: string, value: AnyValue}');
    out[prefix + kv['key']] = anyValue(kv['value'], `${field}[${k}].value`, depth);
  }
}

/** A correlation-key value: a non-empty string, a number as its text, the first of a string array. */
function keyString(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  // HTTP header attributes (`http.request.header.*`) are string arrays by convention.
  if (Array.isArray(v)) return keyString(v[0]);
  return undefined;
}

/** Free text kept as received: strings as is, structured values serialized as JSON. */
function text(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** A token count, or undefined when the attribute holds no non-negative integer. */
function count(v: unknown): number | undefined {
  const n = typeof v === 'string' ? Number(v) : v;
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** Reads a record's own attributes first and its resource's second. */
class AttrView {
  constructor(
    readonly own: Attrs,
    readonly resource: Attrs,
  ) {}

  get(key: string): unknown {
    const v = this.own[key];
    return v !== undefined && v !== null ? v : this.resource[key];
  }

  str(key: string): string | undefined {
    return keyString(this.get(key));
  }

  /** First key holding a usable string. */
  first(...keys: string[]): string | undefined {
    for (const k of keys) {
      const v = this.str(k);
      if (v !== undefined) return v;
    }
    return undefined;
  }
}

const UINT64_MAX = (1n << 64n) - 1n;
const NS_PER_MS = 1_000_000n;
const DECIMAL = /^\d{1,20}$/;

/**
 * Reads a fixed64 nanosecond timestamp (OTLP/JSON: decimal string; a JSON number is tolerated).
 * Returns undefined when absent or 0, which OTLP defines as "unset".
 */
function nanos(v: unknown, field: string): bigint | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  let ns: bigint;
  if (typeof v === 'string' && DECIMAL.test(v)) ns = BigInt(v);
  else if (typeof v === 'number' && Number.isInteger(v) && v >= 0) ns = BigInt(v);
  else throw new RecordError(field, `expected nanoseconds since the Unix epoch as a decimal string, got ${describeValue(v)}`);
  if (ns > UINT64_MAX) throw new RecordError(field, `nanosecond timestamp exceeds the uint64 range: ${describeValue(v)}`);
  return ns === 0n ? undefined : ns;
}

/** Nanoseconds to epoch milliseconds, the sub-millisecond part kept as the fraction. */
function nsToMs(ns: bigint): number {
  // Split before converting: the whole ns count does not fit a double exactly, the parts do.
  return Number(ns / NS_PER_MS) + Number(ns % NS_PER_MS) / 1e6;
}

function describeValue(v: unknown): string {
  const json = JSON.stringify(v);
  return json === undefined ? typeName(v) : `${typeName(v)} ${json.slice(0, 40)}`;
}

const HEX_TRACE_ID = /^[0-9a-fA-F]{32}$/;
const HEX_SPAN_ID = /^[0-9a-fA-F]{16}$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);

/**
 * Reads an optional hex id. All-zero ids are OTLP's "invalid" value and count as absent. Returns
 * the id lowercased, so JSON and protobuf bodies hash to the same event ids.
 */
function hexId(v: unknown, field: string, pattern: RegExp, zero: string, hexLen: number): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string' || !pattern.test(v)) {
    throw new RecordError(field, `expected ${hexLen} hex characters (OTLP/JSON ids are hex, not base64), got ${describeValue(v)}`);
  }
  const id = v.toLowerCase();
  return id === zero ? undefined : id;
}

const traceIdOf = (v: unknown, field: string): string | undefined => hexId(v, field, HEX_TRACE_ID, ZERO_TRACE_ID, 32);
const spanIdOf = (v: unknown, field: string): string | undefined => hexId(v, field, HEX_SPAN_ID, ZERO_SPAN_ID, 16);

/** SpanKind and StatusCode numbers; OTLP/JSON requires numbers, names are accepted too. */
const SPAN_KIND = { unspecified: 0, internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;
const SPAN_KIND_NAMES: Record<string, number> = {
  SPAN_KIND_UNSPECIFIED: 0,
  SPAN_KIND_INTERNAL: 1,
  SPAN_KIND_SERVER: 2,
  SPAN_KIND_CLIENT: 3,
  SPAN_KIND_PRODUCER: 4,
  SPAN_KIND_CONSUMER: 5,
};
const STATUS_CODE = { unset: 0, ok: 1, error: 2 } as const;
const STATUS_CODE_NAMES: Record<string, number> = { STATUS_CODE_UNSET: 0, STATUS_CODE_OK: 1, STATUS_CODE_ERROR: 2 };

function enumValue(v: unknown, names: Record<string, number>, field: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'string') {
    const n = names[v];
    if (n !== undefined) return n;
  }
  throw new RecordError(field, `expected an enum number or one of ${Object.keys(names).join(', ')}, got ${describeValue(v)}`);
}

/** Reads an optional container (resource, scope, status) that must be an object when present. */
function optObject(v: unknown, field: string): Record<string, unknown> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isPlainObject(v)) throw new RecordError(field, `expected an object, got ${typeName(v)}`);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Shared mapping: correlation keys, tools, models, messages
// ---------------------------------------------------------------------------------------------

/** Resource attributes of one ResourceSpans / ResourceLogs, read once for all its records. */
interface ResourceContext {
  flat: Attrs;
  /** The same attributes under `resource.`-prefixed keys, as they go into `attributes`. */
  prefixed: Attrs;
  /** Set when the resource attributes are malformed: every record under it is rejected. */
  error?: RecordError;
}

function readResource(container: Record<string, unknown>, path: string): ResourceContext {
  const flat: Attrs = {};
  const prefixed: Attrs = {};
  try {
    const resource = optObject(container['resource'], `${path}.resource`);
    flattenInto(flat, resource?.['attributes'], `${path}.resource.attributes`, '');
    for (const k in flat) prefixed[`resource.${k}`] = flat[k];
    return { flat, prefixed };
  } catch (err) {
    if (err instanceof RecordError) return { flat, prefixed, error: err };
    throw err;
  }
}

/** The correlation keys every OTLP event carries besides task, agent and trace. */
interface CorrelationKeys {
  workload_id: string | undefined;
  credential_id: string | undefined;
  request_id: string | undefined;
  session_id: string | undefined;
  host: string | undefined;
  src_ip: string | undefined;
  principal: string | undefined;
  user_agent: string | undefined;
}

/** Reads the correlation keys from the record's attributes, then its resource's. */
function correlationKeys(v: AttrView): CorrelationKeys {
  return {
    workload_id: v.first('runtrail.workload.id', 'spiffe.id'),
    credential_id: v.str('runtrail.credential.id'),
    request_id: v.first('aws.request_id', 'runtrail.request.id', 'http.request.header.x-request-id'),
    session_id: v.first('session.id', 'mcp.session.id'),
    host: v.str('host.name'),
    src_ip: v.first('client.address', 'source.address'),
    principal: v.first('enduser.id', 'user.id'),
    user_agent: v.str('user_agent.original'),
  };
}

/** The task a record states for itself. Only explicit attributes, never the trace id. */
function explicitTaskId(v: AttrView): string | undefined {
  return v.first('runtrail.task.id', 'gen_ai.conversation.id');
}

/** MCP tool annotation hints, from per-hint boolean attributes or a JSON `mcp.tool.annotations`. */
const ANNOTATION_PREFIX = 'mcp.tool.annotations.';

function toolAnnotations(v: AttrView): Record<string, boolean> | undefined {
  const out: Record<string, boolean> = {};
  let whole = v.get('mcp.tool.annotations');
  if (typeof whole === 'string') {
    try {
      whole = JSON.parse(whole);
    } catch {
      // Not JSON: the attribute stays in `attributes` for analysts; there are no hints to read.
      whole = undefined;
    }
  }
  if (isPlainObject(whole)) {
    for (const [k, b] of Object.entries(whole)) if (typeof b === 'boolean') out[k] = b;
  }
  // Per-hint attributes are more specific than the JSON blob, so they win.
  for (const k in v.own) {
    if (!k.startsWith(ANNOTATION_PREFIX)) continue;
    const b = v.own[k];
    const hint = k.slice(ANNOTATION_PREFIX.length);
    if (typeof b === 'boolean') out[hint] = b;
    else if (b === 'true' || b === 'false') out[hint] = b === 'true';
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Tool details from GenAI `execute_tool` / MCP `tools/call` attributes. */
function toolInfo(v: AttrView, spanName: string, failed: boolean, statusMessage: string | undefined): ToolInfo | undefined {
  let name = v.first('gen_ai.tool.name', 'mcp.tool.name');
  if (name === undefined) {
    // Span names are `execute_tool {tool}` (GenAI) and `tools/call {tool}` (MCP).
    const space = spanName.indexOf(' ');
    const rest = space > 0 ? spanName.slice(space + 1).trim() : '';
    if (rest !== '') name = rest;
  }
  if (name === undefined) return undefined;
  return {
    name,
    call_id: v.str('gen_ai.tool.call.id'),
    arguments: text(v.get('gen_ai.tool.call.arguments')),
    result: text(v.get('gen_ai.tool.call.result')),
    error: failed ? (v.str('error.type') ?? statusMessage) : undefined,
    annotations: toolAnnotations(v),
    server: v.first('mcp.server.name', 'server.address'),
  };
}

/** Model details, or undefined when the record names no model, provider or token use. */
function modelInfo(v: AttrView): ModelInfo | undefined {
  const model: ModelInfo = {
    name: v.first('gen_ai.request.model', 'gen_ai.response.model'),
    provider: v.first('gen_ai.provider.name', 'gen_ai.system'),
    input_tokens: count(v.get('gen_ai.usage.input_tokens')),
    output_tokens: count(v.get('gen_ai.usage.output_tokens')),
  };
  return model.name !== undefined || model.provider !== undefined || model.input_tokens !== undefined || model.output_tokens !== undefined
    ? model
    : undefined;
}

function messagesOf(system: unknown, input: unknown, output: unknown): Messages | undefined {
  const m: Messages = { system: text(system), input: text(input), output: text(output) };
  return m.system !== undefined || m.input !== undefined || m.output !== undefined ? m : undefined;
}

function attrMessages(v: AttrView): Messages | undefined {
  return messagesOf(v.get('gen_ai.system_instructions'), v.get('gen_ai.input.messages'), v.get('gen_ai.output.messages'));
}

/** Which attribute families a record carries; computed in one pass over its keys. */
interface AttrFamilies {
  genAi: boolean;
  http: boolean;
  db: boolean;
  aws: boolean;
}

function families(own: Attrs): AttrFamilies {
  const f: AttrFamilies = { genAi: false, http: false, db: false, aws: false };
  for (const k in own) {
    if (k.startsWith('gen_ai.')) f.genAi = true;
    else if (k.startsWith('http.') || k === 'url.full') f.http = true;
    else if (k.startsWith('db.')) f.db = true;
    else if (k.startsWith('aws.')) f.aws = true;
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------------------------

const AGENT_OPS = new Set(['invoke_agent', 'create_agent']);
const MODEL_OPS = new Set(['chat', 'text_completion', 'generate_content', 'embeddings']);
const TOOL_OPS = new Set(['execute_tool']);
/** Operations recognised from a span name's first word when `gen_ai.operation.name` is absent. */
const KNOWN_OPS = new Set([...AGENT_OPS, ...MODEL_OPS, ...TOOL_OPS]);

/** One span after the first pass: ids, attributes and agent facts its descendants inherit. */
interface SpanEntry {
  index: number;
  path: string;
  span: Record<string, unknown>;
  scopeName: string | undefined;
  resource: ResourceContext;
  /** Set when the span cannot be read; it is rejected in the second pass. */
  error?: RecordError;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  own: Attrs;
  view: AttrView;
  op: string | undefined;
  /** Lazily resolved context inherited from ancestors (see {@link resolveContext}). */
  ctx?: SpanContext;
}

/** What a span passes to its descendants: the task it belongs to and the agent acting in it. */
interface SpanContext {
  taskId: string | undefined;
  agentId: string | undefined;
  agentName: string | undefined;
  /** True when the span is, or descends from, an `invoke_agent` span in this request. */
  inAgent: boolean;
}

const EMPTY_CONTEXT: SpanContext = { taskId: undefined, agentId: undefined, agentName: undefined, inAgent: false };

/** The GenAI operation: `gen_ai.operation.name`, else a known first word of the span name. */
function operationOf(own: Attrs, name: string): string | undefined {
  const op = keyString(own['gen_ai.operation.name']);
  if (op !== undefined) return op;
  const space = name.indexOf(' ');
  const word = space > 0 ? name.slice(0, space) : name;
  return KNOWN_OPS.has(word) ? word : undefined;
}

/** First pass over one span: everything that does not depend on other spans. */
function readSpan(entry: SpanEntry): void {
  const { span, path } = entry;
  entry.traceId = requireId(traceIdOf(span['traceId'], `${path}.traceId`), `${path}.traceId`);
  entry.spanId = requireId(spanIdOf(span['spanId'], `${path}.spanId`), `${path}.spanId`);
  entry.parentSpanId = spanIdOf(span['parentSpanId'], `${path}.parentSpanId`);
  // Resource attributes go in first under their prefixed keys, so span attributes win a clash.
  Object.assign(entry.own, entry.resource.prefixed);
  flattenInto(entry.own, span['attributes'], `${path}.attributes`, '');
  const name = span['name'];
  if (name !== undefined && typeof name !== 'string') throw new RecordError(`${path}.name`, `expected a string, got ${typeName(name)}`);
  entry.op = operationOf(entry.own, name ?? '');
}

function requireId(id: string | undefined, field: string): string {
  if (id === undefined) throw new RecordError(field, 'missing (or all zeros); every span needs one');
  return id;
}

/**
 * The context a span passes down. Walks up the parent chain iteratively (a request may hold a
 * long chain, or a hostile parent cycle) and memoizes on the way back down.
 */
function resolveContext(entry: SpanEntry, bySpanId: Map<string, SpanEntry>): SpanContext {
  if (entry.ctx !== undefined) return entry.ctx;
  const chain: SpanEntry[] = [];
  const seen = new Set<SpanEntry>();
  let cur: SpanEntry | undefined = entry;
  let inherited = EMPTY_CONTEXT;
  while (cur !== undefined) {
    if (cur.ctx !== undefined) {
      inherited = cur.ctx;
      break;
    }
    if (seen.has(cur)) break; // Parent cycle: treat the loop's top as a root.
    seen.add(cur);
    chain.push(cur);
    const parent: SpanEntry | undefined = cur.parentSpanId === undefined ? undefined : bySpanId.get(cur.traceId + cur.parentSpanId);
    cur = parent !== undefined && parent.error === undefined && parent.traceId === cur.traceId ? parent : undefined;
  }
  for (let i = chain.length - 1; i >= 0; i--) {
    const e = chain[i] as SpanEntry;
    const taskId = explicitTaskId(e.view) ?? inherited.taskId;
    if (e.op === 'invoke_agent') {
      const agentName = e.view.str('gen_ai.agent.name');
      inherited = { taskId, agentId: e.view.str('gen_ai.agent.id') ?? agentName, agentName, inAgent: true };
    } else {
      inherited = { ...inherited, taskId };
    }
    e.ctx = inherited;
  }
  return inherited;
}

function parentContext(entry: SpanEntry, bySpanId: Map<string, SpanEntry>): SpanContext {
  if (entry.parentSpanId === undefined) return EMPTY_CONTEXT;
  const parent = bySpanId.get(entry.traceId + entry.parentSpanId);
  if (parent === undefined || parent.error !== undefined || parent.traceId !== entry.traceId) return EMPTY_CONTEXT;
  return resolveContext(parent, bySpanId);
}

/** Status code 2 is ERROR, 1 is OK; unset means success for spans unless `error.type` says otherwise. */
function spanOutcome(statusCode: number, view: AttrView): Outcome {
  if (statusCode === STATUS_CODE.error) return 'failure';
  if (statusCode === STATUS_CODE.ok) return 'success';
  return view.get('error.type') !== undefined ? 'failure' : 'success';
}

/** What a span's classification decides. Everything else about its event is common to all spans. */
interface SpanDetail {
  source: EventSource;
  type: EventType;
  taskId: string | undefined;
  agentId: string | undefined;
  agentName: string | undefined;
  action?: string;
  resources?: ResourceRef[];
  tool?: ToolInfo;
  model?: ModelInfo;
  messages?: Messages;
  network?: CanonicalEventInput['network'];
  delegation?: CanonicalEventInput['delegation'];
}

/** The span facts every event of the span shares. */
interface SpanCommon {
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  outcome: Outcome;
  keys: CorrelationKeys;
}

/**
 * Builds a span's event as one literal of fixed shape. Spreading a shared base per event type
 * cost more than any other step of the mapping, and a fixed shape also keeps validation fast.
 */
function spanEvent(c: SpanCommon, d: SpanDetail, id: string, time: number, endTime: number | undefined, attributes: Attrs): CanonicalEventInput {
  return {
    event_id: id,
    source: d.source,
    type: d.type,
    time,
    end_time: endTime,
    format: 'otlp-traces',
    task_id: d.taskId,
    agent_id: d.agentId,
    agent_name: d.agentName,
    workload_id: c.keys.workload_id,
    credential_id: c.keys.credential_id,
    trace_id: c.traceId,
    span_id: c.spanId,
    parent_span_id: c.parentSpanId,
    request_id: c.keys.request_id,
    session_id: c.keys.session_id,
    principal: c.keys.principal,
    action: d.action,
    resources: d.resources ?? [],
    outcome: c.outcome,
    src_ip: c.keys.src_ip,
    host: c.keys.host,
    user_agent: c.keys.user_agent,
    tool: d.tool,
    model: d.model,
    messages: d.messages,
    network: d.network,
    delegation: d.delegation,
    attributes,
  };
}

/** Second pass over one span: its canonical event(s). */
function mapSpan(entry: SpanEntry, bySpanId: Map<string, SpanEntry>): CanonicalEventInput[] {
  const { span, path, own, traceId, spanId } = entry;
  const start = nanos(span['startTimeUnixNano'], `${path}.startTimeUnixNano`);
  if (start === undefined) throw new RecordError(`${path}.startTimeUnixNano`, 'missing (or 0)');
  const end = nanos(span['endTimeUnixNano'], `${path}.endTimeUnixNano`);
  const kind = enumValue(span['kind'], SPAN_KIND_NAMES, `${path}.kind`);
  const status = optObject(span['status'], `${path}.status`);
  const statusCode = enumValue(status?.['code'], STATUS_CODE_NAMES, `${path}.status.code`);
  const statusMessage = keyString(status?.['message']);
  const name = typeof span['name'] === 'string' ? span['name'] : '';

  const common: SpanCommon = {
    traceId,
    spanId,
    parentSpanId: entry.parentSpanId,
    outcome: spanOutcome(statusCode, entry.view),
    keys: correlationKeys(entry.view),
  };
  const detail = classifySpan(entry, bySpanId, { kind, statusCode, statusMessage, name, outcome: common.outcome }, path);

  // `own` already holds the `resource.`-prefixed keys (see readSpan), so it is the event's
  // attribute map as is: copying it per span was the adapter's largest single cost.
  const attributes = own;
  // Span-level facts that are not attributes in OTLP but matter to analysts; the names follow
  // OpenTelemetry's convention for exporters that have no dedicated fields.
  if (name !== '') attributes['otel.span.name'] = name;
  if (entry.scopeName !== undefined) attributes['otel.scope.name'] = entry.scopeName;
  if (statusCode === STATUS_CODE.error) attributes['otel.status_code'] = 'ERROR';
  else if (statusCode === STATUS_CODE.ok) attributes['otel.status_code'] = 'OK';
  if (statusMessage !== undefined) attributes['otel.status_description'] = statusMessage;

  const endMs = end === undefined ? undefined : nsToMs(end);
  // The start time is part of the identity: buggy instrumentation reuses span ids (the agentdojo
  // replay gives parallel tool calls one span id), and trace + span id alone would collapse those
  // calls into one stored event. A re-sent span keeps its start time, so its id is still stable.
  const startNs = start.toString();
  const event = spanEvent(common, detail, eventId('otlp-traces', traceId, spanId, startNs), nsToMs(start), endMs, attributes);
  if (detail.type !== EVENT_TYPE.taskStarted || endMs === undefined) return [event];
  // The end of a root agent span closes its task. The start event already carries the
  // attributes and prompts; the end carries the time and the outcome.
  const endDetail: SpanDetail = { source: detail.source, type: EVENT_TYPE.taskEnded, taskId: detail.taskId, agentId: detail.agentId, agentName: detail.agentName };
  return [event, spanEvent(common, endDetail, eventId('otlp-traces', traceId, spanId, startNs, 'end'), endMs, undefined, {})];
}

/** Span fields the classification reads besides attributes. */
interface SpanShape {
  kind: number;
  statusCode: number;
  statusMessage: string | undefined;
  name: string;
  outcome: Outcome;
}

/** Decides a span's source, type and type-specific details from its operation and attributes. */
function classifySpan(entry: SpanEntry, bySpanId: Map<string, SpanEntry>, shape: SpanShape, path: string): SpanDetail {
  const { view, op } = entry;
  const ctx = resolveContext(entry, bySpanId);
  const serviceName = keyString(entry.resource.flat['service.name']);
  const agentName = view.str('gen_ai.agent.name') ?? ctx.agentName;
  const agentId = view.str('gen_ai.agent.id') ?? ctx.agentId ?? agentName;

  if (op !== undefined && AGENT_OPS.has(op)) return agentDetail(entry, parentContext(entry, bySpanId), ctx, serviceName);

  if (op !== undefined && MODEL_OPS.has(op)) {
    return {
      source: 'agent',
      type: EVENT_TYPE.modelCall,
      taskId: ctx.taskId,
      agentId,
      agentName: agentName ?? serviceName,
      model: modelInfo(view),
      messages: attrMessages(view),
    };
  }

  const fam = families(entry.own);
  if ((op !== undefined && TOOL_OPS.has(op)) || view.str('mcp.method.name') === 'tools/call') {
    const failed = shape.outcome === 'failure';
    const tool = toolInfo(view, shape.name, failed, shape.statusCode === STATUS_CODE.error ? shape.statusMessage : undefined);
    if (tool === undefined) throw new RecordError(`${path}.attributes`, 'tool span names no tool: set gen_ai.tool.name or mcp.tool.name');
    // An MCP server's own span (kind SERVER without GenAI attributes) is the workload's view of the call.
    const source: EventSource = shape.kind === SPAN_KIND.server && !fam.genAi ? 'workload' : 'agent';
    return {
      source,
      type: EVENT_TYPE.toolCall,
      taskId: ctx.taskId,
      agentId,
      agentName: agentName ?? (source === 'agent' ? serviceName : undefined),
      action: `tool:${tool.name}`,
      tool,
    };
  }

  return otherSpanDetail(view, fam, shape.kind, { source: fam.genAi ? 'agent' : 'workload', type: EVENT_TYPE.processActivity, taskId: ctx.taskId, agentId, agentName });
}

/** `invoke_agent` / `create_agent`: a task start at the root, a delegation below another agent. */
function agentDetail(entry: SpanEntry, parent: SpanContext, own: SpanContext, serviceName: string | undefined): SpanDetail {
  const { view, op } = entry;
  const ownName = view.str('gen_ai.agent.name');
  const ownId = view.str('gen_ai.agent.id') ?? ownName;
  const ownTask = explicitTaskId(view);
  const model = modelInfo(view);
  const messages = attrMessages(view);

  if (parent.inAgent) {
    // Called from inside another agent's work: the event belongs to the calling agent and task.
    return {
      source: 'agent',
      type: EVENT_TYPE.agentDelegation,
      taskId: parent.taskId ?? ownTask,
      agentId: parent.agentId,
      agentName: parent.agentName,
      action: op === 'create_agent' ? 'agent:create' : 'agent:invoke',
      model,
      messages,
      delegation: {
        to_agent_id: ownId,
        to_agent_name: ownName ?? (ownId === undefined ? serviceName : undefined),
        to_task_id: ownTask !== undefined && ownTask !== parent.taskId ? ownTask : undefined,
      },
    };
  }

  const root = { source: 'agent' as const, taskId: own.taskId, agentId: ownId, agentName: ownName ?? serviceName, model, messages };
  // Creating an agent definition at the top level starts no task; a task.started here would
  // open a task that never ends.
  if (op === 'create_agent') return { ...root, type: EVENT_TYPE.processActivity, action: 'agent:create' };
  return { ...root, type: EVENT_TYPE.taskStarted };
}

/** Spans outside the GenAI conventions: outbound calls, data access, or plain activity. */
function otherSpanDetail(view: AttrView, fam: AttrFamilies, kind: number, d: SpanDetail): SpanDetail {
  const serverAddress = view.first('network.peer.address', 'server.address');
  const port = count(view.get('server.port') ?? view.get('network.peer.port'));
  if (serverAddress !== undefined || port !== undefined) {
    d.network = {
      dst_ip: serverAddress,
      dst_port: port !== undefined && port <= 65535 ? port : undefined,
      protocol: view.str('network.protocol.name') ?? (fam.http ? 'http' : undefined),
      direction: kind === SPAN_KIND.client || kind === SPAN_KIND.producer ? 'outbound' : kind === SPAN_KIND.server ? 'inbound' : undefined,
    };
  }

  if (fam.aws || view.str('rpc.system') === 'aws-api') {
    const service = view.str('rpc.service');
    const method = view.str('rpc.method');
    d.type = EVENT_TYPE.resourceAccess;
    // Lowercased service so the action reads like an IAM / CloudTrail action (`s3:GetObject`).
    if (service !== undefined && method !== undefined) d.action = `${service.toLowerCase()}:${method}`;
    d.resources = awsResources(view);
    return d;
  }
  if (fam.db) {
    const namespace = view.str('db.namespace');
    const collection = view.str('db.collection.name');
    const id = namespace !== undefined && collection !== undefined ? `${namespace}/${collection}` : (namespace ?? collection);
    const operation = view.str('db.operation.name');
    d.type = EVENT_TYPE.resourceAccess;
    if (operation !== undefined) d.action = `db:${operation}`;
    if (id !== undefined) d.resources = [{ type: 'db', id }];
    return d;
  }
  if (kind === SPAN_KIND.client && (fam.http || serverAddress !== undefined)) {
    const url = view.str('url.full');
    const method = view.str('http.request.method');
    d.type = EVENT_TYPE.networkActivity;
    if (method !== undefined) d.action = `http:${method}`;
    if (url !== undefined) d.resources = [{ type: 'url', id: url }];
    return d;
  }
  return d;
}

function awsResources(view: AttrView): ResourceRef[] {
  const out: ResourceRef[] = [];
  const bucket = view.str('aws.s3.bucket');
  if (bucket !== undefined) {
    const key = view.str('aws.s3.key');
    out.push(key !== undefined ? { type: 'AWS::S3::Object', id: `${bucket}/${key}` } : { type: 'AWS::S3::Bucket', id: bucket });
  }
  const tables = view.get('aws.dynamodb.table_names');
  if (Array.isArray(tables)) {
    for (const t of tables) if (typeof t === 'string' && t !== '') out.push({ type: 'AWS::DynamoDB::Table', id: t });
  }
  return out;
}

/**
 * Walks `request[listKey][i][scopeKey][j][recordKey][k]`, calling `onRecord` per record with its
 * global index, and rejecting (as one record each) containers that are not what OTLP says.
 */
function walkRequest(
  request: Record<string, unknown>,
  keys: { resource: string; scope: string; records: string },
  reject: (index: number, field: string, reason: string) => void,
  nextIndex: () => number,
  onRecord: (record: unknown, path: string, index: number, scopeName: string | undefined, resource: ResourceContext) => void,
): void {
  const resources = request[keys.resource];
  if (resources === undefined || resources === null) return;
  if (!Array.isArray(resources)) {
    reject(nextIndex(), keys.resource, `expected an array, got ${typeName(resources)}`);
    return;
  }
  for (let i = 0; i < resources.length; i++) {
    const rPath = `${keys.resource}[${i}]`;
    const r: unknown = resources[i];
    if (!isPlainObject(r)) {
      reject(nextIndex(), rPath, `expected an object, got ${typeName(r)}`);
      continue;
    }
    const resource = readResource(r, rPath);
    const scopes = r[keys.scope];
    if (scopes === undefined || scopes === null) continue;
    if (!Array.isArray(scopes)) {
      reject(nextIndex(), `${rPath}.${keys.scope}`, `expected an array, got ${typeName(scopes)}`);
      continue;
    }
    for (let j = 0; j < scopes.length; j++) {
      const sPath = `${rPath}.${keys.scope}[${j}]`;
      const s: unknown = scopes[j];
      if (!isPlainObject(s)) {
        reject(nextIndex(), sPath, `expected an object, got ${typeName(s)}`);
        continue;
      }
      const records = s[keys.records];
      if (records === undefined || records === null) continue;
      if (!Array.isArray(records)) {
        reject(nextIndex(), `${sPath}.${keys.records}`, `expected an array, got ${typeName(records)}`);
        continue;
      }
      const scope = s['scope'];
      const scopeName = isPlainObject(scope) ? keyString(scope['name']) : undefined;
      for (let k = 0; k < records.length; k++) onRecord(records[k], `${sPath}.${keys.records}[${k}]`, nextIndex(), scopeName, resource);
    }
  }
}

function parseTraces(body: Buffer, contentType: string): AdapterResult {
  const b = new ResultBuilder();
  let index = 0;
  const nextIndex = (): number => index++;
  for (const frame of readRequests(body, contentType, decodeTraceRequestProto, 'ExportTraceServiceRequest')) {
    if ('error' in frame) {
      b.reject(nextIndex(), '', frame.error);
      continue;
    }
    // Pass 1: read every span, so a span's parent can be found whatever the order. Container
    // rejections wait for pass 2 too, so rejections come out in index order.
    const entries: Array<SpanEntry | { index: number; field: string; reason: string }> = [];
    const bySpanId = new Map<string, SpanEntry>();
    const reject = (index: number, field: string, reason: string): void => {
      entries.push({ index, field, reason });
    };
    walkRequest(frame.value, { resource: 'resourceSpans', scope: 'scopeSpans', records: 'spans' }, reject, nextIndex, (span, path, i, scopeName, resource) => {
      const own: Attrs = {};
      const entry: SpanEntry = {
        index: i,
        path,
        span: {},
        scopeName,
        resource,
        traceId: '',
        spanId: '',
        parentSpanId: undefined,
        own,
        view: new AttrView(own, resource.flat),
        op: undefined,
      };
      try {
        if (resource.error !== undefined) throw resource.error;
        if (!isPlainObject(span)) throw new RecordError(path, `expected a span object, got ${typeName(span)}`);
        entry.span = span;
        readSpan(entry);
        // Keyed by trace and span id; a duplicated span id keeps its first span as the parent candidate.
        const key = entry.traceId + entry.spanId;
        if (!bySpanId.has(key)) bySpanId.set(key, entry);
      } catch (err) {
        entry.error = err instanceof RecordError ? err : new RecordError('', err instanceof Error ? err.message : String(err));
      }
      entries.push(entry);
    });
    // Pass 2: map in document order.
    for (const entry of entries) {
      if ('reason' in entry) {
        b.reject(entry.index, entry.field, entry.reason);
        continue;
      }
      b.record(entry.index, () => {
        if (entry.error !== undefined) throw entry.error;
        return mapSpan(entry, bySpanId);
      });
    }
  }
  return b.result();
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/** GenAI events that record a model exchange (message, choice, inference details). */
const GEN_AI_MODEL_EVENTS = new Set([
  'gen_ai.system.message',
  'gen_ai.user.message',
  'gen_ai.assistant.message',
  'gen_ai.tool.message',
  'gen_ai.choice',
  'gen_ai.client.inference.operation.details',
  'gen_ai.content.prompt',
  'gen_ai.content.completion',
]);

/** Which message slot a GenAI message event's body fills, for events that carry text in the body. */
const BODY_MESSAGE_SLOT: Record<string, keyof Messages> = {
  'gen_ai.system.message': 'system',
  'gen_ai.user.message': 'input',
  'gen_ai.tool.message': 'input',
  'gen_ai.content.prompt': 'input',
  'gen_ai.assistant.message': 'output',
  'gen_ai.choice': 'output',
  'gen_ai.content.completion': 'output',
};

function isEventType(v: string): v is EventType {
  return (EVENT_TYPES as readonly string[]).includes(v);
}

function isEventSource(v: string): v is EventSource {
  return (EVENT_SOURCES as readonly string[]).includes(v);
}

function mapLogRecord(record: unknown, path: string, scopeName: string | undefined, resource: ResourceContext): CanonicalEventInput[] {
  if (resource.error !== undefined) throw resource.error;
  if (!isPlainObject(record)) throw new RecordError(path, `expected a log record object, got ${typeName(record)}`);
  const traceId = traceIdOf(record['traceId'], `${path}.traceId`);
  const spanId = spanIdOf(record['spanId'], `${path}.spanId`);
  const timeNs = nanos(record['timeUnixNano'], `${path}.timeUnixNano`);
  const observedNs = nanos(record['observedTimeUnixNano'], `${path}.observedTimeUnixNano`);
  const timeOf = timeNs ?? observedNs;
  if (timeOf === undefined) throw new RecordError(`${path}.timeUnixNano`, 'missing (and no observedTimeUnixNano either)');

  const own: Attrs = {};
  flattenInto(own, record['attributes'], `${path}.attributes`, '');
  const view = new AttrView(own, resource.flat);
  const body = record['body'] === undefined ? undefined : anyValue(record['body'], `${path}.body`);
  const eventName = keyString(record['eventName']) ?? keyString(own['event.name']);

  const attributes: Attrs = { ...resource.prefixed, ...own };
  if (body !== undefined && body !== null) attributes['body'] = body;
  if (eventName !== undefined && attributes['event.name'] === undefined) attributes['event.name'] = eventName;
  if (scopeName !== undefined) attributes['otel.scope.name'] = scopeName;
  const severityText = keyString(record['severityText']);
  if (severityText !== undefined) attributes['otel.severity_text'] = severityText;
  const severityNumber = record['severityNumber'];
  if (typeof severityNumber === 'number' && severityNumber > 0) attributes['otel.severity_number'] = severityNumber;

  const fam = families(own);
  const isGenAiEvent = eventName?.startsWith('gen_ai.') ?? false;

  // A log record may carry a Runtrail canonical event (e.g. from an SDK without tracing).
  const statedType = view.str('runtrail.event.type');
  const statedSource = view.str('runtrail.event.source');
  if (statedType !== undefined && !isEventType(statedType)) {
    throw new RecordError(`${path}.attributes.runtrail.event.type`, `unknown event type ${JSON.stringify(statedType)}; expected one of ${EVENT_TYPES.join(', ')}`);
  }
  if (statedSource !== undefined && !isEventSource(statedSource)) {
    throw new RecordError(`${path}.attributes.runtrail.event.source`, `unknown source ${JSON.stringify(statedSource)}; expected one of ${EVENT_SOURCES.join(', ')}`);
  }
  const toolName = view.first('gen_ai.tool.name', 'mcp.tool.name');
  const type: EventType =
    statedType ??
    (toolName !== undefined ? EVENT_TYPE.toolCall : eventName !== undefined && GEN_AI_MODEL_EVENTS.has(eventName) ? EVENT_TYPE.modelCall : EVENT_TYPE.processActivity);
  const source: EventSource = statedSource ?? (fam.genAi || isGenAiEvent ? 'agent' : 'workload');
  const failed = view.get('error.type') !== undefined;

  let messages = attrMessages(view);
  const slot = eventName === undefined ? undefined : BODY_MESSAGE_SLOT[eventName];
  if (messages === undefined && slot !== undefined && body !== undefined && body !== null) messages = { [slot]: text(body) };
  const tool = type === EVENT_TYPE.toolCall && toolName !== undefined ? toolInfo(view, '', failed, undefined) : undefined;
  const agentName = view.str('gen_ai.agent.name');

  return [
    {
      // Logs have no natural id: the timestamps and content identify a re-sent record. The
      // event name and attributes are hashed along with the body, because GenAI events often
      // carry their content in attributes and an empty body.
      event_id: eventId(
        'otlp-logs',
        traceId,
        spanId,
        timeNs?.toString(),
        observedNs?.toString(),
        contentHash(JSON.stringify([eventName ?? null, body ?? null, own])),
      ),
      source,
      type,
      time: nsToMs(timeOf),
      format: 'otlp-logs',
      task_id: explicitTaskId(view),
      agent_id: view.str('gen_ai.agent.id') ?? agentName,
      agent_name: agentName ?? (source === 'agent' ? keyString(resource.flat['service.name']) : undefined),
      trace_id: traceId,
      span_id: spanId,
      ...correlationKeys(view),
      action: tool !== undefined ? `tool:${tool.name}` : undefined,
      outcome: failed ? 'failure' : 'unknown',
      tool,
      model: type === EVENT_TYPE.modelCall || type === EVENT_TYPE.toolCall ? modelInfo(view) : undefined,
      messages,
      attributes,
    },
  ];
}

function parseLogs(body: Buffer, contentType: string): AdapterResult {
  const b = new ResultBuilder();
  let index = 0;
  const nextIndex = (): number => index++;
  for (const frame of readRequests(body, contentType, decodeLogsRequestProto, 'ExportLogsServiceRequest')) {
    if ('error' in frame) {
      b.reject(nextIndex(), '', frame.error);
      continue;
    }
    walkRequest(frame.value, { resource: 'resourceLogs', scope: 'scopeLogs', records: 'logRecords' }, (i, field, reason) => b.reject(i, field, reason), nextIndex, (record, path, i, scopeName, resource) => {
      b.record(i, () => mapLogRecord(record, path, scopeName, resource));
    });
  }
  return b.result();
}

// ---------------------------------------------------------------------------------------------
// Adapters
// ---------------------------------------------------------------------------------------------

function adapter(format: IngestFormat, parse: (body: Buffer, contentType: string) => AdapterResult): Adapter {
  return { format, contentTypes: OTLP_CONTENT_TYPES, parse };
}

/**
 * OTLP traces (`POST /v1/traces`): one canonical event per span, plus a `task.ended` event for
 * each root `invoke_agent` span that has an end time. Accepts OTLP/JSON (one request per body, or
 * one per line) and protobuf.
 */
export const otlpTracesAdapter: Adapter = adapter('otlp-traces', parseTraces);

/** OTLP logs (`POST /v1/logs`): one canonical event per log record. OTLP/JSON or protobuf. */
export const otlpLogsAdapter: Adapter = adapter('otlp-logs', parseLogs);
