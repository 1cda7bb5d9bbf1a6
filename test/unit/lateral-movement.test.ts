import { describe, expect, it } from 'vitest';
import { ToolCatalog } from '../../detectors/catalog/tool-catalog.ts';
import { DetectorEngine } from '../../detectors/engine.ts';
import { LATERAL_MOVEMENT_FIXTURES } from '../../detectors/lateral-movement/fixtures.ts';
import { LateralMovementInstance, lateralMovementDetector } from '../../detectors/lateral-movement/index.ts';
import { inCidr, networkOf, parseCidr, parseIp } from '../../detectors/lateral-movement/network.ts';
import { configResolver, parsePolicy, PolicyError } from '../../detectors/policy.ts';
import { tev } from '../../detectors/testing.ts';
import { spireAdapter } from '../../services/collector/adapters/spire.ts';
import type { TimelineEvent } from '../../shared/event.ts';
import type { Finding } from '../../shared/finding.ts';

const T0 = Date.parse('2026-05-04T08:00:00Z');
const at = (s: number) => T0 + s * 1000;
const ACCOUNT = '111122223333';

function harness(rawPolicy: Record<string, unknown> = {}) {
  const policy = parsePolicy(rawPolicy);
  const inst = new LateralMovementInstance(configResolver(policy, lateralMovementDetector), new ToolCatalog(policy.catalog));
  const engine = new DetectorEngine([inst], { maxTasks: 10_000, maxEventsPerTask: 2_000 });
  return { inst, run: (events: readonly TimelineEvent[]): Finding[] => engine.process([...events].sort((a, b) => a.time - b.time)) };
}

function fixture(prefix: string): TimelineEvent[] {
  const f = LATERAL_MOVEMENT_FIXTURES.find((x) => x.name.startsWith(prefix));
  if (!f) throw new Error(`no fixture ${prefix}`);
  return f.events;
}

const byRule = (fs: Finding[], rule: string) => fs.filter((f) => f.rule === rule);

/** A task with an agent start (workload, host), an STS issuance for it from `issuedFrom`. */
function issued(p: { id: string; task: string; key: string; agent?: string; issuedFrom?: string; parent?: string; kind?: 'aws-access-key' | 'vault-lease'; time?: number }): TimelineEvent[] {
  const agent = p.agent ?? 'billing-agent';
  return [
    tev({ id: `${p.id}-start`, source: 'agent', type: 'task.started', time: at(p.time ?? 0), task_id: p.task, agent_id: agent, workload_id: `spiffe://example.org/ns/agents/sa/${agent}`, host: 'node-a' }),
    tev({
      id: `${p.id}-issue`,
      source: 'resource',
      type: 'credential.issued',
      format: 'cloudtrail',
      time: at((p.time ?? 0) + 1),
      task_id: p.task,
      attribution: p.parent ? 'credential' : 'direct',
      credential_id: p.parent,
      action: 'sts:AssumeRole',
      outcome: 'success',
      src_ip: p.issuedFrom ?? '10.0.0.5',
      credential: { id: p.key, kind: p.kind ?? 'aws-access-key', parent_id: p.parent, subject: `arn:aws:sts::${ACCOUNT}:assumed-role/reader/${p.task}`, tags: { 'runtrail.task.id': p.task } },
    }),
  ];
}

function use(p: { id: string; task: string; key: string; time: number; srcIp?: string; workload?: string; host?: string; attribution?: TimelineEvent['attribution']; principal?: string }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'resource.access',
    format: 'cloudtrail',
    time: at(p.time),
    task_id: p.task,
    attribution: p.attribution ?? 'credential',
    join_key: p.key,
    credential_id: p.key,
    workload_id: p.workload,
    host: p.host,
    principal: p.principal ?? `arn:aws:sts::${ACCOUNT}:assumed-role/reader/${p.task}`,
    action: 's3:GetObject',
    outcome: 'success',
    src_ip: p.srcIp,
    resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::invoices/a.pdf', account: ACCOUNT }],
  });
}

