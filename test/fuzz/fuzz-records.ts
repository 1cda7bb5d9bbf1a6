import { createHash } from 'node:crypto';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { encodeLogsRequestProto, encodeTraceRequestProto } from '../../services/collector/otlp/otlp-proto.ts';

/**
 * Record generators for the ingest fuzz suites: for every ingest format, a valid record that
 * converts to exactly one canonical event with an id of its own, and ways of breaking a record
 * (wrong type, missing required field, invalid time, wrong enum value) together with the field
 * the rejection must name. Shapes follow the adapters' unit tests (test/unit/*-adapter.test.ts).
 *
 * Ids are not drawn by fast-check: the caller passes a fresh `uid` when it builds a body, so a
 * shrunk or repeated run never re-sends an id the store already holds, and the suite can demand
 * that the store holds exactly as many events as the server acknowledged.
 */

/** 32 lowercase hex characters derived from a uid (OTLP trace ids, Runtrail event ids). */
export function hex32(uid: string): string {
  return createHash('sha256').update(uid).digest('hex').slice(0, 32);
}

/** 16 lowercase hex characters derived from a uid (OTLP span ids). */
export function hex16(uid: string): string {
  return createHash('sha256').update(`span:${uid}`).digest('hex').slice(0, 16);
}

/** Free-form content that rides along in a valid record without changing its verdict. */
export interface Filler {
  text: string;
  extra: unknown;
  /** Event time, epoch ms, anywhere in the storable range; whole ms (ISO 8601 carries no more in every format). */
  timeMs?: number;
}

/** Strings that have broken text formats before: separators, escapes, NUL, lone surrogates, SQL and TSV specials. */
const NASTY_STRINGS = ['\u0000', '\t', '\n', '\r\n', '\\', '\\N', '"', "'", '\ud800', '\udfff', '\ufeff', '\u2028', "'); DROP TABLE events; --", '{{', '[]', 'null', '\u001b[31m'];

/** Times at every digit count of epoch microseconds (ClickHouse text parsing depends on it), and the ends of the range. */
const EDGE_TIMES_MS = [1, 999, 1000, 99_999, 100_000, 1e8 - 1, 1e8, 1e9, 1e10, 1e11, 1e12 - 1, 1e12, 1e13 - 1, 1e13, Date.UTC(2299, 11, 31, 23, 59, 59, 999)];

/** Arbitrary filler: unicode and hostile text, a shallow JSON value, and an event time. */
export const fillerArb: fc.Arbitrary<Filler> = fc.record({
  text: fc.oneof(fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 20 }), fc.constantFrom(...NASTY_STRINGS)),
  extra: fc.jsonValue({ maxDepth: 3 }),
  timeMs: fc.oneof(fc.constant(undefined), fc.constantFrom(...EDGE_TIMES_MS), fc.integer({ min: 1, max: Date.UTC(2299, 11, 31, 23, 59, 59, 999) })),
});

/** One way of breaking a record. */
export interface Breakage {
  name: string;
  /** Field the rejection must name (`''` = the record as a whole). For OTLP: the path's last segment. */
  field: string;
  /** Whether the broken record can still be written as OTLP protobuf. */
  proto?: boolean;
  apply(rec: Record<string, unknown>): unknown;
}

/** How records of a format are put into one body. */
export type Framing = 'array' | 'ndjson' | 'wrapper' | 'otlp-json' | 'otlp-proto';

/** An ingest format as the fuzz suites see it. */
export interface FuzzFormat {
  name: string;
  path: string;
  contentTypes: readonly string[];
  framings: readonly Framing[];
  good(uid: string, f: Filler): Record<string, unknown>;
  breakages: readonly Breakage[];
  /** True when rejection fields are full paths (`resourceSpans[0]...spans[3].traceId`). */
  pathFields?: boolean;
}

const BASE_MS = Date.parse('2026-05-01T12:00:00Z');
/** The filler's time, else the base time plus `s` seconds, as epoch ms. */
const msOf = (f: Filler, s: number): number => f.timeMs ?? BASE_MS + s * 1000;
const ISO = (f: Filler, s: number): string => new Date(msOf(f, s)).toISOString();
const NANOS = (f: Filler, s: number): string => String(BigInt(msOf(f, s)) * 1_000_000n);

function without(rec: Record<string, unknown>, key: string): Record<string, unknown> {
  const { [key]: _dropped, ...rest } = rec;
  return rest;
}

