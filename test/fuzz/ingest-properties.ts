import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INGEST_ENDPOINTS } from '../../services/collector/collector-routes.ts';
import { encodeTraceRequestProto } from '../../services/collector/otlp/otlp-proto.ts';
import { expectContract, expectHealthy, expectStoredExactly, fcParams, startFuzzServer, type FuzzServer, type Reply, type WireRejection } from './fuzz-harness.ts';
import { ENCODINGS, FORMATS, OTLP_TRACES, buildBatch, encode, fillerArb, otlpRequest, slotsArb, type Encoding, type FuzzFormat } from './fuzz-records.ts';

const PATHS = Object.keys(INGEST_ENDPOINTS);
const JSON_TYPES = new Set(['application/json', 'application/x-ndjson', 'text/plain']);
const CONTENT_TYPES = ['application/json', 'application/x-ndjson', 'text/plain', 'application/x-protobuf', 'application/protobuf', 'application/xml', 'application/json; charset=utf-8', 'multipart/form-data'];

/** Which content types each endpoint takes (README: endpoints). */
function accepts(path: string, ctype: string): boolean {
  const base = ctype.split(';')[0]?.trim() ?? '';
  if (path === '/v1/traces' || path === '/v1/logs') return base === 'application/json' || base === 'application/x-protobuf' || base === 'application/protobuf';
  if (path === '/v1/ingest/cloudtrail' || path === '/v1/ingest/vault' || path === '/v1/ingest/spire') return JSON_TYPES.has(base);
  return base === 'application/json' || base === 'application/x-ndjson';
}

const bodyArb = fc.oneof(
  fc.uint8Array({ maxLength: 2048 }),
  fc.jsonValue({ maxDepth: 6 }).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
  fc.string({ unit: 'binary', maxLength: 512 }).map((s) => Buffer.from(s)),
  fc.array(fc.jsonValue({ maxDepth: 3 }), { maxLength: 8 }).map((vs) => Buffer.from(vs.map((v) => JSON.stringify(v)).join('\n'))),
);

type WireEncoding = { kind: 'none' } | { kind: 'real'; enc: Encoding } | { kind: 'claimed'; enc: Exclude<Encoding, 'identity'> } | { kind: 'unknown'; name: string };

const wireEncodingArb: fc.Arbitrary<WireEncoding> = fc.oneof(
  fc.constant<WireEncoding>({ kind: 'none' }),
  fc.constantFrom(...ENCODINGS).map((enc): WireEncoding => ({ kind: 'real', enc })),
  fc.constantFrom('gzip' as const, 'deflate' as const, 'br' as const).map((enc): WireEncoding => ({ kind: 'claimed', enc })),
  fc.constantFrom('zstd', 'compress', 'gzip, br').map((name): WireEncoding => ({ kind: 'unknown', name })),
);

/**
 * Hostile input, part 1 (issue 7): property-based fuzzing of every ingest endpoint of the real
 * embedded server (HTTP on loopback, in-process bus with its log, chDB storage). Defined here and
 * run by two test files, with parse workers (the default) and with adapters on the main thread.
 *
 * - Arbitrary bytes, JSON values and strings, under every content type and encoding, get a
 *   documented status and a JSON answer naming what is wrong; the server stays healthy.
 * - Mixed batches of good and broken records, in every framing of every format: exactly the good
 *   ones are accepted, exactly the broken ones are listed by index with their field and a reason.
 * - Random and mutated OTLP protobuf bodies.
 * - At the end, the store holds exactly as many distinct events as the server acknowledged.
 *
 * `seedOffset` gives each file its own stretch of the input space.
 */