describe('network helpers', () => {
  it('groups IPv4 by prefix, maps IPv4-mapped IPv6 to IPv4, and tests CIDR membership', () => {
    const a = parseIp('10.0.0.5');
    const b = parseIp('::ffff:10.0.0.77');
    const c = parseIp('10.0.1.5');
    expect(a && b && c).toBeTruthy();
    if (!a || !b || !c) return;
    expect(networkOf(a, 24, 64)).toBe(networkOf(b, 24, 64));
    expect(networkOf(a, 24, 64)).not.toBe(networkOf(c, 24, 64));
    expect(networkOf(a, 16, 64)).toBe(networkOf(c, 16, 64));
    const v6a = parseIp('2001:db8:1:2::10');
    const v6b = parseIp('2001:db8:1:2:ffff::1');
    const v6c = parseIp('2001:db8:1:3::10');
    if (!v6a || !v6b || !v6c) throw new Error('ipv6 parse');
    expect(networkOf(v6a, 24, 64)).toBe(networkOf(v6b, 24, 64));
    expect(networkOf(v6a, 24, 64)).not.toBe(networkOf(v6c, 24, 64));
    const cidr = parseCidr('10.0.0.0/16');
    if (!cidr) throw new Error('cidr parse');
    expect(inCidr(c, cidr)).toBe(true);
    expect(parseIp('AWS Internal')).toBeUndefined();
    expect(parseCidr('10.0.0.0/33')).toBeUndefined();
  });
});

describe('lateral-movement: credential-off-origin', () => {
  it('reports a task session key replayed from another network, with [issuance, use] evidence and the credential as join key', () => {
    const events = fixture('credential-off-origin: task STS session');
    const found = byRule(harness().run(events), 'credential-off-origin');
    expect(found).toHaveLength(1);
    const f = found[0] as Finding;
    const issue = events.find((e) => e.type === 'credential.issued') as TimelineEvent;
    const replay = events.find((e) => e.src_ip === '203.0.113.50') as TimelineEvent;
    expect(f.severity).toBe('high');
    expect(f.task_id).toBe('task-lm-oo1');
    expect(f.evidence).toEqual([issue.event_id, replay.event_id]);
    expect(f.join_keys).toEqual({ credential_id: 'ASIAOFFORIGIN0000001' });
    expect(f.metrics).toMatchObject({ network_mismatch: 1, workload_mismatch: 0, ipv4_prefix: 24 });
    expect(f.tags).toEqual(expect.arrayContaining(['mitre-attack:T1550', 'owasp-agentic:T9']));
  });

  it('reports another workload using a Vault token, comparing SPIFFE IDs and service accounts as one identity', () => {
    const found = byRule(harness().run(fixture('credential-off-origin: Vault token')), 'credential-off-origin');
    expect(found).toHaveLength(1);
    expect(found[0]?.metrics).toMatchObject({ workload_mismatch: 1, network_mismatch: 0 });
    expect(found[0]?.summary).toContain('spiffe://example.org/ns/batch/sa/reporter');
    expect(byRule(harness().run(fixture('credential-off-origin (negative)')), 'credential-off-origin')).toEqual([]);
  });

  it('falls back to the task runtime for the origin workload and host when the issuance names none', () => {
    const events = [...issued({ id: 'rt', task: 'task-rt', key: 'ASIART00000000000001' }), use({ id: 'rt-use', task: 'task-rt', key: 'ASIART00000000000001', time: 30, srcIp: '10.0.0.5', host: 'node-z' })];
    const found = byRule(harness().run(events), 'credential-off-origin');
    expect(found).toHaveLength(1);
    expect(found[0]?.metrics).toMatchObject({ host_mismatch: 1, network_mismatch: 0 });
  });

  it('judges a use that overtook the agent spans naming the task runtime once the runtime arrives', () => {
    const key = 'ASIAOVERTAKE00000001';
    const [start, issuance] = issued({ id: 'ot', task: 'task-ot', key }) as [TimelineEvent, TimelineEvent];
    const otherPod = use({ id: 'ot-use', task: 'task-ot', key, time: 30, srcIp: '10.0.0.9', workload: 'spiffe://example.org/ns/batch/sa/reporter' });
    const h = harness();
    // Arrival order: resource topic first (issuance, use), the agent's task start afterwards.
    expect(h.run([issuance])).toEqual([]);
    expect(h.run([otherPod])).toEqual([]);
    const found = byRule(h.run([start]), 'credential-off-origin');
    expect(found).toHaveLength(1);
    expect(found[0]?.evidence).toEqual([issuance.event_id, otherPod.event_id]);
    expect(found[0]?.metrics).toMatchObject({ workload_mismatch: 1, network_mismatch: 0 });
    // The same workload in its service-account form is not a mismatch, in either order.
    const h2 = harness();
    h2.run([issuance, use({ id: 'ot-same', task: 'task-ot', key, time: 31, srcIp: '10.0.0.9', workload: 'system:serviceaccount:agents:billing-agent' })]);
    expect(h2.run([start])).toEqual([]);
  });

  it('takes the address grouping and allow-lists from the policy', () => {
    const events = [...issued({ id: 'pg', task: 'task-pg', key: 'ASIAPG00000000000001' }), use({ id: 'pg-use', task: 'task-pg', key: 'ASIAPG00000000000001', time: 30, srcIp: '10.0.7.9' })];
    expect(byRule(harness().run(events), 'credential-off-origin')).toHaveLength(1);
    expect(byRule(harness({ detectors: { 'lateral-movement': { 'credential-off-origin': { ipv4_prefix: 16 } } } }).run(events), 'credential-off-origin')).toEqual([]);
    expect(byRule(harness({ detectors: { 'lateral-movement': { 'credential-off-origin': { same_origin_cidrs: ['10.0.0.0/20'] } } } }).run(events), 'credential-off-origin')).toEqual([]);
    expect(byRule(harness({ detectors: { 'lateral-movement': { 'credential-off-origin': { allowed_source_cidrs: ['10.0.7.0/24'] } } } }).run(events), 'credential-off-origin')).toEqual([]);
    expect(byRule(harness({ detectors: { 'lateral-movement': { 'credential-off-origin': { enabled: false } } } }).run(events), 'credential-off-origin')).toEqual([]);
  });

  it('reports each distinct off-origin value once, up to the per-credential limit', () => {
    const key = 'ASIAMANY000000000001';
    const events = [...issued({ id: 'many', task: 'task-many', key }), ...Array.from({ length: 8 }, (_, i) => use({ id: `many-${i}`, task: 'task-many', key, time: 10 + i, srcIp: `198.51.${100 + (i % 5)}.7` }))];
    const found = byRule(harness().run(events), 'credential-off-origin');
    expect(found).toHaveLength(3);
    expect(new Set(found.map((f) => f.id)).size).toBe(3);
  });

  it('rejects a malformed CIDR in the policy with the field named', () => {
    expect(() => parsePolicy({ detectors: { 'lateral-movement': { 'credential-off-origin': { same_origin_cidrs: ['10.0.0.0/40'] } } } })).toThrow(PolicyError);
    expect(() => parsePolicy({ detectors: { 'lateral-movement': { 'credential-off-origin': { same_origin_cidrs: ['10.0.0.0/40'] } } } })).toThrow(/same_origin_cidrs/);
  });
});