function setIn(rec: Record<string, unknown>, path: readonly string[], value: unknown): Record<string, unknown> {
  const [head, ...rest] = path;
  if (head === undefined) return rec;
  if (rest.length === 0) return { ...rec, [head]: value };
  const inner = rec[head];
  return { ...rec, [head]: setIn(typeof inner === 'object' && inner !== null ? (inner as Record<string, unknown>) : {}, rest, value) };
}

export const CLOUDTRAIL: FuzzFormat = {
  name: 'cloudtrail',
  path: '/v1/ingest/cloudtrail',
  contentTypes: ['application/json', 'application/x-ndjson', 'text/plain'],
  framings: ['array', 'ndjson', 'wrapper'],
  good: (uid, f) => ({
    eventVersion: '1.08',
    eventID: `ct-${uid}`,
    eventTime: ISO(f, 1),
    eventSource: 's3.amazonaws.com',
    eventName: 'GetObject',
    awsRegion: 'eu-west-1',
    sourceIPAddress: '10.0.0.5',
    userAgent: f.text,
    userIdentity: { type: 'AssumedRole', arn: 'arn:aws:sts::111122223333:assumed-role/agent/pod', accessKeyId: 'ASIAFUZZ0000000001' },
    requestParameters: { bucketName: 'invoices', key: f.text },
    additionalEventData: f.extra,
    recipientAccountId: '111122223333',
  }),
  breakages: [
    { name: 'eventID of the wrong type', field: 'eventID', apply: (r) => ({ ...r, eventID: 12345 }) },
    { name: 'eventSource missing', field: 'eventSource', apply: (r) => without(r, 'eventSource') },
    { name: 'eventTime invalid', field: 'eventTime', apply: (r) => ({ ...r, eventTime: '2026-13-45T99:00:00Z' }) },
    { name: 'eventTime without a zone', field: 'eventTime', apply: (r) => ({ ...r, eventTime: '2026-05-01 12:00:00' }) },
    { name: 'eventTime past 2299', field: 'eventTime', apply: (r) => ({ ...r, eventTime: '9999-12-31T23:59:59Z' }) },
    { name: 'eventName an array', field: 'eventName', apply: (r) => ({ ...r, eventName: ['GetObject'] }) },
    { name: 'userIdentity a string', field: 'userIdentity', apply: (r) => ({ ...r, userIdentity: 'root' }) },
    { name: 'record not an object', field: '', apply: () => 42 },
  ],
};

export const VAULT: FuzzFormat = {
  name: 'vault',
  path: '/v1/ingest/vault',
  contentTypes: ['application/json', 'application/x-ndjson', 'text/plain'],
  framings: ['array', 'ndjson'],
  good: (uid, f) => ({
    time: ISO(f, 2),
    type: 'response',
    auth: { accessor: 'hmac-sha256:abcd', display_name: 'approle', metadata: { note: f.text } },
    request: { id: `vault-${uid}`, operation: 'read', path: 'secret/data/fuzz', remote_address: '10.0.0.9', data: { x: f.extra } },
    response: { data: { value: 'hmac-sha256:ffff' } },
  }),
  breakages: [
    { name: 'type not request/response', field: 'type', apply: (r) => ({ ...r, type: 'bogus' }) },
    { name: 'request.id missing', field: 'request.id', apply: (r) => setIn(r, ['request', 'id'], undefined) },
    { name: 'time invalid', field: 'time', apply: (r) => ({ ...r, time: 'not a time' }) },
    { name: 'time before 1970', field: 'time', apply: (r) => ({ ...r, time: '1969-12-31T23:59:59Z' }) },
    { name: 'request.operation a number', field: 'request.operation', apply: (r) => setIn(r, ['request', 'operation'], 5) },
    { name: 'request not an object', field: 'request', apply: (r) => ({ ...r, request: [1, 2] }) },
  ],
};

