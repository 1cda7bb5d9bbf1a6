import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AlertMessageSchema, type AlertMessage } from '../../shared/alert.ts';
import { main } from '../../services/cli/main.ts';
import { tev } from '../../detectors/testing.ts';
import { EVENT_TYPE } from '../../shared/event.ts';
import { finding, pause, startAlerter, startReceiver, waitFor, type Receiver, type TestAlerter } from './alerting-harness.ts';
import type { ClickHouseStore, Store } from '../../services/storage/store.ts';
import { failingMethod } from '../fixtures/doubles.ts';

/**
 * Delivery against real loopback HTTP servers standing in for Slack, PagerDuty and a webhook
 * receiver, with the alerter on the real chDB store. Delays are tens of milliseconds; assertions
 * are on order, counts and least spacing, never on speed.
 */

const SECRET = 'test-secret-0123456789abcdef';
const FAST = { backoffInitialMs: 30, backoffMultiplier: 2, jitter: 0, backoffMaxMs: 2000, requestTimeoutMs: 1000, maxAttempts: 5, breakerThreshold: 100, breakerOpenMs: 100, shutdownGraceMs: 500 };
const INCIDENTS = { updateIntervalMs: 0 };
/** Budget for each wait: generous because CI shares two cores with other test files. */
const WAIT_MS = 20_000;

let dir: string;
let db = 0;
const open: Array<{ close?: () => Promise<void>; stop?: () => Promise<void> }> = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-alerting-'));
});
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await (o.stop ?? o.close)?.();
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function receiver(answer?: Parameters<typeof startReceiver>[0]): Promise<Receiver> {
  const r = await startReceiver(answer);
  open.push(r);
  return r;
}

async function alerter(alerting: Parameters<typeof startAlerter>[0]['alerting'], policy?: unknown, database = `alerting_${++db}`): Promise<TestAlerter> {
  const a = await startAlerter({ dataDir: join(dir, 'data'), database, alerting, policy });
  open.push(a);
  return a;
}

/** Verifies a webhook request the way a receiver would: recompute the HMAC over `<ts>.<body>`. */
function verifySignature(headers: Record<string, string | string[] | undefined>, body: string): boolean {
  const ts = String(headers['x-runtrail-timestamp'] ?? '');
  const sig = String(headers['x-runtrail-signature'] ?? '');
  const expected = `sha256=${createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex')}`;
  return ts !== '' && sig === expected && Math.abs(Date.now() / 1000 - Number(ts)) < 300;
}

const message = (body: string): AlertMessage => AlertMessageSchema.parse(JSON.parse(body));

