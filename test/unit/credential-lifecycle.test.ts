import { describe, expect, it } from 'vitest';
import { DetectorEngine } from '../../detectors/engine.ts';
import { CREDENTIAL_LIFECYCLE_FIXTURES } from '../../detectors/credential-lifecycle/fixtures.ts';
import { CredentialLifecycleInstance, credentialLifecycleDetector } from '../../detectors/credential-lifecycle/index.ts';
import { configResolver, parsePolicy } from '../../detectors/policy.ts';
import { tev } from '../../detectors/testing.ts';
import type { TimelineEvent } from '../../shared/event.ts';
import type { Finding } from '../../shared/finding.ts';

const T0 = Date.parse('2026-05-04T12:00:00Z');
const at = (s: number) => T0 + s * 1000;

function harness(rawPolicy: Record<string, unknown> = {}) {
  const inst = new CredentialLifecycleInstance(configResolver(parsePolicy(rawPolicy), credentialLifecycleDetector));
  const engine = new DetectorEngine([inst], { maxTasks: 10_000, maxEventsPerTask: 2_000 });
  return {
    inst,
    /** Events in the order given (arrival order), which is not always event-time order. */
    feed: (events: readonly TimelineEvent[]): Finding[] => engine.process(events),
    run: (events: readonly TimelineEvent[]): Finding[] => engine.process([...events].sort((a, b) => a.time - b.time)),
  };
}

function fixture(prefix: string): TimelineEvent[] {
  const f = CREDENTIAL_LIFECYCLE_FIXTURES.find((x) => x.name.startsWith(prefix));
  if (!f) throw new Error(`no fixture ${prefix}`);
  return f.events;
}

const byRule = (fs: Finding[], rule: string) => fs.filter((f) => f.rule === rule);

function task(p: { id: string; task: string; agent?: string; end?: number }): TimelineEvent[] {
  const agent = p.agent ?? 'invoicer';
  const out = [tev({ id: `${p.id}-start`, source: 'agent', type: 'task.started', time: at(0), task_id: p.task, agent_id: agent })];
  if (p.end !== undefined) out.push(tev({ id: `${p.id}-end`, source: 'agent', type: 'task.ended', time: at(p.end), task_id: p.task, agent_id: agent }));
  return out;
}

function issue(p: { id: string; task: string; key: string; time: number; lifetimeS?: number; attribution?: TimelineEvent['attribution'] }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'credential.issued',
    time: at(p.time),
    task_id: p.task,
    attribution: p.attribution ?? 'direct',
    action: 'sts:AssumeRole',
    outcome: 'success',
    credential: { id: p.key, kind: 'aws-access-key', tags: { 'runtrail.task.id': p.task }, expires_at: p.lifetimeS === undefined ? undefined : at(p.time + p.lifetimeS) },
  });
}

function use(p: { id: string; task: string; key: string; time: number; outcome?: 'success' | 'failure'; late?: boolean; agent?: string; attribution?: TimelineEvent['attribution']; workload?: string }): TimelineEvent {
  return tev({
    id: p.id,
    source: 'resource',
    type: 'resource.access',
    time: at(p.time),
    task_id: p.task,
    attribution: p.attribution ?? (p.task ? 'credential' : 'unattributed'),
    join_key: p.task ? p.key : '',
    credential_id: p.key,
    agent_id: p.agent,
    workload_id: p.workload,
    action: 's3:GetObject',
    outcome: p.outcome ?? 'success',
    late: p.late ?? false,
    resources: [{ id: 'arn:aws:s3:::bucket/key' }],
  });
}

