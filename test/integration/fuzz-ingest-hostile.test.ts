import { request } from 'node:http';
import { brotliCompressSync, constants as zlibConstants, deflateSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_LISTED_REJECTIONS, MAX_RECORD_DEPTH } from '../../services/collector/adapters/adapter.ts';
import { expectContract, expectHealthy, expectStoredExactly, fcParams, MAX_BODY_BYTES, MAX_DECOMPRESSED_BYTES, startFuzzServer, type FuzzServer, type WireRejection } from '../fuzz/fuzz-harness.ts';
import { ENCODINGS, FORMATS, OTLP_LOGS, OTLP_TRACES, RUNTRAIL, buildBatch, encode, fillerArb, type Framing, type FuzzFormat, type Slot } from '../fuzz/fuzz-records.ts';

/**
 * Hostile input, part 2 (issue 7): bodies built to hurt, against the real embedded server.
 * Truncated valid bodies, records nested far deeper than any real one, huge strings and arrays
 * within the limits, wrongly encoded text, corrupt compressed streams and decompression bombs.
 * The server answers each with a documented status and a reason, keeps the good records of a
 * batch, stays healthy, and its memory stays bounded; at the end the store holds exactly what
 * was acknowledged.
 */

let fz: FuzzServer;
let uidSeq = 0;
const nextUid = (): string => `h${++uidSeq}`;

beforeAll(async () => {
  fz = await startFuzzServer();
}, 60_000);

afterAll(async () => {
  await fz?.stop();
});

const JSON_FORMATS = FORMATS.filter((f) => f !== OTLP_TRACES && f !== OTLP_LOGS);
const goods = (n: number): Slot[] => Array.from({ length: n }, () => ({ kind: 'good' }));
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const isUtf8 = (b: Uint8Array): boolean => {
  try {
    strictUtf8.decode(b);
    return true;
  } catch {
    return false;
  }
};

/** A format with one of its framings and content types. */
const formatFramingArb = (formats: readonly FuzzFormat[]) =>
  fc.constantFrom(...formats).chain((fmt) => fc.record({ fmt: fc.constant(fmt), framing: fc.constantFrom(...fmt.framings), ctype: fc.constantFrom(...fmt.contentTypes) }));

