import { describe, expect, it } from 'vitest';
import { parsePolicy, PolicyError } from '../../detectors/policy.ts';
import { IncidentManager, type ChannelRouting } from '../../services/alerter/incident-manager.ts';
import { composeMessage } from '../../services/alerter/message.ts';
import { summarizeEvidence } from '../../shared/finding.ts';
import { SuppressionMatcher } from '../../services/alerter/suppression.ts';
import { parseConfig, IncidentsConfigSchema } from '../../shared/config.ts';
import { FindingSchema, type Finding } from '../../shared/finding.ts';

const T0 = Date.parse('2026-06-01T10:00:00Z');

function f(over: Partial<Finding> = {}, n = 0): Finding {
  return FindingSchema.parse({
    id: `f-${n}-${over.task_id ?? 't1'}-${over.severity ?? 'medium'}`,
    detector: 'blast-radius',
    rule: 'task-score',
    severity: 'medium',
    title: 'Blast radius above notify',
    summary: 'score 45 >= 40',
    task_id: 't1',
    agent_id: 'etl-agent',
    workload_id: 'spiffe://example.org/ns/etl/sa/loader',
    time: T0 + n * 1000,
    evidence: [`e${n}`],
    join_keys: { credential_id: 'ASIA1' },
    tags: [`TAG-${n % 2}`],
    ...over,
  });
}

const ALL: ChannelRouting = { name: 'all', minSeverity: 'info', route: { detectors: [], tags: [], agents: [] } };
const HIGH: ChannelRouting = { name: 'pager', minSeverity: 'high', route: { detectors: [], tags: [], agents: [] } };
const LATERAL: ChannelRouting = { name: 'lateral', minSeverity: 'info', route: { detectors: ['lateral-*'], tags: [], agents: [] } };

function manager(channels: ChannelRouting[], opts: { suppressions?: unknown[]; groupBy?: string[]; now?: () => number } = {}) {
  const cfg = IncidentsConfigSchema.parse({ resolveAfterMs: 1000, ...(opts.groupBy ? { groupBy: opts.groupBy } : {}) });
  return new IncidentManager(cfg, channels, new SuppressionMatcher(parsePolicy({ suppressions: opts.suppressions ?? [] }).suppressions), opts.now);
}