describe('credential-lifecycle: use-after-task-end', () => {
  it("reports a task's credential used after the end + grace, with issuance, end and use as evidence", () => {
    const events = fixture('use-after-task-end: task session key');
    const found = byRule(harness().run(events), 'use-after-task-end');
    expect(found).toHaveLength(1);
    const f = found[0] as Finding;
    expect(f.severity).toBe('high');
    expect(f.task_id).toBe('task-cl-te1');
    expect(f.evidence).toHaveLength(3);
    expect(f.metrics).toMatchObject({ seconds_after_end: 1800, grace_s: 120, late: 1, inferred_end: 0 });
    expect(f.join_keys).toMatchObject({ credential_id: 'ASIATASKEND000000001' });
    expect(byRule(harness().run(fixture('use-after-task-end (negative)')), 'use-after-task-end')).toEqual([]);
  });

  it('catches a use stamped after the end that arrives before the end event, and grades refused uses lower', () => {
    const key = 'ASIAREORDER000000001';
    const h = harness();
    const [start, end] = task({ id: 'ro', task: 'task-ro', end: 60 });
    const arrivals = [start as TimelineEvent, issue({ id: 'ro-issue', task: 'task-ro', key, time: 1 }), use({ id: 'ro-use', task: 'task-ro', key, time: 900, outcome: 'failure' }), end as TimelineEvent];
    const found = byRule(h.feed(arrivals), 'use-after-task-end');
    expect(found.map((f) => f.severity)).toEqual(['medium']);
  });

  it('infers the end of an idle-closed task from late events far after its last activity', () => {
    const key = 'ASIAIDLE000000000001';
    const events = [...task({ id: 'idle', task: 'task-idle' }), issue({ id: 'idle-issue', task: 'task-idle', key, time: 1 }), use({ id: 'idle-use', task: 'task-idle', key, time: 5 })];
    const lateUse = use({ id: 'idle-late', task: 'task-idle', key, time: 3 * 3600, late: true });
    const found = byRule(harness().run([...events, lateUse]), 'use-after-task-end');
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ severity: 'medium', metrics: { inferred_end: 1 } });
    // A late delivery of an event from within the task's life is not a finding.
    const lateButEarly = use({ id: 'idle-late-early', task: 'task-idle', key, time: 20, late: true });
    expect(byRule(harness().run([...events, lateButEarly]), 'use-after-task-end')).toEqual([]);
  });

  it('takes the grace from the policy', () => {
    const events = fixture('use-after-task-end: task session key');
    expect(byRule(harness({ detectors: { 'credential-lifecycle': { 'use-after-task-end': { grace_ms: 3_600_000 } } } }).run(events), 'use-after-task-end')).toEqual([]);
  });
});

describe('credential-lifecycle: use-after-revoke', () => {
  it('reports use after revocation (high when it worked), not within the clock-skew allowance', () => {
    const found = byRule(harness().run(fixture('use-after-revoke: Vault token')), 'use-after-revoke');
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ severity: 'high', join_keys: { credential_id: 'hmac-sha256:a1b2c3d4e5f6' }, metrics: { seconds_after_revoke: 300, success: 1 } });
    expect(found[0]?.evidence).toHaveLength(3);
    expect(byRule(harness().run(fixture('use-after-revoke (negative)')), 'use-after-revoke')).toEqual([]);
  });

  it('judges a revocation that arrives after a later-stamped use, and Vault prefix revocations', () => {
    const key = 'hmac-sha256:ffee00112233';
    const revoke = tev({ id: 'rv-revoke', source: 'resource', type: 'credential.revoked', format: 'vault', time: at(100), task_id: 'task-rv', attribution: 'credential', credential: { id: key, kind: 'vault-token' } });
    const early = use({ id: 'rv-use', task: 'task-rv', key, time: 400 });
    expect(byRule(harness().feed([issue({ id: 'rv-issue', task: 'task-rv', key, time: 1 }), early, revoke]), 'use-after-revoke')).toHaveLength(1);

    const lease = 'database/creds/readonly/8xYz';
    const prefix = tev({
      id: 'rv-prefix',
      source: 'resource',
      type: 'credential.revoked',
      format: 'vault',
      time: at(100),
      credential: { id: 'database/creds/readonly/', kind: 'vault-lease' },
      attributes: { revoke_prefix: true },
    });
    const leaseUse = use({ id: 'rv-lease-use', task: '', key: lease, time: 300 });
    expect(byRule(harness().run([prefix, leaseUse]), 'use-after-revoke')).toHaveLength(1);
  });

  it('does not treat the revocation itself (or revoke-self) as a use', () => {
    const key = 'hmac-sha256:self00000001';
    const self = tev({ id: 'self-revoke', source: 'resource', type: 'credential.revoked', time: at(50), task_id: 'task-self', attribution: 'credential', credential_id: key, credential: { id: key, kind: 'vault-token' } });
    const found = harness().run([...task({ id: 'self', task: 'task-self' }), issue({ id: 'self-issue', task: 'task-self', key, time: 1 }), self]);
    expect(found).toEqual([]);
  });
});

