import { describe, it, expect } from 'vitest';
import { createReadStream, existsSync } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { createInterface } from 'node:readline';
import {
  OtlpProtoError,
  decodeLogsRequestProto,
  decodeTraceRequestProto,
  encodeLogsRequestProto,
  encodeTraceRequestProto,
} from '../../services/collector/otlp/otlp-proto.ts';

// ---------------------------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------------------------

const DATASET_URL = new URL('../../../shared/datasets/agentdojo/banking-slack.otlp.ndjson.gz', import.meta.url);

/** First `limit` OTLP/JSON requests of the agentdojo dataset, or undefined when it is not present. */
async function loadDatasetRequests(limit: number): Promise<unknown[] | undefined> {
  if (!existsSync(DATASET_URL)) return undefined;
  const file = createReadStream(DATASET_URL);
  const gunzip = file.pipe(createGunzip());
  const lines = createInterface({ input: gunzip, crlfDelay: Infinity });
  const requests: unknown[] = [];
  try {
    for await (const line of lines) {
      if (line.trim() === '') continue;
      requests.push(JSON.parse(line));
      if (requests.length >= limit) break;
    }
  } finally {
    lines.close();
    gunzip.destroy();
    file.destroy();
  }
  return requests;
}

const TRACE_ID = '789959a33d0f63812ead8d8709ad9340';
const ROOT_SPAN = 'ccc4c18bb2a0800b';

/**
 * Written for this test in the dataset's shape, plus the span features the dataset lacks (events,
 * links, flags, trace state, dropped counts, status codes, default-valued fields present). Used
 * on its own and as the stand-in when the dataset is not on disk.
 */
const INLINE_TRACE_REQUEST = {
  resourceSpans: [
    {
      resource: {
        attributes: [
          { key: 'service.name', value: { stringValue: 'slack-assistant' } },
          { key: 'deployment.environment.name', value: { stringValue: 'replay' } },
        ],
        droppedAttributesCount: 1,
      },
      scopeSpans: [
        {
          scope: { name: 'agentdojo-replay', version: '1', attributes: [{ key: 'scope.attr', value: { boolValue: true } }] },
          spans: [
            {
              traceId: TRACE_ID,
              spanId: ROOT_SPAN,
              name: 'invoke_agent slack-assistant',
              kind: 1,
              startTimeUnixNano: '1779999999990000000',
              endTimeUnixNano: '1780000000870000000',
              attributes: [
                { key: 'gen_ai.operation.name', value: { stringValue: 'invoke_agent' } },
                { key: 'gen_ai.agent.name', value: { stringValue: 'slack-assistant' } },
                { key: 'gen_ai.empty', value: { stringValue: '' } },
              ],
              status: {},
            },
            {
              traceId: TRACE_ID,
              spanId: '55c9d47d5075954d',
              parentSpanId: ROOT_SPAN,
              traceState: 'vendor=a:1',
              flags: 257,
              name: 'execute_tool send_channel_message',
              kind: 3,
              startTimeUnixNano: '1780000000400000000',
              endTimeUnixNano: '1780000000450000000',
              attributes: [
                { key: 'gen_ai.tool.name', value: { stringValue: 'send_channel_message' } },
                { key: 'retries', value: { intValue: '2' } },
                { key: 'score', value: { doubleValue: 0.25 } },
              ],
              droppedAttributesCount: 2,
              events: [
                {
                  timeUnixNano: '1780000000410000000',
                  name: 'exception',
                  attributes: [{ key: 'exception.message', value: { stringValue: 'Channel does not exist!' } }],
                  droppedAttributesCount: 1,
                },
                { timeUnixNano: '1780000000420000000', name: 'empty-event', attributes: [] },
              ],
              droppedEventsCount: 3,
              links: [
                {
                  traceId: 'ffeeddccbbaa99887766554433221100',
                  spanId: '0102030405060708',
                  traceState: 'k=v',
                  attributes: [{ key: 'link.kind', value: { stringValue: 'follows_from' } }],
                  droppedAttributesCount: 4,
                  flags: 1,
                },
              ],
              droppedLinksCount: 5,
              status: { code: 2, message: 'ValueError: Channel does not exist!' },
            },
            {
              // Default values written explicitly: our encoder writes them, so they come back.
              traceId: TRACE_ID,
              spanId: '09a376d23c5f6962',
              parentSpanId: ROOT_SPAN,
              name: '',
              kind: 0,
              startTimeUnixNano: '0',
              endTimeUnixNano: '18446744073709551615',
              droppedAttributesCount: 0,
              status: { code: 0 },
            },
          ],
        },
      ],
      schemaUrl: 'https://opentelemetry.io/schemas/1.26.0',
    },
  ],
};

