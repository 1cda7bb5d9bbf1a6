import type { TimelineEvent } from '../../shared/event.ts';
import type { DetectorFixture } from '../detector.ts';
import { tev } from '../testing.ts';

/**
 * Fixtures of the blast-radius detector: agent tasks (OTLP spans) whose resource activity arrives
 * from CloudTrail, Vault and Kubernetes audit, joined to the task through its credential; and a
 * workload identity's activity across sessions. Each level has a positive; benign tasks and refused
 * actions are the negatives.
 */

const T0 = Date.parse('2026-05-03T14:00:00Z');
const at = (s: number) => T0 + s * 1000;
const ACCOUNT = '111122223333';

function start(prefix: string, task: string, agent: string): TimelineEvent {
  return tev({ id: `${prefix}-start`, source: 'agent', type: 'task.started', format: 'otlp-traces', time: at(0), task_id: task, agent_id: agent, agent_name: agent, workload_id: `spiffe://example.org/ns/agents/sa/${agent}` });
}

function tool(p: { id: string; task: string; agent: string; time: number; name: string; args: string }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'agent',
    type: 'tool.call',
    format: 'otlp-traces',
    time: at(p.time),
    task_id: p.task,
    agent_id: p.agent,
    action: `tool:${p.name}`,
    outcome: 'success',
    tool: { name: p.name, arguments: p.args },
  });
}

/** A CloudTrail call made with the task's session key. */
function aws(p: {
  id: string;
  task: string;
  time: number;
  action: string;
  resource: { id: string; type: string };
  readOnly: boolean;
  outcome?: 'success' | 'failure';
  dataClasses?: string[];
}): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'resource.access',
    format: 'cloudtrail',
    time: at(p.time),
    task_id: p.task,
    attribution: 'credential',
    join_key: 'ASIABLASTRADIUS00001',
    credential_id: 'ASIABLASTRADIUS00001',
    principal: `arn:aws:sts::${ACCOUNT}:assumed-role/agent-task/${p.task}`,
    action: p.action,
    outcome: p.outcome ?? 'success',
    src_ip: '10.0.0.5',
    data_classes: p.dataClasses ?? [],
    resources: [{ ...p.resource, account: ACCOUNT }],
    attributes: { readOnly: p.readOnly, ...(p.outcome === 'failure' ? { errorCode: 'AccessDenied' } : {}) },
  });
}

/** A CRM lookup agent that pages through customer records and mails a summary. */
function customerExport(prefix: string, task: string, records: number): TimelineEvent[] {
  const out = [start(prefix, task, 'crm-assistant'), tool({ id: `${prefix}-search`, task, agent: 'crm-assistant', time: 1, name: 'search_customers', args: '{"segment":"churn-risk"}' })];
  for (let i = 0; i < records; i++) {
    out.push(
      aws({
        id: `${prefix}-get-${i}`,
        task,
        time: 2 + i,
        action: 'dynamodb:GetItem',
        resource: { type: 'AWS::DynamoDB::Table', id: `arn:aws:dynamodb:eu-west-1:${ACCOUNT}:table/customers/item/c-${1000 + i}` },
        readOnly: true,
        dataClasses: ['pii'],
      }),
    );
  }
  out.push(tool({ id: `${prefix}-mail`, task, agent: 'crm-assistant', time: 3 + records, name: 'send_email', args: '{"to":"account-team@example.com","subject":"churn risk"}' }));
  return out;
}