export const K8S_AUDIT: FuzzFormat = {
  name: 'k8s-audit',
  path: '/v1/ingest/k8s-audit',
  contentTypes: ['application/json', 'application/x-ndjson'],
  framings: ['array', 'ndjson', 'wrapper'],
  good: (uid, f) => ({
    kind: 'Event',
    apiVersion: 'audit.k8s.io/v1',
    level: 'Metadata',
    auditID: `k8s-${uid}`,
    stage: 'ResponseComplete',
    requestURI: '/api/v1/namespaces/agents/secrets/x',
    verb: 'get',
    user: { username: 'system:serviceaccount:agents:fuzz', groups: ['system:authenticated'] },
    sourceIPs: ['10.0.12.77'],
    userAgent: f.text,
    objectRef: { resource: 'secrets', namespace: 'agents', name: 'x', apiVersion: 'v1' },
    responseStatus: { metadata: {}, code: 200 },
    requestReceivedTimestamp: ISO(f, 3),
    stageTimestamp: ISO(f, 3),
  }),
  breakages: [
    { name: 'unknown stage', field: 'stage', apply: (r) => ({ ...r, stage: 'Weird' }) },
    { name: 'auditID missing', field: 'auditID', apply: (r) => without(r, 'auditID') },
    { name: 'kind not Event', field: 'kind', apply: (r) => ({ ...r, kind: 'Pod' }) },
    { name: 'verb a number', field: 'verb', apply: (r) => ({ ...r, verb: 7 }) },
    { name: 'no timestamps', field: 'requestReceivedTimestamp', apply: (r) => without(without(r, 'requestReceivedTimestamp'), 'stageTimestamp') },
    { name: 'requestReceivedTimestamp invalid', field: 'requestReceivedTimestamp', apply: (r) => ({ ...r, requestReceivedTimestamp: 'soon' }) },
    { name: 'requestReceivedTimestamp past 2299', field: 'requestReceivedTimestamp', apply: (r) => ({ ...r, requestReceivedTimestamp: '2300-01-01T00:00:00Z' }) },
  ],
};

export const FALCO: FuzzFormat = {
  name: 'falco',
  path: '/v1/ingest/falco',
  contentTypes: ['application/json', 'application/x-ndjson'],
  framings: ['array', 'ndjson'],
  good: (uid, f) => ({
    uuid: `falco-${uid}`,
    hostname: 'ip-10-0-12-34',
    output: f.text,
    output_fields: { 'container.id': '3ad7b26ded6d', 'proc.name': 'bash', 'proc.pid': 48211, 'proc.cmdline': f.text },
    priority: 'Notice',
    rule: 'Terminal shell in container',
    source: 'syscall',
    tags: ['container', 'shell'],
    time: ISO(f, 4),
  }),
  breakages: [
    { name: 'rule missing', field: 'rule', apply: (r) => without(r, 'rule') },
    { name: 'time invalid', field: 'time', apply: (r) => ({ ...r, time: 'x' }) },
    { name: 'time as epoch ms past 2299', field: 'time', apply: (r) => ({ ...r, time: 1e20 }) },
    { name: 'proc.pid not an integer', field: 'output_fields.proc.pid', apply: (r) => ({ ...r, output_fields: { 'proc.pid': 'abc' } }) },
    { name: 'rule an object', field: 'rule', apply: (r) => ({ ...r, rule: { name: 'x' } }) },
  ],
};

export const SPIRE: FuzzFormat = {
  name: 'spire',
  path: '/v1/ingest/spire',
  contentTypes: ['application/json', 'application/x-ndjson', 'text/plain'],
  framings: ['array', 'ndjson'],
  good: (uid, f) => ({
    time: ISO(f, 1),
    level: 'debug',
    msg: 'Signed X509 SVID',
    method: 'BatchNewX509SVID',
    request_id: `spire-${uid}`,
    serial_num: hex32(uid),
    spiffe_id: `spiffe://example.org/ns/agents/sa/${hex16(uid)}`,
    caller_id: 'spiffe://example.org/spire/agent/k8s_psat/prod/node-7',
    caller_addr: '10.0.4.17:61745',
    expiration: ISO(f, 1),
    entry_id: f.text,
    extra: f.extra,
  }),
  breakages: [
    { name: 'time invalid', field: 'time', apply: (r) => ({ ...r, time: 'x' }) },
    { name: 'time without its zone', field: 'time', apply: (r) => ({ ...r, time: '2026-05-01 12:00:00' }) },
    { name: 'spiffe_id missing', field: 'spiffe_id', apply: (r) => without(r, 'spiffe_id') },
    { name: 'msg an object', field: 'msg', apply: (r) => ({ ...r, msg: { text: 'Signed X509 SVID' } }) },
    { name: 'expiration invalid', field: 'expiration', apply: (r) => ({ ...r, expiration: 'tomorrow' }) },
  ],
};