describe('lateral-movement: credential-outside-task', () => {
  it('reports a credential bound to one task used by an event stating another task', () => {
    const found = byRule(harness().run(fixture('credential-outside-task: a task')), 'credential-outside-task');
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ severity: 'high', task_id: 'task-lm-ot1-other', join_keys: { credential_id: 'ASIAOUTSIDETASK00001', bound_task_id: 'task-lm-ot1', using_task_id: 'task-lm-ot1-other' } });
  });

  it('does not report delegated tasks, credential-joined events, or credentials bound only to a synthetic session', () => {
    expect(byRule(harness().run(fixture('credential-outside-task (negative)')), 'credential-outside-task')).toEqual([]);
    const session = tev({
      id: 'ses-issue',
      source: 'resource',
      type: 'credential.issued',
      time: at(1),
      task_id: 'session:ASIASESSION000000001',
      attribution: 'session',
      credential: { id: 'ASIASESSION000000001', kind: 'aws-access-key' },
    });
    const stated = use({ id: 'ses-use', task: 'task-explicit', key: 'ASIASESSION000000001', time: 5, attribution: 'direct' });
    expect(byRule(harness().run([session, stated]), 'credential-outside-task')).toEqual([]);
  });
});

describe('lateral-movement: identity-new-service', () => {
  it('reports a new service once the baseline has enough samples and span, naming the identity without the session name', () => {
    const found = byRule(harness().run(fixture('identity-new-service: an ETL role')), 'identity-new-service');
    expect(found).toHaveLength(1);
    expect(found[0]?.join_keys).toEqual({ identity: `arn:aws:sts::${ACCOUNT}:assumed-role/etl-loader` });
    expect(found[0]?.metrics.baseline_samples).toBe(60);
    expect(found[0]?.title).toContain('secretsmanager');
  });

  it('stays quiet while learning, and the learning thresholds come from the policy', () => {
    const negative = fixture('identity-new-service (negative)');
    expect(byRule(harness().run(negative), 'identity-new-service')).toEqual([]);
    // With a baseline trusted after 10 samples, the early SQS call is already new.
    const eager = harness({ detectors: { 'lateral-movement': { 'identity-new-service': { min_samples: 10, min_baseline_ms: 0 } } } });
    const found = byRule(eager.run(negative), 'identity-new-service');
    expect(found.map((f) => f.title)).toEqual([expect.stringContaining('sqs')]);
  });
});

