import { describe, expect, it } from 'vitest';
import { LocalBus } from '../../shared/bus/local-bus.ts';
import { CanonicalEventSchema, type CanonicalEvent } from '../../shared/event.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { TOPIC } from '../../shared/names.ts';
import { ADAPTERS } from '../../services/collector/adapters/index.ts';
import { MAX_LIST_ENTRIES, TRUNCATED_ATTRIBUTE, fitEvent } from '../../services/collector/event-size.ts';
import { Ingestor } from '../../services/collector/ingest.ts';
import { agentTrace } from '../fixtures/scenario.ts';

/**
 * The size bound on published events (`collector.maxEventBytes`): an event over it keeps its ids
 * and keys, has its longest texts cut with a visible mark and a list of what was cut, and always
 * ends up within the bound, whatever the characters; an event under it is left alone.
 */

const MAX = 64 * 1024;

function event(o: Record<string, unknown> = {}): CanonicalEvent {
  return CanonicalEventSchema.parse({
    event_id: 'a'.repeat(32),
    source: 'agent',
    type: 'tool.call',
    time: 1_780_000_000_000,
    format: 'runtrail',
    task_id: 'task-big',
    credential_id: 'ASIABIGEVENT00000001',
    tool: { name: 'read_file', arguments: '{"path":"/data/dump.csv"}', result: 'ok' },
    ...o,
  });
}

const bytes = (s: string) => Buffer.byteLength(s);
const hasLoneSurrogate = (s: string) => /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

describe('fitEvent', () => {
  it('leaves an event within the bound untouched', () => {
    const e = event();
    const line = JSON.stringify(e);
    expect(fitEvent(e, line, MAX)).toBe(line);
    expect(e.attributes[TRUNCATED_ATTRIBUTE]).toBeUndefined();
  });

  it('cuts the longest texts of an event over the bound, marks them, and keeps its ids and keys', () => {
    const result = `id,amount\n${'1234,56.78\n'.repeat(30_000)}`;
    const e = event({ tool: { name: 'read_file', arguments: '{"path":"/data/dump.csv"}', result }, attributes: { 'gen_ai.tool.call.result': result, 'service.name': 'agent' } });
    const line = fitEvent(e, JSON.stringify(e), MAX);
    expect(bytes(line)).toBeLessThanOrEqual(MAX);
    const back = CanonicalEventSchema.parse(JSON.parse(line));
    expect(back).toMatchObject({ event_id: 'a'.repeat(32), task_id: 'task-big', credential_id: 'ASIABIGEVENT00000001', tool: { name: 'read_file', arguments: '{"path":"/data/dump.csv"}' } });
    expect(back.tool?.result?.startsWith('id,amount\n1234,56.78\n')).toBe(true);
    expect(back.tool?.result).toMatch(new RegExp(`…\\[truncated: ${result.length} chars\\]$`));
    expect(back.attributes['service.name']).toBe('agent');
    expect(back.attributes[TRUNCATED_ATTRIBUTE]).toEqual({ 'tool.result': result.length, 'attributes.gen_ai.tool.call.result': result.length });
    // The cap is common and as large as fits: the two equal texts keep equal prefixes of many KiB.
    expect(back.tool?.result?.length).toBeGreaterThan(20_000);
  });

  it('fits texts of multi-byte characters and JSON escapes, never splitting a character', () => {
    const emoji = '🛡️'.repeat(40_000);
    const control = '\u0001'.repeat(40_000);
    const e = event({ messages: { input: emoji, output: control }, tool: { name: 'x', result: `é${emoji}` } });
    const line = fitEvent(e, JSON.stringify(e), MAX);
    expect(bytes(line)).toBeLessThanOrEqual(MAX);
    const back = CanonicalEventSchema.parse(JSON.parse(line));
    for (const s of [back.messages?.input, back.messages?.output, back.tool?.result]) {
      expect(s).toMatch(/…\[truncated: \d+ chars\]$/);
      expect(hasLoneSurrogate(s as string)).toBe(false);
    }
  });

  it('drops the original attributes, then long lists, when cutting texts is not enough', () => {
    const attributes = Object.fromEntries(Array.from({ length: 5_000 }, (_, i) => [`k${i}`, `value-${i}-${'x'.repeat(100)}`]));
    const resources = Array.from({ length: 2_000 }, (_, i) => ({ type: 'AWS::S3::Object', id: `arn:aws:s3:::bucket/${'p'.repeat(200)}/${i}` }));
    const e = event({ attributes, resources });
    const line = fitEvent(e, JSON.stringify(e), MAX);
    expect(bytes(line)).toBeLessThanOrEqual(MAX);
    const back = CanonicalEventSchema.parse(JSON.parse(line));
    expect(back.attributes[TRUNCATED_ATTRIBUTE]).toEqual({ attributes: 5_000, resources: 2_000 });
    expect(Object.keys(back.attributes)).toEqual([TRUNCATED_ATTRIBUTE]);
    expect(back.resources.length).toBeGreaterThan(0);
    expect(back.resources.length).toBeLessThanOrEqual(MAX_LIST_ENTRIES);
    expect(back.resources[0]?.id).toBe(resources[0]?.id);
  });
});

