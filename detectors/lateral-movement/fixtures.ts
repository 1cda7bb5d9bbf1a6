import type { TimelineEvent } from '../../shared/event.ts';
import type { DetectorFixture } from '../detector.ts';
import { tev } from '../testing.ts';

/**
 * Fixtures of the lateral-movement detector: multi-source timelines as the correlator emits them
 * (agent spans, CloudTrail STS issuance and use, Vault and Kubernetes audit), with the attribution
 * each event would get. Every rule has a positive and a negative case.
 */

const T0 = Date.parse('2026-05-01T10:00:00Z');
const at = (s: number) => T0 + s * 1000;

const ACCOUNT = '111122223333';
const BILLING_WL = 'spiffe://example.org/ns/agents/sa/billing';

/**
 * A billing agent task: the agent starts, the runtime assumes a task role (session tagged with the
 * task id, CloudTrail), the agent calls a tool, and the S3 read made with the session key is joined
 * back through the credential.
 */
function stsTask(p: { prefix: string; task: string; key: string; srcIp?: string }): TimelineEvent[] {
  const src = p.srcIp ?? '10.0.0.5';
  return [
    tev({
      id: `${p.prefix}-start`,
      source: 'agent',
      type: 'task.started',
      format: 'otlp-traces',
      time: at(0),
      task_id: p.task,
      agent_id: 'billing-agent',
      agent_name: 'billing-agent',
      workload_id: BILLING_WL,
      host: 'node-a',
      trace_id: '5b8efff798038103d269b633813fc60c',
    }),
    tev({
      id: `${p.prefix}-assume`,
      source: 'resource',
      type: 'credential.issued',
      format: 'cloudtrail',
      time: at(5),
      task_id: p.task,
      attribution: 'direct',
      join_key: `runtrail.task.id=${p.task}`,
      credential_id: 'ASIARUNTIMEPARENT001',
      principal: `arn:aws:sts::${ACCOUNT}:assumed-role/agent-runtime/pod`,
      action: 'sts:AssumeRole',
      outcome: 'success',
      src_ip: src,
      host: 'sts.amazonaws.com',
      resources: [{ type: 'AWS::IAM::Role', id: `arn:aws:iam::${ACCOUNT}:role/invoices-reader`, account: ACCOUNT }],
      credential: {
        id: p.key,
        kind: 'aws-access-key',
        parent_id: 'ASIARUNTIMEPARENT001',
        subject: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`,
        session_name: 'billing',
        tags: { 'runtrail.task.id': p.task },
        expires_at: at(3605),
      },
    }),
    tev({
      id: `${p.prefix}-tool`,
      source: 'agent',
      type: 'tool.call',
      format: 'otlp-traces',
      time: at(6),
      task_id: p.task,
      agent_id: 'billing-agent',
      workload_id: BILLING_WL,
      action: 'tool:read_invoice',
      outcome: 'success',
      tool: { name: 'read_invoice', arguments: '{"id":"inv-7"}' },
    }),
    tev({
      id: `${p.prefix}-get`,
      source: 'resource',
      type: 'resource.access',
      format: 'cloudtrail',
      time: at(7),
      task_id: p.task,
      attribution: 'credential',
      join_key: p.key,
      credential_id: p.key,
      principal: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`,
      action: 's3:GetObject',
      outcome: 'success',
      src_ip: src,
      host: 's3.eu-west-1.amazonaws.com',
      resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::invoices/inv-7.pdf', account: ACCOUNT }],
      attributes: { readOnly: true },
    }),
  ];
}

/** A use of a task's key seen in CloudTrail (joined to the task through the credential). */
function keyUse(p: { id: string; task: string; key: string; time: number; srcIp?: string; action?: string; attributes?: Record<string, unknown> }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'resource.access',
    format: 'cloudtrail',
    time: p.time,
    task_id: p.task,
    attribution: 'credential',
    join_key: p.key,
    credential_id: p.key,
    principal: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`,
    action: p.action ?? 's3:GetObject',
    outcome: 'success',
    src_ip: p.srcIp,
    resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::invoices/inv-8.pdf', account: ACCOUNT }],
    attributes: p.attributes ?? {},
  });
}

/** A Vault token issued to the billing workload (Kubernetes auth), then its reads. */
function vaultTask(p: { prefix: string; task: string; accessor: string; usedBy: string; usedFrom: string }): TimelineEvent[] {
  return [
    tev({ id: `${p.prefix}-start`, source: 'agent', type: 'task.started', time: at(0), task_id: p.task, agent_id: 'billing-agent', workload_id: BILLING_WL, host: 'node-a' }),
    tev({
      id: `${p.prefix}-login`,
      source: 'resource',
      type: 'credential.issued',
      format: 'vault',
      time: at(2),
      task_id: p.task,
      attribution: 'direct',
      join_key: `task_id=${p.task}`,
      workload_id: BILLING_WL,
      principal: 'kubernetes-agents-billing',
      action: 'vault:update',
      outcome: 'success',
      src_ip: '10.0.0.5',
      resources: [{ type: 'vault/path', id: 'auth/kubernetes/login' }],
      credential: { id: p.accessor, kind: 'vault-token', subject: BILLING_WL, tags: { task_id: p.task }, expires_at: at(902) },
    }),
    tev({
      id: `${p.prefix}-read`,
      source: 'resource',
      type: 'resource.access',
      format: 'vault',
      time: at(4),
      task_id: p.task,
      attribution: 'credential',
      join_key: p.accessor,
      credential_id: p.accessor,
      workload_id: BILLING_WL,
      principal: 'kubernetes-agents-billing',
      action: 'vault:read',
      outcome: 'success',
      src_ip: '10.0.0.5',
      data_classes: ['secret'],
      sensitivity: 'restricted',
      resources: [{ type: 'vault/path', id: 'secret/data/billing/stripe' }],
    }),
    tev({
      id: `${p.prefix}-replay`,
      source: 'resource',
      type: 'resource.access',
      format: 'vault',
      time: at(300),
      task_id: p.task,
      attribution: 'credential',
      join_key: p.accessor,
      credential_id: p.accessor,
      workload_id: p.usedBy,
      principal: 'kubernetes-agents-billing',
      action: 'vault:read',
      outcome: 'success',
      src_ip: p.usedFrom,
      data_classes: ['secret'],
      sensitivity: 'restricted',
      resources: [{ type: 'vault/path', id: 'secret/data/billing/stripe' }],
    }),
  ];
}

/** A workload role's routine activity: `n` calls spread over `spanS` seconds to the given services. */
function routine(p: { prefix: string; n: number; spanS: number; actions: readonly string[] }): TimelineEvent[] {
  const out: TimelineEvent[] = [];
  for (let i = 0; i < p.n; i++) {
    const action = p.actions[i % p.actions.length] as string;
    out.push(
      tev({
        id: `${p.prefix}-${i}`,
        source: 'resource',
        type: 'resource.access',
        format: 'cloudtrail',
        time: at(Math.round((i * p.spanS) / p.n)),
        credential_id: `ASIAETLSESSION${String(i % 5).padStart(6, '0')}`,
        principal: `arn:aws:sts::${ACCOUNT}:assumed-role/etl-loader/run-${Math.floor(i / 10)}`,
        action,
        outcome: 'success',
        src_ip: '10.1.4.20',
        resources: [{ type: 'AWS::S3::Object', id: `arn:aws:s3:::etl-staging/part-${i}.parquet`, account: ACCOUNT }],
      }),
    );
  }
  return out;
}

/** An STS issuance in a chain (CloudTrail), bound through its parent. */
function chainHop(p: { id: string; task: string; time: number; parent?: string; key: string; role: string; account: string; kind?: 'web' }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'credential.issued',
    format: 'cloudtrail',
    time: p.time,
    task_id: p.task,
    attribution: p.parent ? 'credential' : 'direct',
    join_key: p.parent ?? `runtrail.task.id=${p.task}`,
    credential_id: p.parent,
    workload_id: p.kind === 'web' ? 'system:serviceaccount:agents:ops' : undefined,
    action: p.kind === 'web' ? 'sts:AssumeRoleWithWebIdentity' : 'sts:AssumeRole',
    outcome: 'success',
    src_ip: '10.0.3.9',
    resources: [{ type: 'AWS::IAM::Role', id: `arn:aws:iam::${p.account}:role/${p.role}`, account: p.account }],
    credential: {
      id: p.key,
      kind: 'aws-access-key',
      parent_id: p.parent,
      subject: `arn:aws:sts::${p.account}:assumed-role/${p.role}/ops`,
      session_name: 'ops',
      tags: p.parent ? undefined : { 'runtrail.task.id': p.task },
      expires_at: p.time + 3600_000,
    },
  });
}

/** An orchestrator task that reads, then delegates to a sub-agent in the same task. */
function delegationTask(p: { prefix: string; task: string; delegateTool: string; delegateArgs: string }): TimelineEvent[] {
  return [
    tev({ id: `${p.prefix}-start`, source: 'agent', type: 'task.started', format: 'otlp-traces', time: at(0), task_id: p.task, agent_id: 'orchestrator', workload_id: 'spiffe://example.org/ns/agents/sa/orchestrator' }),
    tev({
      id: `${p.prefix}-read`,
      source: 'agent',
      type: 'tool.call',
      format: 'otlp-traces',
      time: at(3),
      task_id: p.task,
      agent_id: 'orchestrator',
      action: 'tool:search_tickets',
      outcome: 'success',
      tool: { name: 'search_tickets', arguments: '{"query":"refund"}' },
    }),
    tev({
      id: `${p.prefix}-delegate`,
      source: 'agent',
      type: 'agent.delegation',
      format: 'otlp-traces',
      time: at(5),
      task_id: p.task,
      agent_id: 'orchestrator',
      action: 'agent:invoke',
      outcome: 'success',
      delegation: { to_agent_id: 'support-helper', to_agent_name: 'support-helper' },
    }),
    tev({
      id: `${p.prefix}-sub`,
      source: 'agent',
      type: 'tool.call',
      format: 'otlp-traces',
      time: at(8),
      task_id: p.task,
      agent_id: 'support-helper',
      action: `tool:${p.delegateTool}`,
      outcome: 'success',
      tool: { name: p.delegateTool, arguments: p.delegateArgs },
    }),
  ];
}

/** Fixtures of the lateral-movement detector. */
export const LATERAL_MOVEMENT_FIXTURES: readonly DetectorFixture[] = [
  {
    name: 'credential-off-origin: task STS session replayed from an outside network',
    events: [...stsTask({ prefix: 'lm-oo1', task: 'task-lm-oo1', key: 'ASIAOFFORIGIN0000001' }), keyUse({ id: 'lm-oo1-replay', task: 'task-lm-oo1', key: 'ASIAOFFORIGIN0000001', time: at(400), srcIp: '203.0.113.50' })],
    expect: [{ rule: 'credential-off-origin', minSeverity: 'high' }],
  },
  {
    name: 'credential-off-origin: Vault token of the billing workload used by another workload',
    events: vaultTask({ prefix: 'lm-oo2', task: 'task-lm-oo2', accessor: 'hmac-sha256:0f1e2d3c4b5a', usedBy: 'spiffe://example.org/ns/batch/sa/reporter', usedFrom: '10.0.0.9' }),
    expect: [{ rule: 'credential-off-origin', minSeverity: 'high' }],
  },
  {
    name: 'credential-off-origin (negative): same /24, AWS service on the caller\'s behalf, same service account in another form',
    events: [
      ...stsTask({ prefix: 'lm-oon', task: 'task-lm-oon', key: 'ASIAONORIGIN00000001' }),
      keyUse({ id: 'lm-oon-1', task: 'task-lm-oon', key: 'ASIAONORIGIN00000001', time: at(60), srcIp: '10.0.0.77' }),
      keyUse({ id: 'lm-oon-2', task: 'task-lm-oon', key: 'ASIAONORIGIN00000001', time: at(90), action: 'kms:Decrypt', attributes: { 'userIdentity.invokedBy': 'athena.amazonaws.com', sourceIPAddress: 'athena.amazonaws.com' } }),
      ...vaultTask({ prefix: 'lm-oon-v', task: 'task-lm-oon-v', accessor: 'hmac-sha256:aa11bb22cc33', usedBy: 'system:serviceaccount:agents:billing', usedFrom: '10.0.0.5' }),
    ],
    expect: [],
  },
  {
    name: 'credential-outside-task: a task\'s session key used by a tool span of another task',
    events: [
      ...stsTask({ prefix: 'lm-ot1', task: 'task-lm-ot1', key: 'ASIAOUTSIDETASK00001' }),
      tev({ id: 'lm-ot1-other-start', source: 'agent', type: 'task.started', format: 'otlp-traces', time: at(100), task_id: 'task-lm-ot1-other', agent_id: 'billing-agent', workload_id: BILLING_WL, host: 'node-a' }),
      tev({
        id: 'lm-ot1-other-use',
        source: 'agent',
        type: 'tool.call',
        format: 'otlp-traces',
        time: at(110),
        task_id: 'task-lm-ot1-other',
        attribution: 'trace',
        join_key: '7a1b2c3d4e5f60718293a4b5c6d7e8f9',
        agent_id: 'billing-agent',
        workload_id: BILLING_WL,
        credential_id: 'ASIAOUTSIDETASK00001',
        action: 'tool:download_invoice',
        outcome: 'success',
        tool: { name: 'download_invoice', arguments: '{"id":"inv-9"}' },
      }),
    ],
    expect: [{ rule: 'credential-outside-task', minSeverity: 'high' }],
  },
  {
    name: 'credential-outside-task (negative): use by the task the credential\'s task delegated to',
    events: [
      ...stsTask({ prefix: 'lm-otn', task: 'task-lm-otn', key: 'ASIADELEGATED0000001' }),
      tev({
        id: 'lm-otn-delegate',
        source: 'agent',
        type: 'agent.delegation',
        format: 'otlp-traces',
        time: at(20),
        task_id: 'task-lm-otn',
        agent_id: 'billing-agent',
        workload_id: BILLING_WL,
        action: 'agent:invoke',
        outcome: 'success',
        delegation: { to_agent_id: 'billing-agent', to_task_id: 'task-lm-otn-sub' },
      }),
      tev({
        id: 'lm-otn-sub-use',
        source: 'resource',
        type: 'resource.access',
        format: 'cloudtrail',
        time: at(30),
        task_id: 'task-lm-otn-sub',
        attribution: 'request',
        join_key: 'req-77',
        credential_id: 'ASIADELEGATED0000001',
        principal: `arn:aws:sts::${ACCOUNT}:assumed-role/invoices-reader/billing`,
        action: 's3:GetObject',
        outcome: 'success',
        src_ip: '10.0.0.5',
        resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::invoices/inv-7.pdf', account: ACCOUNT }],
      }),
    ],
    expect: [],
  },
  {
    name: 'identity-new-service: an ETL role with an hour of S3/DynamoDB history reads Secrets Manager',
    events: [
      ...routine({ prefix: 'lm-ns1', n: 60, spanS: 5400, actions: ['s3:GetObject', 's3:PutObject', 'dynamodb:PutItem'] }),
      tev({
        id: 'lm-ns1-secret',
        source: 'resource',
        type: 'resource.access',
        format: 'cloudtrail',
        time: at(5500),
        credential_id: 'ASIAETLSESSION000003',
        principal: `arn:aws:sts::${ACCOUNT}:assumed-role/etl-loader/run-9`,
        action: 'secretsmanager:GetSecretValue',
        outcome: 'success',
        src_ip: '10.1.4.20',
        data_classes: ['secret'],
        sensitivity: 'restricted',
        resources: [{ type: 'AWS::SecretsManager::Secret', id: `arn:aws:secretsmanager:eu-west-1:${ACCOUNT}:secret:prod/db-AbCdEf`, account: ACCOUNT }],
      }),
    ],
    expect: [{ rule: 'identity-new-service', minSeverity: 'medium' }],
  },
  {
    name: 'identity-new-service (negative): a new service while the baseline is still being learned; then only known services',
    events: [
      ...routine({ prefix: 'lm-nsn', n: 20, spanS: 600, actions: ['s3:GetObject', 'dynamodb:PutItem'] }),
      tev({
        id: 'lm-nsn-early',
        source: 'resource',
        type: 'resource.access',
        format: 'cloudtrail',
        time: at(700),
        credential_id: 'ASIAETLSESSION000001',
        principal: `arn:aws:sts::${ACCOUNT}:assumed-role/etl-loader/run-1`,
        action: 'sqs:SendMessage',
        outcome: 'success',
        resources: [{ type: 'AWS::SQS::Queue', id: `https://sqs.eu-west-1.amazonaws.com/${ACCOUNT}/etl-done`, account: ACCOUNT }],
      }),
      ...routine({ prefix: 'lm-nsn-late', n: 60, spanS: 5400, actions: ['s3:GetObject', 'dynamodb:PutItem', 'sqs:SendMessage'] }).map((e) => ({ ...e, time: e.time + 800_000 })),
    ],
    expect: [],
  },
  {
    name: 'role-chaining: web identity -> session -> session -> another account\'s role',
    events: [
      tev({ id: 'lm-rc1-start', source: 'agent', type: 'task.started', format: 'otlp-traces', time: at(0), task_id: 'task-lm-rc1', agent_id: 'ops-agent', workload_id: 'spiffe://example.org/ns/agents/sa/ops' }),
      chainHop({ id: 'lm-rc1-h0', task: 'task-lm-rc1', time: at(2), key: 'ASIACHAIN00000000000', role: 'ops-runtime', account: ACCOUNT, kind: 'web' }),
      chainHop({ id: 'lm-rc1-h1', task: 'task-lm-rc1', time: at(4), parent: 'ASIACHAIN00000000000', key: 'ASIACHAIN00000000001', role: 'ops-task', account: ACCOUNT }),
      chainHop({ id: 'lm-rc1-h2', task: 'task-lm-rc1', time: at(6), parent: 'ASIACHAIN00000000001', key: 'ASIACHAIN00000000002', role: 'org-admin', account: '444455556666' }),
    ],
    expect: [{ rule: 'role-chaining', minSeverity: 'high' }],
  },
  {
    name: 'role-chaining (negative): runtime web-identity session -> task role (one hop)',
    events: [
      tev({ id: 'lm-rcn-start', source: 'agent', type: 'task.started', format: 'otlp-traces', time: at(0), task_id: 'task-lm-rcn', agent_id: 'ops-agent', workload_id: 'spiffe://example.org/ns/agents/sa/ops' }),
      chainHop({ id: 'lm-rcn-h0', task: 'task-lm-rcn', time: at(2), key: 'ASIACHAINOK000000000', role: 'ops-runtime', account: ACCOUNT, kind: 'web' }),
      chainHop({ id: 'lm-rcn-h1', task: 'task-lm-rcn', time: at(4), parent: 'ASIACHAINOK000000000', key: 'ASIACHAINOK000000001', role: 'ops-task', account: ACCOUNT }),
    ],
    expect: [],
  },
  {
    name: 'delegation-widening: a read-only orchestrator delegates and the helper deletes a user account',
    events: delegationTask({ prefix: 'lm-dw1', task: 'task-lm-dw1', delegateTool: 'delete_user_account', delegateArgs: '{"user_id":"u-118"}' }),
    expect: [{ rule: 'delegation-widening', minSeverity: 'medium' }],
  },
  {
    name: 'delegation-widening (negative): the helper only searches, as the orchestrator did',
    events: delegationTask({ prefix: 'lm-dwn', task: 'task-lm-dwn', delegateTool: 'search_knowledge_base', delegateArgs: '{"query":"refund policy"}' }),
    expect: [],
  },
];