describe('channels send the right requests', () => {
  it('webhook: JSON alert message, custom headers, and an HMAC signature the receiver verifies', async () => {
    const hook = await receiver();
    const a = await alerter({
      apiBaseUrl: 'http://api.example:8080',
      channels: [{ type: 'webhook', url: `${hook.url}/hook`, secret: SECRET, headers: { 'x-api-key': 'k-123' } }],
      delivery: FAST,
      incidents: INCIDENTS,
    });
    await a.publish([finding()]);
    await waitFor(() => hook.requests.length === 1, WAIT_MS, 'webhook request');
    const [req] = hook.requests;
    expect(req?.path).toBe('/hook');
    expect(req?.headers['x-api-key']).toBe('k-123');
    expect(req?.headers['content-type']).toMatch(/application\/json/);
    expect(verifySignature(req?.headers ?? {}, req?.body ?? '')).toBe(true);
    // A tampered body fails the same check.
    expect(verifySignature(req?.headers ?? {}, (req?.body ?? '').replace('high', 'low'))).toBe(false);
    const m = message(req?.body ?? '');
    expect(m.kind).toBe('trigger');
    expect(m.incident).toMatchObject({ severity: 'high', detector: 'lateral-movement', rule: 'credential-off-origin', finding_count: 1, status: 'open' });
    expect(m).toMatchObject({ task_id: 'task-1', agent_id: 'billing-agent', workload_id: 'spiffe://example.org/ns/agents/sa/billing' });
    expect(m.frameworks).toEqual(['OWASP-AAI-T3', 'MITRE-T1550']);
    expect(m.links.timeline).toBe('http://api.example:8080/v1/tasks/task-1/timeline');
    expect(m.links.ui).toBe('http://api.example:8080/ui#/task/task-1');
    expect(req?.headers['x-runtrail-delivery']).toMatch(new RegExp(`^${m.incident.id}:webhook:1$`));
  });

  it('PagerDuty: an Events API v2 trigger with the fingerprint as dedup_key, then a resolve', async () => {
    const pd = await receiver(() => ({ status: 202, body: '{"status":"success","dedup_key":"x"}' }));
    const a = await alerter({
      channels: [{ type: 'pagerduty', routingKey: 'R0UT1NGKEY', url: `${pd.url}/v2/enqueue` }],
      delivery: FAST,
      incidents: { ...INCIDENTS, resolveAfterMs: 200 },
    });
    await a.publish([finding({ severity: 'critical' })]);
    await waitFor(() => pd.requests.length === 2, WAIT_MS, 'trigger and resolve');
    const [trigger, resolve] = pd.requests.map((r) => JSON.parse(r.body) as Record<string, unknown>);
    // The resolve is stored in the outbox before the incident row; the delivery can come first.
    await waitFor(async () => (await a.store.listIncidents())[0]?.status === 'resolved', WAIT_MS, 'the resolved incident row');
    const [inc] = await a.store.listIncidents();
    expect(trigger).toMatchObject({
      routing_key: 'R0UT1NGKEY',
      event_action: 'trigger',
      dedup_key: inc?.fingerprint,
      payload: { severity: 'critical', source: 'spiffe://example.org/ns/agents/sa/billing', component: 'lateral-movement', group: 'task-1' },
    });
    expect((trigger?.payload as { summary: string }).summary).toContain('Credential used from another workload');
    expect(trigger?.links).toEqual([
      { href: 'http://127.0.0.1:8080/v1/tasks/task-1/timeline', text: 'Task timeline (API)' },
      { href: 'http://127.0.0.1:8080/ui#/task/task-1', text: 'Task timeline (UI)' },
    ]);
    expect(resolve).toEqual({ routing_key: 'R0UT1NGKEY', event_action: 'resolve', dedup_key: inc?.fingerprint });
  });

  it('Slack bot: posts Block Kit, updates the same message in place, and re-notifies in thread on a severity rise', async () => {
    let ts = 0;
    const slack = await receiver((r) => ({ status: 200, body: JSON.stringify({ ok: true, channel: 'C0SEC', ts: r.path.endsWith('postMessage') ? `1700000000.00${++ts}` : '1700000000.001' }) }));
    const a = await alerter({
      channels: [{ type: 'slack', botToken: 'xoxb-test', channel: 'C0SEC', apiUrl: `${slack.url}/api` }],
      delivery: FAST,
      incidents: INCIDENTS,
    });
    await a.publish([finding({ severity: 'medium' }, 1)]);
    await waitFor(() => slack.accepted().length === 1, WAIT_MS, 'postMessage');
    await a.publish([finding({ severity: 'medium' }, 2)]);
    await waitFor(() => slack.accepted().length === 2, WAIT_MS, 'chat.update');
    await a.publish([finding({ severity: 'critical' }, 3)]);
    await waitFor(() => slack.accepted().length === 4, WAIT_MS, 'update and thread reply');
    const calls = slack.requests.map((r) => ({ path: r.path, auth: r.headers.authorization, body: JSON.parse(r.body) as Record<string, unknown> }));
    expect(calls.map((c) => c.path)).toEqual(['/api/chat.postMessage', '/api/chat.update', '/api/chat.update', '/api/chat.postMessage']);
    expect(calls.every((c) => c.auth === 'Bearer xoxb-test')).toBe(true);
    expect(calls[0]?.body.channel).toBe('C0SEC');
    const blocks = calls[0]?.body.blocks as Array<{ type: string; text?: { text: string } }>;
    expect(blocks[0]).toMatchObject({ type: 'header', text: { text: 'New incident: Credential used from another workload' } });
    expect(JSON.stringify(blocks)).toContain('task-1');
    expect(JSON.stringify(blocks)).toContain('http://127.0.0.1:8080/ui#/task/task-1');
    // Updates address the message the trigger created.
    expect(calls[1]?.body).toMatchObject({ channel: 'C0SEC', ts: '1700000000.001' });
    expect(JSON.stringify(calls[1]?.body.blocks)).toContain('2 finding(s)');
    expect(calls[2]?.body).toMatchObject({ channel: 'C0SEC', ts: '1700000000.001' });
    expect(JSON.stringify(calls[2]?.body.blocks)).toContain('CRITICAL');
    expect(calls[3]?.body).toMatchObject({ channel: 'C0SEC', thread_ts: '1700000000.001', reply_broadcast: true });
  });

  it('Slack incoming webhook: a readable Block Kit message with a text fallback', async () => {
    const slack = await receiver(() => ({ status: 200, body: 'ok' }));
    const a = await alerter({ channels: [{ type: 'slack', webhookUrl: `${slack.url}/services/T/B/X` }], delivery: FAST, incidents: INCIDENTS });
    await a.publish([finding()]);
    await waitFor(() => slack.requests.length === 1, WAIT_MS, 'webhook post');
    const body = JSON.parse(slack.requests[0]?.body ?? '{}') as { text: string; blocks: Array<{ type: string }> };
    expect(body.text).toBe('New incident: [high] Credential used from another workload (task task-1)');
    expect(body.blocks.map((b) => b.type)).toEqual(['header', 'section', 'section', 'context', 'actions']);
  });
});

