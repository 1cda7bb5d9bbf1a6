import type { TimelineEvent } from '../../shared/event.ts';
import type { DetectorFixture } from '../detector.ts';
import { tev } from '../testing.ts';

/**
 * Fixtures of the credential-lifecycle detector: agent task spans (OTLP), STS issuance and use
 * (CloudTrail), Vault logins, reads and revocations, Kubernetes audit, as the correlator attributes
 * them (including `late` events and unattributed ones). Each rule has a positive and a negative case.
 */

const T0 = Date.parse('2026-05-02T09:00:00Z');
const at = (s: number) => T0 + s * 1000;
const ACCOUNT = '111122223333';
const WL = 'spiffe://example.org/ns/agents/sa/invoicer';

/** An agent task (OTLP root span start and end). */
function agentTask(p: { prefix: string; task: string; agent?: string; start: number; end?: number }): TimelineEvent[] {
  const agent = p.agent ?? 'invoicer';
  const out = [
    tev({ id: `${p.prefix}-start`, source: 'agent', type: 'task.started', format: 'otlp-traces', time: at(p.start), task_id: p.task, agent_id: agent, agent_name: agent, workload_id: WL }),
    tev({
      id: `${p.prefix}-tool`,
      source: 'agent',
      type: 'tool.call',
      format: 'otlp-traces',
      time: at(p.start + 3),
      task_id: p.task,
      agent_id: agent,
      workload_id: WL,
      action: 'tool:fetch_invoice',
      outcome: 'success',
      tool: { name: 'fetch_invoice', arguments: '{"invoice":"2026-0042"}' },
    }),
  ];
  if (p.end !== undefined) out.push(tev({ id: `${p.prefix}-end`, source: 'agent', type: 'task.ended', format: 'otlp-traces', time: at(p.end), task_id: p.task, agent_id: agent, outcome: 'success' }));
  return out;
}

/** STS AssumeRole for a task (session tagged with the task id), CloudTrail. */
function assume(p: { id: string; task: string; key: string; time: number; lifetimeS?: number; api?: string }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'credential.issued',
    format: 'cloudtrail',
    time: at(p.time),
    task_id: p.task,
    attribution: 'direct',
    join_key: `runtrail.task.id=${p.task}`,
    credential_id: 'ASIARUNTIMESESSION01',
    principal: `arn:aws:sts::${ACCOUNT}:assumed-role/agent-runtime/pod-7f9c`,
    action: `sts:${p.api ?? 'AssumeRole'}`,
    outcome: 'success',
    src_ip: '10.0.0.5',
    credential: {
      id: p.key,
      kind: 'aws-access-key',
      parent_id: 'ASIARUNTIMESESSION01',
      subject: `arn:aws:sts::${ACCOUNT}:assumed-role/invoice-reader/invoicer`,
      session_name: 'invoicer',
      tags: { 'runtrail.task.id': p.task },
      expires_at: at(p.time + (p.lifetimeS ?? 3600)),
    },
  });
}

/** An S3 call made with a key, joined through the credential (CloudTrail). */
function s3(p: { id: string; task: string; key: string; time: number; outcome?: 'success' | 'failure'; late?: boolean; srcIp?: string; object?: string }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'resource.access',
    format: 'cloudtrail',
    time: at(p.time),
    task_id: p.task,
    attribution: 'credential',
    join_key: p.key,
    credential_id: p.key,
    principal: `arn:aws:sts::${ACCOUNT}:assumed-role/invoice-reader/invoicer`,
    action: 's3:GetObject',
    outcome: p.outcome ?? 'success',
    src_ip: p.srcIp ?? '10.0.0.5',
    late: p.late ?? false,
    resources: [{ type: 'AWS::S3::Object', id: `arn:aws:s3:::invoices/${p.object ?? '2026-0042.pdf'}`, account: ACCOUNT }],
    attributes: p.outcome === 'failure' ? { errorCode: 'ExpiredToken' } : {},
  });
}

/** A Vault token issued to a task (Kubernetes auth login, task id in the token metadata). */
function vaultLogin(p: { id: string; task: string; accessor: string; time: number }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'credential.issued',
    format: 'vault',
    time: at(p.time),
    task_id: p.task,
    attribution: 'direct',
    join_key: `task_id=${p.task}`,
    workload_id: WL,
    principal: 'kubernetes-agents-invoicer',
    action: 'vault:update',
    outcome: 'success',
    src_ip: '10.0.0.5',
    resources: [{ type: 'vault/path', id: 'auth/kubernetes/login' }],
    credential: { id: p.accessor, kind: 'vault-token', subject: WL, tags: { task_id: p.task }, expires_at: at(p.time + 1800) },
  });
}