/** A logs request whose attributes and body use every AnyValue kind. */
const ALL_KINDS_LOGS_REQUEST = {
  resourceLogs: [
    {
      resource: { attributes: [{ key: 'service.name', value: { stringValue: 'banking-assistant' } }] },
      scopeLogs: [
        {
          scope: { name: 'agentdojo-replay', version: '1' },
          logRecords: [
            {
              timeUnixNano: '1780000000000000001',
              observedTimeUnixNano: '1780000000000000002',
              severityNumber: 17,
              severityText: 'ERROR',
              eventName: 'gen_ai.client.inference.operation.details',
              traceId: TRACE_ID,
              spanId: ROOT_SPAN,
              flags: 1,
              droppedAttributesCount: 7,
              body: {
                kvlistValue: {
                  values: [
                    { key: 'nested', value: { arrayValue: { values: [{ stringValue: 'a' }, { intValue: '-1' }, { kvlistValue: { values: [] } }] } } },
                    { key: 'empty', value: {} },
                  ],
                },
              },
              attributes: [
                { key: 'string', value: { stringValue: 'héllo ✓' } },
                { key: 'string.empty', value: { stringValue: '' } },
                { key: 'bool.true', value: { boolValue: true } },
                { key: 'bool.false', value: { boolValue: false } },
                { key: 'int.big', value: { intValue: '9007199254740993' } },
                { key: 'int.min', value: { intValue: '-9223372036854775808' } },
                { key: 'int.max', value: { intValue: '9223372036854775807' } },
                { key: 'int.zero', value: { intValue: '0' } },
                { key: 'double', value: { doubleValue: 3.141592653589793 } },
                { key: 'double.negative', value: { doubleValue: -1e-300 } },
                { key: 'array', value: { arrayValue: { values: [{ boolValue: true }, { doubleValue: 1.5 }, { bytesValue: 'AAEC/w==' }] } } },
                { key: 'array.empty', value: { arrayValue: { values: [] } } },
                { key: 'kvlist', value: { kvlistValue: { values: [{ key: 'k', value: { stringValue: 'v' } }] } } },
                { key: 'bytes', value: { bytesValue: 'AAECAwQFBgcICf8=' } },
                { key: 'bytes.empty', value: { bytesValue: '' } },
              ],
            },
          ],
        },
      ],
    },
  ],
};

/**
 * Applies the documented differences between an OTLP/JSON object and the decoder's output for
 * data our encoder wrote: empty repeated fields come back absent (the wire format cannot tell
 * "empty" from "absent"), and nulls are dropped.
 */
function normalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalize);
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    if (field === null || field === undefined) continue;
    if (Array.isArray(field) && field.length === 0) continue;
    out[key] = normalize(field);
  }
  return out;
}

/** Every AnyValue reachable from `value` (attribute values and log bodies). */
function collectAnyValues(value: unknown, into: Record<string, unknown>[] = []): Record<string, unknown>[] {
  if (Array.isArray(value)) {
    for (const item of value) collectAnyValues(item, into);
  } else if (typeof value === 'object' && value !== null) {
    for (const [key, field] of Object.entries(value)) {
      if ((key === 'value' || key === 'body') && typeof field === 'object' && field !== null && !Array.isArray(field)) {
        into.push(field as Record<string, unknown>);
      }
      collectAnyValues(field, into);
    }
  } else {
    // scalars hold no AnyValues
  }
  return into;
}

