import { createHash } from 'node:crypto';
import { CredentialBindingSchema, TimelineEventSchema, type CredentialBinding, type TimelineEvent } from '../../../shared/event.ts';
import { FindingSchema, type Finding } from '../../../shared/finding.ts';
import { IncidentSchema, type Incident } from '../../../shared/alert.ts';
import type { Store } from '../../../services/storage/store.ts';

/**
 * A deterministic analyst data set written straight into a store: TASKS tasks, each with an agent
 * tool call and a resource access through the task's own credential; the first FINDING_TASKS tasks
 * have a finding. Enough rows to span several API pages.
 */

export const TASKS = 120;
export const FINDING_TASKS = 60;
/** Task i starts at BASE_MS + i seconds. */
export const BASE_MS = Date.parse('2026-05-01T12:00:00Z');

const hex32 = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 32);
const pad = (i: number): string => String(i).padStart(3, '0');

export const taskId = (i: number): string => `task-${pad(i)}`;
export const credentialId = (i: number): string => `ASIAFIXTURE${pad(i)}`;
export const agentId = (i: number): string => (i % 2 === 0 ? 'agent-even' : 'agent-odd');
export const workloadId = (i: number): string => `spiffe://example.org/ns/agents/sa/w${i % 4}`;
export const bucketArn = (i: number): string => `arn:aws:s3:::bucket-${pad(i)}/report.csv`;
export const eventId = (i: number, n: number): string => hex32(`${i}/${n}`);

function events(i: number): TimelineEvent[] {
  const t0 = BASE_MS + i * 1000;
  return [
    TimelineEventSchema.parse({
      event_id: eventId(i, 0),
      source: 'agent',
      type: 'tool.call',
      time: t0,
      format: 'runtrail',
      task_id: taskId(i),
      agent_id: agentId(i),
      workload_id: workloadId(i),
      action: 'tool:read_report',
      tool: { name: 'read_report', arguments: '{"bucket":"reports"}' },
      attribution: 'direct',
      ingested_at: t0,
    }),
    TimelineEventSchema.parse({
      event_id: eventId(i, 1),
      source: 'resource',
      type: 'resource.access',
      time: t0 + 500,
      format: 'cloudtrail',
      task_id: taskId(i),
      credential_id: credentialId(i),
      principal: `arn:aws:sts::111122223333:assumed-role/reader/${taskId(i)}`,
      action: 's3:GetObject',
      resources: [{ type: 'AWS::S3::Object', id: bucketArn(i), account: '111122223333' }],
      attribution: 'credential',
      join_key: credentialId(i),
      ingested_at: t0 + 500,
    }),
  ];
}

function binding(i: number): CredentialBinding {
  return CredentialBindingSchema.parse({
    credential_id: credentialId(i),
    kind: 'aws-access-key',
    task_id: taskId(i),
    agent_id: agentId(i),
    workload_id: workloadId(i),
    principal: `arn:aws:sts::111122223333:assumed-role/reader/${taskId(i)}`,
    issued_at: BASE_MS + i * 1000 - 100,
    event_id: hex32(`issue/${i}`),
    bound_by: 'tag',
  });
}

/** The finding of task i (i < FINDING_TASKS): high for every third task, else low. */
export function finding(i: number): Finding {
  return FindingSchema.parse({
    id: hex32(`finding/${i}`),
    detector: 'lateral-movement',
    rule: i % 3 === 0 ? 'credential-moved' : 'new-service',
    severity: i % 3 === 0 ? 'high' : 'low',
    title: `credential of ${taskId(i)} used elsewhere`,
    task_id: taskId(i),
    agent_id: agentId(i),
    workload_id: workloadId(i),
    time: BASE_MS + i * 1000 + 500,
    evidence: [eventId(i, 0), eventId(i, 1)],
    join_keys: { credential_id: credentialId(i) },
  });
}

/**
 * The incident the alerter keeps for finding i: one per task (default grouping); every fourth is
 * resolved. Stored twice, as the alerter does (opened, then updated), so reads must take the
 * latest version.
 */
export function incident(i: number, version: 'opened' | 'latest' = 'latest'): Incident {
  const f = finding(i);
  const resolved = version === 'latest' && i % 4 === 0;
  return IncidentSchema.parse({
    id: hex32(`incident/${i}`),
    fingerprint: hex32(`fingerprint/${i}`),
    status: resolved ? 'resolved' : 'open',
    severity: f.severity,
    detector: f.detector,
    rule: f.rule,
    title: f.title,
    summary: f.summary,
    task_id: f.task_id,
    agent_id: f.agent_id,
    workload_id: f.workload_id,
    finding_count: version === 'latest' ? 2 : 1,
    first_seen: f.time,
    last_seen: f.time,
    opened_at: BASE_MS,
    updated_at: BASE_MS + (version === 'latest' ? 2 : 1),
    resolved_at: resolved ? BASE_MS + 2 : 0,
    recent_findings: [f.id],
    evidence: f.evidence,
    tags: [],
    suppressed: '',
    notified: {},
    seq: 1,
  });
}

/** Writes the data set. */
export async function loadFixture(store: Store): Promise<void> {
  const all = Array.from({ length: TASKS }, (_, i) => i);
  const withFindings = all.filter((i) => i < FINDING_TASKS);
  await store.insertEvents(all.flatMap(events));
  await store.insertBindings(all.map(binding));
  await store.insertFindings(withFindings.map(finding));
  await store.upsertIncidents(withFindings.map((i) => incident(i, 'opened')));
  await store.upsertIncidents(withFindings.map((i) => incident(i)));
}