describe('incident manager', () => {
  it('rolls repeated findings of one fingerprint into one incident: counts, first/last seen, highest severity, tags', () => {
    const m = manager([ALL]);
    const a = m.apply([f({}, 2), f({}, 1), f({ severity: 'high', title: 'Blast radius above approval' }, 3), f({}, 4)]);
    expect(a.changed).toHaveLength(1);
    const inc = a.changed[0];
    expect(inc).toMatchObject({ finding_count: 4, first_seen: T0 + 1000, last_seen: T0 + 4000, severity: 'high', title: 'Blast radius above approval', status: 'open' });
    expect(inc?.tags.sort()).toEqual(['TAG-0', 'TAG-1']);
    expect(a.notifications.map((n) => n.kind)).toEqual(['trigger']);
    expect(a.opened).toBe(1);
  });

  it('a redelivered finding does not count twice', () => {
    const m = manager([ALL]);
    m.apply([f({}, 1)]);
    const again = m.apply([f({}, 1)]);
    expect(again.changed).toEqual([]);
    expect(again.notifications).toEqual([]);
  });

  it('after forget (a batch that could not be stored), the redelivered findings count again from the stored state', () => {
    const m = manager([ALL]);
    const stored = m.apply([f({}, 1)]).changed;
    const lost = m.apply([f({}, 2)]);
    expect(lost.changed[0]?.finding_count).toBe(2);
    m.forget(lost.changed.map((i) => i.fingerprint));
    expect(m.missing([f({}, 2)])).toHaveLength(1);
    m.remember(stored);
    const again = m.apply([f({}, 2)]);
    expect(again.changed[0]?.finding_count).toBe(2);
    expect(again.notifications.map((n) => [n.kind, n.seq])).toEqual([['update', 2]]);
  });

  it('later findings are updates; a severity rise escalates; each channel only from its minimum severity', () => {
    const m = manager([ALL, HIGH]);
    expect(m.apply([f({}, 1)]).notifications.map((n) => `${n.channel}:${n.kind}`)).toEqual(['all:trigger']);
    expect(m.apply([f({}, 2)]).notifications.map((n) => `${n.channel}:${n.kind}`)).toEqual(['all:update']);
    // The pager channel first hears of it when it reaches its minimum: a trigger there.
    expect(m.apply([f({ severity: 'high' }, 3)]).notifications.map((n) => `${n.channel}:${n.kind}`)).toEqual(['all:escalate', 'pager:trigger']);
    expect(m.apply([f({ severity: 'critical' }, 4)]).notifications.map((n) => `${n.channel}:${n.kind}`)).toEqual(['all:escalate', 'pager:escalate']);
    expect(m.apply([f({ severity: 'low' }, 5)]).notifications.map((n) => `${n.channel}:${n.kind}`)).toEqual(['all:update', 'pager:update']);
  });

  it('routes by detector glob, tag and agent', () => {
    const tagged: ChannelRouting = { name: 'tagged', minSeverity: 'info', route: { detectors: [], tags: ['MITRE-*'], agents: [] } };
    const etl: ChannelRouting = { name: 'etl', minSeverity: 'info', route: { detectors: [], tags: [], agents: ['etl-*'] } };
    const m = manager([LATERAL, tagged, etl]);
    expect(m.apply([f({ tags: ['OWASP-1'] }, 1)]).notifications.map((n) => n.channel)).toEqual(['etl']);
    expect(m.apply([f({ detector: 'lateral-movement', agent_id: 'ops', tags: ['MITRE-T1550'] }, 2)]).notifications.map((n) => n.channel)).toEqual(['lateral', 'tagged']);
  });

  it('fingerprints follow groupBy: by default one incident per task, with identity grouping across tasks', () => {
    const byTask = manager([ALL]);
    expect(byTask.apply([f({ task_id: 'a' }, 1), f({ task_id: 'b' }, 2)]).changed).toHaveLength(2);
    const byIdentity = manager([ALL], { groupBy: ['detector', 'identity'] });
    expect(byIdentity.apply([f({ task_id: 'a' }, 1), f({ task_id: 'b' }, 2)]).changed).toHaveLength(1);
    expect(byIdentity.fingerprint(f({ join_keys: { credential_id: 'X' } }))).not.toBe(byIdentity.fingerprint(f({ join_keys: { credential_id: 'Y' } })));
  });

  it('resolves quiet incidents, tells only the channels that were told, and a new finding opens a new incident', () => {
    let now = T0;
    const m = manager([ALL, HIGH], { now: () => now });
    const first = m.apply([f({}, 1)]).changed[0];
    now += 500;
    expect(m.sweep().changed).toEqual([]);
    now += 600;
    const swept = m.sweep();
    expect(swept.changed.map((i) => i.status)).toEqual(['resolved']);
    expect(swept.notifications.map((n) => `${n.channel}:${n.kind}`)).toEqual(['all:resolve']);
    now += 10;
    const again = m.apply([f({}, 2)]);
    expect(again.changed[0]?.id).not.toBe(first?.id);
    expect(again.changed[0]?.fingerprint).toBe(first?.fingerprint);
    expect(again.notifications.map((n) => n.kind)).toEqual(['trigger']);
  });

  it('keeps each stored version newer than the last, even within one millisecond', () => {
    const m = manager([ALL], { now: () => T0 });
    const a = m.apply([f({}, 1)]).changed[0]?.updated_at ?? 0;
    const b = m.apply([f({}, 2)]).changed[0]?.updated_at ?? 0;
    expect(b).toBeGreaterThan(a);
  });

  it('suppressed findings update the incident but notify no one', () => {
    const m = manager([ALL], { suppressions: [{ agent: 'etl-*', expires: T0 + 60_000, reason: 'backfill' }], now: () => T0 });
    const r = m.apply([f({}, 1)]);
    expect(r.notifications).toEqual([]);
    expect(r.suppressed).toBe(1);
    expect(r.changed[0]).toMatchObject({ suppressed: 'backfill', finding_count: 1, notified: {} });
  });
});

