import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.ts';
import { CredentialBindingSchema, TimelineEventSchema } from '../../shared/event.ts';
import { FindingSchema } from '../../shared/finding.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { findingLatencyOf } from '../../services/bench/bench.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';

/**
 * The benchmark's arrival->finding figures, computed in ClickHouse from stored rows (real engine):
 * from the last evidence event's arrival, and from when the join partners that tied the evidence to
 * its task (a credential's issuance, a span carrying the request id) had arrived too.
 */

const id = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 32);
const T0 = Date.parse('2026-06-01T10:00:00Z');
let dir: string;
let store: ClickHouseStore;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-finding-latency-'));
  const cfg = parseConfig({ dataDir: dir });
  store = new ClickHouseStore(cfg.storage, cfg.dataDir, silentLogger(), new MetricsRegistry());
  await store.start();
}, 60_000);

afterAll(async () => {
  await store?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

const ev = (name: string, o: Record<string, unknown>) =>
  TimelineEventSchema.parse({ event_id: id(name), format: 'runtrail', time: T0, source: 'agent', type: 'tool.call', attribution: 'direct', ...o });

const finding = (name: string, task: string, evidence: string[], emittedAt: number) =>
  FindingSchema.parse({ id: id(name), detector: 'blast-radius', rule: 'r', severity: 'high', title: name, task_id: task, time: T0, evidence: evidence.map(id), emitted_at: emittedAt });

describe('findingLatencyOf', () => {
  it('measures from the last evidence arrival, and from when the join partners had arrived too', async () => {
    const key = 'ASIALATENCYTEST00001';
    await store.insertEvents([
      // Task a: its evidence carried its task id; found 100 ms after it arrived.
      ev('a1', { task_id: 'a', ingested_at: T0 }),
      // Task b: a call made with a key arrives at +500; the key's issuance only at +3000.
      ev('b-issue', { task_id: 'b', source: 'resource', type: 'credential.issued', ingested_at: T0 + 3000 }),
      ev('b-use', { task_id: 'b', source: 'resource', type: 'resource.access', credential_id: key, attribution: 'credential', join_key: key, ingested_at: T0 + 500 }),
      // Task c: a CloudTrail call at +1000 that only the agent's span (at +5000) ties to c by its request id.
      ev('c-span', { task_id: 'c', request_id: 'req-1', ingested_at: T0 + 5000 }),
      ev('c-call', { task_id: 'c', source: 'resource', type: 'resource.access', request_id: 'req-1', attribution: 'request', join_key: 'req-1', ingested_at: T0 + 1000 }),
    ]);
    await store.insertBindings([CredentialBindingSchema.parse({ credential_id: key, kind: 'aws-access-key', task_id: 'b', issued_at: T0, event_id: id('b-issue'), bound_by: 'tag' })]);
    await store.insertFindings([
      finding('fa', 'a', ['a1'], T0 + 100),
      finding('fb', 'b', ['b-use'], T0 + 3200),
      finding('fc', 'c', ['c-call'], T0 + 5050),
    ]);
    // From the last evidence arrival: 100, 2 700 and 4 050 ms; from when the partners were there
    // too: 100, 200 and 50 ms. Only a's completing event carried its task id.
    expect(await findingLatencyOf(store)).toEqual({
      findings: 3,
      p50_ms: 2700,
      p99_ms: 4050,
      max_ms: 4050,
      p99_direct_ms: 100,
      p50_ready_ms: 100,
      p99_ready_ms: 200,
    });
  });
});