describe('fitEvent on maps', () => {
  it('drops session tags and tool annotations, which have no texts to cut, when nothing else is enough', () => {
    const tags = Object.fromEntries(Array.from({ length: 3_000 }, (_, i) => [`tag-${i}`, `v${i}`.padEnd(40, 'x')]));
    const annotations = Object.fromEntries(Array.from({ length: 3_000 }, (_, i) => [`hint${i}`.padEnd(30, 'h'), true]));
    const e = event({
      type: 'credential.issued',
      credential: { id: 'ASIATAGS000000000001', kind: 'aws-access-key', tags },
      tool: { name: 'x', annotations },
    });
    const line = fitEvent(e, JSON.stringify(e), MAX);
    expect(bytes(line)).toBeLessThanOrEqual(MAX);
    const back = CanonicalEventSchema.parse(JSON.parse(line));
    expect(back.credential).toEqual({ id: 'ASIATAGS000000000001', kind: 'aws-access-key' });
    expect(back.attributes[TRUNCATED_ATTRIBUTE]).toEqual({ 'credential.tags': 3_000, 'tool.annotations': 3_000 });
  });
});

describe('the collector publishes events within collector.maxEventBytes', () => {
  /** An OTLP trace whose tool span returned `size` characters. */
  function bigTrace(size: number): Buffer {
    const trace = agentTrace({ trace: 'd4'.repeat(16), task: 'task-huge-result' });
    const spans = trace.resourceSpans[0]?.scopeSpans[0]?.spans ?? [];
    for (const span of spans) for (const a of span.attributes) if (a.key === 'gen_ai.tool.call.result') a.value = { stringValue: 'row;'.repeat(size / 4) };
    return Buffer.from(JSON.stringify(trace));
  }

  for (const parseWorkers of [0, 1]) {
    it(`cuts a 2 MB tool result and keeps the rest of the body (${parseWorkers === 0 ? 'main thread' : 'parse worker'})`, async () => {
      const bus = new LocalBus({ dir: null, fsync: false, maxBatch: 100, maxBacklog: 1000, segmentBytes: 1 << 20, log: silentLogger() });
      await bus.start();
      const published: CanonicalEvent[] = [];
      await bus.subscribe({ topics: [TOPIC.eventsAgent], fromBeginning: true, onBatch: async (b) => void published.push(...b.messages.map((m) => m.value)) });
      const ingestor = new Ingestor(bus, new MetricsRegistry(), { parseWorkers, maxEventBytes: MAX });
      ingestor.start();
      try {
        const r = await ingestor.ingest(ADAPTERS['otlp-traces'], bigTrace(2_000_000), 'application/json');
        expect(r).toMatchObject({ accepted: 3, rejectedCount: 0 });
        const end = Date.now() + 5000;
        while (published.length < 3 && Date.now() < end) await new Promise((res) => setTimeout(res, 10));
        expect(published.map((e) => e.type).sort()).toEqual(['task.ended', 'task.started', 'tool.call']);
        const call = published.find((e) => e.type === 'tool.call') as CanonicalEvent;
        expect(bytes(JSON.stringify(call))).toBeLessThanOrEqual(MAX);
        expect(call.tool?.result).toMatch(/^row;row;.*…\[truncated: 2000000 chars\]$/s);
        expect(call.attributes[TRUNCATED_ATTRIBUTE]).toMatchObject({ 'tool.result': 2_000_000 });
        expect(call.task_id).toBe('task-huge-result');
      } finally {
        await ingestor.shutdown();
        await bus.shutdown();
      }
    });
  }
});