describe('credential-lifecycle: use-after-expiry', () => {
  it('reports a successful use after expiry + skew as high, a refused one as low, and nothing within the skew', () => {
    const found = byRule(harness().run(fixture('use-after-expiry: a 15-minute')), 'use-after-expiry');
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ severity: 'high', metrics: { seconds_after_expiry: 300, clock_skew_s: 30 } });
    expect(byRule(harness().run(fixture('use-after-expiry (negative)')), 'use-after-expiry')).toEqual([]);
    const key = 'ASIAREFUSED000000001';
    const refused = [issue({ id: 'x-issue', task: 'task-x', key, time: 0, lifetimeS: 60 }), use({ id: 'x-use', task: 'task-x', key, time: 600, outcome: 'failure' })];
    expect(byRule(harness().run(refused), 'use-after-expiry').map((f) => f.severity)).toEqual(['low']);
  });

  it('uses credential.expired events when the issuance stated no expiry, and the skew from the policy', () => {
    const key = 'jwt-7f3a';
    const expired = tev({ id: 'je-exp', source: 'workload', type: 'credential.expired', time: at(100), task_id: 'task-je', attribution: 'credential', credential: { id: key, kind: 'jwt' } });
    const events = [issue({ id: 'je-issue', task: 'task-je', key, time: 0 }), expired, use({ id: 'je-use', task: 'task-je', key, time: 160 })];
    expect(byRule(harness().run(events), 'use-after-expiry')).toHaveLength(1);
    expect(byRule(harness({ detectors: { 'credential-lifecycle': { clock_skew_ms: 120_000 } } }).run(events), 'use-after-expiry')).toEqual([]);
  });
});

describe('credential-lifecycle: long-lived-credential', () => {
  it('reports an agent using a long-term key, a workload using an un-issued credential, and an over-long issuance', () => {
    const akia = byRule(harness().run(fixture('long-lived-credential: an agent task calling AWS')), 'long-lived-credential');
    expect(akia).toHaveLength(1);
    expect(akia[0]).toMatchObject({ severity: 'medium', metrics: { long_term_pattern: 1, unattributed: 0 }, join_keys: { credential_id: 'AKIAIOSFODNN7EXAMPLE', agent_id: 'invoicer' } });
    const k8s = byRule(harness().run(fixture('long-lived-credential: an unattributed Kubernetes')), 'long-lived-credential');
    expect(k8s).toHaveLength(1);
    expect(k8s[0]).toMatchObject({ task_id: '', metrics: { unattributed: 1 } });
    const lifetime = byRule(harness().run(fixture('long-lived-credential: a federation token')), 'long-lived-credential');
    expect(lifetime.map((f) => [f.severity, f.metrics.lifetime_s])).toEqual([['low', 36 * 3600]]);
    expect(byRule(harness().run(fixture('long-lived-credential (negative)')), 'long-lived-credential')).toEqual([]);
  });

  it('trusts a credential-joined event as proof of issuance, and honours the ignore list and max lifetime from the policy', () => {
    const joined = use({ id: 'j-use', task: 'task-j', key: 'ASIABOUNDELSEWHERE01', time: 5, agent: 'invoicer', attribution: 'credential' });
    expect(harness().run([joined])).toEqual([]);
    const unissued = use({ id: 'u-use', task: '', key: 'AKIAIOSFODNN7EXAMPLE', time: 5, workload: 'spiffe://example.org/ns/agents/sa/invoicer' });
    expect(byRule(harness().run([unissued]), 'long-lived-credential')).toHaveLength(1);
    expect(byRule(harness({ detectors: { 'credential-lifecycle': { 'long-lived-credential': { ignore_credentials: ['AKIAIOSFODNN7*'] } } } }).run([unissued]), 'long-lived-credential')).toEqual([]);
    const fed = fixture('long-lived-credential: a federation token');
    expect(byRule(harness({ detectors: { 'credential-lifecycle': { 'long-lived-credential': { max_lifetime_ms: 48 * 3_600_000 } } } }).run(fed), 'long-lived-credential')).toEqual([]);
  });
});

