import { describe, expect, it } from 'vitest';
import { BLAST_RADIUS_FIXTURES } from '../../detectors/blast-radius/fixtures.ts';
import { BlastRadiusInstance, blastRadiusDetector } from '../../detectors/blast-radius/index.ts';
import { ToolCatalog } from '../../detectors/catalog/tool-catalog.ts';
import { DetectorEngine } from '../../detectors/engine.ts';
import { configResolver, parsePolicy, PolicyError } from '../../detectors/policy.ts';
import { tev } from '../../detectors/testing.ts';
import type { TimelineEvent } from '../../shared/event.ts';
import type { Finding } from '../../shared/finding.ts';

const T0 = Date.parse('2026-05-04T16:00:00Z');
const at = (s: number) => T0 + s * 1000;

function harness(rawPolicy: Record<string, unknown> = {}) {
  const policy = parsePolicy(rawPolicy);
  const configFor = configResolver(policy, blastRadiusDetector);
  const inst = new BlastRadiusInstance(configFor, new ToolCatalog(policy.catalog));
  const engine = new DetectorEngine([inst], { maxTasks: 10_000, maxEventsPerTask: 5_000 });
  return { inst, cfg: configFor(''), run: (events: readonly TimelineEvent[]): Finding[] => engine.process([...events].sort((a, b) => a.time - b.time)) };
}

function fixture(prefix: string): TimelineEvent[] {
  const f = BLAST_RADIUS_FIXTURES.find((x) => x.name.startsWith(prefix));
  if (!f) throw new Error(`no fixture ${prefix}`);
  return f.events;
}

function del(p: { id: string; task: string; time: number; object: string }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'resource.access',
    format: 'cloudtrail',
    time: at(p.time),
    task_id: p.task,
    attribution: 'credential',
    credential_id: 'ASIAWINDOW0000000001',
    principal: `arn:aws:sts::111122223333:assumed-role/janitor/${p.task}`,
    action: 's3:DeleteObject',
    outcome: 'success',
    resources: [{ id: `arn:aws:s3:::scratch/${p.object}` }],
    attributes: { readOnly: false },
  });
}

describe('blast-radius: task score levels', () => {
  it('notifies (medium) and lists every contribution in metrics and summary', () => {
    const found = harness().run(fixture('task-blast-radius notify'));
    expect(found).toHaveLength(1);
    const f = found[0] as Finding;
    expect(f).toMatchObject({ rule: 'task-blast-radius', severity: 'medium', task_id: 'task-br-n1', join_keys: { task_id: 'task-br-n1', level: 'notify' } });
    expect(f.metrics).toMatchObject({
      resources: 20,
      weight_resources: 40,
      data_class_pii: 5,
      weight_data_classes: 5,
      state_changes: 1,
      weight_state_changes: 3,
      capability_sends_external: 1,
      weight_capability_sends_external: 2,
      privileged_actions: 0,
      score: 50,
      threshold: 50,
    });
    expect(f.summary).toContain('20 resources x 2 (40)');
    expect(f.summary).toContain('data class pii (5)');
    expect(f.evidence.length).toBeGreaterThan(1);
    expect(f.evidence.length).toBeLessThanOrEqual(25);
  });

  it('asks for approval (high) on privileged changes, counting privilege per action', () => {
    const found = harness().run(fixture('task-blast-radius approval_required'));
    expect(found.map((f) => f.severity)).toEqual(['medium', 'high']);
    const high = found[1] as Finding;
    expect(high.metrics).toMatchObject({ privileged_actions: 6, weight_privileged: 60, data_class_secret: 10, state_changes: 6 });
    expect(high.join_keys.level).toBe('approval_required');
  });

  it('escalates notify -> approval_required -> contain once each as the score crosses, with deterministic ids', () => {
    const events = fixture('task-blast-radius contain');
    const taskOnly = (fs: Finding[]) => fs.filter((f) => f.rule === 'task-blast-radius');
    const first = taskOnly(harness().run(events));
    expect(first.map((f) => [f.severity, f.join_keys.level])).toEqual([
      ['medium', 'notify'],
      ['high', 'approval_required'],
      ['critical', 'contain'],
    ]);
    const again = taskOnly(harness().run(events));
    expect(again.map((f) => f.id)).toEqual(first.map((f) => f.id));
    // More of the same reach after containment adds no finding.
    const h = harness();
    h.run(events);
    expect(h.run([del({ id: 'more-1', task: 'task-br-c1', time: 120, object: 'extra-1' }), del({ id: 'more-2', task: 'task-br-c1', time: 121, object: 'extra-2' })])).toEqual([]);
  });

  it('reports only the highest level when one event jumps several', () => {
    const h = harness({ detectors: { 'blast-radius': { weights: { privileged: 150 } } } });
    const jump = tev({ id: 'jump', source: 'resource', type: 'resource.access', time: at(1), task_id: 'task-jump', attribution: 'credential', action: 'iam:CreateUser', outcome: 'success', resources: [{ id: 'arn:aws:iam::1:user/x' }], attributes: { readOnly: false } });
    expect(h.run([jump]).map((f) => f.join_keys.level)).toEqual(['approval_required']);
  });

  it('stays below notify for a benign task and for refused actions', () => {
    expect(harness().run(fixture('blast radius (negative): a benign task'))).toEqual([]);
    expect(harness().run(fixture('blast radius (negative): thirty refused'))).toEqual([]);
  });

  it('counts only what falls within the rolling window of event time', () => {
    const spread = Array.from({ length: 30 }, (_, i) => del({ id: `spread-${i}`, task: 'task-spread', time: i * 300, object: `s-${i}` }));
    // At most 13 deletes fall in one hour: 13 x (2 + 3) = 65, notify but never approval.
    expect(harness().run(spread).map((f) => f.severity)).toEqual(['medium']);
    const burst = Array.from({ length: 30 }, (_, i) => del({ id: `burst-${i}`, task: 'task-burst', time: i, object: `b-${i}` }));
    expect(harness().run(burst).map((f) => f.severity)).toEqual(['medium', 'high']);
    const wide = harness({ detectors: { 'blast-radius': { window_ms: 4 * 3_600_000 } } });
    expect(wide.run(spread).map((f) => f.severity)).toEqual(['medium', 'high']);
  });
});

