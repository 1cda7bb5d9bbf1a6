import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KafkaBus } from '../../shared/bus/kafka-bus.ts';
import type { Config } from '../../shared/config.ts';
import { CanonicalEventSchema } from '../../shared/event.ts';
import { eventId } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { CorrelatorStage } from '../../services/correlator/correlator-stage.ts';
import { startCollectorService, type RunningService } from '../../services/services.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';
import { agentTrace, stsScenario } from '../fixtures/scenario.ts';
import { brokers, kafkaConfig, runId, waitFor } from './helpers.ts';

/**
 * Distributed mode on a real broker, in one process: the collector service (HTTP -> Kafka), a
 * correlator stage on a KafkaBus, and the real ClickHouse engine (chDB).
 */

const run = runId();
let dir: string;
let cfg: Readonly<Config>;
let collector: RunningService;
let store: ClickHouseStore;
let bus: KafkaBus;
let stage: CorrelatorStage;
let producer: Producer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-kafka-'));
  cfg = kafkaConfig(run, dir);
  const log = silentLogger();
  collector = await startCollectorService(cfg, log);
  store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, new MetricsRegistry());
  await store.start();
  bus = new KafkaBus({ kafka: cfg.kafka, log });
  await bus.start();
  stage = new CorrelatorStage({ bus, store, cfg: cfg.correlator, log, metrics: new MetricsRegistry(), tickMs: 250 });
  await stage.start();
  producer = new Kafka({ clientId: `${run}-raw`, brokers: brokers(), logLevel: logLevel.NOTHING }).producer();
  await producer.connect();
});

