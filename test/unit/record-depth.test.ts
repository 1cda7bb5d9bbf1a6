import { describe, expect, it } from 'vitest';
import { MAX_LISTED_REJECTIONS, MAX_RECORD_DEPTH, tooDeepField } from '../../services/collector/adapters/adapter.ts';
import { ADAPTERS } from '../../services/collector/adapters/index.ts';
import { serializeForBus } from '../../services/collector/ingest.ts';
import { DEFAULT_MAX_EVENT_BYTES } from '../../services/collector/event-size.ts';
import { RecordError } from '../../shared/errors.ts';
import type { IngestFormat } from '../../shared/event.ts';

/*
 * Regression (issue 7, found by the ingest fuzz suite): a record nested a few thousand levels deep
 * was accepted, then overflowed the stack when the event was serialized for the bus; the whole
 * request answered 503 and a shipper would retry it forever, good records included. Other
 * adapters overflowed while mapping and rejected the record as "Maximum call stack size exceeded"
 * without naming a field. Now every JSON record nested deeper than MAX_RECORD_DEPTH is rejected
 * up front naming the field, and OTLP values kept verbatim obey the AnyValue depth bound.
 */

const T = '2026-05-01T12:00:00Z';
/** `n` nested arrays as JSON text, built without recursion. */
const deepArray = (n: number): string => '['.repeat(n) + ']'.repeat(n);
/** `n` nested objects as JSON text. */
const deepObject = (n: number): string => '{"a":'.repeat(n) + '1' + '}'.repeat(n);

function parse(format: IngestFormat, body: string) {
  const r = ADAPTERS[format].parse(Buffer.from(body), 'application/json');
  // Whatever was accepted must serialize: this is where the stack used to overflow.
  expect(() => serializeForBus(r.events, 0, DEFAULT_MAX_EVENT_BYTES)).not.toThrow();
  return r;
}

const GOOD: Record<string, string> = {
  runtrail: JSON.stringify({ source: 'workload', type: 'process.activity', time: T, id: 'good-1' }),
  cloudtrail: JSON.stringify({ eventID: 'good-1', eventTime: T, eventSource: 's3.amazonaws.com', eventName: 'GetObject' }),
  vault: JSON.stringify({ type: 'response', time: T, request: { id: 'good-1', operation: 'read', path: 'secret/data/x' } }),
  'k8s-audit': JSON.stringify({ kind: 'Event', auditID: 'good-1', stage: 'ResponseComplete', verb: 'get', requestReceivedTimestamp: T }),
  falco: JSON.stringify({ rule: 'r', time: T, uuid: 'good-1' }),
};

/** A record of each JSON format with `deep` (JSON text) under a field, and the field it is. */
const DEEP: Array<{ format: IngestFormat; field: string; record: (deep: string) => string }> = [
  { format: 'runtrail', field: 'attributes', record: (d) => `{"source":"workload","type":"process.activity","time":"${T}","id":"deep-1","attributes":{"x":${d}}}` },
  { format: 'runtrail', field: 'stray', record: (d) => `{"source":"workload","type":"process.activity","time":"${T}","stray":${d}}` },
  { format: 'cloudtrail', field: 'additionalEventData', record: (d) => `{"eventID":"deep-1","eventTime":"${T}","eventSource":"s3.amazonaws.com","eventName":"GetObject","additionalEventData":${d}}` },
  { format: 'cloudtrail', field: 'userIdentity', record: (d) => `{"eventID":"deep-2","eventTime":"${T}","eventSource":"s3.amazonaws.com","eventName":"GetObject","userIdentity":${d}}` },
  { format: 'vault', field: 'extra', record: (d) => `{"type":"response","time":"${T}","request":{"id":"deep-1","operation":"read"},"extra":${d}}` },
  { format: 'k8s-audit', field: 'requestObject', record: (d) => `{"kind":"Event","auditID":"deep-1","stage":"ResponseComplete","verb":"get","requestReceivedTimestamp":"${T}","requestObject":${d}}` },
  { format: 'falco', field: 'output_fields', record: (d) => `{"rule":"r","time":"${T}","uuid":"deep-1","output_fields":{"x":${d}}}` },
];