/** Deterministic PRNG (mulberry32) so the garbage inputs are the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(seed: number, length: number): Uint8Array {
  const next = prng(seed);
  return Uint8Array.from({ length }, () => Math.floor(next() * 256));
}

function expectOtlpProtoError(fn: () => unknown, message: RegExp = /^protobuf decode failed at offset \d+: /): OtlpProtoError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(OtlpProtoError);
  const error = caught as OtlpProtoError;
  expect(error).toBeInstanceOf(Error);
  expect(error.name).toBe('OtlpProtoError');
  expect(error.code).toBe('otlp_protobuf_invalid');
  expect(error.retriable).toBe(false);
  expect(error.message).toMatch(message);
  return error;
}

// ---------------------------------------------------------------------------------------------
// A minimal protobuf writer, independent of protobufjs, to check field numbers on the wire.
// ---------------------------------------------------------------------------------------------

type Bytes = number[];
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

function varint(value: bigint | number): Bytes {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: Bytes = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return out;
}
const tag = (field: number, wireType: number): Bytes => varint((field << 3) | wireType);
const msg = (...fields: Bytes[]): Bytes => fields.flat();
const lenField = (field: number, payload: Bytes): Bytes => [...tag(field, LEN), ...varint(payload.length), ...payload];
const strField = (field: number, text: string): Bytes => lenField(field, [...Buffer.from(text, 'utf8')]);
const hexField = (field: number, hex: string): Bytes => lenField(field, [...Buffer.from(hex, 'hex')]);
const varintField = (field: number, value: bigint | number): Bytes => [...tag(field, VARINT), ...varint(value)];
function fixed64Field(field: number, value: bigint): Bytes {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(value);
  return [...tag(field, I64), ...b];
}
function fixed32Field(field: number, value: number): Bytes {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value);
  return [...tag(field, I32), ...b];
}
function doubleField(field: number, value: number): Bytes {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(value);
  return [...tag(field, I64), ...b];
}
/** common.v1.KeyValue { key = 1; value = 2 } with an AnyValue payload. */
const keyValue = (key: string, anyValue: Bytes): Bytes => msg(strField(1, key), lenField(2, anyValue));

// ---------------------------------------------------------------------------------------------