export function describeIngestFuzz(label: string, opts: { parseWorkers?: number; seedOffset: number }): void {
  let fz: FuzzServer;
  let uidSeq = 0;
  const nextUid = (): string => `u${++uidSeq}`;

  beforeAll(async () => {
    fz = await startFuzzServer({ parseWorkers: opts.parseWorkers });
  }, 60_000);

  afterAll(async () => {
    await fz?.stop();
  });

  describe(`fuzzing every ingest endpoint (${label})`, () => {
    it('answers arbitrary bodies, content types and encodings with a documented status and a reason', async () => {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...PATHS), fc.constantFrom(...CONTENT_TYPES), wireEncodingArb, bodyArb, async (path, ctype, wire, raw) => {
          const headers: Record<string, string> = { 'content-type': ctype };
          let body: Uint8Array = raw;
          if (wire.kind === 'real') {
            body = encode(raw, wire.enc);
            headers['content-encoding'] = wire.enc;
          } else if (wire.kind === 'claimed') headers['content-encoding'] = wire.enc;
          else if (wire.kind === 'unknown') headers['content-encoding'] = wire.name;
          const r = await fz.post(path, body, headers);
          const what = `${path} ${ctype} ${JSON.stringify(wire)} (${raw.length} bytes)`;
          expectContract(r, what);
          if (!accepts(path, ctype) || wire.kind === 'unknown') {
            expect(r.status, what).toBe(415);
            expect(r.json?.error).toBe('unsupported_format');
            expect(String(r.json?.message)).toMatch(/Content-Type|Content-Encoding/);
          } else {
            expect([200, 400], `${what}: ${r.text.slice(0, 200)}`).toContain(r.status);
          }
          // A body that claims gzip or deflate without being it fails their checksums (random
          // bytes can, rarely, be a valid brotli stream, so br is judged by what it decodes to).
          if (wire.kind === 'claimed' && wire.enc !== 'br' && raw.length > 0 && accepts(path, ctype)) {
            expect(r.status, what).toBe(400);
            expect(r.json?.error, what).toBe('body_invalid');
            expect(String(r.json?.message), what).toMatch(new RegExp(`not valid ${wire.enc}`));
          } else if (wire.kind === 'claimed' && raw.length > 0 && r.status === 400 && r.json?.error === 'body_invalid') {
            expect(String(r.json.message)).toMatch(/not valid|protobuf|JSON|UTF-8/);
          }
        }),
        fcParams(opts.seedOffset + 1, 600),
      );
      await expectHealthy(fz);
    }, 120_000);

    for (const fmt of FORMATS) {
      it(`${fmt.name}: keeps the good records of a mixed batch and names every bad one`, async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.constantFrom(...fmt.framings).chain((framing) =>
              fc.record({
                framing: fc.constant(framing),
                slots: slotsArb(fmt, framing, framing === 'otlp-proto' ? 20 : 40),
                fillers: fc.array(fillerArb, { minLength: 1, maxLength: 4 }),
                ctype: fc.constantFrom(...fmt.contentTypes),
                enc: fc.constantFrom(...ENCODINGS),
              }),
            ),
            async ({ framing, slots, fillers, ctype, enc }) => {
              const batch = buildBatch(fmt, slots, framing, fillers, ctype, nextUid);
              const headers: Record<string, string> = { 'content-type': batch.contentType };
              if (enc !== 'identity') headers['content-encoding'] = enc;
              const r = await fz.post(fmt.path, encode(batch.body, enc), headers);
              const what = `${fmt.name} ${framing} ${enc} slots=${JSON.stringify(slots.map((s) => s.kind[0]).join(''))}`;
              expectContract(r, what);
              expectBatchVerdict(fmt, batch.good, batch.bad, r, what);
            },
          ),
          fcParams(opts.seedOffset + 2 + FORMATS.indexOf(fmt), 60),
        );
        await expectHealthy(fz);
      }, 120_000);
    }

    it('answers random bytes and mutated valid protobuf on the OTLP endpoints', async () => {
      const mutation = fc.oneof(
        fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bits: fc.integer({ min: 1, max: 255 }) }),
        fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
        fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
        fc.record({ op: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 16 }) }),
      );
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            fc.record({ kind: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 4096 }) }),
            fc.record({ kind: fc.constant('mutated' as const), spans: fc.integer({ min: 1, max: 8 }), mutations: fc.array(mutation, { minLength: 1, maxLength: 6 }) }),
          ),
          fc.constantFrom('/v1/traces', '/v1/logs'),
          async (input, path) => {
            let body: Uint8Array;
            if (input.kind === 'random') body = input.bytes;
            else {
              const spans = Array.from({ length: input.spans }, () => OTLP_TRACES.good(nextUid(), { text: 'x', extra: null }));
              let b = Buffer.from(encodeTraceRequestProto(otlpRequest(OTLP_TRACES, spans)));
              for (const m of input.mutations) {
                const at = b.length === 0 ? 0 : m.at % b.length;
                if (m.op === 'flip') {
                  b = Buffer.from(b);
                  if (b.length > 0) b[at] = (b[at] as number) ^ m.bits;
                } else if (m.op === 'truncate') b = b.subarray(0, at);
                else if (m.op === 'insert') b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
                else b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]);
              }
              body = b;
            }
            const r = await fz.post(path, body, { 'content-type': 'application/x-protobuf' });
            const what = `${path} ${input.kind} (${body.length} bytes)`;
            expectContract(r, what);
            expect([200, 400], `${what}: ${r.text.slice(0, 200)}`).toContain(r.status);
            if (r.status === 400 && r.json) {
              // A body that does not decode: named as such.
              expect(String(r.json.error), what).toMatch(/^(body_invalid|otlp_protobuf_invalid)$/);
            } else {
              // Decoded: an OTLP protobuf answer that counts what was kept and what was refused.
              expect(r.headers.get('content-type'), what).toBe('application/x-protobuf');
              const accepted = r.headers.get('x-runtrail-accepted');
              const rejected = r.headers.get('x-runtrail-rejected');
              expect(accepted, what).toMatch(/^\d+$/);
              expect(rejected, what).toMatch(/^\d+$/);
              // 400 only when every record was refused; a mutated request holds at most its spans plus their task events.
              if (r.status === 400) expect([accepted, Number(rejected) > 0], what).toEqual(['0', true]);
              if (input.kind === 'mutated') expect(Number(accepted), what).toBeLessThanOrEqual(input.spans * 3);
            }
          },
        ),
        fcParams(opts.seedOffset + 9, 400),
      );
      await expectHealthy(fz);
    }, 120_000);

    it('gives each of many concurrent mixed batches its own exact verdict', async () => {
      const batchArb = fc.constantFrom(...FORMATS).chain((fmt) =>
        fc.constantFrom(...fmt.framings).chain((framing) =>
          fc.record({ fmt: fc.constant(fmt), framing: fc.constant(framing), slots: slotsArb(fmt, framing, 20), fillers: fc.array(fillerArb, { minLength: 1, maxLength: 2 }), ctype: fc.constantFrom(...fmt.contentTypes) }),
        ),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(batchArb, { minLength: 2, maxLength: 12 }), async (batches) => {
          const built = batches.map((b) => ({ ...b, batch: buildBatch(b.fmt, b.slots, b.framing, b.fillers, b.ctype, nextUid) }));
          const replies = await Promise.all(built.map((b) => fz.post(b.fmt.path, b.batch.body, { 'content-type': b.batch.contentType })));
          replies.forEach((r, i) => {
            const b = built[i] as (typeof built)[number];
            const what = `concurrent ${i}: ${b.fmt.name} ${b.framing}`;
            expectContract(r, what);
            expectBatchVerdict(b.fmt, b.batch.good, b.batch.bad, r, what);
          });
        }),
        fcParams(opts.seedOffset + 10, 20),
      );
      await expectHealthy(fz);
    }, 120_000);

    it('stores exactly what it acknowledged: nothing lost, nothing duplicated', async () => {
      expect(fz.acknowledged, "the mixed batches must have put many good records through").toBeGreaterThan(1000);
      await expectStoredExactly(fz);
    }, 120_000);
  });
}