describe('suppression matcher', () => {
  const rules = (s: unknown[]) => new SuppressionMatcher(parsePolicy({ suppressions: s }).suppressions);
  const live = '2999-01-01T00:00:00Z';

  it('every given matcher must match', () => {
    const m = rules([{ detector: 'blast-*', agent: 'etl-*', expires: live, reason: 'r' }]);
    expect(m.match(f(), [], T0)?.reason).toBe('r');
    expect(m.match(f({ agent_id: 'ops' }), [], T0)).toBeUndefined();
    expect(m.match(f({ detector: 'tool-chaining' }), [], T0)).toBeUndefined();
  });

  it('identity matches the workload or credential/principal join keys; resource the evidence resources', () => {
    const id = rules([{ identity: 'ASIA1', expires: live, reason: 'id' }]);
    expect(id.match(f(), [], T0)?.reason).toBe('id');
    expect(id.match(f({ join_keys: { credential_id: 'ASIA2' } }), [], T0)).toBeUndefined();
    const res = rules([{ resource: 'arn:aws:s3:::scratch-*', expires: live, reason: 'scratch' }]);
    expect(res.needsResources).toBe(true);
    expect(res.match(f(), ['arn:aws:s3:::scratch-bucket/x'], T0)?.reason).toBe('scratch');
    expect(res.match(f(), ['arn:aws:s3:::invoices/x'], T0)).toBeUndefined();
  });

  it('expires (RFC 3339 or epoch ms) and then matches nothing', () => {
    const m = rules([{ detector: '*', expires: '2026-06-01T10:00:00Z', reason: 'r' }]);
    expect(m.match(f(), [], T0 - 1)?.reason).toBe('r');
    expect(m.match(f(), [], T0)).toBeUndefined();
  });

  it('the policy rejects suppressions without a matcher, an expiry or a reason', () => {
    expect(() => parsePolicy({ suppressions: [{ expires: live, reason: 'r' }] })).toThrow(/at least one of detector/);
    expect(() => parsePolicy({ suppressions: [{ detector: '*', reason: 'r' }] })).toThrow(PolicyError);
    expect(() => parsePolicy({ suppressions: [{ detector: '*', expires: live }] })).toThrow(/suppressions.0.reason/);
    expect(() => parsePolicy({ suppressions: [{ detector: '*', expires: 'next week', reason: 'r' }] })).toThrow(/suppressions.0.expires/);
  });
});

describe('alerting config', () => {
  it('validates channels and names the bad field', () => {
    expect(() => parseConfig({ alerting: { channels: [{ type: 'slack' }] } })).toThrow(/alerting.channels.0.*webhookUrl, or botToken and channel/);
    expect(() => parseConfig({ alerting: { channels: [{ type: 'webhook', url: 'not a url' }] } })).toThrow(/alerting.channels.0.url/);
    expect(() => parseConfig({ alerting: { channels: [{ type: 'webhook', url: 'http://a/', secret: 'short' }] } })).toThrow(/alerting.channels.0.secret/);
    expect(() => parseConfig({ alerting: { channels: [{ type: 'pagerduty', routingKey: 'k' }, { type: 'pagerduty', routingKey: 'k2' }] } })).toThrow(/duplicate channel name "pagerduty"/);
    expect(() => parseConfig({ alerting: { delivery: { maxAttempts: 0 } } })).toThrow(/alerting.delivery.maxAttempts/);
    const cfg = parseConfig({ alerting: { channels: [{ type: 'pagerduty', name: 'oncall', routingKey: 'k' }] } });
    expect(cfg.alerting.channels?.[0]).toMatchObject({ name: 'oncall', url: 'https://events.pagerduty.com/v2/enqueue', minSeverity: 'low' });
    expect(cfg.alerting.delivery.maxAttempts).toBe(8);
  });
});

describe('message', () => {
  it('carries identities, the top evidence in event-time order, frameworks and links', () => {
    const m = manager([ALL]);
    const inc = m.apply([f({ evidence: ['e2', 'e1', 'e3'], tags: ['OWASP-AAI-T2'] }, 1)]).changed[0];
    if (!inc) throw new Error('no incident');
    const ev = (id: string, t: number) => ({ event_id: id, time: t, source: 'resource', type: 'resource.access', action: 's3:GetObject', resources: [{ id: `arn:${id}` }], outcome: 'success' }) as never;
    const shown = [ev('e3', 3), ev('e1', 1), ev('e2', 2), ev('zz', 0), ev('e1', 1)].map(summarizeEvidence);
    const msg = composeMessage(inc, 'trigger', shown, { apiBaseUrl: 'http://h:8080/', evidenceLimit: 2, now: T0 });
    expect(msg.evidence.map((e) => e.event_id)).toEqual(['e1', 'e2']);
    expect(msg.evidence[0]).toMatchObject({ resource: 'arn:e1', action: 's3:GetObject', outcome: 'success' });
    expect(msg.evidence_omitted).toBe(1);
    expect(msg.frameworks).toEqual(['OWASP-AAI-T2']);
    expect(msg.links).toEqual({ timeline: 'http://h:8080/v1/tasks/t1/timeline', ui: 'http://h:8080/ui#/task/t1' });
    expect(msg).toMatchObject({ task_id: 't1', agent_id: 'etl-agent', workload_id: 'spiffe://example.org/ns/etl/sa/loader' });
  });
});