describe('credential-lifecycle: shared-credential', () => {
  it('reports one credential used by more agents and tasks than allowed, listing each first use', () => {
    const found = byRule(harness().run(fixture('shared-credential: one task')), 'shared-credential');
    expect(found.map((f) => Object.keys(f.metrics).sort())).toEqual([
      ['agents', 'max_agents'],
      ['max_tasks', 'tasks'],
    ]);
    expect(found[0]?.summary).toContain('collections-agent');
    // The event that crossed the threshold is also one of the users' first uses: listed once.
    for (const f of found) {
      expect(f.evidence.length).toBeGreaterThan(1);
      expect(new Set(f.evidence).size).toBe(f.evidence.length);
    }
    expect(byRule(harness().run(fixture('shared-credential (negative)')), 'shared-credential')).toEqual([]);
  });

  it('counts a delegated sub-task as its delegating task, and takes thresholds from the policy', () => {
    const key = 'ASIADELEGATE00000001';
    const events = [
      ...task({ id: 'sd', task: 'task-sd' }),
      issue({ id: 'sd-issue', task: 'task-sd', key, time: 1 }),
      tev({ id: 'sd-del', source: 'agent', type: 'agent.delegation', time: at(2), task_id: 'task-sd', agent_id: 'invoicer', delegation: { to_agent_id: 'invoicer', to_task_id: 'task-sd-sub' } }),
      use({ id: 'sd-use', task: 'task-sd-sub', key, time: 3, attribution: 'direct' }),
      use({ id: 'sd-other', task: 'task-unrelated', key, time: 4, attribution: 'direct', agent: 'invoicer' }),
    ];
    expect(byRule(harness().run(events.slice(0, 4)), 'shared-credential')).toEqual([]);
    expect(byRule(harness().run(events), 'shared-credential').map((f) => f.metrics.tasks)).toEqual([2]);
    expect(byRule(harness({ detectors: { 'credential-lifecycle': { 'shared-credential': { max_tasks: 2 } } } }).run(events), 'shared-credential')).toEqual([]);
  });
});

describe('credential-lifecycle: per-agent overrides and bounded state', () => {
  it('applies per-agent overrides from the policy', () => {
    const policy = { agents: { 'batch-*': { detectors: { 'credential-lifecycle': { 'use-after-task-end': { grace_ms: 7_200_000 } } } } } };
    const run = (agent: string) => {
      const key = `ASIA${agent.toUpperCase().replace(/[^A-Z]/g, '').padEnd(16, 'X')}`;
      return byRule(
        harness(policy).run([...task({ id: agent, task: `task-${agent}`, agent, end: 10 }), issue({ id: `${agent}-i`, task: `task-${agent}`, key, time: 1 }), use({ id: `${agent}-u`, task: `task-${agent}`, key, time: 1800 })]),
        'use-after-task-end',
      );
    };
    expect(run('batch-exporter')).toEqual([]);
    expect(run('invoicer')).toHaveLength(1);
  });

  it('keeps credentials and tasks in LRU maps of the policy size, counting evictions', () => {
    const h = harness({ detectors: { 'credential-lifecycle': { max_credentials: 10, max_tasks: 4 } } });
    const events: TimelineEvent[] = [];
    for (let i = 0; i < 25; i++) {
      events.push(...task({ id: `lru${i}`, task: `task-lru${i}` }).map((e) => ({ ...e, time: e.time + i * 1000 })));
      events.push(issue({ id: `lru${i}-i`, task: `task-lru${i}`, key: `ASIALRU${String(i).padStart(13, '0')}`, time: i }));
    }
    h.run(events);
    expect(h.inst.sizes).toEqual({ credentials: 10, tasks: 4 });
    expect(h.inst.stats.credentialsEvicted).toBe(15);
    expect(h.inst.stats.tasksEvicted).toBe(21);
  });
});
