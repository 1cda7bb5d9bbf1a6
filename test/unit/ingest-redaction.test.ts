import { describe, expect, it } from 'vitest';
import { LocalBus } from '../../shared/bus/local-bus.ts';
import type { CanonicalEvent } from '../../shared/event.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { TOPIC } from '../../shared/names.ts';
import { RedactionPolicySchema } from '../../shared/redaction.ts';
import { ADAPTERS } from '../../services/collector/adapters/index.ts';
import { Ingestor } from '../../services/collector/ingest.ts';
import { SECRET_SAMPLES } from '../fixtures/secrets.ts';

/**
 * The ingestor redacts on every path to the bus: a body converted on the calling thread (the
 * distributed collector, no parse workers), a body converted by a parse worker (embedded), and
 * events handed to publish() directly (replay). What a subscriber reads holds no clear secret.
 */

const redaction = { key: 'unit-test-key-0123456789', policy: RedactionPolicySchema.parse({}) };
const records = SECRET_SAMPLES.map((s, i) => ({ source: 'agent', type: 'tool.call', time: 1_790_000_000_000 + i, task_id: 't-1', tool: { name: 'run', arguments: JSON.stringify({ cmd: s.text }) } }));
const body = Buffer.from(records.map((r) => JSON.stringify(r)).join('\n'));

async function published(parseWorkers: number, send: (i: Ingestor) => Promise<void>): Promise<string> {
  const bus = new LocalBus({ dir: null, fsync: false, maxBatch: 1000, maxBacklog: 10_000, segmentBytes: 1 << 20, log: silentLogger() });
  await bus.start();
  const seen: CanonicalEvent[] = [];
  await bus.subscribe({ topics: [TOPIC.eventsAgent], onBatch: async (b) => void seen.push(...b.messages.map((m) => m.value)) });
  const ingestor = new Ingestor(bus, new MetricsRegistry(), { parseWorkers, redaction });
  ingestor.start();
  try {
    await send(ingestor);
    const end = Date.now() + 5000;
    while (seen.length < records.length && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    expect(seen).toHaveLength(records.length);
    return JSON.stringify(seen);
  } finally {
    await ingestor.shutdown();
    await bus.shutdown();
  }
}

describe('ingestor redaction', () => {
  it.each([
    ['on the calling thread', 0],
    ['in a parse worker', 1],
  ])('redacts a body converted %s', async (_where, workers) => {
    const out = await published(workers, async (i) => void (await i.ingest(ADAPTERS.runtrail, body, 'application/x-ndjson')));
    for (const s of SECRET_SAMPLES) expect(out, s.kind).not.toContain(s.secret);
    expect(out).toContain('[REDACTED:hmac:');
  }, 20_000);

  it('redacts events published directly, without touching a frozen original', async () => {
    const events = ADAPTERS.runtrail.parse(body, 'application/x-ndjson').events.map((e) => Object.freeze(e));
    const out = await published(0, (i) => i.publish(events));
    for (const s of SECRET_SAMPLES) expect(out, s.kind).not.toContain(s.secret);
    expect(JSON.stringify(events)).toContain(SECRET_SAMPLES[0]?.secret);
  });
});