describe('incidents', () => {
  it('100 repeated findings of one incident page once; updates are coalesced and end with the full count', async () => {
    const pd = await receiver(() => ({ status: 202 }));
    const hook = await receiver();
    const a = await alerter({
      channels: [
        { type: 'pagerduty', routingKey: 'RK', url: pd.url },
        { type: 'webhook', url: hook.url, secret: SECRET },
      ],
      delivery: FAST,
      incidents: { updateIntervalMs: 100 },
    });
    for (let batch = 0; batch < 10; batch++) {
      await a.publish(Array.from({ length: 10 }, (_, i) => finding({}, batch * 10 + i)));
      // Every third batch after a pause longer than updateIntervalMs: several updates are certain.
      if (batch % 3 === 2) await pause(150);
    }
    await waitFor(async () => {
      const last = hook.requests.at(-1);
      return last !== undefined && message(last.body).incident.finding_count === 100;
    }, WAIT_MS, 'an update carrying all 100 findings');
    await pause(250);
    expect(pd.requests).toHaveLength(1);
    expect(JSON.parse(pd.requests[0]?.body ?? '{}')).toMatchObject({ event_action: 'trigger' });
    const kinds = hook.requests.map((r) => message(r.body).kind);
    expect(kinds[0]).toBe('trigger');
    expect(kinds.slice(1).every((k) => k === 'update')).toBe(true);
    expect(hook.requests.length).toBeGreaterThanOrEqual(3);
    expect(hook.requests.length).toBeLessThan(20);
    // Updates of one incident are spaced by updateIntervalMs.
    for (let i = 2; i < hook.requests.length; i++) {
      expect((hook.requests[i]?.at ?? 0) - (hook.requests[i - 1]?.at ?? 0)).toBeGreaterThanOrEqual(90);
    }
    expect(hook.requests.every((r) => verifySignature(r.headers, r.body))).toBe(true);
    // A merged entry's message says what the entry is.
    expect(hook.requests.every((r) => r.headers['x-runtrail-kind'] === message(r.body).kind)).toBe(true);
    const incidents = await a.store.listIncidents();
    expect(incidents).toHaveLength(1);
    expect(incidents[0]?.finding_count).toBe(100);
  });

  it('a severity rise re-notifies: PagerDuty gets a second trigger with the new severity', async () => {
    const pd = await receiver(() => ({ status: 202 }));
    const a = await alerter({ channels: [{ type: 'pagerduty', routingKey: 'RK', url: pd.url }], delivery: FAST, incidents: INCIDENTS });
    await a.publish([finding({ severity: 'medium' }, 1)]);
    await waitFor(() => pd.requests.length === 1);
    await a.publish([finding({ severity: 'medium' }, 2)]);
    await pause(150);
    expect(pd.requests).toHaveLength(1);
    await a.publish([finding({ severity: 'critical' }, 3)]);
    await waitFor(() => pd.requests.length === 2, WAIT_MS, 'escalation');
    const bodies = pd.requests.map((r) => JSON.parse(r.body) as { event_action: string; dedup_key: string; payload: { severity: string } });
    expect(bodies.map((b) => [b.event_action, b.payload.severity])).toEqual([
      ['trigger', 'warning'],
      ['trigger', 'critical'],
    ]);
    expect(bodies[0]?.dedup_key).toBe(bodies[1]?.dedup_key);
  });

  it('a suppressed incident sends nothing, while its findings stay stored and the incident is recorded', async () => {
    const hook = await receiver();
    const policy = { suppressions: [{ detector: 'lateral-*', agent: 'billing-*', expires: '2999-01-01T00:00:00Z', reason: 'red-team exercise' }] };
    const a = await alerter({ channels: [{ type: 'webhook', url: hook.url }], delivery: FAST, incidents: INCIDENTS }, policy);
    await a.publish([finding({}, 1), finding({}, 2)]);
    // A finding of another agent is not covered and is delivered: shows the alerter is live.
    await a.publish([finding({ agent_id: 'ops-agent', task_id: 'task-2' }, 3)]);
    await waitFor(() => hook.requests.length === 1, WAIT_MS, 'the unsuppressed incident');
    await pause(200);
    expect(hook.requests).toHaveLength(1);
    expect(message(hook.requests[0]?.body ?? '').task_id).toBe('task-2');
    expect((await a.store.findings('task-1')).map((f) => f.id).sort()).toEqual([finding({}, 1).id, finding({}, 2).id].sort());
    const muted = (await a.store.listIncidents()).find((i) => i.task_id === 'task-1');
    expect(muted).toMatchObject({ suppressed: 'red-team exercise', finding_count: 2, notified: {} });
    expect(a.metrics.counter('runtrail_alert_suppressed_total', '').get()).toBe(2);
  });

  it('an expired suppression no longer mutes', async () => {
    const hook = await receiver();
    const policy = { suppressions: [{ detector: '*', expires: '2020-01-01T00:00:00Z', reason: 'old' }] };
    const a = await alerter({ channels: [{ type: 'webhook', url: hook.url }], delivery: FAST, incidents: INCIDENTS }, policy);
    await a.publish([finding()]);
    await waitFor(() => hook.requests.length === 1, WAIT_MS, 'delivery');
    expect(message(hook.requests[0]?.body ?? '').kind).toBe('trigger');
    expect((await a.store.listIncidents())[0]).toMatchObject({ suppressed: '', finding_count: 1 });
    expect(a.metrics.counter('runtrail_alert_suppressed_total', '').get()).toBe(0);
  });
});

