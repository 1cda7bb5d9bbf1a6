/**
 * OTLP/HTTP protobuf bodies (`application/x-protobuf`) for traces and logs, converted to and from
 * the OTLP/JSON object shape.
 *
 * Why: the collector already has one code path for OTLP/JSON. Rather than a second path over
 * protobuf message classes, protobuf bodies are decoded straight into the object that
 * `JSON.parse` would have produced for the equivalent OTLP/JSON body, as the OTLP spec's
 * "JSON Protobuf Encoding" section defines it:
 *
 * - lowerCamelCase field names (`startTimeUnixNano`, `droppedAttributesCount`, `scopeSpans`, ...);
 * - `traceId` / `spanId` / `parentSpanId` (spans, span links, log records) as lowercase hex strings,
 *   not base64 (the one place where OTLP/JSON departs from the standard protobuf JSON mapping);
 * - every other `bytes` field (only `AnyValue.bytesValue` in this subset) as standard base64;
 * - 64-bit integers (`*UnixNano`, `AnyValue.intValue`) as decimal strings, so values above 2^53
 *   keep every digit;
 * - enums (`kind`, `status.code`, `severityNumber`) as integers;
 * - non-finite doubles as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (what protobuf JSON
 *   writes, since JSON has no literal for them);
 * - `AnyValue` as an object with exactly one of `stringValue`, `boolValue`, `intValue`,
 *   `doubleValue`, `arrayValue: {values}`, `kvlistValue: {values: [{key, value}]}`, `bytesValue`
 *   (or `{}` for an empty AnyValue).
 *
 * Presence rules (what is omitted), deliberately "what was on the wire, nothing more":
 *
 * - A scalar field appears iff it was present on the wire. Conformant proto3 encoders never write
 *   default values (0, "", false, empty bytes), so e.g. `kind: 0`, `droppedAttributesCount: 0`,
 *   `flags: 0`, `schemaUrl: ""` or an empty `parentSpanId` are ABSENT in the output. Defaults are
 *   never synthesized. OTLP/JSON allows exactly the same omission, so consumers must already treat
 *   "absent" as "default".
 * - `AnyValue` members are a `oneof`, whose presence protobuf tracks, so a default-valued member
 *   (`stringValue: ""`, `intValue: "0"`, `boolValue: false`, `doubleValue: 0`) IS kept.
 * - A sub-message present on the wire is kept even when empty (`status: {}`, `resource: {}`).
 * - A repeated field with no elements is ABSENT (the wire format cannot distinguish "empty list"
 *   from "no list"): `{}` rather than `{resourceSpans: []}`, `arrayValue: {}` rather than
 *   `arrayValue: {values: []}`.
 * - Unknown fields (e.g. from a newer OTLP version) are skipped, as protobuf requires.
 *
 * The encoders ({@link encodeTraceRequestProto}, {@link encodeLogsRequestProto}) take the same
 * OTLP/JSON shape and write every field that is present in the object, including default values,
 * so `decode(encode(json))` returns `json` except for: empty arrays dropped, numbers given for
 * 64-bit fields returned as strings, enum names (`"SPAN_KIND_SERVER"`) returned as numbers,
 * upper-case hex ids returned lower-case, and unknown keys / `null` values dropped.
 *
 * The schema below is a subset of opentelemetry-proto v1.x (common, resource, trace, logs and the
 * two collector service requests). Field numbers are copied from the official files; they are what
 * matters on the wire, and `test/unit/otlp-proto.test.ts` checks them against hand-built bytes.
 */
import protobuf from 'protobufjs';
import { RuntrailError } from '../../../shared/errors.ts';

// ---------------------------------------------------------------------------------------------
// Schema. One source string per official .proto file, each with its real package, parsed into
// one Root so cross-package references resolve by fully qualified name (no `import` needed).
// ---------------------------------------------------------------------------------------------

/** opentelemetry/proto/common/v1/common.proto */
const COMMON_PROTO = `
syntax = "proto3";
package opentelemetry.proto.common.v1;

message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue {
  string key = 1;
  AnyValue value = 2;
}
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
// Status: [Development] in the official file (v1.7+); kept so newer senders lose nothing.
message EntityRef {
  string schema_url = 1;
  string type = 2;
  repeated string id_keys = 3;
  repeated string description_keys = 4;
}
`;

/** opentelemetry/proto/resource/v1/resource.proto */
const RESOURCE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.resource.v1;

