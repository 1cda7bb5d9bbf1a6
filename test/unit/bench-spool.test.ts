import { mkdtempSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateTraffic, streamTraffic, type GeneratedBody, type TrafficOptions } from '../../services/bench/generator.ts';
import { SpoolFormatError, memorySource, spoolSource, writeSpool, type BodySource } from '../../services/bench/spool.ts';

const dir = mkdtempSync(join(tmpdir(), 'runtrail-spool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const OPTS: TrafficOptions = { seed: 5, openTasks: 300, eventsPerTask: 12, totalEvents: 20_000, startTime: Date.parse('2026-11-01T00:00:00Z') };

async function drain(source: BodySource, concurrency: number): Promise<GeneratedBody[]> {
  // Several consumers at once, as the bench's workers call it: each gets the next body in order.
  const out: Array<GeneratedBody | undefined> = [];
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const slot = i++;
        const b = await source.next();
        if (b === undefined) return;
        out[slot] = b;
      }
    }),
  );
  return out.filter((b): b is GeneratedBody => b !== undefined);
}

const fingerprint = (b: GeneratedBody) => ({ format: b.format, contentType: b.contentType, events: b.events, records: b.records, sentAt: b.sentAt, body: b.body.toString('base64') });

describe('streamed traffic', () => {
  it('hands out the bodies in arrival order, the same ones generateTraffic holds, with the same totals', () => {
    const streamed: GeneratedBody[] = [];
    const stats = streamTraffic(OPTS, (b) => void streamed.push(b));
    const whole = generateTraffic(OPTS);
    expect(stats).toEqual(whole.stats);
    expect(streamed.map(fingerprint)).toEqual(whole.bodies.map(fingerprint));
    expect(streamed.length).toBe(stats.bodies);
    expect(streamed.reduce((n, b) => n + b.events, 0)).toBe(stats.events);
    for (let i = 1; i < streamed.length; i++) expect((streamed[i] as GeneratedBody).sentAt).toBeGreaterThanOrEqual((streamed[i - 1] as GeneratedBody).sentAt);
  });
});

describe('spool', () => {
  it('reads back exactly the bodies written, in order, to concurrent readers', async () => {
    const file = join(dir, 'a.spool');
    const stats = writeSpool(file, OPTS);
    const source = await spoolSource(file, stats.bodies);
    expect(source.count).toBe(stats.bodies);
    const read = await drain(source, 4);
    await source.close();
    expect(read.map(fingerprint)).toEqual(generateTraffic(OPTS).bodies.map(fingerprint));
    const again = await spoolSource(file, stats.bodies);
    expect(fingerprint((await again.next()) as GeneratedBody)).toEqual(fingerprint(read[0] as GeneratedBody));
    await again.close();
  });

  it('a truncated spool fails with the byte offset of the damaged frame, after the whole frames before it', async () => {
    const file = join(dir, 'b.spool');
    const stats = writeSpool(file, OPTS);
    truncateSync(file, statSync(file).size - 10);
    const source = await spoolSource(file, stats.bodies);
    let whole = 0;
    const err = await (async () => {
      for (;;) {
        if ((await source.next()) === undefined) return undefined;
        whole++;
      }
    })().catch((e: unknown) => e);
    await source.close();
    expect(whole).toBe(stats.bodies - 1);
    expect(err).toBeInstanceOf(SpoolFormatError);
    expect(String((err as Error).message)).toMatch(/at byte \d+: truncated body/);
  });

  it('the memory source hands each body out once and forgets it', async () => {
    const { bodies } = generateTraffic({ ...OPTS, totalEvents: 2_000 });
    const copy = bodies.slice();
    const source = memorySource(bodies);
    const read = await drain(source, 3);
    expect(read).toEqual(copy);
    expect(bodies.every((b) => b === undefined)).toBe(true);
  });
});
