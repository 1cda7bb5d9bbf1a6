import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logger.ts';
import { startEmbedded, type EmbeddedServer } from '../../services/embedded.ts';
import { agentTrace, stsScenario } from '../fixtures/scenario.ts';
import { connectedProducer, kafkaConfig, runId, waitFor } from './helpers.ts';

/**
 * `runtrail start` with `kafka.brokers` set: the whole pipeline in one process on a real broker,
 * taking records both over HTTP and from a raw shipper topic (`kafka.rawTopics`), and joining them
 * into one task's timeline in the embedded ClickHouse engine.
 */

const run = runId();
let dir: string;
let server: EmbeddedServer;
const rawTopic = `${run}.shipper.cloudtrail`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-embedded-kafka-'));
  const cfg = kafkaConfig(run, dir, { api: { port: 0 }, kafka: { rawTopics: { cloudtrail: rawTopic } } });
  server = await startEmbedded(cfg, silentLogger());
}, 60_000);

afterAll(async () => {
  await server?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('embedded mode on a real Kafka broker', () => {
  it('joins an agent trace POSTed over HTTP with CloudTrail records a shipper wrote to a raw topic', async () => {
    const task = `${run}-task`;
    const key = 'ASIAEMBEDDEDKAFKA001';
    const res = await fetch(`${server.http.url}/v1/traces`, { method: 'POST', body: JSON.stringify(agentTrace({ trace: 'b2'.repeat(16), task })), headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(200);
    const producer = await connectedProducer(`${run}-shipper`);
    await producer.send({ topic: rawTopic, acks: -1, messages: [{ value: JSON.stringify(stsScenario({ task, key, idPrefix: `${run}-ct-` })) }] });
    await producer.disconnect();
    const tl = await waitFor(() => server.pipeline.store.timeline(task), (rows) => rows.length >= 5, 60_000);
    expect(tl.map((e) => [e.type, e.format])).toEqual([
      ['task.started', 'otlp-traces'],
      ['tool.call', 'otlp-traces'],
      ['credential.issued', 'cloudtrail'],
      ['resource.access', 'cloudtrail'],
      ['task.ended', 'otlp-traces'],
    ]);
    expect(tl.find((e) => e.type === 'resource.access')).toMatchObject({ credential_id: key, attribution: 'credential' });
  }, 120_000);
});