message Resource {
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 1;
  uint32 dropped_attributes_count = 2;
  repeated opentelemetry.proto.common.v1.EntityRef entity_refs = 3;
}
`;

/** opentelemetry/proto/trace/v1/trace.proto */
const TRACE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.trace.v1;

message TracesData { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans {
  reserved 1000;
  opentelemetry.proto.resource.v1.Resource resource = 1;
  repeated ScopeSpans scope_spans = 2;
  string schema_url = 3;
}
message ScopeSpans {
  opentelemetry.proto.common.v1.InstrumentationScope scope = 1;
  repeated Span spans = 2;
  string schema_url = 3;
}
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  fixed32 flags = 16;
  string name = 5;
  enum SpanKind {
    SPAN_KIND_UNSPECIFIED = 0;
    SPAN_KIND_INTERNAL = 1;
    SPAN_KIND_SERVER = 2;
    SPAN_KIND_CLIENT = 3;
    SPAN_KIND_PRODUCER = 4;
    SPAN_KIND_CONSUMER = 5;
  }
  SpanKind kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10;
  message Event {
    fixed64 time_unix_nano = 1;
    string name = 2;
    repeated opentelemetry.proto.common.v1.KeyValue attributes = 3;
    uint32 dropped_attributes_count = 4;
  }
  repeated Event events = 11;
  uint32 dropped_events_count = 12;
  message Link {
    bytes trace_id = 1;
    bytes span_id = 2;
    string trace_state = 3;
    repeated opentelemetry.proto.common.v1.KeyValue attributes = 4;
    uint32 dropped_attributes_count = 5;
    fixed32 flags = 6;
  }
  repeated Link links = 13;
  uint32 dropped_links_count = 14;
  Status status = 15;
}
message Status {
  reserved 1;
  string message = 2;
  enum StatusCode {
    STATUS_CODE_UNSET = 0;
    STATUS_CODE_OK = 1;
    STATUS_CODE_ERROR = 2;
  }
  StatusCode code = 3;
}
`;

/** opentelemetry/proto/logs/v1/logs.proto */
const LOGS_PROTO = `
syntax = "proto3";
package opentelemetry.proto.logs.v1;

message LogsData { repeated ResourceLogs resource_logs = 1; }
message ResourceLogs {
  reserved 1000;
  opentelemetry.proto.resource.v1.Resource resource = 1;
  repeated ScopeLogs scope_logs = 2;
  string schema_url = 3;
}
message ScopeLogs {
  opentelemetry.proto.common.v1.InstrumentationScope scope = 1;
  repeated LogRecord log_records = 2;
  string schema_url = 3;
}
enum SeverityNumber {
  SEVERITY_NUMBER_UNSPECIFIED = 0;
  SEVERITY_NUMBER_TRACE = 1;
  SEVERITY_NUMBER_TRACE2 = 2;
  SEVERITY_NUMBER_TRACE3 = 3;
  SEVERITY_NUMBER_TRACE4 = 4;
  SEVERITY_NUMBER_DEBUG = 5;
  SEVERITY_NUMBER_DEBUG2 = 6;
  SEVERITY_NUMBER_DEBUG3 = 7;
  SEVERITY_NUMBER_DEBUG4 = 8;
  SEVERITY_NUMBER_INFO = 9;
  SEVERITY_NUMBER_INFO2 = 10;
  SEVERITY_NUMBER_INFO3 = 11;
  SEVERITY_NUMBER_INFO4 = 12;
  SEVERITY_NUMBER_WARN = 13;
  SEVERITY_NUMBER_WARN2 = 14;
  SEVERITY_NUMBER_WARN3 = 15;
  SEVERITY_NUMBER_WARN4 = 16;
  SEVERITY_NUMBER_ERROR = 17;
  SEVERITY_NUMBER_ERROR2 = 18;
  SEVERITY_NUMBER_ERROR3 = 19;
  SEVERITY_NUMBER_ERROR4 = 20;
  SEVERITY_NUMBER_FATAL = 21;
  SEVERITY_NUMBER_FATAL2 = 22;
  SEVERITY_NUMBER_FATAL3 = 23;
  SEVERITY_NUMBER_FATAL4 = 24;
}
message LogRecord {
  reserved 4;
  fixed64 time_unix_nano = 1;
  fixed64 observed_time_unix_nano = 11;
  SeverityNumber severity_number = 2;
  string severity_text = 3;
  opentelemetry.proto.common.v1.AnyValue body = 5;
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 6;
  uint32 dropped_attributes_count = 7;
  fixed32 flags = 8;
  bytes trace_id = 9;
  bytes span_id = 10;
  string event_name = 12;
}
`;