describe('lateral-movement: role-chaining', () => {
  it('reports a chain deeper than allowed, with every hop as evidence, high when it crosses accounts', () => {
    const events = fixture('role-chaining: web identity');
    const found = byRule(harness().run(events), 'role-chaining');
    expect(found).toHaveLength(1);
    expect(found[0]?.severity).toBe('high');
    expect(found[0]?.metrics).toMatchObject({ depth: 2, max_depth: 1, accounts: 2 });
    expect(found[0]?.evidence).toHaveLength(3);
    expect(byRule(harness().run(fixture('role-chaining (negative)')), 'role-chaining')).toEqual([]);
    expect(byRule(harness({ detectors: { 'lateral-movement': { 'role-chaining': { max_depth: 2 } } } }).run(events), 'role-chaining')).toEqual([]);
  });

  it('is medium within one account, and a Vault lease obtained with a token does not deepen the chain', () => {
    const events = [
      ...issued({ id: 'c0', task: 'task-c', key: 'ASIAC000000000000000' }),
      ...issued({ id: 'c1', task: 'task-c', key: 'ASIAC000000000000001', parent: 'ASIAC000000000000000', time: 2 }).slice(1),
      ...issued({ id: 'c2', task: 'task-c', key: 'ASIAC000000000000002', parent: 'ASIAC000000000000001', time: 4 }).slice(1),
    ];
    const found = byRule(harness().run(events), 'role-chaining');
    expect(found.map((f) => f.severity)).toEqual(['medium']);
    const lease = [
      ...issued({ id: 'l0', task: 'task-l', key: 'tok-0' }),
      ...issued({ id: 'l1', task: 'task-l', key: 'tok-1', parent: 'tok-0', time: 2 }).slice(1),
      ...issued({ id: 'l2', task: 'task-l', key: 'database/creds/ro/abc', parent: 'tok-1', kind: 'vault-lease', time: 4 }).slice(1),
    ];
    expect(byRule(harness().run(lease), 'role-chaining')).toEqual([]);
  });
});

describe('lateral-movement: delegation-widening', () => {
  it('reports a delegate gaining capabilities its delegating task never had', () => {
    const found = byRule(harness().run(fixture('delegation-widening: a read-only')), 'delegation-widening');
    expect(found).toHaveLength(1);
    expect(found[0]?.severity).toBe('medium');
    expect(found[0]?.title).toMatch(/capability:admin/);
    expect(found[0]?.join_keys).toMatchObject({ delegating_task_id: 'task-lm-dw1', delegate: 'support-helper' });
    expect(byRule(harness().run(fixture('delegation-widening (negative)')), 'delegation-widening')).toEqual([]);
  });

  it('raises severity for policy-listed capabilities and ignores delegate activity outside the window', () => {
    const events = fixture('delegation-widening: a read-only');
    const high = harness({ detectors: { 'lateral-movement': { 'delegation-widening': { high_capabilities: ['admin'] } } } });
    expect(byRule(high.run(events), 'delegation-widening').map((f) => f.severity)).toEqual(['high']);
    const late = events.map((e) => (e.agent_id === 'support-helper' ? { ...e, time: e.time + 2 * 3600_000 } : e));
    expect(byRule(harness().run(late), 'delegation-widening')).toEqual([]);
  });

  it('reports a delegate task touching more new resources than the threshold', () => {
    const task = 'task-dres';
    const events: TimelineEvent[] = [
      tev({ id: 'dres-start', source: 'agent', type: 'task.started', time: at(0), task_id: task, agent_id: 'planner' }),
      tev({ id: 'dres-del', source: 'agent', type: 'agent.delegation', time: at(1), task_id: task, agent_id: 'planner', delegation: { to_agent_id: 'fetcher', to_task_id: 'task-dres-sub' } }),
      ...Array.from({ length: 12 }, (_, i) =>
        tev({ id: `dres-r${i}`, source: 'resource', type: 'resource.access', time: at(2 + i), task_id: 'task-dres-sub', attribution: 'direct', action: 's3:GetObject', outcome: 'success', resources: [{ id: `arn:aws:s3:::docs/${i}.md` }] }),
      ),
    ];
    const found = byRule(harness().run(events), 'delegation-widening');
    const resourceFinding = found.find((f) => f.metrics.new_resources !== undefined);
    expect(resourceFinding?.metrics).toMatchObject({ new_resources: 10, threshold: 10 });
  });
});

