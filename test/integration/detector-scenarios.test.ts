import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replay } from '../../services/replay/replay.ts';
import { parseConfig } from '../../shared/config.ts';
import { eventId } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/logger.ts';
import { FindingSchema, severityRank, type Finding } from '../../shared/finding.ts';

/**
 * Detector scenarios through the real embedded pipeline: Runtrail-format NDJSON files (agent spans,
 * CloudTrail-like STS issuance and S3 calls, Vault-like logins, reads and revocations,
 * Kubernetes-like audit records) replayed by `replay()` into the real adapter, correlator,
 * detector engine and ClickHouse store. Correlation (credential bindings, request-id joins, late
 * events) is the correlator's own, not hand-set.
 *
 * Both replays share one data directory: the embedded ClickHouse engine binds one directory per
 * process. Each replay builds a fresh pipeline (fresh detector state) and writes its own findings.
 */

const BASE = Date.parse('2026-05-05T09:00:00Z');
const iso = (s: number) => new Date(BASE + s * 1000).toISOString();

const TASK = 'task-scenario-billing-7';
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const WORKLOAD = 'spiffe://example.org/ns/agents/sa/billing';
const STS_KEY = 'ASIASCENARIOTASK0001';
const RUNTIME_KEY = 'ASIARUNTIMEPOD000001';
const VAULT_ACCESSOR = 'hmac-sha256:3f9c2a7d1e5b';
const ACCOUNT = '111122223333';

type Rec = Record<string, unknown> & { id: string };