/** opentelemetry/proto/collector/trace/v1/trace_service.proto (request message only) */
const TRACE_SERVICE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.collector.trace.v1;

message ExportTraceServiceRequest {
  repeated opentelemetry.proto.trace.v1.ResourceSpans resource_spans = 1;
}
`;

/** opentelemetry/proto/collector/logs/v1/logs_service.proto (request message only) */
const LOGS_SERVICE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.collector.logs.v1;

message ExportLogsServiceRequest {
  repeated opentelemetry.proto.logs.v1.ResourceLogs resource_logs = 1;
}
`;

// Without the `long` package protobufjs silently reads 64-bit fields as JS numbers, which would
// round nanosecond timestamps and large intValues. It is a hard dependency of protobufjs 7, so
// this only fires on a broken install, and failing loudly then beats corrupting every timestamp.
if (!protobuf.util.Long) {
  throw new Error('protobufjs is running without Long support; 64-bit OTLP fields would lose precision');
}

const root = new protobuf.Root();
for (const source of [COMMON_PROTO, RESOURCE_PROTO, TRACE_PROTO, LOGS_PROTO, TRACE_SERVICE_PROTO, LOGS_SERVICE_PROTO]) {
  // keepCase: false turns snake_case field names into the lowerCamelCase names OTLP/JSON uses.
  protobuf.parse(source, root, { keepCase: false });
}
root.resolveAll();

const traceRequestType = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');
const logsRequestType = root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest');
const anyValueType = root.lookupType('opentelemetry.proto.common.v1.AnyValue');

/**
 * protobufjs's `toObject` options that yield the OTLP/JSON shape. `bytes: String` gives base64,
 * which is right for `bytesValue`; ids are re-encoded to hex afterwards. `json: true` only affects
 * non-finite doubles (written as "NaN"/"Infinity" strings, as protobuf JSON does).
 */
const TO_OBJECT_OPTIONS: protobuf.IConversionOptions = {
  longs: String,
  enums: Number,
  bytes: String,
  defaults: false,
  arrays: false,
  objects: false,
  oneofs: false,
  json: true,
};

// ---------------------------------------------------------------------------------------------
// oneof: last member on the wire wins.
//
// protobufjs's generated decoder assigns every oneof member it meets, so a body carrying both
// `string_value` and `int_value` for one AnyValue would come out with both keys. Protobuf says
// the last one on the wire wins. Conformant encoders never do this, so the common path only
// counts own keys; the rare conflicting AnyValue is re-scanned to find which member came last.
// Parent decoders call `types[i].decode(...)` on the Type object, so replacing the method after
// setup() (which installs the generated one) is picked up everywhere AnyValue is nested.
// ---------------------------------------------------------------------------------------------

/** The generated decoder's real signature (the .d.ts only declares the first two parameters). */
type GeneratedDecode = (
  this: protobuf.Type,
  reader: protobuf.Reader | Uint8Array,
  length?: number,
  endGroupTag?: number,
  depth?: number,
) => protobuf.Message;

const anyValueMemberByFieldId = new Map<number, string>(anyValueType.fieldsArray.map((field) => [field.id, field.name]));

anyValueType.setup();
const generatedAnyValueDecode = anyValueType.decode as GeneratedDecode;
const lastMemberWinsDecode: GeneratedDecode = function (reader, length, endGroupTag, depth) {
  const r = reader instanceof protobuf.Reader ? reader : protobuf.Reader.create(reader);
  const start = r.pos;
  const message = generatedAnyValueDecode.call(this, r, length, endGroupTag, depth);
  const present = Object.keys(message);
  if (present.length > 1) {
    const last = lastOneofMember(r.buf.subarray(start, r.pos));
    for (const key of present) {
      if (key !== last) Reflect.deleteProperty(message, key);
    }
  }
  return message;
};
anyValueType.decode = lastMemberWinsDecode;