/** Fixtures of the blast-radius detector. */
export const BLAST_RADIUS_FIXTURES: readonly DetectorFixture[] = [
  {
    name: 'task-blast-radius notify: an assistant reads 20 customer records (pii) and mails a summary',
    events: customerExport('br-n1', 'task-br-n1', 20),
    expect: [{ rule: 'task-blast-radius', minSeverity: 'medium' }],
  },
  {
    name: 'task-blast-radius approval_required: secrets read, then IAM user, access key, role policy, cluster-admin binding and bucket policy changed',
    events: [
      start('br-a1', 'task-br-a1', 'platform-helper'),
      tev({
        id: 'br-a1-vault',
        source: 'resource',
        type: 'resource.access',
        format: 'vault',
        time: at(2),
        task_id: 'task-br-a1',
        attribution: 'credential',
        join_key: 'hmac-sha256:77aa88bb99cc',
        credential_id: 'hmac-sha256:77aa88bb99cc',
        workload_id: 'spiffe://example.org/ns/agents/sa/platform-helper',
        action: 'vault:read',
        outcome: 'success',
        data_classes: ['secret'],
        sensitivity: 'restricted',
        resources: [{ type: 'vault/path', id: 'secret/data/platform/root-ca' }],
      }),
      aws({ id: 'br-a1-user', task: 'task-br-a1', time: 5, action: 'iam:CreateUser', resource: { type: 'AWS::IAM::User', id: `arn:aws:iam::${ACCOUNT}:user/svc-backup` }, readOnly: false }),
      aws({ id: 'br-a1-attach', task: 'task-br-a1', time: 6, action: 'iam:AttachUserPolicy', resource: { type: 'AWS::IAM::Policy', id: 'arn:aws:iam::aws:policy/AdministratorAccess' }, readOnly: false }),
      aws({ id: 'br-a1-key', task: 'task-br-a1', time: 7, action: 'iam:CreateAccessKey', resource: { type: 'AWS::IAM::AccessKey', id: 'AKIAEXAMPLEBACKUP001' }, readOnly: false, dataClasses: ['secret'] }),
      aws({ id: 'br-a1-inline', task: 'task-br-a1', time: 8, action: 'iam:PutRolePolicy', resource: { type: 'AWS::IAM::Role', id: `arn:aws:iam::${ACCOUNT}:role/ci-runner` }, readOnly: false }),
      tev({
        id: 'br-a1-crb',
        source: 'resource',
        type: 'resource.access',
        format: 'k8s-audit',
        time: at(9),
        task_id: 'task-br-a1',
        attribution: 'workload',
        join_key: 'system:serviceaccount:agents:platform-helper',
        workload_id: 'system:serviceaccount:agents:platform-helper',
        principal: 'system:serviceaccount:agents:platform-helper',
        action: 'k8s:create',
        outcome: 'success',
        resources: [{ type: 'k8s/clusterrolebindings', id: 'clusterrolebindings/backup-admin' }],
      }),
      aws({ id: 'br-a1-policy', task: 'task-br-a1', time: 11, action: 's3:PutBucketPolicy', resource: { type: 'AWS::S3::Bucket', id: 'arn:aws:s3:::prod-backups' }, readOnly: false }),
    ],
    expect: [{ rule: 'task-blast-radius', minSeverity: 'high' }],
  },
  {
    name: 'task-blast-radius contain: a cleanup task deletes 50 ledger files in a minute',
    events: [
      start('br-c1', 'task-br-c1', 'storage-janitor'),
      tool({ id: 'br-c1-plan', task: 'task-br-c1', agent: 'storage-janitor', time: 1, name: 'list_buckets', args: '{}' }),
      ...Array.from({ length: 50 }, (_, i) =>
        aws({ id: `br-c1-del-${i}`, task: 'task-br-c1', time: 2 + i, action: 's3:DeleteObject', resource: { type: 'AWS::S3::Object', id: `arn:aws:s3:::finance-archive/2025/ledger-${i}.parquet` }, readOnly: false, dataClasses: ['financial'] }),
      ),
    ],
    expect: [{ rule: 'task-blast-radius', minSeverity: 'critical' }],
  },
  {
    name: 'identity-blast-radius notify: one workload role reads 100 distinct secrets across sessions in 40 minutes',
    events: Array.from({ length: 100 }, (_, i) =>
      tev({
        id: `br-i1-${i}`,
        source: 'resource',
        type: 'resource.access',
        format: 'cloudtrail',
        time: at(i * 24),
        credential_id: `ASIAREPORTER${String(Math.floor(i / 20)).padStart(8, '0')}`,
        principal: `arn:aws:sts::${ACCOUNT}:assumed-role/reporting-job/run-${Math.floor(i / 20)}`,
        action: 'secretsmanager:GetSecretValue',
        outcome: 'success',
        src_ip: '10.2.0.14',
        data_classes: ['secret'],
        sensitivity: 'restricted',
        resources: [{ type: 'AWS::SecretsManager::Secret', id: `arn:aws:secretsmanager:eu-west-1:${ACCOUNT}:secret:tenant-${i}/db`, account: ACCOUNT }],
        attributes: { readOnly: true },
      }),
    ),
    expect: [{ rule: 'identity-blast-radius', minSeverity: 'medium' }],
  },
  {
    name: 'identity-blast-radius (negative): a config poller re-reads the same ten objects every minute for two hours',
    events: Array.from({ length: 120 }, (_, i) =>
      tev({
        id: `br-ineg-${i}`,
        source: 'resource',
        type: 'resource.access',
        format: 'cloudtrail',
        time: at(i * 60),
        credential_id: `ASIAPOLLER${String(Math.floor(i / 60)).padStart(10, '0')}`,
        principal: `arn:aws:sts::${ACCOUNT}:assumed-role/config-poller/i-0abc${Math.floor(i / 60)}`,
        action: 's3:GetObject',
        outcome: 'success',
        src_ip: '10.3.0.8',
        resources: [{ type: 'AWS::S3::Object', id: `arn:aws:s3:::service-config/app-${i % 10}.json`, account: ACCOUNT }],
        attributes: { readOnly: true },
      }),
    ),
    expect: [],
  },
  {
    name: 'blast radius (negative): a benign task reads three records and sends one message',
    events: customerExport('br-neg1', 'task-br-neg1', 3),
    expect: [],
  },
  {
    name: 'blast radius (negative): thirty refused IAM changes add nothing; reads of the same object repeat',
    events: [
      start('br-neg2', 'task-br-neg2', 'platform-helper'),
      ...Array.from({ length: 30 }, (_, i) =>
        aws({ id: `br-neg2-deny-${i}`, task: 'task-br-neg2', time: 1 + i, action: 'iam:CreateUser', resource: { type: 'AWS::IAM::User', id: `arn:aws:iam::${ACCOUNT}:user/probe-${i}` }, readOnly: false, outcome: 'failure' }),
      ),
      ...Array.from({ length: 20 }, (_, i) =>
        aws({ id: `br-neg2-read-${i}`, task: 'task-br-neg2', time: 40 + i, action: 's3:GetObject', resource: { type: 'AWS::S3::Object', id: 'arn:aws:s3:::runbooks/iam.md' }, readOnly: true }),
      ),
    ],
    expect: [],
  },
];