describe('hostile bodies', () => {
  it('answers a valid body cut at any byte, keeping every complete NDJSON line', async () => {
    await fc.assert(
      fc.asyncProperty(formatFramingArb(FORMATS), fc.integer({ min: 1, max: 12 }), fc.array(fillerArb, { minLength: 1, maxLength: 3 }), fc.constantFrom(...ENCODINGS), fc.nat(), async ({ fmt, framing, ctype }, n, fillers, enc, cutSeed) => {
        const batch = buildBatch(fmt, goods(n), framing, fillers, ctype, nextUid);
        const wire = encode(batch.body, enc);
        const cut = 1 + (cutSeed % (wire.length - 1));
        const sent = wire.subarray(0, cut);
        const headers: Record<string, string> = { 'content-type': batch.contentType };
        if (enc !== 'identity') headers['content-encoding'] = enc;
        const r = await fz.post(fmt.path, sent, headers);
        const what = `${fmt.name} ${framing} ${enc} cut at ${cut} of ${wire.length}`;
        expectContract(r, what);
        if (framing === 'otlp-proto') {
          // A protobuf prefix can end on a field boundary and decode; it may not do more.
          expect([200, 400], what).toContain(r.status);
          expect(Number(r.headers.get('x-runtrail-accepted') ?? 0), what).toBeLessThanOrEqual(n);
          return;
        }
        if (enc !== 'identity') {
          expect(r.status, `${what}: ${r.text}`).toBe(400);
          expect(r.json?.error, what).toBe('body_invalid');
          expect(String(r.json?.message), what).toMatch(new RegExp(`not valid ${enc}`));
          return;
        }
        if (!isUtf8(sent)) {
          // The cut split a multi-byte character: the body is not UTF-8, and the answer says where.
          expect(r.status, what).toBe(400);
          expect(String(r.json?.message), what).toMatch(/not valid UTF-8 \(first invalid byte near offset \d+\)/);
          return;
        }
        if (framing !== 'ndjson') {
          expect(r.status, `${what}: ${r.text}`).toBe(400);
          expect(r.json?.error, what).toBe('body_invalid');
          return;
        }
        const lines = Buffer.from(batch.body).toString('utf8').split('\n');
        const pieces = Buffer.from(sent).toString('utf8').split('\n').filter((p) => p.trim() !== '');
        const complete = pieces.filter((p, i) => p === lines[i]).length;
        const partial = pieces.length - complete;
        expect(partial, what).toBeLessThanOrEqual(1);
        if (complete === 0) {
          expect(r.status, what).toBe(400);
          expect(r.json?.error, what).toBe('body_invalid');
          return;
        }
        expect(r.status, `${what}: ${r.text}`).toBe(200);
        expect(r.json?.accepted, what).toBe(complete);
        const rejected = r.json?.rejected as WireRejection[];
        expect(rejected.map((x) => x.index), what).toEqual(partial === 1 ? [complete] : []);
        if (partial === 1) expect(rejected[0]?.reason, what).toMatch(/not valid JSON/);
      }),
      fcParams(21, 150),
    );
    await expectHealthy(fz);
  }, 120_000);

  it('rejects a record nested thousands of levels deep, naming the field, and keeps its neighbours', async () => {
    /** Where the nesting goes in each format's record, and the field the rejection must name. */
    const DEEP_FIELD: Record<string, { field: string; put: (rec: Record<string, unknown>, marker: string) => Record<string, unknown> }> = {
      cloudtrail: { field: 'additionalEventData', put: (r, m) => ({ ...r, additionalEventData: m }) },
      vault: { field: 'extra', put: (r, m) => ({ ...r, extra: m }) },
      'k8s-audit': { field: 'requestObject', put: (r, m) => ({ ...r, requestObject: m }) },
      falco: { field: 'output_fields', put: (r, m) => ({ ...r, output_fields: { ...(r.output_fields as object), nested: m } }) },
      spire: { field: 'extra', put: (r, m) => ({ ...r, extra: m }) },
      runtrail: { field: 'attributes', put: (r, m) => ({ ...r, attributes: { nested: m } }) },
      'otlp-traces': { field: 'stringValue', put: (r, m) => ({ ...r, attributes: [{ key: 'deep', value: { stringValue: m } }] }) },
      'otlp-logs': { field: 'body.stringValue', put: (r, m) => ({ ...r, body: { stringValue: m } }) },
    };
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...FORMATS),
        fc.integer({ min: 0, max: 6 }),
        fc.integer({ min: 0, max: 6 }),
        fc.integer({ min: MAX_RECORD_DEPTH + 1, max: 90_000 }),
        fc.constantFrom('array', 'object'),
        async (fmt, before, after, depth, shape) => {
          const MARKER = '__deep_marker__';
          const place = DEEP_FIELD[fmt.name] as (typeof DEEP_FIELD)[string];
          const filler = { text: 'deep', extra: null };
          const records = [
            ...Array.from({ length: before }, () => fmt.good(nextUid(), filler)),
            place.put(fmt.good(nextUid(), filler), MARKER),
            ...Array.from({ length: after }, () => fmt.good(nextUid(), filler)),
          ];
          const nest = shape === 'array' ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '0' + '}'.repeat(depth);
          const framing: Framing = fmt.pathFields ? 'otlp-json' : 'array';
          const text = JSON.stringify(framing === 'otlp-json' ? otlpJson(fmt, records) : records).replace(`"${MARKER}"`, () => nest);
          const r = await fz.post(fmt.path, gzipSync(text), { 'content-type': 'application/json', 'content-encoding': 'gzip' });
          const what = `${fmt.name} depth ${depth} ${shape} at ${before} of ${before + 1 + after}`;
          expectContract(r, what);
          expect(r.status, `${what}: ${r.text.slice(0, 300)}`).toBe(before + after > 0 ? 200 : 400);
          expect(r.json?.accepted, what).toBe(before + after);
          const rejected = r.json?.rejected as WireRejection[];
          expect(rejected.map((x) => x.index), what).toEqual([before]);
          const [x] = rejected;
          expect(x?.field === place.field || x?.field.endsWith(`.${place.field}`), `${what}: field ${x?.field}`).toBe(true);
          expect(x?.reason, what).toMatch(/nested deeper than \d+ levels/);
        },
      ),
      fcParams(22, 40),
    );
    await expectHealthy(fz);
  }, 120_000);

  it('stores records nested just within the bound, and refuses a body that is nothing but nesting', async () => {
    // The record is level 1 and `attributes` level 2: `nested` may hold MAX_RECORD_DEPTH - 2 more.
    for (const depth of [1, 10, MAX_RECORD_DEPTH - 2, MAX_RECORD_DEPTH - 1]) {
      const rec = RUNTRAIL.good(nextUid(), { text: 'depth', extra: null });
      const text = JSON.stringify({ ...rec, attributes: { nested: '__m__' } }).replace('"__m__"', () => '['.repeat(depth) + ']'.repeat(depth));
      const r = await fz.post(RUNTRAIL.path, text);
      expectContract(r, `depth ${depth}`);
      expect(r.json?.accepted, `depth ${depth}: ${r.text}`).toBe(depth <= MAX_RECORD_DEPTH - 2 ? 1 : 0);
    }
    for (const fmt of FORMATS) {
      for (const nest of ['['.repeat(60_000) + ']'.repeat(60_000), '{"a":'.repeat(40_000) + '1' + '}'.repeat(40_000), '['.repeat(60_000)]) {
        const r = await fz.post(fmt.path, gzipSync(nest), { 'content-type': 'application/json', 'content-encoding': 'gzip' });
        expectContract(r, `${fmt.name} bare nesting`);
        // OTLP ignores unknown fields, so a bare object is an empty request there; elsewhere it is a bad record.
        const emptyOtlp = fmt.pathFields === true && nest.startsWith('{');
        expect(r.status, `${fmt.name}: ${r.text.slice(0, 200)}`).toBe(emptyOtlp ? 200 : 400);
        expect(r.json?.accepted).toBe(0);
        if (emptyOtlp) expect(r.json?.records).toBe(0);
        else if (Array.isArray(r.json?.rejected) && r.json.rejected.length > 0) expect(String((r.json.rejected as WireRejection[])[0]?.reason)).toMatch(/nested deeper|expected/);
      }
    }
    await expectHealthy(fz);
  }, 120_000);

  it('keeps records carrying huge strings and arrays within the limits, and lists a huge number of rejections', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 180_000 }), fc.integer({ min: 0, max: 20_000 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 4 }), async (strLen, arrLen, unit) => {
        const rec = RUNTRAIL.good(nextUid(), { text: 'huge', extra: null });
        const big = unit.repeat(Math.ceil(strLen / unit.length)).slice(0, strLen);
        const body = JSON.stringify([{ ...rec, attributes: { big, list: Array.from({ length: arrLen }, (_, i) => i) } }]);
        const r = await fz.post(RUNTRAIL.path, gzipSync(body), { 'content-type': 'application/json', 'content-encoding': 'gzip' });
        const what = `string ${strLen} array ${arrLen}`;
        expectContract(r, what);
        if (Buffer.byteLength(body) > MAX_DECOMPRESSED_BYTES) {
          expect(r.status, what).toBe(413);
          return;
        }
        expect(r.status, `${what}: ${r.text.slice(0, 200)}`).toBe(200);
        expect(r.json?.accepted, what).toBe(1);
      }),
      fcParams(23, 15),
    );
    // 400 000 records that are not objects (a 1 KiB gzip body): the first MAX_LISTED_REJECTIONS
    // are listed, all are counted, none accepted.
    const many = `[${Array.from({ length: 400_000 }, () => '1').join(',')}]`;
    const r = await fz.post('/v1/ingest/falco', gzipSync(many), { 'content-type': 'application/json', 'content-encoding': 'gzip' });
    expectContract(r, 'many bad records');
    expect(r.status).toBe(400);
    const rejected = r.json?.rejected as WireRejection[];
    expect(rejected).toHaveLength(MAX_LISTED_REJECTIONS);
    expect(rejected[MAX_LISTED_REJECTIONS - 1]).toEqual({ index: MAX_LISTED_REJECTIONS - 1, field: '', reason: 'expected an object, got number' });
    expect(r.json?.rejected_total).toBe(400_000);
    expect(r.headers.get('x-runtrail-rejected')).toBe('400000');
    // Over the wire limit, uncompressed: 413 naming the setting.
    const over = await fz.post(RUNTRAIL.path, 'x'.repeat(MAX_BODY_BYTES + 1));
    expect(over.status).toBe(413);
    expect(String(over.json?.message)).toMatch(/collector\.maxBodyBytes/);
    await expectHealthy(fz);
  }, 120_000);

  it('refuses text that is not UTF-8 (UTF-16 with BOM, latin-1, stray bytes) saying where, and accepts a UTF-8 BOM', async () => {
    await fc.assert(
      fc.asyncProperty(formatFramingArb(JSON_FORMATS), fc.integer({ min: 1, max: 6 }), fc.constantFrom('utf16le-bom', 'utf16be-bom', 'latin1', 'stray-byte', 'utf8-bom'), fc.nat(), fc.constantFrom(0x80, 0xc0, 0xff, 0xfe, 0xed), async ({ fmt, framing, ctype }, n, charset, at, stray) => {
        const batch = buildBatch(fmt, goods(n), framing, [{ text: 'café naïve 東京 😀', extra: 'ß' }], ctype, nextUid);
        const text = Buffer.from(batch.body).toString('utf8');
        let body: Buffer;
        switch (charset) {
          case 'utf16le-bom':
            body = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
            break;
          case 'utf16be-bom':
            body = Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from(text, 'utf16le').swap16()]);
            break;
          case 'latin1':
            body = Buffer.from(text, 'latin1');
            break;
          case 'stray-byte': {
            const b = Buffer.from(batch.body);
            const i = at % (b.length + 1);
            body = Buffer.concat([b.subarray(0, i), Buffer.from([stray]), b.subarray(i)]);
            break;
          }
          case 'utf8-bom':
            body = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(batch.body)]);
            break;
        }
        const r = await fz.post(fmt.path, body, { 'content-type': `${batch.contentType}; charset=${charset.startsWith('utf16') ? 'utf-16' : 'iso-8859-1'}` });
        const what = `${fmt.name} ${framing} ${charset}`;
        expectContract(r, what);
        if (charset === 'utf8-bom') {
          expect(r.status, `${what}: ${r.text.slice(0, 200)}`).toBe(200);
          expect(r.json?.accepted, what).toBe(n);
          return;
        }
        expect(r.status, `${what}: ${r.text.slice(0, 200)}`).toBe(400);
        expect(r.json?.error, what).toBe('body_invalid');
        expect(String(r.json?.message), what).toMatch(/not valid UTF-8 \(first invalid byte near offset \d+\)/);
      }),
      fcParams(24, 80),
    );
    await expectHealthy(fz);
  }, 120_000);

  it('refuses corrupt gzip, deflate and brotli streams with 400 naming the encoding', async () => {
    const HEADERS: Record<string, Uint8Array> = { gzip: Buffer.from([0x1f, 0x8b, 0x08, 0x00]), deflate: Buffer.from([0x78, 0x9c]), br: Buffer.alloc(0) };
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('gzip', 'deflate', 'br'), fc.uint8Array({ minLength: 1, maxLength: 2048 }), fc.constantFrom(...FORMATS), async (enc, garbage, fmt) => {
        const body = Buffer.concat([HEADERS[enc] as Uint8Array, garbage]);
        const r = await fz.post(fmt.path, body, { 'content-type': 'application/json', 'content-encoding': enc });
        const what = `${fmt.name} ${enc} garbage of ${garbage.length}`;
        expectContract(r, what);
        // A random byte string is, rarely, a valid brotli stream; what it decodes to is then judged as
        // JSON. gzip and zlib streams end in a checksum, which random bytes do not match.
        if (enc === 'br') expect([400, 200], what).toContain(r.status);
        else {
          expect(r.status, what).toBe(400);
          expect(r.json?.error, what).toBe('body_invalid');
          expect(String(r.json?.message), what).toMatch(new RegExp(`not valid ${enc}`));
        }
      }),
      fcParams(25, 150),
    );
    await expectHealthy(fz);
  }, 120_000);

  it('answers decompression bombs with 413 without its memory growing by more than a bound', async () => {
    const BOMB_BYTES = 96 * 1024 * 1024;
    const zeros = Buffer.alloc(BOMB_BYTES, 0x20);
    const bombs: Record<string, Buffer> = {
      gzip: gzipSync(zeros, { level: 9 }),
      deflate: deflateSync(zeros, { level: 9 }),
      br: brotliCompressSync(zeros, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 4 } }),
      // Several gzip members back to back: decoders must count all of them against the limit.
      'gzip-members': Buffer.concat(Array.from({ length: 3 }, () => gzipSync(Buffer.alloc(MAX_DECOMPRESSED_BYTES, 0x20), { level: 9 }))),
    };
    for (const b of Object.values(bombs)) expect(b.length).toBeLessThan(MAX_BODY_BYTES);
    // Exactly at the limit is allowed (whitespace: an empty batch); one byte more is not.
    const edge = await fz.post(RUNTRAIL.path, gzipSync(Buffer.alloc(MAX_DECOMPRESSED_BYTES, 0x20)), { 'content-type': 'application/json', 'content-encoding': 'gzip' });
    expect(edge.status, edge.text).toBe(200);
    const past = await fz.post(RUNTRAIL.path, gzipSync(Buffer.alloc(MAX_DECOMPRESSED_BYTES + 1, 0x20)), { 'content-type': 'application/json', 'content-encoding': 'gzip' });
    expect(past.status, past.text).toBe(413);

    const rssBefore = process.memoryUsage().rss;
    for (let round = 0; round < 4; round++) {
      const replies = await Promise.all(
        Object.entries(bombs).flatMap(([name, body]) =>
          FORMATS.map(async (fmt) => ({ name, fmt: fmt.name, r: await fz.post(fmt.path, body, { 'content-type': 'application/json', 'content-encoding': name === 'gzip-members' ? 'gzip' : name }) })),
        ),
      );
      for (const { name, fmt, r } of replies) {
        expectContract(r, `${name} bomb to ${fmt}`);
        expect(r.status, `${name} bomb to ${fmt}: ${r.text}`).toBe(413);
        expect(String(r.json?.message)).toMatch(/decompressed body exceeds the limit of \d+ bytes \(collector\.maxDecompressedBytes\)/);
      }
    }
    const grew = process.memoryUsage().rss - rssBefore;
    // 112 bombs of 96 MiB each: inflating even one of them whole would exceed this bound.
    expect(grew, `RSS grew by ${Math.round(grew / 1048576)} MiB`).toBeLessThan(256 * 1024 * 1024);
    await expectHealthy(fz);
  }, 180_000);

  it('answers any method on any path with a documented status and a JSON reason', async () => {
    const paths = [...FORMATS.map((f) => f.path), '/healthz', '/readyz', '/v1', '/v1/ingest', '/v1/ingest/', '/v1/traces/', '/v1/events?x=1', '/%2e%2e/etc/passwd', '/v1/ingest/%ff'];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('GET', 'PUT', 'DELETE', 'PATCH', 'POST', 'OPTIONS'), fc.oneof(fc.constantFrom(...paths), fc.webPath()), async (method, path) => {
        const res = await fetch(`${fz.base}${path.startsWith('/') ? path : `/${path}`}`, { method, body: method === 'GET' ? undefined : '{}', headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(10_000) });
        const text = await res.text();
        const what = `${method} ${path}`;
        expect([200, 400, 404, 405], `${what}: ${res.status} ${text.slice(0, 200)}`).toContain(res.status);
        if (res.status === 404 || res.status === 405) {
          const body = JSON.parse(text) as { error?: string; message?: string };
          expect(body.error, what).toBe(res.status === 404 ? 'not_found' : 'method_not_allowed');
          expect(body.message, what).toBeTruthy();
        }
        if (res.status === 405) expect(res.headers.get('allow'), what).toBeTruthy();
      }),
      fcParams(26, 150),
    );
    await expectHealthy(fz);
  }, 120_000);

  it('survives uploads cut off mid-body and bodies that lie about their length', async () => {
    const url = new URL(fz.base);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...FORMATS), fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 1, max: MAX_BODY_BYTES }), fc.boolean(), async (fmt, sentBytes, declared, chunked) => {
        await new Promise<void>((resolve) => {
          const headers: Record<string, string | number> = { 'content-type': 'application/json' };
          if (!chunked) headers['content-length'] = Math.max(declared, sentBytes + 1);
          const req = request({ host: url.hostname, port: url.port, path: fmt.path, method: 'POST', headers });
          req.on('error', () => resolve());
          req.on('response', (res) => {
            res.resume();
            res.on('end', () => resolve());
          });
          req.write(Buffer.alloc(sentBytes, 0x7b));
          // The client goes away before the body is complete.
          setImmediate(() => {
            req.destroy();
            resolve();
          });
        });
      }),
      fcParams(27, 60),
    );
    await expectHealthy(fz);
    // And the server still does its job.
    const batch = buildBatch(RUNTRAIL, goods(3), 'ndjson', [{ text: 'after aborts', extra: null }], 'application/x-ndjson', nextUid);
    const r = await fz.post(RUNTRAIL.path, batch.body, { 'content-type': batch.contentType });
    expect(r.json?.accepted).toBe(3);
  }, 120_000);

  it('stores exactly what it acknowledged: nothing lost, nothing duplicated', async () => {
    expect(fz.acknowledged).toBeGreaterThan(200);
    await expectStoredExactly(fz);
  }, 120_000);
});

/** One OTLP/JSON request with `records` as the spans or log records of a single scope. */
function otlpJson(fmt: FuzzFormat, records: readonly unknown[]): Record<string, unknown> {
  const resource = { attributes: [{ key: 'service.name', value: { stringValue: 'fuzz-agent' } }] };
  if (fmt === OTLP_LOGS) return { resourceLogs: [{ resource, scopeLogs: [{ scope: { name: 'fuzz' }, logRecords: records }] }] };
  return { resourceSpans: [{ resource, scopeSpans: [{ scope: { name: 'fuzz' }, spans: records }] }] };
}