export const RUNTRAIL: FuzzFormat = {
  name: 'runtrail',
  path: '/v1/events',
  contentTypes: ['application/json', 'application/x-ndjson'],
  framings: ['array', 'ndjson'],
  good: (uid, f) => ({
    id: `rt-${uid}`,
    source: 'workload',
    type: 'process.activity',
    time: ISO(f, 5),
    workload_id: 'spiffe://example.org/ns/agents/sa/fuzz',
    action: f.text === '' ? undefined : f.text,
    attributes: { note: f.text, extra: f.extra },
  }),
  breakages: [
    { name: 'source not an enum value', field: 'source', apply: (r) => ({ ...r, source: 'bogus' }) },
    { name: 'type not an enum value', field: 'type', apply: (r) => ({ ...r, type: 'process.exploded' }) },
    { name: 'outcome not an enum value', field: 'outcome', apply: (r) => ({ ...r, outcome: 'meh' }) },
    { name: 'time missing', field: 'time', apply: (r) => without(r, 'time') },
    { name: 'time invalid', field: 'time', apply: (r) => ({ ...r, time: 'yesterday-ish' }) },
    { name: 'time a boolean', field: 'time', apply: (r) => ({ ...r, time: true }) },
    { name: 'time past 2299', field: 'time', apply: (r) => ({ ...r, time: '9999-12-31T23:59:59Z' }) },
    { name: 'end_time past 2299', field: 'end_time', apply: (r) => ({ ...r, end_time: 1e16 }) },
    { name: 'resources not an array', field: 'resources', apply: (r) => ({ ...r, resources: 'bucket' }) },
  ],
};

export const OTLP_TRACES: FuzzFormat = {
  name: 'otlp-traces',
  path: '/v1/traces',
  contentTypes: ['application/json'],
  framings: ['otlp-json', 'otlp-proto'],
  pathFields: true,
  good: (uid, f) => ({
    traceId: hex32(uid),
    spanId: hex16(uid),
    name: 'execute_tool fuzz',
    kind: 1,
    startTimeUnixNano: NANOS(f, 6),
    endTimeUnixNano: NANOS(f, 7),
    attributes: [
      { key: 'gen_ai.operation.name', value: { stringValue: 'execute_tool' } },
      { key: 'gen_ai.tool.name', value: { stringValue: 'fuzz_tool' } },
      { key: 'gen_ai.tool.call.arguments', value: { stringValue: f.text } },
    ],
    status: {},
  }),
  breakages: [
    { name: 'traceId missing', field: 'traceId', proto: true, apply: (r) => without(r, 'traceId') },
    { name: 'traceId a number', field: 'traceId', apply: (r) => ({ ...r, traceId: 5 }) },
    { name: 'start time invalid', field: 'startTimeUnixNano', apply: (r) => ({ ...r, startTimeUnixNano: 'abc' }) },
  ],
};

export const OTLP_LOGS: FuzzFormat = {
  name: 'otlp-logs',
  path: '/v1/logs',
  contentTypes: ['application/json'],
  framings: ['otlp-json', 'otlp-proto'],
  pathFields: true,
  good: (uid, f) => ({
    timeUnixNano: NANOS(f, 8),
    severityText: 'INFO',
    body: { stringValue: `fuzz ${uid} ${f.text}` },
    attributes: [{ key: 'fuzz.uid', value: { stringValue: uid } }],
    traceId: hex32(uid),
    spanId: hex16(uid),
  }),
  breakages: [
    { name: 'time invalid', field: 'timeUnixNano', apply: (r) => ({ ...r, timeUnixNano: 'x' }) },
    { name: 'no time at all', field: 'timeUnixNano', proto: true, apply: (r) => without(r, 'timeUnixNano') },
  ],
};

/** Every ingest format. */
export const FORMATS: readonly FuzzFormat[] = [OTLP_TRACES, OTLP_LOGS, CLOUDTRAIL, VAULT, K8S_AUDIT, FALCO, SPIRE, RUNTRAIL];

/** A record slot in a generated batch: good, broken in a given way, or (NDJSON) a truncated line. */
export type Slot = { kind: 'good' } | { kind: 'bad'; breakage: number } | { kind: 'truncated'; cut: number };

/** Content-Encoding applied to a body. */
export type Encoding = 'identity' | 'gzip' | 'deflate' | 'br';

