import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbedded } from '../../services/embedded.ts';
import { startAlerterService } from '../../services/services.ts';
import { replay } from '../../services/replay/replay.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';
import { AlertMessageSchema } from '../../shared/alert.ts';
import { parseConfig } from '../../shared/config.ts';
import { FindingSchema } from '../../shared/finding.ts';
import { eventId } from '../../shared/ids.ts';
import { TOPIC } from '../../shared/names.ts';
import { silentLogger } from '../../shared/logger.ts';
import { startReceiver, waitFor, type Receiver } from './alerting-harness.ts';

/**
 * End to end: an attack replayed (Runtrail JSON records) through the embedded pipeline (adapter,
 * correlator, detectors, chDB store, alerter) reaches a local webhook receiver as a signed incident
 * message; with a suppression in the policy, nothing is sent while the findings are still stored.
 */

const BASE = Date.parse('2026-05-05T09:00:00Z');
const iso = (s: number) => new Date(BASE + s * 1000).toISOString();
const TASK = 'task-e2e-billing';
const TRACE = '5cf92f3577b34da6a3ce929d0e0e4736';
const WORKLOAD = 'spiffe://example.org/ns/agents/sa/billing';
const STS_KEY = 'ASIAE2ETASKKEY000001';
const ACCOUNT = '111122223333';
const SECRET = 'e2e-secret-0123456789abcdef';