describe('OTLP protobuf codec', () => {
  it('round-trips real agentdojo OTLP/JSON trace requests', async () => {
    const requests = (await loadDatasetRequests(50)) ?? [INLINE_TRACE_REQUEST];
    expect(requests.length).toBeGreaterThan(0);
    for (const request of requests) {
      const bytes = encodeTraceRequestProto(request);
      expect(bytes).toBeInstanceOf(Uint8Array);
      expect(decodeTraceRequestProto(bytes)).toStrictEqual(normalize(request));
    }
  });

  it('round-trips events, links, flags, trace state, dropped counts and explicit defaults', () => {
    const decoded = decodeTraceRequestProto(encodeTraceRequestProto(INLINE_TRACE_REQUEST));
    expect(decoded).toStrictEqual(normalize(INLINE_TRACE_REQUEST));
  });

  it('round-trips a logs request with every AnyValue kind, one member per AnyValue', () => {
    const decoded = decodeLogsRequestProto(encodeLogsRequestProto(ALL_KINDS_LOGS_REQUEST));
    expect(decoded).toStrictEqual(normalize(ALL_KINDS_LOGS_REQUEST));
    const anyValues = collectAnyValues(decoded);
    expect(anyValues.length).toBeGreaterThan(15);
    for (const anyValue of anyValues) expect(Object.keys(anyValue).length).toBeLessThanOrEqual(1);
    // Beyond 2^53 the string must keep every digit.
    expect(JSON.stringify(decoded)).toContain('"intValue":"9007199254740993"');
  });

  it('accepts the other spellings OTLP/JSON allows and returns the canonical ones', () => {
    const request = {
      resourceSpans: [
        {
          scopeSpans: [
            {
              spans: [
                {
                  traceId: TRACE_ID.toUpperCase(),
                  spanId: ROOT_SPAN,
                  kind: 'SPAN_KIND_SERVER',
                  startTimeUnixNano: 1780000000000000,
                  attributes: [{ key: 'n', value: { intValue: 42 } }, { key: 'nan', value: { doubleValue: 'NaN' } }],
                  status: { code: 'STATUS_CODE_ERROR' },
                },
              ],
            },
          ],
        },
      ],
    };
    expect(decodeTraceRequestProto(encodeTraceRequestProto(request))).toStrictEqual({
      resourceSpans: [
        {
          scopeSpans: [
            {
              spans: [
                {
                  traceId: TRACE_ID,
                  spanId: ROOT_SPAN,
                  kind: 2,
                  startTimeUnixNano: '1780000000000000',
                  attributes: [{ key: 'n', value: { intValue: '42' } }, { key: 'nan', value: { doubleValue: 'NaN' } }],
                  status: { code: 2 },
                },
              ],
            },
          ],
        },
      ],
    });
  });

  it('does not modify the object it encodes', () => {
    const snapshot = structuredClone(INLINE_TRACE_REQUEST);
    encodeTraceRequestProto(INLINE_TRACE_REQUEST);
    expect(INLINE_TRACE_REQUEST).toStrictEqual(snapshot);
  });

  it('decodes an empty buffer to an empty request', () => {
    expect(decodeTraceRequestProto(new Uint8Array(0))).toStrictEqual({});
    expect(decodeLogsRequestProto(new Uint8Array(0))).toStrictEqual({});
  });

  it('throws OtlpProtoError on truncated buffers', () => {
    const bytes = encodeTraceRequestProto(INLINE_TRACE_REQUEST);
    // One top-level field, so every non-empty proper prefix cuts a length-delimited field short.
    for (const cut of [1, 2, 3, 10, Math.floor(bytes.length / 2), bytes.length - 1]) {
      const error = expectOtlpProtoError(() => decodeTraceRequestProto(bytes.subarray(0, cut)));
      expect(error.offset).toBeTypeOf('number');
      expect(error.offset).toBeLessThanOrEqual(cut);
      expect(error.cause).toBeInstanceOf(Error);
    }
    const logs = encodeLogsRequestProto(ALL_KINDS_LOGS_REQUEST);
    expectOtlpProtoError(() => decodeLogsRequestProto(logs.subarray(0, logs.length - 3)));
  });

  it('throws OtlpProtoError on garbage', () => {
    const garbage = [
      randomBytes(1, 64),
      randomBytes(2, 512),
      Uint8Array.from(Array.from({ length: 11 }, () => 0xff)), // endless varint
      Uint8Array.from([0x2f, 0x00]), // field 5 with wire type 7 (no such wire type)
      Uint8Array.from([0x2b, 0x08, 0x01]), // field 5 starts a group that never ends
      Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00]), // length far past the end
      Uint8Array.from(Buffer.from('{"resourceSpans":[]}')), // JSON sent with the protobuf content type
    ];
    for (const bytes of garbage) {
      expectOtlpProtoError(() => decodeTraceRequestProto(bytes));
      expectOtlpProtoError(() => decodeLogsRequestProto(bytes));
    }
  });

  it('never fails on random bytes with anything but OtlpProtoError', () => {
    for (let seed = 100; seed < 600; seed++) {
      const bytes = randomBytes(seed, seed % 97);
      for (const decode of [decodeTraceRequestProto, decodeLogsRequestProto]) {
        try {
          expect(typeof decode(bytes)).toBe('object');
        } catch (err) {
          expect(err).toBeInstanceOf(OtlpProtoError);
        }
      }
    }
  });

  it('throws OtlpProtoError on AnyValues nested past the recursion limit', () => {
    let anyValue = msg(strField(1, 'leaf'));
    for (let i = 0; i < 120; i++) anyValue = lenField(5, lenField(1, anyValue)); // arrayValue { values: [ ... ] }
    const logRecord = lenField(5, anyValue);
    const body = Uint8Array.from(lenField(1, lenField(2, lenField(2, logRecord))));
    expectOtlpProtoError(() => decodeLogsRequestProto(body));
  });

  it('throws OtlpProtoError for ids that are not hex and for wrongly typed fields when encoding', () => {
    const badId = { resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: 'not-hex', spanId: ROOT_SPAN }] }] }] };
    const error = expectOtlpProtoError(() => encodeTraceRequestProto(badId), /^protobuf encode failed: /);
    expect(error.message).toContain('resourceSpans[0].scopeSpans[0].spans[0].traceId');
    expectOtlpProtoError(() => encodeTraceRequestProto({ resourceSpans: 'nope' }), /^protobuf encode failed: /);
    expectOtlpProtoError(() => encodeLogsRequestProto(null), /^protobuf encode failed: /);
    expectOtlpProtoError(
      () => encodeLogsRequestProto({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ spanId: 'abc' }] }] }] }),
      /^protobuf encode failed: .*logRecords\[0\]\.spanId/,
    );
  });

  describe('against hand-built wire bytes (field numbers from opentelemetry-proto)', () => {
    it('decodes a minimal ExportTraceServiceRequest: one span with a string attribute', () => {
      const span = msg(
        hexField(1, TRACE_ID), // trace_id
        hexField(2, ROOT_SPAN), // span_id
        strField(5, 'chat'), // name
        lenField(9, keyValue('gen_ai.operation.name', strField(1, 'chat'))), // attributes
      );
      const body = lenField(1, lenField(2, lenField(2, span))); // resource_spans / scope_spans / spans
      expect(decodeTraceRequestProto(Uint8Array.from(body))).toStrictEqual({
        resourceSpans: [
          {
            scopeSpans: [
              {
                spans: [
                  {
                    traceId: TRACE_ID,
                    spanId: ROOT_SPAN,
                    name: 'chat',
                    attributes: [{ key: 'gen_ai.operation.name', value: { stringValue: 'chat' } }],
                  },
                ],
              },
            ],
          },
        ],
      });
    });

    it('decodes every Span, Event, Link, Status, Resource and Scope field by number', () => {
      const span = msg(
        hexField(1, TRACE_ID),
        hexField(2, '55c9d47d5075954d'),
        strField(3, 'vendor=a:1'), // trace_state
        hexField(4, ROOT_SPAN), // parent_span_id
        fixed32Field(16, 0x301), // flags
        strField(5, 'execute_tool'),
        varintField(6, 3), // kind CLIENT
        fixed64Field(7, 1780000000400000000n),
        fixed64Field(8, 18446744073709551615n),
        lenField(9, keyValue('k', strField(1, 'v'))),
        varintField(10, 2), // dropped_attributes_count
        lenField(11, msg(fixed64Field(1, 1780000000410000000n), strField(2, 'exception'), lenField(3, keyValue('e', varintField(2, 1))), varintField(4, 6))),
        varintField(12, 3), // dropped_events_count
        lenField(13, msg(hexField(1, 'ffeeddccbbaa99887766554433221100'), hexField(2, '0102030405060708'), strField(3, 'k=v'), lenField(4, keyValue('l', varintField(3, -5))), varintField(5, 4), fixed32Field(6, 1))),
        varintField(14, 5), // dropped_links_count
        lenField(15, msg(strField(2, 'boom'), varintField(3, 2))), // status { message = 2; code = 3 }
        varintField(999, 1), // unknown field: skipped
      );
      const resource = msg(lenField(1, keyValue('service.name', strField(1, 'svc'))), varintField(2, 9));
      const scope = msg(strField(1, 'scope'), strField(2, '1.0'), lenField(3, keyValue('s', doubleField(4, 0.5))), varintField(4, 8));
      const scopeSpans = msg(lenField(1, scope), lenField(2, span), strField(3, 'https://scope.schema'));
      const resourceSpans = msg(lenField(1, resource), lenField(2, scopeSpans), strField(3, 'https://resource.schema'));
      expect(decodeTraceRequestProto(Uint8Array.from(lenField(1, resourceSpans)))).toStrictEqual({
        resourceSpans: [
          {
            resource: { attributes: [{ key: 'service.name', value: { stringValue: 'svc' } }], droppedAttributesCount: 9 },
            scopeSpans: [
              {
                scope: { name: 'scope', version: '1.0', attributes: [{ key: 's', value: { doubleValue: 0.5 } }], droppedAttributesCount: 8 },
                spans: [
                  {
                    traceId: TRACE_ID,
                    spanId: '55c9d47d5075954d',
                    traceState: 'vendor=a:1',
                    parentSpanId: ROOT_SPAN,
                    flags: 0x301,
                    name: 'execute_tool',
                    kind: 3,
                    startTimeUnixNano: '1780000000400000000',
                    endTimeUnixNano: '18446744073709551615',
                    attributes: [{ key: 'k', value: { stringValue: 'v' } }],
                    droppedAttributesCount: 2,
                    events: [
                      {
                        timeUnixNano: '1780000000410000000',
                        name: 'exception',
                        attributes: [{ key: 'e', value: { boolValue: true } }],
                        droppedAttributesCount: 6,
                      },
                    ],
                    droppedEventsCount: 3,
                    links: [
                      {
                        traceId: 'ffeeddccbbaa99887766554433221100',
                        spanId: '0102030405060708',
                        traceState: 'k=v',
                        attributes: [{ key: 'l', value: { intValue: '-5' } }],
                        droppedAttributesCount: 4,
                        flags: 1,
                      },
                    ],
                    droppedLinksCount: 5,
                    status: { message: 'boom', code: 2 },
                  },
                ],
                schemaUrl: 'https://scope.schema',
              },
            ],
            schemaUrl: 'https://resource.schema',
          },
        ],
      });
    });

    it('decodes every LogRecord field and AnyValue member by number', () => {
      const logRecord = msg(
        fixed64Field(1, 1780000000000000001n), // time_unix_nano
        varintField(2, 9), // severity_number INFO
        strField(3, 'INFO'), // severity_text
        lenField(5, strField(1, 'hello')), // body
        lenField(6, keyValue('b', varintField(2, 0))), // bool_value = 2 (false, present)
        lenField(6, keyValue('i', varintField(3, 9007199254740993n))), // int_value = 3
        lenField(6, keyValue('d', doubleField(4, -2.5))), // double_value = 4
        lenField(6, keyValue('a', lenField(5, lenField(1, strField(1, 'x'))))), // array_value = 5
        lenField(6, keyValue('m', lenField(6, lenField(1, keyValue('k', strField(1, 'v')))))), // kvlist_value = 6
        lenField(6, keyValue('y', hexField(7, '00ff10'))), // bytes_value = 7
        varintField(7, 1), // dropped_attributes_count
        fixed32Field(8, 1), // flags
        hexField(9, TRACE_ID), // trace_id
        hexField(10, ROOT_SPAN), // span_id
        fixed64Field(11, 1780000000000000002n), // observed_time_unix_nano
        strField(12, 'my.event'), // event_name
      );
      const scopeLogs = msg(lenField(1, strField(1, 'scope')), lenField(2, logRecord), strField(3, 'https://scope.schema'));
      const resourceLogs = msg(lenField(1, lenField(1, keyValue('service.name', strField(1, 'svc')))), lenField(2, scopeLogs), strField(3, 'https://r'));
      expect(decodeLogsRequestProto(Uint8Array.from(lenField(1, resourceLogs)))).toStrictEqual({
        resourceLogs: [
          {
            resource: { attributes: [{ key: 'service.name', value: { stringValue: 'svc' } }] },
            scopeLogs: [
              {
                scope: { name: 'scope' },
                logRecords: [
                  {
                    timeUnixNano: '1780000000000000001',
                    severityNumber: 9,
                    severityText: 'INFO',
                    body: { stringValue: 'hello' },
                    attributes: [
                      { key: 'b', value: { boolValue: false } },
                      { key: 'i', value: { intValue: '9007199254740993' } },
                      { key: 'd', value: { doubleValue: -2.5 } },
                      { key: 'a', value: { arrayValue: { values: [{ stringValue: 'x' }] } } },
                      { key: 'm', value: { kvlistValue: { values: [{ key: 'k', value: { stringValue: 'v' } }] } } },
                      { key: 'y', value: { bytesValue: 'AP8Q' } },
                    ],
                    droppedAttributesCount: 1,
                    flags: 1,
                    traceId: TRACE_ID,
                    spanId: ROOT_SPAN,
                    observedTimeUnixNano: '1780000000000000002',
                    eventName: 'my.event',
                  },
                ],
                schemaUrl: 'https://scope.schema',
              },
            ],
            schemaUrl: 'https://r',
          },
        ],
      });
    });

    it('keeps only the last AnyValue oneof member seen on the wire', () => {
      // string_value "a", then int_value 5, then string_value "b" / then bool_value true: last wins.
      const conflicting = [
        { value: msg(strField(1, 'a'), varintField(3, 5), strField(1, 'b')), expected: { stringValue: 'b' } },
        { value: msg(strField(1, 'a'), varintField(2, 1)), expected: { boolValue: true } },
        { value: msg(lenField(5, []), doubleField(4, 1.25)), expected: { doubleValue: 1.25 } },
      ];
      for (const { value, expected } of conflicting) {
        const body = lenField(1, lenField(2, lenField(2, lenField(5, value))));
        expect(decodeLogsRequestProto(Uint8Array.from(body))).toStrictEqual({
          resourceLogs: [{ scopeLogs: [{ logRecords: [{ body: expected }] }] }],
        });
      }
    });

    it('omits fields absent on the wire and keeps present empty messages', () => {
      // A span with only ids and an empty status, as a conformant encoder writes kind=0 etc.
      const span = msg(hexField(1, TRACE_ID), hexField(2, ROOT_SPAN), lenField(15, []));
      const decoded = decodeTraceRequestProto(Uint8Array.from(lenField(1, msg(lenField(1, []), lenField(2, lenField(2, span))))));
      expect(decoded).toStrictEqual({
        resourceSpans: [{ resource: {}, scopeSpans: [{ spans: [{ traceId: TRACE_ID, spanId: ROOT_SPAN, status: {} }] }] }],
      });
    });
  });
});