describe('blast-radius: read vs state-changing', () => {
  const h = harness();
  const ev = (over: Partial<Parameters<typeof tev>[0]> & { id: string }) =>
    tev({ source: 'resource', type: 'resource.access', time: at(1), task_id: 't', outcome: 'success', resources: [{ id: 'r1', type: 'x' }], ...over });

  it("uses CloudTrail's readOnly when present, else the action verb, else the tool catalog", () => {
    expect(h.inst.contribution(ev({ id: 'ro1', action: 'ec2:RunInstances', attributes: { readOnly: false } }), h.cfg).change).toBeDefined();
    expect(h.inst.contribution(ev({ id: 'ro2', action: 'bedrock:InvokeModel', attributes: { readOnly: true } }), h.cfg).change).toBeUndefined();
    expect(h.inst.contribution(ev({ id: 'v1', action: 'k8s:delete' }), h.cfg).change).toBeDefined();
    expect(h.inst.contribution(ev({ id: 'v2', action: 'k8s:list' }), h.cfg).change).toBeUndefined();
    expect(h.inst.contribution(ev({ id: 'v3', action: 'vault:read' }), h.cfg).change).toBeUndefined();
    expect(h.inst.contribution(ev({ id: 'v4', action: 'dynamodb:BatchGetItem' }), h.cfg).change).toBeUndefined();
    expect(h.inst.contribution(ev({ id: 'v5', action: 'kms:Decrypt' }), h.cfg).change).toBeUndefined();
    const pay = h.inst.contribution(tev({ id: 't1', source: 'agent', type: 'tool.call', time: at(1), task_id: 't', outcome: 'success', tool: { name: 'send_money', arguments: '{"amount":10}' } }), h.cfg);
    expect(pay.capabilities).toEqual(expect.arrayContaining(['spends_money']));
    const ro = h.inst.contribution(tev({ id: 't2', source: 'agent', type: 'tool.call', time: at(1), task_id: 't', outcome: 'success', tool: { name: 'delete_draft', annotations: { readOnlyHint: true } } }), h.cfg);
    expect(ro.change).toBeUndefined();
    const failed = h.inst.contribution(ev({ id: 'f1', action: 's3:PutObject', outcome: 'failure' }), h.cfg);
    expect(failed).toEqual({ resources: [], dataClasses: [], capabilities: [] });
  });

  it('marks privileged changes by action pattern or target, never privileged reads', () => {
    expect(h.inst.contribution(ev({ id: 'p1', action: 'iam:AttachRolePolicy', attributes: { readOnly: false } }), h.cfg).privileged).toBe('iam:AttachRolePolicy');
    expect(h.inst.contribution(ev({ id: 'p2', action: 'iam:ListRoles', attributes: { readOnly: true } }), h.cfg).privileged).toBeUndefined();
    expect(h.inst.contribution(ev({ id: 'p3', action: 'k8s:create', resources: [{ id: 'default/rolebindings/x', type: 'k8s/rolebindings' }] }), h.cfg).privileged).toBe('k8s:create');
    expect(h.inst.contribution(ev({ id: 'p4', action: 'vault:update', resources: [{ id: 'sys/policies/acl/admin', type: 'vault/path' }] }), h.cfg).privileged).toBe('vault:update');
  });
});