export const ENCODINGS: readonly Encoding[] = ['identity', 'gzip', 'deflate', 'br'];

/** Compresses per encoding. */
export function encode(body: Uint8Array, enc: Encoding): Uint8Array {
  switch (enc) {
    case 'identity':
      return body;
    case 'gzip':
      return gzipSync(body);
    case 'deflate':
      return deflateSync(body);
    case 'br':
      return brotliCompressSync(body);
  }
}

/** A built body and what the server must make of it. */
export interface BuiltBatch {
  body: Uint8Array;
  contentType: string;
  good: number;
  /** Expected rejections by index: the field (or path suffix) to name, and whether the reason must say "not valid JSON". */
  bad: Map<number, { field: string; truncated: boolean }>;
}

/** Builds a body from slots. `nextUid` hands out ids never used before in this server's life. */
export function buildBatch(fmt: FuzzFormat, slots: readonly Slot[], framing: Framing, fillers: readonly Filler[], contentType: string, nextUid: () => string): BuiltBatch {
  const values: unknown[] = [];
  const lines: string[] = [];
  const bad = new Map<number, { field: string; truncated: boolean }>();
  let good = 0;
  slots.forEach((slot, i) => {
    const rec = fmt.good(nextUid(), fillers[i % fillers.length] ?? { text: '', extra: null });
    if (slot.kind === 'good') {
      good++;
      values.push(rec);
      lines.push(JSON.stringify(rec));
    } else if (slot.kind === 'bad') {
      const b = fmt.breakages[slot.breakage % fmt.breakages.length] as Breakage;
      const v = b.apply(rec);
      bad.set(i, { field: b.field, truncated: false });
      values.push(v);
      lines.push(JSON.stringify(v));
    } else {
      const full = JSON.stringify(rec);
      // Cut strictly inside the line: a proper prefix of a JSON object never parses.
      const at = 1 + (slot.cut % (full.length - 1));
      bad.set(i, { field: '', truncated: true });
      values.push(undefined);
      lines.push(full.slice(0, at));
    }
  });
  let text: string;
  switch (framing) {
    case 'array':
      text = JSON.stringify(values);
      break;
    case 'ndjson':
      text = `${lines.join('\n')}\n`;
      break;
    case 'wrapper':
      text = JSON.stringify(fmt === CLOUDTRAIL ? { Records: values } : { kind: 'EventList', apiVersion: 'audit.k8s.io/v1', items: values });
      break;
    case 'otlp-json':
    case 'otlp-proto': {
      const req = otlpRequest(fmt, values);
      if (framing === 'otlp-proto') {
        const body = fmt === OTLP_LOGS ? encodeLogsRequestProto(req) : encodeTraceRequestProto(req);
        return { body, contentType: 'application/x-protobuf', good, bad };
      }
      text = JSON.stringify(req);
      break;
    }
  }
  return { body: Buffer.from(text), contentType, good, bad };
}

/** One OTLP request holding `records` as the spans (or log records) of a single scope, in order. */
export function otlpRequest(fmt: FuzzFormat, records: readonly unknown[]): Record<string, unknown> {
  const resource = { attributes: [{ key: 'service.name', value: { stringValue: 'fuzz-agent' } }] };
  if (fmt === OTLP_LOGS) return { resourceLogs: [{ resource, scopeLogs: [{ scope: { name: 'fuzz' }, logRecords: records }] }] };
  return { resourceSpans: [{ resource, scopeSpans: [{ scope: { name: 'fuzz' }, spans: records }] }] };
}

/** Arbitrary slots for a format and framing (truncated lines only where lines exist). */
export function slotsArb(fmt: FuzzFormat, framing: Framing, maxLength: number): fc.Arbitrary<Slot[]> {
  const breakIdx = fmt.breakages.map((b, i) => ({ b, i })).filter(({ b }) => framing !== 'otlp-proto' || b.proto === true).map(({ i }) => i);
  const options: Array<fc.Arbitrary<Slot>> = [fc.constant<Slot>({ kind: 'good' })];
  if (breakIdx.length > 0) options.push(fc.constantFrom(...breakIdx).map((breakage): Slot => ({ kind: 'bad', breakage })));
  if (framing === 'ndjson') options.push(fc.nat(10_000).map((cut): Slot => ({ kind: 'truncated', cut })));
  return fc.array(fc.oneof(...options), { minLength: 1, maxLength, size: 'medium' });
}