describe('lateral-movement: per-agent overrides and bounded state', () => {
  it('applies a per-agent override from the policy (glob on the agent id) only to that agent', () => {
    const policy = { agents: { 'billing-*': { detectors: { 'lateral-movement': { 'credential-off-origin': { ipv4_prefix: 8 } } } } } };
    const events = [
      ...issued({ id: 'oa', task: 'task-oa', key: 'ASIAOA00000000000001', agent: 'billing-agent' }),
      use({ id: 'oa-use', task: 'task-oa', key: 'ASIAOA00000000000001', time: 30, srcIp: '10.200.3.4' }),
      ...issued({ id: 'ob', task: 'task-ob', key: 'ASIAOB00000000000001', agent: 'support-agent' }),
      use({ id: 'ob-use', task: 'task-ob', key: 'ASIAOB00000000000001', time: 30, srcIp: '10.200.3.4' }),
    ];
    const found = byRule(harness(policy).run(events), 'credential-off-origin');
    expect(found.map((f) => f.task_id)).toEqual(['task-ob']);
    const resolve = configResolver(parsePolicy(policy), lateralMovementDetector);
    expect(resolve('billing-agent')['credential-off-origin'].ipv4_prefix).toBe(8);
    expect(resolve('support-agent')['credential-off-origin'].ipv4_prefix).toBe(24);
  });

  it('keeps credentials and identity baselines in LRU maps of the policy size, counting evictions', () => {
    const h = harness({ detectors: { 'lateral-movement': { max_credentials: 5, max_identities: 3 } } });
    const events: TimelineEvent[] = [];
    for (let i = 0; i < 20; i++) events.push(...issued({ id: `b${i}`, task: `task-b${i}`, key: `ASIABOUND${String(i).padStart(11, '0')}`, time: i * 10 }));
    for (let i = 0; i < 10; i++) events.push(use({ id: `bi${i}`, task: '', key: `ASIAUNKNOWN${i}`, time: 500 + i, principal: `arn:aws:iam::${ACCOUNT}:user/u${i}`, attribution: 'unattributed' }));
    h.run(events);
    expect(h.inst.sizes.credentials).toBe(5);
    expect(h.inst.stats.credentialsEvicted).toBe(15);
    expect(h.inst.sizes.identities).toBe(3);
    expect(h.inst.stats.identitiesEvicted).toBe(7);
    // The evicted credential is forgotten: its off-origin use can no longer be judged.
    expect(byRule(h.run([use({ id: 'b0-late', task: 'task-b0', key: 'ASIABOUND00000000000', time: 900, srcIp: '203.0.113.9' })]), 'credential-off-origin')).toEqual([]);
    expect(byRule(h.run([use({ id: 'b19-late', task: 'task-b19', key: 'ASIABOUND00000000019', time: 901, srcIp: '203.0.113.9' })]), 'credential-off-origin')).toHaveLength(1);
  });
});

describe('lateral movement on SVIDs from SPIRE Server logs', () => {
  /** The SPIRE adapter's issuance, as the correlator hands it on (a session task of its own). */
  function svidIssued(): TimelineEvent {
    const line =
      'time="2026-05-04T08:00:01Z" level=debug msg="Signed X509 SVID" caller_addr="10.0.4.17:61745" caller_id="spiffe://example.org/spire/agent/k8s_psat/prod/node-7" ' +
      'expiration="2026-05-04T09:00:01Z" method=BatchNewX509SVID serial_num=777 spiffe_id="spiffe://example.org/ns/agents/sa/billing-agent"';
    const [e] = spireAdapter.parse(Buffer.from(line), 'text/plain').events;
    if (!e) throw new Error('adapter');
    return { ...e, task_id: 'session:777', attribution: 'session', join_key: '777', unattributed_reason: '', ingested_at: e.time, late: false };
  }
  function svidUse(id: string, workload: string, srcIp: string): TimelineEvent {
    return tev({ id, source: 'workload', type: 'resource.access', format: 'runtrail', time: at(5), task_id: 'session:777', attribution: 'credential', credential_id: '777', workload_id: workload, src_ip: srcIp, action: 'payments:charge', outcome: 'success' });
  }

  it('flags an SVID used by another workload than the one SPIRE issued it to', () => {
    const { run } = harness();
    const fs = byRule(run([svidIssued(), svidUse('u1', 'spiffe://example.org/ns/agents/sa/research-agent', '10.244.3.9')]), 'credential-off-origin');
    expect(fs).toHaveLength(1);
    expect(fs[0]?.metrics).toMatchObject({ workload_mismatch: 1, network_mismatch: 0 });
  });

  it('does not flag the workload itself using it from its pod address (the issuance names no source address: that was the node agent)', () => {
    const { run } = harness();
    expect(byRule(run([svidIssued(), svidUse('u2', 'spiffe://example.org/ns/agents/sa/billing-agent', '10.244.3.9')]), 'credential-off-origin')).toEqual([]);
  });
});