describe('records nested too deep', () => {
  for (const { format, field, record } of DEEP) {
    it(`${format}: rejects a record nested 20 000 levels under \`${field}\`, naming it, and keeps its neighbours`, () => {
      for (const deep of [deepArray(20_000), deepObject(20_000)]) {
        const good = GOOD[format] as string;
        for (const body of [`[${good},${record(deep)},${good.replace('good-1', 'good-2')}]`, `${good}\n${record(deep)}\n${good.replace('good-1', 'good-2')}\n`]) {
          const r = parse(format, body);
          expect(r.events).toHaveLength(2);
          expect(r.rejected).toEqual([{ index: 1, field, reason: expect.stringMatching(new RegExp(`nested deeper than ${MAX_RECORD_DEPTH} levels`)) }]);
        }
      }
    });
  }

  it('draws the line at MAX_RECORD_DEPTH levels, the record itself being the first', () => {
    // The record is level 1 and `x` holds `n` more levels.
    const at = (n: number) => parse('runtrail', `{"source":"workload","type":"process.activity","time":"${T}","x":${deepArray(n)}}`);
    expect(at(MAX_RECORD_DEPTH - 1).rejected).toEqual([]);
    expect(at(MAX_RECORD_DEPTH).rejected).toEqual([expect.objectContaining({ field: 'x' })]);
    expect(tooDeepField(JSON.parse(deepArray(MAX_RECORD_DEPTH)))).toBeUndefined();
    expect(tooDeepField(JSON.parse(deepArray(MAX_RECORD_DEPTH + 1)))).toBe('0');
    expect(tooDeepField(42)).toBeUndefined();
  });

  it('k8s-audit: applies the bound to an audit line a shipper wrapped in a string', () => {
    const inner = `{"kind":"Event","auditID":"deep-3","stage":"ResponseComplete","verb":"get","requestReceivedTimestamp":"${T}","requestObject":${deepObject(5000)}}`;
    const r = parse('k8s-audit', JSON.stringify([{ log: inner }]));
    expect(r.events).toHaveLength(0);
    expect(r.rejected).toEqual([{ index: 0, field: 'log.requestObject', reason: expect.stringMatching(/nested deeper than/) }]);
  });

  it('otlp: rejects deep JSON where an AnyValue should be, naming the attribute', () => {
    const span = (value: string, spanId: string) =>
      `{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"${spanId}","name":"x","startTimeUnixNano":"1777636800000000000","attributes":[{"key":"a","value":${value}}]}`;
    const body = `{"resourceSpans":[{"resource":{},"scopeSpans":[{"spans":[${span('{"stringValue":"ok"}', 'eee19b7ec3c1b171')},${span(`{"stringValue":${deepObject(20_000)}}`, 'eee19b7ec3c1b172')},${span(`{"arrayValue":{"values":${deepArray(20_000)}}}`, 'eee19b7ec3c1b173')}]}]}]}`;
    const r = parse('otlp-traces', body);
    expect(r.events).toHaveLength(1);
    expect(r.rejected.map((x) => [x.index, x.field, x.reason])).toEqual([
      [1, 'resourceSpans[0].scopeSpans[0].spans[1].attributes[0].value.stringValue', 'nested deeper than 32 levels'],
      [2, 'resourceSpans[0].scopeSpans[0].spans[2].attributes[0].value.arrayValue.values[0]', 'nested deeper than 32 levels'],
    ]);
    const logs = `{"resourceLogs":[{"resource":{},"scopeLogs":[{"logRecords":[{"timeUnixNano":"1777636800000000000","body":{"stringValue":${deepArray(20_000)}}}]}]}]}`;
    expect(parse('otlp-logs', logs).rejected).toEqual([{ index: 0, field: 'resourceLogs[0].scopeLogs[0].logRecords[0].body.stringValue', reason: 'nested deeper than 32 levels' }]);
  });
});

/*
 * Regression (issue 7, found while fuzzing with the default limits): a 64 KiB gzip body of
 * millions of one-byte bad records made the collector list every rejection: gigabytes of memory,
 * and past ~8 million an answer longer than V8 can build, sent as a retriable 503. Rejections are
 * now listed up to MAX_LISTED_REJECTIONS and counted beyond.
 */
describe('a body of millions of bad records', () => {
  it('lists the first MAX_LISTED_REJECTIONS rejections and counts all of them', () => {
    const n = 250_000;
    for (const format of ['runtrail', 'cloudtrail', 'falco'] as const) {
      const r = ADAPTERS[format].parse(Buffer.from(`[${'1,'.repeat(n - 1)}1]`), 'application/json');
      expect(r.records).toBe(n);
      expect(r.rejectedCount).toBe(n);
      expect(r.rejected).toHaveLength(MAX_LISTED_REJECTIONS);
      expect(r.rejected.map((x) => x.index)).toEqual(Array.from({ length: MAX_LISTED_REJECTIONS }, (_, i) => i));
    }
    const few = ADAPTERS.runtrail.parse(Buffer.from('[1, 2, {"source":"agent","type":"model.call","time":1}]'), 'application/json');
    expect(few.rejectedCount).toBe(2);
    expect(few.rejected).toHaveLength(2);
  });
});

describe('RecordError', () => {
  it('carries no stack trace (cheap to throw per bad record) and leaves the global limit as it was', () => {
    const before = Error.stackTraceLimit;
    const err = new RecordError('time', 'missing');
    expect(Error.stackTraceLimit).toBe(before);
    expect(err.message).toBe('field `time`: missing');
    expect(err.reason).toBe('missing');
    expect(String(err.stack).split('\n').filter((l) => l.trim().startsWith('at '))).toEqual([]);
    expect(new Error('x').stack).toMatch(/\n\s+at /);
  });
});