/** The benign task: SPIFFE workload, an STS session and a Vault token issued for it, and their use. */
function benignTask(): Rec[] {
  return [
    {
      id: 'scn-start',
      source: 'agent',
      type: 'task.started',
      time: iso(0),
      task_id: TASK,
      trace_id: TRACE,
      agent_id: 'billing-agent',
      agent_name: 'billing-agent',
      workload_id: WORKLOAD,
      host: 'node-a',
      messages: { input: 'Summarise invoice 2026-0042 and post the total to #billing.' },
    },
    {
      // SPIRE's view of the workload's X.509-SVID (per workload, not per task: it binds to a session of its own).
      id: 'scn-svid',
      source: 'workload',
      type: 'credential.issued',
      time: iso(-600),
      workload_id: WORKLOAD,
      host: 'node-a',
      credential: { id: '2f:91:4c:aa:07', kind: 'x509-svid', subject: WORKLOAD, expires_at: BASE + 3000_000 },
    },
    {
      // CloudTrail-like AssumeRole by the runtime, session tagged with the task id.
      id: 'scn-assume',
      source: 'resource',
      type: 'credential.issued',
      time: iso(2),
      credential_id: RUNTIME_KEY,
      principal: `arn:aws:sts::${ACCOUNT}:assumed-role/agent-runtime/billing-pod`,
      action: 'sts:AssumeRole',
      outcome: 'success',
      src_ip: '10.0.0.5',
      host: 'sts.amazonaws.com',
      request_id: 'req-assume-scn',
      resources: [{ type: 'AWS::IAM::Role', id: `arn:aws:iam::${ACCOUNT}:role/invoices-reader`, account: ACCOUNT }],
      credential: {
        id: STS_KEY,
        kind: 'aws-access-key',
        parent_id: RUNTIME_KEY,
        subject: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`,
        session_name: 'billing',
        tags: { 'runtrail.task.id': TASK },
        expires_at: BASE + 3602_000,
      },
      attributes: { eventSource: 'sts.amazonaws.com', eventName: 'AssumeRole', readOnly: true },
    },
    {
      id: 'scn-tool-read',
      source: 'agent',
      type: 'tool.call',
      time: iso(4),
      trace_id: TRACE,
      agent_id: 'billing-agent',
      workload_id: WORKLOAD,
      action: 'tool:read_invoice',
      outcome: 'success',
      tool: { name: 'read_invoice', arguments: '{"id":"2026-0042"}', result: 'Invoice 2026-0042: 120.00 EUR, due 2026-05-31' },
      request_id: 'req-get-scn',
    },
    {
      // CloudTrail-like S3 read made with the task's session key.
      id: 'scn-s3-get',
      source: 'resource',
      type: 'resource.access',
      time: iso(5),
      credential_id: STS_KEY,
      principal: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`,
      action: 's3:GetObject',
      outcome: 'success',
      src_ip: '10.0.0.5',
      host: 's3.eu-west-1.amazonaws.com',
      request_id: 'req-get-scn',
      resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::invoices/2026-0042.pdf', account: ACCOUNT }],
      attributes: { eventSource: 's3.amazonaws.com', eventName: 'GetObject', readOnly: true },
    },
    {
      // Vault-like Kubernetes-auth login; the token metadata carries the task id.
      id: 'scn-vault-login',
      source: 'resource',
      type: 'credential.issued',
      time: iso(6),
      workload_id: WORKLOAD,
      principal: 'kubernetes-agents-billing',
      action: 'vault:update',
      outcome: 'success',
      src_ip: '10.0.0.5',
      resources: [{ type: 'vault/path', id: 'auth/kubernetes/login' }],
      credential: { id: VAULT_ACCESSOR, kind: 'vault-token', subject: WORKLOAD, tags: { task_id: TASK }, expires_at: BASE + 906_000 },
    },
    {
      id: 'scn-vault-read',
      source: 'resource',
      type: 'resource.access',
      time: iso(8),
      credential_id: VAULT_ACCESSOR,
      workload_id: WORKLOAD,
      principal: 'kubernetes-agents-billing',
      action: 'vault:read',
      outcome: 'success',
      src_ip: '10.0.0.5',
      sensitivity: 'restricted',
      data_classes: ['secret'],
      resources: [{ type: 'vault/path', id: 'secret/data/billing/chat-webhook' }],
    },
    {
      id: 'scn-tool-config',
      source: 'agent',
      type: 'tool.call',
      time: iso(10),
      trace_id: TRACE,
      agent_id: 'billing-agent',
      workload_id: WORKLOAD,
      action: 'tool:get_channel_config',
      outcome: 'success',
      tool: { name: 'get_channel_config', arguments: '{"channel":"billing"}' },
      request_id: '6c1e8a0b-2d4f-4e21-9a3c-5b7d9e0f1a2b',
    },
    {
      // Kubernetes-like audit record, joined to the tool span by the audit id.
      id: 'scn-k8s-get',
      source: 'resource',
      type: 'resource.access',
      time: iso(11),
      workload_id: 'system:serviceaccount:agents:billing',
      principal: 'system:serviceaccount:agents:billing',
      action: 'k8s:get',
      outcome: 'success',
      src_ip: '10.0.0.5',
      request_id: '6c1e8a0b-2d4f-4e21-9a3c-5b7d9e0f1a2b',
      resources: [{ type: 'k8s/configmaps', id: 'agents/configmaps/billing-channels', account: 'agents' }],
    },
    {
      id: 'scn-tool-send',
      source: 'agent',
      type: 'tool.call',
      time: iso(14),
      trace_id: TRACE,
      agent_id: 'billing-agent',
      workload_id: WORKLOAD,
      action: 'tool:send_channel_message',
      outcome: 'success',
      tool: { name: 'send_channel_message', arguments: '{"channel":"billing","text":"Invoice 2026-0042 total: 120.00 EUR"}', result: 'ok' },
    },
    { id: 'scn-end', source: 'agent', type: 'task.ended', time: iso(20), task_id: TASK, trace_id: TRACE, agent_id: 'billing-agent', outcome: 'success' },
  ];
}

/** The same task, then its STS key replayed from another workload and host, and its Vault token used after revocation. */
function attackedTask(): Rec[] {
  return [
    ...benignTask(),
    {
      // The broker revokes the task's Vault token when the task ends.
      id: 'scn-vault-revoke',
      source: 'resource',
      type: 'credential.revoked',
      time: iso(22),
      credential_id: 'hmac-sha256:b0b0b0b0b0b0',
      principal: 'runtrail-broker',
      action: 'vault:update',
      outcome: 'success',
      resources: [{ type: 'vault/path', id: 'auth/token/revoke-accessor' }],
      credential: { id: VAULT_ACCESSOR, kind: 'vault-token' },
    },
    {
      // The task's STS key, replayed from a CI runner in another network.
      id: 'scn-replay-s3',
      source: 'resource',
      type: 'resource.access',
      time: iso(300),
      credential_id: STS_KEY,
      workload_id: 'spiffe://example.org/ns/ci/sa/runner',
      host: 'ci-runner-7',
      principal: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`,
      action: 's3:ListBucket',
      outcome: 'success',
      src_ip: '203.0.113.50',
      resources: [{ type: 'AWS::S3::Bucket', id: 'arn:aws:s3:::invoices', account: ACCOUNT }],
      attributes: { eventSource: 's3.amazonaws.com', eventName: 'ListBucket', readOnly: true },
    },
    {
      // The same key used by another pod on another node inside the cluster network.
      id: 'scn-replay-pod',
      source: 'resource',
      type: 'resource.access',
      time: iso(310),
      credential_id: STS_KEY,
      workload_id: 'spiffe://example.org/ns/batch/sa/reporter',
      host: 'node-c',
      principal: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`,
      action: 's3:GetObject',
      outcome: 'success',
      src_ip: '10.0.0.77',
      resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::invoices/2026-0041.pdf', account: ACCOUNT }],
      attributes: { eventSource: 's3.amazonaws.com', eventName: 'GetObject', readOnly: true },
    },
    {
      // The revoked Vault token still read a secret.
      id: 'scn-vault-after-revoke',
      source: 'resource',
      type: 'resource.access',
      time: iso(320),
      credential_id: VAULT_ACCESSOR,
      workload_id: WORKLOAD,
      principal: 'kubernetes-agents-billing',
      action: 'vault:read',
      outcome: 'success',
      src_ip: '10.0.0.5',
      sensitivity: 'restricted',
      data_classes: ['secret'],
      resources: [{ type: 'vault/path', id: 'secret/data/billing/chat-webhook' }],
    },
  ];
}

const evId = (id: string) => eventId('runtrail', id);

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-scenarios-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function runScenario(name: string, records: Rec[]): Promise<{ findings: Finding[]; stats: Awaited<ReturnType<typeof replay>> }> {
  const input = join(dir, `${name}.ndjson`);
  const out = join(dir, `${name}.findings.jsonl`);
  writeFileSync(input, `${records.map((r) => JSON.stringify(r)).join('\n')}\n`);
  const cfg = parseConfig({ dataDir: join(dir, 'data'), bus: { fsync: false } });
  const stats = await replay({ files: [input], format: 'runtrail', cfg, log: silentLogger(), findingsOut: out });
  const findings = readFileSync(out, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => FindingSchema.parse(JSON.parse(l)));
  return { findings, stats };
}

describe('detector scenarios through the embedded pipeline (runtrail-format replay)', () => {
  it('a benign agent task with an STS session and a Vault token raises no high or critical finding', async () => {
    const { findings, stats } = await runScenario('benign', benignTask());
    expect(stats.records_rejected).toBe(0);
    expect(stats.events_accepted).toBe(benignTask().length);
    const severe = findings.filter((f) => severityRank(f.severity) >= severityRank('high'));
    expect(severe.map((f) => `${f.detector}/${f.rule}: ${f.title}`)).toEqual([]);
    const ours = findings.filter((f) => ['lateral-movement', 'credential-lifecycle', 'blast-radius'].includes(f.detector));
    expect(ours.map((f) => `${f.detector}/${f.rule}: ${f.title}`)).toEqual([]);
  }, 120_000);

  it('the same task with its key replayed from another workload and its token used after revocation is reported with evidence', async () => {
    const { findings, stats } = await runScenario('attacked', attackedTask());
    expect(stats.records_rejected).toBe(0);

    const offOrigin = findings.filter((f) => f.detector === 'lateral-movement' && f.rule === 'credential-off-origin');
    expect(offOrigin).toHaveLength(2);
    for (const f of offOrigin) {
      expect(f.severity).toBe('high');
      expect(f.task_id).toBe(TASK);
      expect(f.join_keys).toEqual({ credential_id: STS_KEY });
    }
    // From outside the cluster network: the address alone gives it away.
    const outside = offOrigin.find((f) => f.evidence.includes(evId('scn-replay-s3')));
    expect(outside?.evidence).toEqual([evId('scn-assume'), evId('scn-replay-s3')]);
    expect(outside?.metrics.network_mismatch).toBe(1);
    expect(outside?.summary).toContain('203.0.113.50');
    // From inside it (same /24): the workload and host differ from the task's SPIFFE runtime, which
    // the STS issuance does not name itself (whichever of the CloudTrail or agent records came first).
    const inside = offOrigin.find((f) => f.evidence.includes(evId('scn-replay-pod')));
    expect(inside?.evidence).toEqual([evId('scn-assume'), evId('scn-replay-pod')]);
    expect(inside?.metrics).toMatchObject({ workload_mismatch: 1, host_mismatch: 1, network_mismatch: 0 });
    expect(inside?.summary).toContain('spiffe://example.org/ns/batch/sa/reporter');

    const revoked = findings.filter((f) => f.detector === 'credential-lifecycle' && f.rule === 'use-after-revoke');
    expect(revoked).toHaveLength(1);
    const rv = revoked[0] as Finding;
    expect(rv.severity).toBe('high');
    expect(rv.task_id).toBe(TASK);
    expect(rv.join_keys).toEqual({ credential_id: VAULT_ACCESSOR });
    expect(rv.evidence).toEqual([evId('scn-vault-login'), evId('scn-vault-revoke'), evId('scn-vault-after-revoke')]);
    expect(rv.metrics.seconds_after_revoke).toBe(298);
    expect(rv.summary).toContain('runtrail-broker');

    // The key outlived its task too (ended at +20 s, replayed at +300 s, after the correlator closed the task).
    const afterEnd = findings.filter((f) => f.detector === 'credential-lifecycle' && f.rule === 'use-after-task-end');
    expect(afterEnd.map((f) => f.join_keys.credential_id).sort()).toEqual([STS_KEY, VAULT_ACCESSOR].sort());
  }, 120_000);
});