/** Rejections of a reply: the JSON list, or for protobuf answers the indexes and fields in its message. */
function rejectionsOf(r: Reply): WireRejection[] {
  if (r.json && Array.isArray(r.json.rejected)) return r.json.rejected as WireRejection[];
  const out: WireRejection[] = [];
  for (const m of r.text.matchAll(/\[(\d+)\](?: field `([^`]*)`:)? ([^;]*)/g)) out.push({ index: Number(m[1]), field: m[2] ?? '', reason: m[3] ?? '' });
  return out;
}

function expectBatchVerdict(fmt: FuzzFormat, good: number, bad: ReadonlyMap<number, { field: string; truncated: boolean }>, r: Reply, what: string): void {
  const allTruncated = good === 0 && [...bad.values()].every((b) => b.truncated);
  if (allTruncated) {
    // Not one record could be read: the body as a whole is refused, saying why.
    expect(r.status, what).toBe(400);
    expect(r.json?.error, what).toBe('body_invalid');
    return;
  }
  expect(r.status, `${what}: ${r.text.slice(0, 300)}`).toBe(good > 0 ? 200 : 400);
  expect(Number(r.headers.get('x-runtrail-accepted')), `${what}: ${r.text.slice(0, 300)}`).toBe(good);
  if (r.json) expect(r.json.accepted, what).toBe(good);
  expect(Number(r.headers.get('x-runtrail-rejected')), `${what}: ${r.text.slice(0, 300)}`).toBe(bad.size);
  const rejected = rejectionsOf(r);
  expect(
    rejected.map((x) => x.index),
    `${what}: ${r.text.slice(0, 300)}`,
  ).toEqual([...bad.keys()].sort((a, b) => a - b));
  for (const x of rejected) {
    const want = bad.get(x.index);
    if (!want) continue;
    expect(x.reason.length, what).toBeGreaterThan(0);
    if (want.truncated) {
      expect(x.field, what).toBe('');
      expect(x.reason, what).toMatch(/not valid JSON/);
    } else if (fmt.pathFields) {
      expect(x.field.endsWith(`[${x.index}].${want.field}`) || x.field.endsWith(`.${want.field}`), `${what}: field ${x.field}, wanted …${want.field}`).toBe(true);
    } else {
      expect(x.field, `${what}: ${x.reason}`).toBe(want.field);
    }
  }
}