function vaultRead(p: { id: string; task: string; accessor: string; time: number; outcome?: 'success' | 'failure'; srcIp?: string }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'resource.access',
    format: 'vault',
    time: at(p.time),
    task_id: p.task,
    attribution: 'credential',
    join_key: p.accessor,
    credential_id: p.accessor,
    workload_id: WL,
    principal: 'kubernetes-agents-invoicer',
    action: 'vault:read',
    outcome: p.outcome ?? 'success',
    src_ip: p.srcIp ?? '10.0.0.5',
    data_classes: ['secret'],
    sensitivity: 'restricted',
    resources: [{ type: 'vault/path', id: 'secret/data/invoicer/bank-api' }],
  });
}

function vaultRevoke(p: { id: string; task: string; accessor: string; time: number }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'credential.revoked',
    format: 'vault',
    time: at(p.time),
    task_id: p.task,
    attribution: 'credential',
    join_key: p.accessor,
    credential_id: 'hmac-sha256:5e6f7a8b9c0d',
    principal: 'runtrail-broker',
    action: 'vault:update',
    outcome: 'success',
    resources: [{ type: 'vault/path', id: 'auth/token/revoke-accessor' }],
    credential: { id: p.accessor, kind: 'vault-token' },
  });
}

/** Fixtures of the credential-lifecycle detector. */
export const CREDENTIAL_LIFECYCLE_FIXTURES: readonly DetectorFixture[] = [
  {
    name: 'use-after-task-end: task session key used 30 minutes after the task ended, arriving late',
    events: [
      ...agentTask({ prefix: 'cl-te1', task: 'task-cl-te1', start: 0, end: 60 }),
      assume({ id: 'cl-te1-assume', task: 'task-cl-te1', key: 'ASIATASKEND000000001', time: 2 }),
      s3({ id: 'cl-te1-get', task: 'task-cl-te1', key: 'ASIATASKEND000000001', time: 5 }),
      s3({ id: 'cl-te1-late', task: 'task-cl-te1', key: 'ASIATASKEND000000001', time: 1860, late: true, srcIp: '198.51.100.23', object: '2026-0043.pdf' }),
    ],
    expect: [{ rule: 'use-after-task-end', minSeverity: 'high' }],
  },
  {
    name: 'use-after-task-end (negative): an upload finishing within the grace after the end',
    events: [
      ...agentTask({ prefix: 'cl-ten', task: 'task-cl-ten', start: 0, end: 60 }),
      assume({ id: 'cl-ten-assume', task: 'task-cl-ten', key: 'ASIATASKENDOK0000001', time: 2 }),
      s3({ id: 'cl-ten-get', task: 'task-cl-ten', key: 'ASIATASKENDOK0000001', time: 5 }),
      s3({ id: 'cl-ten-tail', task: 'task-cl-ten', key: 'ASIATASKENDOK0000001', time: 110 }),
    ],
    expect: [],
  },
  {
    name: 'use-after-revoke: Vault token read a secret five minutes after the broker revoked it',
    events: [
      ...agentTask({ prefix: 'cl-rv1', task: 'task-cl-rv1', start: 0 }),
      vaultLogin({ id: 'cl-rv1-login', task: 'task-cl-rv1', accessor: 'hmac-sha256:a1b2c3d4e5f6', time: 1 }),
      vaultRead({ id: 'cl-rv1-read', task: 'task-cl-rv1', accessor: 'hmac-sha256:a1b2c3d4e5f6', time: 4 }),
      vaultRevoke({ id: 'cl-rv1-revoke', task: 'task-cl-rv1', accessor: 'hmac-sha256:a1b2c3d4e5f6', time: 40 }),
      vaultRead({ id: 'cl-rv1-reuse', task: 'task-cl-rv1', accessor: 'hmac-sha256:a1b2c3d4e5f6', time: 340, srcIp: '10.9.8.7' }),
    ],
    expect: [{ rule: 'use-after-revoke', minSeverity: 'high' }],
  },
  {
    name: 'use-after-revoke (negative): the last read races the revocation within the clock-skew allowance',
    events: [
      ...agentTask({ prefix: 'cl-rvn', task: 'task-cl-rvn', start: 0 }),
      vaultLogin({ id: 'cl-rvn-login', task: 'task-cl-rvn', accessor: 'hmac-sha256:0a0b0c0d0e0f', time: 1 }),
      vaultRead({ id: 'cl-rvn-read', task: 'task-cl-rvn', accessor: 'hmac-sha256:0a0b0c0d0e0f', time: 4 }),
      vaultRevoke({ id: 'cl-rvn-revoke', task: 'task-cl-rvn', accessor: 'hmac-sha256:0a0b0c0d0e0f', time: 40 }),
      vaultRead({ id: 'cl-rvn-race', task: 'task-cl-rvn', accessor: 'hmac-sha256:0a0b0c0d0e0f', time: 45, outcome: 'failure' }),
    ],
    expect: [],
  },
  {
    name: 'use-after-expiry: a 15-minute session still succeeding 20 minutes later',
    events: [
      ...agentTask({ prefix: 'cl-ex1', task: 'task-cl-ex1', start: 0 }),
      assume({ id: 'cl-ex1-assume', task: 'task-cl-ex1', key: 'ASIAEXPIRED000000001', time: 2, lifetimeS: 900 }),
      s3({ id: 'cl-ex1-get', task: 'task-cl-ex1', key: 'ASIAEXPIRED000000001', time: 5 }),
      s3({ id: 'cl-ex1-after', task: 'task-cl-ex1', key: 'ASIAEXPIRED000000001', time: 1202, object: '2026-0044.pdf' }),
    ],
    expect: [{ rule: 'use-after-expiry', minSeverity: 'high' }],
  },
  {
    name: 'use-after-expiry (negative): one refused request right at expiry before the SDK refreshes',
    events: [
      ...agentTask({ prefix: 'cl-exn', task: 'task-cl-exn', start: 0 }),
      assume({ id: 'cl-exn-assume', task: 'task-cl-exn', key: 'ASIAEXPIREDOK0000001', time: 2, lifetimeS: 900 }),
      s3({ id: 'cl-exn-get', task: 'task-cl-exn', key: 'ASIAEXPIREDOK0000001', time: 600 }),
      s3({ id: 'cl-exn-edge', task: 'task-cl-exn', key: 'ASIAEXPIREDOK0000001', time: 910, outcome: 'failure' }),
    ],
    expect: [],
  },
  {
    name: 'long-lived-credential: an agent task calling AWS with an IAM user key (joined by request id)',
    events: [
      ...agentTask({ prefix: 'cl-ll1', task: 'task-cl-ll1', start: 0 }),
      tev({
        id: 'cl-ll1-akia',
        source: 'resource',
        type: 'resource.access',
        format: 'cloudtrail',
        time: at(4),
        task_id: 'task-cl-ll1',
        attribution: 'request',
        join_key: 'c7d3a1e0-44aa-4c1b-9d0e-1f2a3b4c5d6e',
        request_id: 'c7d3a1e0-44aa-4c1b-9d0e-1f2a3b4c5d6e',
        credential_id: 'AKIAIOSFODNN7EXAMPLE',
        principal: `arn:aws:iam::${ACCOUNT}:user/legacy-billing`,
        action: 's3:GetObject',
        outcome: 'success',
        src_ip: '10.0.0.5',
        resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::invoices/2026-0042.pdf', account: ACCOUNT }],
      }),
    ],
    expect: [{ rule: 'long-lived-credential', minSeverity: 'medium' }],
  },
  {
    name: 'long-lived-credential: an unattributed Kubernetes call by a workload with a token nobody issued to a task',
    events: [
      tev({
        id: 'cl-ll2-k8s',
        source: 'resource',
        type: 'resource.access',
        format: 'k8s-audit',
        time: at(30),
        credential_id: '8f2e5c1a-7b3d-4e6f-9a0b-1c2d3e4f5a6b',
        workload_id: 'system:serviceaccount:agents:invoicer',
        principal: 'system:serviceaccount:agents:invoicer',
        action: 'k8s:get',
        outcome: 'success',
        src_ip: '10.0.0.5',
        data_classes: ['secret'],
        resources: [{ type: 'k8s/secrets', id: 'payments/secrets/bank-api', account: 'payments' }],
        unattributed_reason: 'no binding, request id, trace or workload joined it within the grace period',
      }),
    ],
    expect: [{ rule: 'long-lived-credential', minSeverity: 'medium' }],
  },
  {
    name: 'long-lived-credential: a federation token issued for 36 hours',
    events: [
      ...agentTask({ prefix: 'cl-ll3', task: 'task-cl-ll3', start: 0 }),
      assume({ id: 'cl-ll3-fed', task: 'task-cl-ll3', key: 'ASIAFEDERATED0000001', time: 2, lifetimeS: 36 * 3600, api: 'GetFederationToken' }),
    ],
    expect: [{ rule: 'long-lived-credential', minSeverity: 'low' }],
  },
  {
    name: 'long-lived-credential (negative): a CI user key with no agent or workload context; a one-hour task session',
    events: [
      tev({
        id: 'cl-lln-ci',
        source: 'resource',
        type: 'resource.access',
        format: 'cloudtrail',
        time: at(10),
        credential_id: 'AKIAI44QH8DHBEXAMPLE',
        principal: `arn:aws:iam::${ACCOUNT}:user/ci-deployer`,
        action: 'ecr:PutImage',
        outcome: 'success',
        src_ip: '192.0.2.10',
        resources: [{ type: 'AWS::ECR::Repository', id: `arn:aws:ecr:eu-west-1:${ACCOUNT}:repository/invoicer`, account: ACCOUNT }],
      }),
      ...agentTask({ prefix: 'cl-lln', task: 'task-cl-lln', start: 0 }),
      assume({ id: 'cl-lln-assume', task: 'task-cl-lln', key: 'ASIASHORTLIVED000001', time: 2 }),
      s3({ id: 'cl-lln-get', task: 'task-cl-lln', key: 'ASIASHORTLIVED000001', time: 5 }),
    ],
    expect: [],
  },
  {
    name: "shared-credential: one task's session key used by another agent's task",
    events: [
      ...agentTask({ prefix: 'cl-sh1', task: 'task-cl-sh1', start: 0 }),
      assume({ id: 'cl-sh1-assume', task: 'task-cl-sh1', key: 'ASIASHARED0000000001', time: 2 }),
      s3({ id: 'cl-sh1-get', task: 'task-cl-sh1', key: 'ASIASHARED0000000001', time: 5 }),
      ...agentTask({ prefix: 'cl-sh1-b', task: 'task-cl-sh1-b', agent: 'collections-agent', start: 20 }),
      tev({
        id: 'cl-sh1-b-use',
        source: 'agent',
        type: 'tool.call',
        format: 'otlp-traces',
        time: at(25),
        task_id: 'task-cl-sh1-b',
        attribution: 'trace',
        join_key: '0af7651916cd43dd8448eb211c80319c',
        agent_id: 'collections-agent',
        credential_id: 'ASIASHARED0000000001',
        action: 'tool:download_statement',
        outcome: 'success',
        tool: { name: 'download_statement', arguments: '{"customer":"c-88"}' },
      }),
    ],
    expect: [{ rule: 'shared-credential', minSeverity: 'medium' }],
  },
  {
    name: 'shared-credential (negative): the runtime session mints one task role per task; each key stays in its task',
    events: [
      ...agentTask({ prefix: 'cl-shn-a', task: 'task-cl-shn-a', start: 0, end: 30 }),
      assume({ id: 'cl-shn-a-assume', task: 'task-cl-shn-a', key: 'ASIAPERTASKA00000001', time: 2 }),
      s3({ id: 'cl-shn-a-get', task: 'task-cl-shn-a', key: 'ASIAPERTASKA00000001', time: 5 }),
      s3({ id: 'cl-shn-a-get2', task: 'task-cl-shn-a', key: 'ASIAPERTASKA00000001', time: 9, object: '2026-0045.pdf' }),
      ...agentTask({ prefix: 'cl-shn-b', task: 'task-cl-shn-b', start: 40, end: 80 }),
      assume({ id: 'cl-shn-b-assume', task: 'task-cl-shn-b', key: 'ASIAPERTASKB00000001', time: 42 }),
      s3({ id: 'cl-shn-b-get', task: 'task-cl-shn-b', key: 'ASIAPERTASKB00000001', time: 45 }),
    ],
    expect: [],
  },
];