describe('delivery', () => {
  it('retries 500s on the configured exponential schedule, then delivers once', async () => {
    const hook = await receiver((_r, n) => ({ status: n < 2 ? 500 : 200 }));
    const a = await alerter({ channels: [{ type: 'webhook', url: hook.url }], delivery: { ...FAST, backoffInitialMs: 60 }, incidents: INCIDENTS });
    await a.publish([finding()]);
    await waitFor(() => hook.accepted().length === 1, WAIT_MS, 'delivery after two 500s');
    await pause(200);
    expect(hook.requests).toHaveLength(3);
    const [r0, r1, r2] = hook.requests.map((r) => r.at);
    expect((r1 ?? 0) - (r0 ?? 0)).toBeGreaterThanOrEqual(55); // 60 ms
    expect((r2 ?? 0) - (r1 ?? 0)).toBeGreaterThanOrEqual(115); // 120 ms
    const ids = new Set(hook.requests.map((r) => r.headers['x-runtrail-delivery']));
    expect(ids.size).toBe(1); // the same delivery, retried
    const [entry] = await a.store.listOutbox();
    expect(entry).toMatchObject({ status: 'delivered', attempts: 3, last_error: '' });
    expect(a.metrics.counter('runtrail_alert_deliveries_total', '').get({ channel: 'webhook', status: 'retry' })).toBe(2);
  });

  it('honours 429 Retry-After', async () => {
    const hook = await receiver((_r, n) => (n === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
    const a = await alerter({ channels: [{ type: 'webhook', url: hook.url }], delivery: FAST, incidents: INCIDENTS });
    await a.publish([finding()]);
    await waitFor(() => hook.accepted().length === 1, WAIT_MS, 'delivery after 429');
    expect(hook.requests).toHaveLength(2);
    // The backoff alone would be 30 ms; Retry-After asked for 1 s.
    expect((hook.requests[1]?.at ?? 0) - (hook.requests[0]?.at ?? 0)).toBeGreaterThanOrEqual(950);
  });

  it('a receiver that times out is retried', async () => {
    const hook = await receiver((_r, n) => (n === 0 ? 'hang' : { status: 200 }));
    const a = await alerter({ channels: [{ type: 'webhook', url: hook.url }], delivery: { ...FAST, requestTimeoutMs: 150 }, incidents: INCIDENTS });
    await a.publish([finding()]);
    await waitFor(() => hook.accepted().length === 1, WAIT_MS, 'delivery after a timeout');
    expect(hook.requests).toHaveLength(2);
    expect((hook.requests[1]?.at ?? 0) - (hook.requests[0]?.at ?? 0)).toBeGreaterThanOrEqual(150);
  });

  it('a restart mid-retry resumes from the stored outbox and delivers exactly once', async () => {
    const hook = await receiver((_r, n) => ({ status: n === 0 ? 500 : 200 }));
    const database = `alerting_${++db}`;
    const alerting = { channels: [{ type: 'webhook' as const, url: hook.url, secret: SECRET }], delivery: { ...FAST, backoffInitialMs: 400 }, incidents: INCIDENTS };
    const first = await alerter(alerting, undefined, database);
    await first.publish([finding()]);
    await waitFor(() => hook.requests.length === 1, WAIT_MS, 'first attempt');
    await first.stop();
    expect(hook.requests).toHaveLength(1);
    const second = await alerter(alerting, undefined, database);
    const [pending] = await second.store.listOutbox();
    expect(pending).toMatchObject({ status: 'pending', attempts: 1 });
    expect(pending?.last_error).toMatch(/HTTP 500/);
    await waitFor(() => hook.accepted().length === 1, WAIT_MS, 'resumed delivery');
    await pause(600);
    expect(hook.requests).toHaveLength(2);
    expect(hook.requests[0]?.headers['x-runtrail-delivery']).toBe(hook.requests[1]?.headers['x-runtrail-delivery']);
    expect(verifySignature(hook.requests[1]?.headers ?? {}, hook.requests[1]?.body ?? '')).toBe(true);
    expect((await second.store.listOutbox()).map((e) => e.status)).toEqual(['delivered']);
    // The resumed delivery waited for its stored schedule (400 ms after the failure), not less.
    expect((hook.requests[1]?.at ?? 0) - (hook.requests[0]?.at ?? 0)).toBeGreaterThanOrEqual(390);
  });

  it('a restart whose first read of the outbox fails still delivers what was pending', async () => {
    const hook = await receiver((_r, n) => ({ status: n === 0 ? 500 : 200 }));
    const database = `alerting_${++db}`;
    const alerting = { channels: [{ type: 'webhook' as const, url: hook.url, secret: SECRET }], delivery: { ...FAST, backoffInitialMs: 200 }, incidents: INCIDENTS };
    const first = await alerter(alerting, undefined, database);
    await first.publish([finding()]);
    await waitFor(() => hook.requests.length === 1, WAIT_MS, 'first attempt');
    await first.stop();
    // The restarted alerter's first outbox read fails (storage not ready yet); later ones work.
    let reads = 0;
    const flaky = (store: ClickHouseStore): Store => failingMethod<Store>(store, 'listOutbox', (call) => (reads = call + 1) === 1, 'storage not ready');
    const second = await startAlerter({ dataDir: join(dir, 'data'), database, alerting, storeFor: flaky });
    open.push(second);
    await waitFor(() => hook.accepted().length === 1, WAIT_MS, 'the pending delivery after the failed read');
    expect(reads).toBeGreaterThanOrEqual(2);
    expect(hook.requests[0]?.headers['x-runtrail-delivery']).toBe(hook.requests[1]?.headers['x-runtrail-delivery']);
  });

  it('the circuit breaker opens after consecutive failures and holds the channel back', async () => {
    const hook = await receiver(() => ({ status: 500 }));
    const a = await alerter({
      channels: [{ type: 'webhook', url: hook.url }],
      delivery: { ...FAST, backoffInitialMs: 10, breakerThreshold: 3, breakerOpenMs: 1000, maxAttempts: 50 },
      incidents: INCIDENTS,
    });
    await a.publish([finding({ task_id: 't-a' }), finding({ task_id: 't-b' }), finding({ task_id: 't-c' })]);
    await waitFor(() => hook.requests.length === 3, WAIT_MS, 'three failures');
    const gauge = () => a.metrics.render().match(/runtrail_alert_breaker_state\{channel="webhook"\} (\d)/)?.[1];
    // The receiver records the third request before the alerter has read its 500.
    await waitFor(() => gauge() === '1', WAIT_MS, 'the breaker to open');
    await pause(400);
    expect(hook.requests).toHaveLength(3); // open: nothing sent although retries are due
    await waitFor(() => hook.requests.length === 4, WAIT_MS, 'the half-open trial');
    expect((hook.requests[3]?.at ?? 0) - (hook.requests[2]?.at ?? 0)).toBeGreaterThanOrEqual(990);
    await pause(300);
    expect(hook.requests).toHaveLength(4); // the trial failed: open again
    expect(a.metrics.counter('runtrail_alert_breaker_opened_total', '').get({ channel: 'webhook' })).toBe(2);
  });

  it('a 429 answering the half-open trial does not leave the channel stuck', async () => {
    // 500, 500, 500 (the breaker opens), the trial gets 429 Retry-After 1, then all is well.
    const hook = await receiver((_r, n) => (n < 3 ? { status: 500 } : n === 3 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
    const a = await alerter({
      channels: [{ type: 'webhook', url: hook.url }],
      delivery: { ...FAST, backoffInitialMs: 10, breakerThreshold: 3, breakerOpenMs: 300, maxAttempts: 50 },
      incidents: INCIDENTS,
    });
    await a.publish([finding({ task_id: 't-a' }), finding({ task_id: 't-b' }), finding({ task_id: 't-c' })]);
    await waitFor(() => hook.accepted().length === 3, WAIT_MS, 'every incident delivered after the pause');
    expect(hook.requests[3]?.at).toBeDefined();
    // Held back by the trial's Retry-After, then delivered: the breaker did not wait for a verdict forever.
    expect((hook.requests[4]?.at ?? 0) - (hook.requests[3]?.at ?? 0)).toBeGreaterThanOrEqual(950);
  });

  it('PagerDuty: a retried resolve of an incident goes before the next incident of the same fingerprint', async () => {
    // The first resolve fails once; meanwhile the same finding fires again (a new incident, same dedup_key).
    let resolves = 0;
    const pd = await receiver((r) => {
      const body = JSON.parse(r.body) as { event_action: string };
      if (body.event_action === 'resolve' && resolves++ === 0) return { status: 500 };
      return { status: 202, body: '{"status":"success","dedup_key":"x"}' };
    });
    const a = await alerter({
      channels: [{ type: 'pagerduty', routingKey: 'R0UT1NGKEY', url: `${pd.url}/v2/enqueue` }],
      delivery: { ...FAST, backoffInitialMs: 600 },
      incidents: { ...INCIDENTS, resolveAfterMs: 200 },
    });
    await a.publish([finding({ severity: 'critical' }, 1)]);
    await waitFor(() => resolves === 1, WAIT_MS, 'the first resolve (refused)');
    await a.publish([finding({ severity: 'critical' }, 2)]);
    await waitFor(() => pd.accepted().length === 4, WAIT_MS, 'trigger, resolve, trigger, resolve');
    const actions = pd.requests.map((r) => (JSON.parse(r.body) as { event_action: string }).event_action);
    // Had the second trigger overtaken the retried resolve, that resolve would have closed the new page.
    expect(actions.slice(0, 4)).toEqual(['trigger', 'resolve', 'resolve', 'trigger']);
    const incidents = await a.store.listIncidents();
    expect(new Set(incidents.map((i) => i.fingerprint)).size).toBe(1);
    expect(new Set(incidents.map((i) => i.id)).size).toBe(2);
  });

  it('the rate limit queues deliveries instead of dropping them', async () => {
    const hook = await receiver();
    const a = await alerter({
      channels: [{ type: 'webhook', url: hook.url, ratePerMinute: 600, burst: 2 }],
      delivery: FAST,
      incidents: INCIDENTS,
    });
    await a.publish(Array.from({ length: 6 }, (_, i) => finding({ task_id: `t-${i}` })));
    await waitFor(() => hook.requests.length === 6, WAIT_MS, 'all six deliveries');
    const at = hook.requests.map((r) => r.at);
    // Two at once (burst), then one per 100 ms: the last starts at least 400 ms after the first
    // (300 leaves room for a slow first request on a busy machine; no limit would take ~10 ms).
    expect((at[5] ?? 0) - (at[0] ?? 0)).toBeGreaterThanOrEqual(300);
    expect(new Set(hook.requests.map((r) => message(r.body).task_id)).size).toBe(6);
    expect(a.metrics.counter('runtrail_alert_rate_limited_total', '').get({ channel: 'webhook' })).toBeGreaterThan(0);
  });

  it('a delivery that finally fails is a dead letter, counted, and listed by `runtrail alerts --failed`', async () => {
    const hook = await receiver(() => ({ status: 503, body: 'maintenance' }));
    const database = `alerting_${++db}`;
    const a = await alerter({ channels: [{ type: 'webhook', name: 'soc-hook', url: hook.url }], delivery: { ...FAST, maxAttempts: 3, backoffInitialMs: 10 }, incidents: INCIDENTS }, undefined, database);
    await a.publish([finding()]);
    await waitFor(async () => (await a.store.listOutbox({ status: 'dead' })).length === 1, WAIT_MS, 'dead letter');
    expect(hook.requests).toHaveLength(3);
    expect(a.metrics.counter('runtrail_alert_dead_letters_total', '').get({ channel: 'soc-hook' })).toBe(1);
    const deadLetters = () => a.store.querySql("SELECT stage, code, reason FROM dead_letters WHERE stage = 'alerter'");
    await waitFor(async () => (await deadLetters()).length > 0, WAIT_MS, 'the dead_letters row');
    expect(await deadLetters()).toEqual([{ stage: 'alerter', code: 'delivery_failed', reason: expect.stringContaining('HTTP 503: maintenance (after 3 attempts)') }]);

    const cfgFile = join(dir, `cli-${database}.json`);
    writeFileSync(cfgFile, JSON.stringify({ dataDir: join(dir, 'data'), storage: { database }, logLevel: 'silent' }));
    let out = '';
    const io = { out: (t: string) => void (out += t), err: () => undefined, isTty: false };
    expect(await main(['alerts', '--failed', '--json', '-c', cfgFile], io)).toBe(0);
    const rows = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ channel: 'soc-hook', status: 'dead', attempts: 3, kind: 'trigger', title: 'Credential used from another workload', task_id: 'task-1' });
    expect(String(rows[0]?.reason)).toContain('HTTP 503');
    out = '';
    expect(await main(['alerts', '-c', cfgFile], io)).toBe(0);
    expect(out).toContain('Credential used from another workload');
  });

  it('a 4xx rejection is not retried: dead at once with the reason', async () => {
    const hook = await receiver(() => ({ status: 400, body: 'bad payload' }));
    const a = await alerter({ channels: [{ type: 'webhook', url: hook.url }], delivery: FAST, incidents: INCIDENTS });
    await a.publish([finding()]);
    await waitFor(async () => (await a.store.listOutbox({ status: 'dead' })).length === 1, WAIT_MS, 'dead letter');
    await pause(100);
    expect(hook.requests).toHaveLength(1);
    expect((await a.store.listOutbox())[0]?.last_error).toMatch(/delivery_rejected: HTTP 400: bad payload/);
  });

  it('Slack Web API errors: ratelimited is retried, channel_not_found is a dead letter at once', async () => {
    let sec = 0;
    const slack = await receiver((r) => {
      const body = JSON.parse(r.body) as { channel: string };
      if (body.channel === 'C0GONE') return { status: 200, body: '{"ok":false,"error":"channel_not_found"}' };
      return { status: 200, body: sec++ === 0 ? '{"ok":false,"error":"ratelimited"}' : '{"ok":true,"channel":"C0SEC","ts":"1.1"}' };
    });
    const a = await alerter({
      channels: [
        { type: 'slack', name: 'ok-later', botToken: 'xoxb-1', channel: 'C0SEC', apiUrl: slack.url },
        { type: 'slack', name: 'gone', botToken: 'xoxb-1', channel: 'C0GONE', apiUrl: slack.url },
      ],
      delivery: FAST,
      incidents: INCIDENTS,
    });
    await a.publish([finding()]);
    await waitFor(async () => (await a.store.listOutbox({ status: 'delivered' })).length === 1 && (await a.store.listOutbox({ status: 'dead' })).length === 1, WAIT_MS, 'one delivered, one dead');
    const [dead] = await a.store.listOutbox({ status: 'dead' });
    expect(dead).toMatchObject({ channel: 'gone', attempts: 1 });
    expect(dead?.last_error).toContain('channel_not_found');
    const [ok] = await a.store.listOutbox({ status: 'delivered' });
    expect(ok).toMatchObject({ channel: 'ok-later', attempts: 2, ref: 'C0SEC|1.1' });
  });
});

describe('evidence in messages', () => {
  it('shows the evidence a finding carries without reading storage, and reads the rest by id, from any task', async () => {
    const hook = await receiver();
    const a = await alerter({ channels: [{ type: 'webhook', url: hook.url, secret: SECRET }], delivery: FAST, incidents: { ...INCIDENTS, evidenceLimit: 3 } });
    const t = Date.parse('2026-06-01T09:00:00Z');
    // Stored under another task (the identity's earlier task) and not carried by the finding.
    const earlier = tev({
      id: 'evidence-earlier',
      source: 'resource',
      type: EVENT_TYPE.resourceAccess,
      task_id: 'task-earlier',
      time: t,
      action: 'secretsmanager:GetSecretValue',
      principal: 'arn:aws:sts::111122223333:assumed-role/billing/s1',
      resources: [{ id: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:db' }],
      outcome: 'success',
    });
    await a.store.insertEvents([earlier]);
    // Carried by the finding and stored nowhere: only the finding can supply them.
    const carried = [
      { event_id: 'carried-read', time: t + 2000, source: 'agent', type: EVENT_TYPE.toolCall, tool: 'read_inbox', agent_id: 'billing-agent' },
      { event_id: 'carried-send', time: t + 1000, source: 'agent', type: EVENT_TYPE.toolCall, tool: 'send_money', agent_id: 'billing-agent' },
    ];
    await a.publish([finding({ evidence: [earlier.event_id, 'carried-send', 'carried-read', 'beyond-limit'], evidence_events: carried })]);
    await waitFor(() => hook.requests.length === 1, WAIT_MS, 'webhook request');
    const m = message(hook.requests[0]?.body ?? '');
    expect(m.evidence).toEqual([
      {
        event_id: earlier.event_id,
        time: t,
        source: 'resource',
        type: EVENT_TYPE.resourceAccess,
        action: 'secretsmanager:GetSecretValue',
        resource: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:db',
        principal: 'arn:aws:sts::111122223333:assumed-role/billing/s1',
        outcome: 'success',
      },
      carried[1],
      carried[0],
    ]);
    expect(m.evidence_omitted).toBe(1);
    const counter = a.metrics.counter('runtrail_alert_evidence_total', '');
    expect([counter.get({ source: 'finding' }), counter.get({ source: 'storage' }), counter.get({ source: 'missing' })]).toEqual([2, 1, 0]);
  });
});