describe('blast-radius: identity score', () => {
  it("scores an identity's reach across sessions, stripping the STS session name", () => {
    const found = harness().run(fixture('identity-blast-radius notify'));
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ rule: 'identity-blast-radius', severity: 'medium', task_id: '', join_keys: { identity: 'arn:aws:sts::111122223333:assumed-role/reporting-job', level: 'notify' } });
    // Reported by the event that crossed: the 95th distinct secret.
    expect(found[0]?.metrics).toMatchObject({ resources: 95, weight_resources: 190, data_class_secret: 10, score: 200, threshold: 200 });
  });

  it('does not score agent spans per identity unless the policy adds the agent source', () => {
    const tools = Array.from({ length: 40 }, (_, i) =>
      tev({ id: `idt-${i}`, source: 'agent', type: 'tool.call', time: at(i), task_id: `task-idt-${i % 20}`, agent_id: 'mailer', workload_id: 'spiffe://example.org/ns/agents/sa/mailer', outcome: 'success', tool: { name: 'send_email', arguments: `{"to":"u${i}@example.com"}` } }),
    );
    expect(harness().run(tools).filter((f) => f.rule === 'identity-blast-radius')).toEqual([]);
    const withAgents = harness({ detectors: { 'blast-radius': { identity: { sources: ['agent', 'resource', 'workload'] } } } });
    expect(withAgents.run(tools).filter((f) => f.rule === 'identity-blast-radius').map((f) => f.join_keys.identity)).toEqual(['spiffe://example.org/ns/agents/sa/mailer']);
  });
});

describe('blast-radius: policy, per-agent overrides and bounded state', () => {
  it('applies per-agent overrides (thresholds and weights) only to matching agents', () => {
    const policy = { agents: { 'crm-*': { detectors: { 'blast-radius': { task: { notify: 90, approval: 180, contain: 360 } } } } } };
    expect(harness(policy).run(fixture('task-blast-radius notify'))).toEqual([]);
    const other = fixture('task-blast-radius notify').map((e) => (e.agent_id ? { ...e, agent_id: 'sales-assistant' } : e));
    expect(harness(policy).run(other).map((f) => f.severity)).toEqual(['medium']);
    const resolve = configResolver(parsePolicy(policy), blastRadiusDetector);
    expect(resolve('crm-assistant').task.notify).toBe(90);
    expect(resolve('crm-assistant').weights.resource).toBe(2);
  });

  it('rejects thresholds that do not escalate', () => {
    expect(() => parsePolicy({ detectors: { 'blast-radius': { task: { notify: 100, approval: 50 } } } })).toThrow(PolicyError);
    expect(() => parsePolicy({ agents: { x: { detectors: { 'blast-radius': { task: { contain: 60 } } } } } })).toThrow(/notify < approval < contain/);
  });

  it('bounds scopes and items per scope by the policy, counting evictions', () => {
    const h = harness({ detectors: { 'blast-radius': { max_scopes: 3, max_items_per_scope: 5, identity: { enabled: false } } } });
    const events = Array.from({ length: 10 }, (_, t) => Array.from({ length: 8 }, (_, i) => del({ id: `bs-${t}-${i}`, task: `task-bs-${t}`, time: t * 10 + i, object: `o-${t}-${i}` }))).flat();
    h.run(events);
    expect(h.inst.scopeCount).toBe(3);
    expect(h.inst.stats.scopesEvicted).toBe(7);
    // 8 resources and 8 changes per task, 5 kept of each.
    expect(h.inst.stats.itemsEvicted).toBe(10 * 2 * 3);
  });
});