afterAll(async () => {
  await producer?.disconnect();
  await stage?.shutdown();
  await bus?.shutdown();
  await collector?.shutdown();
  await store?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

async function post(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${collector.http.url}${path}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('distributed mode on a real Kafka broker', () => {
  it('HTTP ingest -> Kafka -> correlator -> ClickHouse: OTLP and CloudTrail join into one ordered timeline', async () => {
    const task = `${run}-task-e2e`;
    const key = 'ASIAKAFKAE2E00000001';
    expect((await post('/v1/traces', agentTrace({ trace: 'a1'.repeat(16), task }))).json.accepted).toBe(3);
    expect((await post('/v1/ingest/cloudtrail', stsScenario({ task, key, idPrefix: `${run}-e2e-` }))).json.accepted).toBe(2);
    const tl = await waitFor(() => store.timeline(task), (rows) => rows.length >= 5);
    expect(tl.map((e) => e.type)).toEqual(['task.started', 'tool.call', 'credential.issued', 'resource.access', 'task.ended']);
    expect(tl.find((e) => e.type === 'resource.access')).toMatchObject({ credential_id: key, attribution: 'credential' });
  });

  it('a resource event whose binding arrives later on another partition still lands in the right task', async () => {
    const task = `${run}-task-late-binding`;
    const key = 'ASIAKAFKALATE0000001';
    const mk = (o: Record<string, unknown>) => JSON.stringify(CanonicalEventSchema.parse({ format: 'runtrail', ingested_at: Date.now(), ...o }));
    const use = { event_id: eventId('t', run, 'use'), source: 'resource', type: 'resource.access', time: Date.parse('2026-05-02T10:00:10Z'), credential_id: key, action: 's3:GetObject' };
    const issue = {
      event_id: eventId('t', run, 'issue'),
      source: 'resource',
      type: 'credential.issued',
      time: Date.parse('2026-05-02T10:00:00Z'),
      credential_id: 'AKIALONGLIVEDCALLER1',
      credential: { id: key, kind: 'aws-access-key', session_name: 's', tags: { 'runtrail.task.id': task } },
    };
    // A shipper writing straight to Kafka: the use first, on partition 1; the issuance 2 s later on partition 4.
    const topic = cfg.kafka.topics['events.resource'];
    await producer.send({ topic, acks: -1, messages: [{ partition: 1, key: 'x', value: mk(use) }] });
    await new Promise((r) => setTimeout(r, 2000));
    expect(await store.timeline(task)).toHaveLength(0);
    await producer.send({ topic, acks: -1, messages: [{ partition: 4, key: 'y', value: mk(issue) }] });
    const tl = await waitFor(() => store.timeline(task), (rows) => rows.length >= 2);
    expect(tl.map((e) => [e.type, e.attribution, e.join_key])).toEqual([
      ['credential.issued', 'direct', `runtrail.task.id=${task}`],
      ['resource.access', 'credential', key],
    ]);
  });

  it('a poison record goes to the dead-letter table with its reason and later records on its partition are processed', async () => {
    const task = `${run}-task-after-poison`;
    const topic = cfg.kafka.topics['events.agent'];
    const good = JSON.stringify(
      CanonicalEventSchema.parse({ event_id: eventId('t', run, 'good'), source: 'agent', type: 'model.call', time: Date.parse('2026-05-02T11:00:00Z'), format: 'runtrail', task_id: task }),
    );
    await producer.send({
      topic,
      acks: -1,
      messages: [
        { partition: 2, key: 'p', value: '{"event_id": "not-hex", "source": "agent"' },
        { partition: 2, key: 'p', value: JSON.stringify({ event_id: 'f'.repeat(32), source: 'agent', type: 'no.such.type', time: 1, format: 'runtrail' }) },
        { partition: 2, key: 'p', value: good },
      ],
    });
    const tl = await waitFor(() => store.timeline(task), (rows) => rows.length >= 1);
    expect(tl).toHaveLength(1);
    const dead = await waitFor(
      () => store.querySql(`SELECT topic, partition, reason, payload FROM dead_letters WHERE stage = 'correlator' AND partition = 2 ORDER BY offset`),
      (rows) => rows.length >= 2,
    );
    expect(dead).toHaveLength(2);
    expect(String(dead[0]?.reason)).toMatch(/not JSON/);
    expect(String(dead[1]?.reason)).toMatch(/field `type`/);
    expect(String(dead[0]?.payload)).toContain('not-hex');
  });

  it('a tool result over Kafka\'s 1 MiB message limit is cut to collector.maxEventBytes, not refused with the rest of its batch', async () => {
    const task = `${run}-task-huge`;
    const trace = agentTrace({ trace: 'e5'.repeat(16), task });
    for (const span of trace.resourceSpans[0]?.scopeSpans[0]?.spans ?? []) {
      for (const a of span.attributes) if (a.key === 'gen_ai.tool.call.result') a.value = { stringValue: 'line of a large file\n'.repeat(150_000) };
    }
    const r = await post('/v1/traces', trace);
    expect(r.status).toBe(200);
    expect(r.json.accepted).toBe(3);
    const tl = await waitFor(() => store.timeline(task), (rows) => rows.length >= 3);
    expect(tl.map((e) => e.type)).toEqual(['task.started', 'tool.call', 'task.ended']);
    const call = tl[1];
    expect(call?.tool?.result).toMatch(/…\[truncated: 3150000 chars\]$/);
    expect(Buffer.byteLength(JSON.stringify(call))).toBeLessThanOrEqual(cfg.collector.maxEventBytes + 4096);
    expect(call?.attributes['runtrail.truncated']).toMatchObject({ 'tool.result': 3_150_000 });
  });

  it('events of multi-byte text, each within the bound, are sent in requests the broker takes (sized in bytes)', async () => {
    const task = `${run}-task-cjk`;
    const trace = agentTrace({ trace: 'f6'.repeat(16), task });
    const spans = trace.resourceSpans[0]?.scopeSpans[0]?.spans ?? [];
    const tool = spans.find((sp) => sp.attributes.some((a) => a.key === 'gen_ai.tool.call.result'));
    // Three tool calls of 75,000 CJK characters (kept twice per event: the result and its
    // attribute): ~450 KB of UTF-8 an event, within collector.maxEventBytes, but three times what
    // their length in characters says, so together over the broker's 1 MiB request limit.
    const text = '数据'.repeat(37_500);
    if (!tool) throw new Error('fixture has no tool span');
    for (const a of tool.attributes) if (a.key === 'gen_ai.tool.call.result') a.value = { stringValue: text };
    const more = [1, 2].map((n) => ({ ...tool, spanId: `${tool.spanId.slice(0, 14)}0${n}`, attributes: tool.attributes.map((a) => ({ ...a })) }));
    spans.push(...more);
    const r = await post('/v1/traces', trace);
    expect(r.status).toBe(200);
    expect(r.json.accepted).toBe(5);
    const tl = await waitFor(() => store.timeline(task), (rows) => rows.length >= 5);
    const calls = tl.filter((e) => e.type === 'tool.call');
    expect(calls).toHaveLength(3);
    for (const c of calls) expect(c.tool?.result).toBe(text);
  });

  it('the collector reports readiness and its metrics', async () => {
    const ready = await fetch(`${collector.http.url}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`${collector.http.url}/metrics`)).text();
    expect(metrics).toMatch(/runtrail_collector_accepted_total\{format="otlp-traces"\} 11/);
  });
});