/** Name of the AnyValue oneof member whose tag appears last in `bytes` (one AnyValue's body). */
function lastOneofMember(bytes: Uint8Array): string | undefined {
  const r = protobuf.Reader.create(bytes);
  let last: string | undefined;
  while (r.pos < r.len) {
    const tag = r.uint32();
    last = anyValueMemberByFieldId.get(tag >>> 3) ?? last;
    r.skipType(tag & 7);
  }
  return last;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/**
 * A protobuf body (or, for the encoders, an input object) could not be converted. Permanent:
 * resending the same bytes cannot succeed, so an HTTP receiver should answer 400.
 */
export class OtlpProtoError extends RuntrailError {
  declare readonly code: 'otlp_protobuf_invalid';
  declare readonly retriable: false;
  /** Byte offset in the body where decoding stopped, when the failure was a decode failure. */
  readonly offset: number | undefined;

  constructor(message: string, options: { offset?: number; cause?: unknown } = {}) {
    super('otlp_protobuf_invalid', message, { retriable: false, cause: options.cause });
    this.offset = options.offset;
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------
// Tree helpers over the plain-object shape
// ---------------------------------------------------------------------------------------------

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

/** Calls `visit` on every object reached by following the arrays named in `path`; in place. */
function forEachAt(container: unknown, path: readonly string[], depth: number, visit: (record: JsonObject) => void): void {
  if (!isObject(container)) return;
  if (depth === path.length) {
    visit(container);
    return;
  }
  const list = container[path[depth] ?? ''];
  if (!Array.isArray(list)) return;
  for (const item of list) forEachAt(item, path, depth + 1, visit);
}

/**
 * Copy-on-write counterpart of {@link forEachAt}: returns `container` with every object at `path`
 * replaced by `map(object, where)`, copying only along the way, so the caller's input is untouched.
 * Values of the wrong type are passed through for protobufjs to reject with its own message.
 */
function mapAt(container: unknown, path: readonly string[], depth: number, where: string, map: (record: JsonObject, where: string) => JsonObject): unknown {
  if (!isObject(container)) return container;
  if (depth === path.length) return map(container, where);
  const key = path[depth] ?? '';
  const list = container[key];
  if (!Array.isArray(list)) return container;
  return { ...container, [key]: list.map((item: unknown, i) => mapAt(item, path, depth + 1, `${where}${key}[${i}].`, map)) };
}

// ---------------------------------------------------------------------------------------------
// Id re-encoding: base64 (protobufjs) <-> hex (OTLP/JSON)
// ---------------------------------------------------------------------------------------------

const SPAN_PATH = ['resourceSpans', 'scopeSpans', 'spans'] as const;
const LOG_PATH = ['resourceLogs', 'scopeLogs', 'logRecords'] as const;
const SPAN_ID_FIELDS = ['traceId', 'spanId', 'parentSpanId'] as const;
const LINK_ID_FIELDS = ['traceId', 'spanId'] as const;
const LOG_ID_FIELDS = ['traceId', 'spanId'] as const;

function base64FieldsToHex(record: JsonObject, fields: readonly string[]): void {
  for (const field of fields) {
    const value = record[field];
    if (typeof value === 'string') record[field] = Buffer.from(value, 'base64').toString('hex');
  }
}

function spanIdsToHex(span: JsonObject): void {
  base64FieldsToHex(span, SPAN_ID_FIELDS);
  const links = span['links'];
  if (Array.isArray(links)) {
    for (const link of links) if (isObject(link)) base64FieldsToHex(link, LINK_ID_FIELDS);
  }
}

const HEX = /^(?:[0-9a-fA-F]{2})*$/;

/** Hex id fields to bytes. Buffer.from(…, 'hex') silently stops at the first bad digit, hence the check. */
function hexFieldsToBytes(record: JsonObject, fields: readonly string[], where: string): JsonObject {
  let out: JsonObject | undefined;
  for (const field of fields) {
    const value = record[field];
    if (typeof value !== 'string') continue;
    if (!HEX.test(value)) {
      throw new OtlpProtoError(`protobuf encode failed: ${where}${field} is not an even-length hex string: ${JSON.stringify(value.slice(0, 40))}`);
    }
    out ??= { ...record };
    out[field] = Buffer.from(value, 'hex');
  }
  return out ?? record;
}

function spanIdsToBytes(span: JsonObject, where: string): JsonObject {
  const out = hexFieldsToBytes(span, SPAN_ID_FIELDS, where);
  const links = out['links'];
  if (!Array.isArray(links)) return out;
  return {
    ...out,
    links: links.map((link: unknown, i) => (isObject(link) ? hexFieldsToBytes(link, LINK_ID_FIELDS, `${where}links[${i}].`) : link)),
  };
}

// ---------------------------------------------------------------------------------------------
// Decode / encode
// ---------------------------------------------------------------------------------------------

function decodeRequest(type: protobuf.Type, buf: Uint8Array, fixIds: (request: JsonObject) => void): unknown {
  if (!(buf instanceof Uint8Array)) {
    throw new OtlpProtoError(`protobuf decode failed: ${type.name} body must be a Uint8Array, got ${typeof buf}`);
  }
  const reader = protobuf.Reader.create(buf);
  let message: protobuf.Message;
  try {
    message = type.decode(reader);
  } catch (err) {
    // protobufjs throws RangeError("index out of range ...") on truncation and Error("invalid wire
    // type ...") / ("invalid varint encoding") / ("maximum nesting depth exceeded") on garbage.
    throw new OtlpProtoError(`protobuf decode failed at offset ${reader.pos}: ${describe(err)} (${type.name})`, {
      offset: reader.pos,
      cause: err,
    });
  }
  let request: JsonObject;
  try {
    request = type.toObject(message, TO_OBJECT_OPTIONS);
  } catch (err) {
    throw new OtlpProtoError(`protobuf decode failed: ${type.name} could not be converted: ${describe(err)}`, { cause: err });
  }
  fixIds(request);
  return request;
}

function encodeRequest(type: protobuf.Type, obj: unknown, prepare: (request: JsonObject) => unknown): Uint8Array {
  if (!isObject(obj)) {
    throw new OtlpProtoError(`protobuf encode failed: ${type.name} must be an object, got ${obj === null ? 'null' : Array.isArray(obj) ? 'array' : typeof obj}`);
  }
  const prepared = prepare(obj);
  if (!isObject(prepared)) throw new OtlpProtoError(`protobuf encode failed: ${type.name} must be an object`);
  try {
    return type.encode(type.fromObject(prepared)).finish();
  } catch (err) {
    throw new OtlpProtoError(`protobuf encode failed: ${describe(err)}`, { cause: err });
  }
}

/**
 * Decodes an OTLP `ExportTraceServiceRequest` protobuf body into the OTLP/JSON object shape
 * (`{resourceSpans: [{resource, scopeSpans: [{scope, spans: [...]}]}]}`), ids as lowercase hex.
 * See the module comment for which fields are omitted. An empty body yields `{}`.
 *
 * @param buf - The (already decompressed) request body.
 * @returns A fresh plain object; callers may mutate it.
 * @throws {@link OtlpProtoError} when the bytes are not a valid ExportTraceServiceRequest
 *   (truncated, invalid wire type or varint, nesting deeper than 100).
 */
export function decodeTraceRequestProto(buf: Uint8Array): unknown {
  return decodeRequest(traceRequestType, buf, (request) => forEachAt(request, SPAN_PATH, 0, spanIdsToHex));
}

/**
 * Decodes an OTLP `ExportLogsServiceRequest` protobuf body into the OTLP/JSON object shape
 * (`{resourceLogs: [{resource, scopeLogs: [{scope, logRecords: [...]}]}]}`), ids as lowercase hex.
 * See the module comment for which fields are omitted. An empty body yields `{}`.
 *
 * @param buf - The (already decompressed) request body.
 * @returns A fresh plain object; callers may mutate it.
 * @throws {@link OtlpProtoError} when the bytes are not a valid ExportLogsServiceRequest.
 */
export function decodeLogsRequestProto(buf: Uint8Array): unknown {
  return decodeRequest(logsRequestType, buf, (request) =>
    forEachAt(request, LOG_PATH, 0, (record) => base64FieldsToHex(record, LOG_ID_FIELDS)),
  );
}

/**
 * Encodes an OTLP/JSON-shaped trace request (hex ids) as an `ExportTraceServiceRequest` protobuf
 * body. Accepts what OTLP/JSON allows: 64-bit values as strings or numbers, enums as numbers or
 * names. Every field present in `obj` is written, default values included. Does not modify `obj`.
 *
 * @throws {@link OtlpProtoError} when an id is not hex or a field has the wrong type.
 */
export function encodeTraceRequestProto(obj: unknown): Uint8Array {
  return encodeRequest(traceRequestType, obj, (request) => mapAt(request, SPAN_PATH, 0, '', spanIdsToBytes));
}

/**
 * Encodes an OTLP/JSON-shaped logs request (hex ids) as an `ExportLogsServiceRequest` protobuf
 * body. Same conventions as {@link encodeTraceRequestProto}. Does not modify `obj`.
 *
 * @throws {@link OtlpProtoError} when an id is not hex or a field has the wrong type.
 */
export function encodeLogsRequestProto(obj: unknown): Uint8Array {
  return encodeRequest(logsRequestType, obj, (request) =>
    mapAt(request, LOG_PATH, 0, '', (record, where) => hexFieldsToBytes(record, LOG_ID_FIELDS, where)),
  );
}
