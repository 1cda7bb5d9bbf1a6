import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../shared/config.ts';
import { KafkaBus } from '../../shared/bus/kafka-bus.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { CorrelatorStage } from '../../services/correlator/correlator-stage.ts';
import { startCollectorService, type RunningService } from '../../services/services.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';
import { brokers, kafkaConfig, runId, waitFor } from './helpers.ts';

/**
 * The broker goes away and comes back: the collector answers 503 with Retry-After while Kafka is
 * unreachable (acknowledging nothing), and the shipper's retry after the broker returns is stored
 * once. This file stops the shared test broker, so the Kafka project runs files one at a time.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = fileURLToPath(new URL('../../scripts/kafka/kafka.sh', import.meta.url));
const LOCAL = brokers().join(',') === '127.0.0.1:19092';

const run = runId();
let dir: string;
let cfg: Readonly<Config>;
let collector: RunningService;
let store: ClickHouseStore;
let bus: KafkaBus;
let stage: CorrelatorStage;

function broker(cmd: 'start' | 'stop'): void {
  execFileSync('bash', [SCRIPT, cmd], { cwd: ROOT, stdio: 'ignore', timeout: 180_000, env: { ...process.env, KAFKA_KEEP_DATA: '1' } });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-outage-'));
  cfg = kafkaConfig(run, dir);
  const log = silentLogger();
  collector = await startCollectorService(cfg, log);
  store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, new MetricsRegistry());
  await store.start();
  bus = new KafkaBus({ kafka: cfg.kafka, log });
  await bus.start();
  stage = new CorrelatorStage({ bus, store, cfg: cfg.correlator, log, metrics: new MetricsRegistry(), tickMs: 250 });
  await stage.start();
});

afterAll(async () => {
  // Whatever happened, leave the broker running for the files after this one.
  if (LOCAL) broker('start');
  await stage?.shutdown();
  await bus?.shutdown();
  await collector?.shutdown();
  await store?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

function body(task: string): string {
  return [0, 1, 2]
    .map((i) => JSON.stringify({ id: `${task}-${i}`, source: 'agent', type: 'model.call', time: Date.parse('2026-06-02T09:00:00Z') + i, task_id: task }))
    .join('\n');
}

describe('collector during a broker outage (local test broker)', () => {
  it('runs against the local test broker, which it can stop and start', () => {
    // Never skipped: against another broker this file cannot make the outage, so it fails and says why.
    expect(LOCAL, `this test stops and restarts the local broker; run the Kafka suite without KAFKA_BROKERS (or with 127.0.0.1:19092), got ${brokers().join(',')}`).toBe(true);
  });

  it('answers 503 with Retry-After while Kafka is down, and stores the retried batch once after it returns', async () => {
    const task = `${run}-outage`;
    const before = await fetch(`${collector.http.url}/v1/events`, { method: 'POST', body: body(`${run}-warmup`), headers: { 'content-type': 'application/x-ndjson' } });
    expect(before.status).toBe(200);

    broker('stop');
    const down = await fetch(`${collector.http.url}/v1/events`, { method: 'POST', body: body(task), headers: { 'content-type': 'application/x-ndjson' } });
    expect(down.status).toBe(503);
    expect(Number(down.headers.get('retry-after'))).toBeGreaterThan(0);
    const downBody = (await down.json()) as Record<string, unknown>;
    expect(downBody.accepted).toBe(0);
    expect(String(downBody.message)).toMatch(/kafka/i);

    broker('start');
    // The shipper retries until it gets a 2xx, as OpenTelemetry Collector / Vector / Fluent Bit do.
    const ok = await waitFor(
      () => fetch(`${collector.http.url}/v1/events`, { method: 'POST', body: body(task), headers: { 'content-type': 'application/x-ndjson' } }).then((r) => r.status),
      (s) => s === 200,
      90_000,
    );
    expect(ok).toBe(200);
    const tl = await waitFor(() => store.timeline(task), (rows) => rows.length >= 3, 90_000);
    expect(tl).toHaveLength(3);
    expect(new Set(tl.map((e) => e.event_id)).size).toBe(3);
  }, 300_000);
});