/** A billing agent's task whose STS session key is then replayed from outside the cluster network. */
const RECORDS = [
  { id: 'e2e-start', source: 'agent', type: 'task.started', time: iso(0), task_id: TASK, trace_id: TRACE, agent_id: 'billing-agent', agent_name: 'billing-agent', workload_id: WORKLOAD, host: 'node-a' },
  {
    id: 'e2e-assume',
    source: 'resource',
    type: 'credential.issued',
    time: iso(2),
    credential_id: 'ASIARUNTIMEPOD0000E2',
    principal: `arn:aws:sts::${ACCOUNT}:assumed-role/agent-runtime/billing-pod`,
    action: 'sts:AssumeRole',
    outcome: 'success',
    src_ip: '10.0.0.5',
    resources: [{ type: 'AWS::IAM::Role', id: `arn:aws:iam::${ACCOUNT}:role/invoices-reader`, account: ACCOUNT }],
    credential: { id: STS_KEY, kind: 'aws-access-key', subject: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`, session_name: 'billing', tags: { 'runtrail.task.id': TASK }, expires_at: BASE + 3602_000 },
  },
  {
    id: 'e2e-s3-get',
    source: 'resource',
    type: 'resource.access',
    time: iso(5),
    credential_id: STS_KEY,
    action: 's3:GetObject',
    outcome: 'success',
    src_ip: '10.0.0.5',
    resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::invoices/2026-0042.pdf', account: ACCOUNT }],
  },
  { id: 'e2e-end', source: 'agent', type: 'task.ended', time: iso(20), task_id: TASK, trace_id: TRACE, agent_id: 'billing-agent', outcome: 'success' },
  {
    id: 'e2e-replay-s3',
    source: 'resource',
    type: 'resource.access',
    time: iso(300),
    credential_id: STS_KEY,
    workload_id: 'spiffe://example.org/ns/ci/sa/runner',
    host: 'ci-runner-7',
    action: 's3:ListBucket',
    outcome: 'success',
    src_ip: '203.0.113.50',
    resources: [{ type: 'AWS::S3::Bucket', id: 'arn:aws:s3:::invoices', account: ACCOUNT }],
  },
];

let dir: string;
let input: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-alerting-e2e-'));
  input = join(dir, 'attack.ndjson');
  writeFileSync(input, `${RECORDS.map((r) => JSON.stringify(r)).join('\n')}\n`);
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function runReplay(database: string, hook: Receiver, policy?: string): Promise<number> {
  let policyFile: string | undefined;
  if (policy) writeFileSync((policyFile = join(dir, `${database}.policy.yaml`)), policy);
  const cfg = parseConfig({
    dataDir: join(dir, 'data'),
    policyFile,
    bus: { fsync: false },
    storage: { database },
    alerting: {
      apiBaseUrl: 'https://runtrail.example.com',
      channels: [{ type: 'webhook', url: `${hook.url}/runtrail`, secret: SECRET }],
      delivery: { backoffInitialMs: 20, jitter: 0 },
    },
  });
  const stats = await replay({ files: [input], format: 'runtrail', cfg, log: silentLogger() });
  expect(stats.records_rejected).toBe(0);
  return stats.findings;
}

describe('alerting end to end (replay through the embedded pipeline)', () => {
  it('delivers the attack incident to the webhook receiver, signed, with evidence and links', async () => {
    const hook = await startReceiver();
    try {
      const findings = await runReplay('e2e_alert', hook);
      expect(findings).toBeGreaterThan(0);
      expect(hook.requests.length).toBeGreaterThan(0);
      for (const r of hook.requests) {
        const ts = String(r.headers['x-runtrail-timestamp']);
        expect(r.headers['x-runtrail-signature']).toBe(`sha256=${createHmac('sha256', SECRET).update(`${ts}.${r.body}`).digest('hex')}`);
      }
      const messages = hook.requests.map((r) => AlertMessageSchema.parse(JSON.parse(r.body)));
      const offOrigin = messages.find((m) => m.incident.detector === 'lateral-movement' && m.incident.rule === 'credential-off-origin');
      expect(offOrigin).toBeDefined();
      expect(offOrigin).toMatchObject({ kind: 'trigger', task_id: TASK, incident: { severity: 'high', status: 'open' } });
      expect(offOrigin?.incident.summary).toContain('203.0.113.50');
      // The evidence events were looked up in the store.
      expect(offOrigin?.evidence.map((e) => e.event_id)).toEqual([eventId('runtrail', 'e2e-assume'), eventId('runtrail', 'e2e-replay-s3')]);
      expect(offOrigin?.evidence[1]).toMatchObject({ action: 's3:ListBucket', resource: 'arn:aws:s3:::invoices', workload_id: 'spiffe://example.org/ns/ci/sa/runner' });
      expect(offOrigin?.frameworks.length).toBeGreaterThan(0);
      expect(offOrigin?.links.timeline).toBe(`https://runtrail.example.com/v1/tasks/${TASK}/timeline`);
      // One message per incident: no incident was announced twice.
      const triggers = messages.filter((m) => m.kind === 'trigger').map((m) => m.incident.id);
      expect(new Set(triggers).size).toBe(triggers.length);
    } finally {
      await hook.close();
    }
  }, 60_000);

  it('with a matching suppression sends nothing, while the findings are stored and the incidents recorded', async () => {
    const hook = await startReceiver();
    try {
      const policy = `suppressions:\n  - detector: "*"\n    identity: "spiffe://example.org/*"\n    expires: "2999-01-01T00:00:00Z"\n    reason: "known CI replay test"\n  - detector: "*"\n    resource: "arn:aws:s3:::invoices*"\n    expires: 4102444800000\n    reason: "invoice bucket drill"\n`;
      const findings = await runReplay('e2e_suppressed', hook, policy);
      expect(findings).toBeGreaterThan(0);
      expect(hook.requests).toHaveLength(0);
      const store = new ClickHouseStore(parseConfig({ storage: { database: 'e2e_suppressed' } }).storage, join(dir, 'data'), silentLogger());
      await store.start();
      try {
        const stored = await store.findings(TASK);
        expect(stored.some((f) => f.detector === 'lateral-movement')).toBe(true);
        const incidents = await store.listIncidents();
        expect(incidents.length).toBeGreaterThan(0);
        expect(incidents.every((i) => i.suppressed !== '' && Object.keys(i.notified).length === 0)).toBe(true);
        expect(await store.listOutbox()).toEqual([]);
      } finally {
        await store.shutdown();
      }
    } finally {
      await hook.close();
    }
  }, 60_000);

  it('runtrail start (embedded, live) delivers to its default channel, JSON lines in <dataDir>/alerts.jsonl', async () => {
    const cfg = parseConfig({ dataDir: join(dir, 'data'), collector: { port: 0 }, api: { port: 0 }, bus: { fsync: false }, storage: { database: 'e2e_live' } });
    const server = await startEmbedded(cfg, silentLogger());
    const file = join(dir, 'data', 'alerts.jsonl');
    try {
      expect(server.pipeline.alerter?.channelNames).toEqual(['jsonl']);
      const res = await fetch(`${server.http.url}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: `${RECORDS.map((r) => JSON.stringify(r)).join('\n')}\n`,
      });
      expect(res.status).toBe(200);
      const lines = () => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : []);
      await waitFor(() => lines().some((l) => (l.incident as { rule?: string } | undefined)?.rule === 'credential-off-origin'), 20_000, 'the incident in alerts.jsonl');
      const line = lines().find((l) => (l.incident as { rule?: string }).rule === 'credential-off-origin') ?? {};
      const { delivery, ...msg } = line;
      expect(String(delivery)).toMatch(/:jsonl:\d+$/);
      expect(AlertMessageSchema.parse(msg)).toMatchObject({ kind: 'trigger', task_id: TASK, incident: { detector: 'lateral-movement', severity: 'high' } });
    } finally {
      await server.shutdown();
    }
  }, 60_000);

  it('the alerter service (distributed wiring) defaults to JSON lines on stdout and the alerts topic', async () => {
    // The CLI refuses to run it without Kafka; the wiring itself is bus-agnostic, so an in-memory
    // LocalBus stands in here (the Kafka suite runs the real broker).
    const cfg = parseConfig({ dataDir: join(dir, 'data'), bus: { durable: false }, service: { healthPort: 0 }, storage: { database: 'e2e_service' } });
    const lines: string[] = [];
    const svc = await startAlerterService(cfg, silentLogger(), (l) => lines.push(l));
    try {
      const bus = svc.bus;
      if (!bus) throw new Error('the alerter service has no bus');
      const onTopic: string[] = [];
      const sub = await bus.subscribe({ topics: [TOPIC.alerts], fromBeginning: true, onBatch: async (b) => void onTopic.push(...b.messages.map((m) => m.value.incident_id)) });
      const f = FindingSchema.parse({ id: 'svc-f1', detector: 'credential-lifecycle', rule: 'use-after-revoke', severity: 'high', title: 'Token used after revocation', task_id: TASK, time: BASE, evidence: [] });
      await bus.publish(TOPIC.findings, [{ key: TASK, value: f }]);
      await waitFor(() => lines.length === 1 && onTopic.length === 1, 10_000, 'stdout line and alerts topic message');
      const msg = AlertMessageSchema.parse(JSON.parse(lines[0] ?? '{}'));
      expect(msg).toMatchObject({ kind: 'trigger', task_id: TASK, incident: { rule: 'use-after-revoke', severity: 'high' } });
      expect(onTopic).toEqual([msg.incident.id]);
      await sub.shutdown();
    } finally {
      await svc.shutdown();
    }
  }, 60_000);
});
