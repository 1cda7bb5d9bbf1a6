import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../../../shared/config.ts';
import { ConfigError } from '../../../shared/errors.ts';
import type { HttpService } from '../../../shared/http.ts';
import { silentLogger } from '../../../shared/logger.ts';
import { MetricsRegistry } from '../../../shared/metrics.ts';
import { startApiServer } from '../../../services/api/api-server.ts';
import { hashToken, newToken } from '../../../services/api/auth.ts';
import {
  FindingPageSchema,
  IdentityActivitySchema,
  IncidentPageSchema,
  TaskPageSchema,
  TimelineResponseSchema,
  type TaskSummary,
} from '../../../services/api/schemas.ts';
import { ClickHouseStore } from '../../../services/storage/store.ts';
import { BASE_MS, FINDING_TASKS, TASKS, agentId, bucketArn, credentialId, eventId, finding, loadFixture, taskId, workloadId } from './api-fixture.ts';

/**
 * The analyst API over HTTP on loopback, on the real ClickHouse engine (chDB) holding a fixture of
 * 120 tasks: every endpoint, access control (401/403/429, nothing leaked), cursor pagination
 * across pages, and the start-up refusal beyond loopback.
 */

const log = silentLogger();
let dir: string;
let store: ClickHouseStore;
let api: HttpService;
let cfg: Readonly<Config>;

const T = { analyst: newToken(), ingest: newToken(), admin: newToken(), expired: newToken(), revoked: newToken() };

function config(over: Record<string, unknown> = {}): Readonly<Config> {
  return parseConfig({
    dataDir: dir,
    api: {
      port: 0,
      tokens: [
        { name: 'alice', role: 'analyst', sha256: hashToken(T.analyst) },
        { name: 'shipper', role: 'ingest', sha256: hashToken(T.ingest) },
        { name: 'root', role: 'admin', sha256: hashToken(T.admin), expiresAt: '2099-01-01T00:00:00Z' },
        { name: 'old', role: 'analyst', sha256: hashToken(T.expired), expiresAt: '2020-01-01T00:00:00Z' },
        { name: 'gone', role: 'admin', sha256: hashToken(T.revoked), revoked: true },
      ],
      maxPageSize: 100,
      ...over,
    },
  });
}

async function get(path: string, token: string | null = T.analyst): Promise<{ status: number; text: string; json: unknown; headers: Headers }> {
  const res = await fetch(`${api.url}${path}`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: res.status, text, json, headers: res.headers };
}

async function post(path: string, body: unknown, token: string | null = T.analyst): Promise<{ status: number; json: unknown; text: string }> {
  const res = await fetch(`${api.url}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
  });
  const text = await res.text();
  return { status: res.status, text, json: JSON.parse(text) as unknown };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-api-'));
  cfg = config();
  store = new ClickHouseStore(cfg.storage, dir, log, new MetricsRegistry());
  await store.start();
  await loadFixture(store);
  api = await startApiServer({ cfg, store, log, metrics: new MetricsRegistry(), readiness: async () => ({ ready: true, checks: {} }) });
}, 120_000);

afterAll(async () => {
  await api?.close();
  await store?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('access control', () => {
  const secrets = Object.values(T).flatMap((t) => [t, hashToken(t)]);

  it.each([
    ['no token', null],
    ['an unknown token', 'rt_not-a-real-token'],
    ['an expired token', T.expired],
    ['a revoked token', T.revoked],
  ])('answers 401 to %s, without leaking the token, its hash or a stack', async (_what, token) => {
    for (const path of ['/v1/tasks', `/v1/tasks/${taskId(1)}/timeline`, '/v1/findings', '/v1/incidents', `/v1/identities/${agentId(0)}`]) {
      const r = await get(path, token);
      expect(r.status, path).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(r.json).toMatchObject({ error: 'unauthenticated' });
      for (const s of secrets) expect(r.text).not.toContain(s);
      expect(r.text).not.toMatch(/at .*\.ts:\d+/);
      expect(r.text).not.toContain('task-');
    }
    const sql = await post('/v1/sql', { sql: 'SELECT 1' }, token);
    expect(sql.status).toBe(401);
  });

  it('answers 403 to a token whose role may not read, and lets admin read', async () => {
    const r = await get('/v1/tasks', T.ingest);
    expect(r.status).toBe(403);
    expect(r.json).toEqual({ error: 'forbidden', message: 'this endpoint needs the analyst role' });
    for (const s of secrets) expect(r.text).not.toContain(s);
    expect((await post('/v1/sql', { sql: 'SELECT 1' }, T.ingest)).status).toBe(403);
    expect((await get('/v1/tasks?limit=1', T.admin)).status).toBe(200);
  });

  it('keeps the OpenAPI document, the page and the health endpoints open', async () => {
    const doc = await get('/v1/openapi.json', null);
    expect(doc.status).toBe(200);
    const paths = Object.keys((doc.json as { paths: Record<string, unknown> }).paths);
    expect(paths).toEqual(expect.arrayContaining(['/v1/tasks', '/v1/tasks/{taskId}/timeline', '/v1/findings', '/v1/incidents', '/v1/identities/{id}', '/v1/sql']));
    expect((doc.json as { openapi: string }).openapi).toBe('3.1.0');
    const params = (doc.json as { paths: Record<string, { get: { parameters: Array<{ name: string }> } }> }).paths['/v1/tasks']?.get.parameters.map((p) => p.name);
    expect(params).toEqual(expect.arrayContaining(['from', 'to', 'agent', 'workload', 'credential', 'resource', 'has_findings', 'limit', 'cursor']));
    expect((await get('/ui', null)).status).toBe(200);
    expect((await get('/healthz', null)).status).toBe(200);
  });

  it('rate-limits per token with 429 and Retry-After', async () => {
    const metrics = new MetricsRegistry();
    const limited = await startApiServer({ cfg: config({ rateLimitBurst: 3, rateLimitPerSecond: 0.01 }), store, log, metrics, readiness: async () => ({ ready: true, checks: {} }) });
    try {
      const statuses: number[] = [];
      let retryAfter: string | null = null;
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${limited.url}/v1/findings?limit=1`, { headers: { authorization: `Bearer ${T.analyst}` } });
        await res.text();
        statuses.push(res.status);
        if (res.status === 429) retryAfter = res.headers.get('retry-after');
      }
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      expect(Number(retryAfter)).toBeGreaterThan(0);
      // Another token has a bucket of its own.
      const other = await fetch(`${limited.url}/v1/findings?limit=1`, { headers: { authorization: `Bearer ${T.admin}` } });
      expect(other.status).toBe(200);
    } finally {
      await limited.close();
    }
  });

  it('refuses to start beyond loopback without tokens, and starts there with tokens', async () => {
    const open = parseConfig({ dataDir: dir, api: { host: '0.0.0.0', port: 0 } });
    await expect(startApiServer({ cfg: open, store, log, metrics: new MetricsRegistry(), readiness: async () => ({ ready: true, checks: {} }) })).rejects.toThrow(ConfigError);
    const guarded = await startApiServer({ cfg: config({ host: '0.0.0.0' }), store, log, metrics: new MetricsRegistry(), readiness: async () => ({ ready: true, checks: {} }) });
    try {
      const res = await fetch(`${guarded.url}/v1/tasks`);
      expect(res.status).toBe(401);
    } finally {
      await guarded.close();
    }
  });
});

describe('GET /v1/tasks', () => {
  async function all(query: string, limit: number): Promise<{ items: TaskSummary[]; pages: number }> {
    const items: TaskSummary[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await get(`/v1/tasks?limit=${limit}${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(r.status, r.text).toBe(200);
      const page = TaskPageSchema.parse(r.json);
      expect(page.items.length).toBeLessThanOrEqual(limit);
      items.push(...page.items);
      cursor = page.next_cursor;
      pages++;
    } while (cursor !== null && pages < 50);
    return { items, pages };
  }

  it('pages through more tasks than a page holds, newest first, each task once', async () => {
    const { items, pages } = await all('', 25);
    expect(pages).toBe(Math.ceil(TASKS / 25));
    expect(items.map((t) => t.task_id)).toEqual(Array.from({ length: TASKS }, (_, i) => taskId(TASKS - 1 - i)));
    const t7 = items.find((t) => t.task_id === taskId(7));
    expect(t7).toMatchObject({ events: 2, first_seen: BASE_MS + 7000, last_seen: BASE_MS + 7500, agents: [agentId(7)], credentials: [credentialId(7)], findings: 1, max_severity: 'low' });
    expect(items.find((t) => t.task_id === taskId(100))).toMatchObject({ findings: 0 });
    expect(items.find((t) => t.task_id === taskId(100))?.max_severity).toBeUndefined();
  });

  it('filters by agent, workload, credential, resource, findings and time range', async () => {
    const ids = async (q: string) => (await all(q, 100)).items.map((t) => t.task_id).sort();
    expect(await ids(`&agent=${agentId(1)}`)).toHaveLength(TASKS / 2);
    expect(await ids(`&workload=${encodeURIComponent(workloadId(2))}`)).toHaveLength(TASKS / 4);
    expect(await ids(`&credential=${credentialId(42)}`)).toEqual([taskId(42)]);
    expect(await ids(`&resource=${encodeURIComponent(bucketArn(9))}`)).toEqual([taskId(9)]);
    expect(await ids('&resource=bucket-11')).toEqual(Array.from({ length: 10 }, (_, i) => taskId(110 + i)));
    expect(await ids('&has_findings=true')).toHaveLength(FINDING_TASKS);
    expect(await ids('&has_findings=false')).toHaveLength(TASKS - FINDING_TASKS);
    const from = new Date(BASE_MS + 10_000).toISOString();
    expect(await ids(`&from=${from}&to=${BASE_MS + 12_000}`)).toEqual([taskId(10), taskId(11), taskId(12)]);
  });

  it('answers 400 naming the bad parameter', async () => {
    const bad = await get('/v1/tasks?from=yesterday');
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ error: 'request_invalid' });
    expect((bad.json as { message: string }).message).toMatch(/^from:/);
    expect((await get('/v1/tasks?cursor=garbage')).status).toBe(400);
    expect((await get('/v1/tasks?limit=101')).status).toBe(400);
    expect((await get('/v1/tasks?colour=red')).status).toBe(400);
  });
});

describe('GET /v1/tasks/:taskId/timeline', () => {
  it('returns events in time order across sources, bindings and findings with evidence', async () => {
    const r = await get(`/v1/tasks/${taskId(3)}/timeline`);
    expect(r.status).toBe(200);
    const t = TimelineResponseSchema.parse(r.json);
    expect(t.task?.task_id).toBe(taskId(3));
    expect(t.events.map((e) => [e.source, e.event_id])).toEqual([
      ['agent', eventId(3, 0)],
      ['resource', eventId(3, 1)],
    ]);
    expect(t.truncated).toBe(false);
    expect(t.bindings.map((b) => b.credential_id)).toEqual([credentialId(3)]);
    expect(t.findings).toHaveLength(1);
    expect(t.findings[0]?.evidence).toEqual([eventId(3, 0), eventId(3, 1)]);
  });

  it('answers 404 for an unknown task and 400 for a malformed task id', async () => {
    const r = await get('/v1/tasks/no-such-task/timeline');
    expect(r.status).toBe(404);
    expect((await get('/v1/tasks/%E0%A4%A/timeline')).status).toBe(400);
    expect((await get('/healthz', null)).status).toBe(200);
  });
});

describe('GET /v1/findings and /v1/incidents', () => {
  it('pages through findings newest first and filters them', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await get(`/v1/findings?limit=25${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      const page = FindingPageSchema.parse(r.json);
      seen.push(...page.items.map((f) => f.task_id));
      cursor = page.next_cursor;
      pages++;
    } while (cursor !== null && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toEqual(Array.from({ length: FINDING_TASKS }, (_, i) => taskId(FINDING_TASKS - 1 - i)));

    const high = FindingPageSchema.parse((await get('/v1/findings?severity=high&limit=100')).json);
    expect(high.items).toHaveLength(FINDING_TASKS / 3);
    expect(high.items.every((f) => f.severity === 'high')).toBe(true);
    const one = FindingPageSchema.parse((await get(`/v1/findings?task=${taskId(4)}`)).json);
    expect(one.items.map((f) => f.rule)).toEqual(['new-service']);
    const none = FindingPageSchema.parse((await get('/v1/findings?detector=tool-chaining')).json);
    expect(none.items).toEqual([]);
    expect(none.next_cursor).toBeNull();
  });

  it('lists the stored incidents (latest version of each), newest first, with filters and pagination', async () => {
    const first = IncidentPageSchema.parse((await get('/v1/incidents?limit=40&severity=low')).json);
    expect(first.items).toHaveLength(40);
    expect(first.items[0]).toMatchObject({ detector: 'lateral-movement', task_id: taskId(FINDING_TASKS - 1), findings: 2, finding_ids: [finding(FINDING_TASKS - 1).id] });
    const second = IncidentPageSchema.parse((await get(`/v1/incidents?limit=40&severity=low&cursor=${encodeURIComponent(first.next_cursor ?? '')}`)).json);
    expect(second.items).toHaveLength(FINDING_TASKS - 40);
    expect(second.next_cursor).toBeNull();
    const all = [...first.items, ...second.items];
    expect(new Set(all.map((i) => i.task_id)).size).toBe(FINDING_TASKS);
    // One row per incident although each was stored twice, and the later version wins.
    expect(new Set(all.map((i) => i.id)).size).toBe(FINDING_TASKS);
    expect(all.every((i) => i.findings === 2)).toBe(true);

    const resolved = IncidentPageSchema.parse((await get('/v1/incidents?status=resolved&limit=100')).json);
    expect(resolved.items).toHaveLength(FINDING_TASKS / 4);
    expect(resolved.items.every((i) => i.status === 'resolved' && i.resolved_at !== null)).toBe(true);
    const high = IncidentPageSchema.parse((await get('/v1/incidents?severity=high&limit=100')).json);
    expect(high.items).toHaveLength(FINDING_TASKS / 3);
    const bad = await get('/v1/incidents?status=closed');
    expect(bad.status).toBe(400);
  });
});

describe('GET /v1/identities/:id', () => {
  it("summarises an agent's credentials, tasks and resources", async () => {
    const r = await get(`/v1/identities/${agentId(0)}`);
    expect(r.status).toBe(200);
    const a = IdentityActivitySchema.parse(r.json);
    expect(a.credentials).toHaveLength(TASKS / 2);
    expect(a.tasks).toHaveLength(TASKS / 2);
    // The agent's own events plus the resource events of the credentials issued to it.
    expect(a.events).toBe(TASKS);
    expect(a.resources.map((x) => x.id)).toContain(bucketArn(0));
    expect(a.first_seen).toBe(BASE_MS);
    expect(a.last_seen).toBe(BASE_MS + (TASKS - 2) * 1000 + 500);
  });

  it('summarises a credential and honours the time range', async () => {
    const a = IdentityActivitySchema.parse((await get(`/v1/identities/${credentialId(5)}`)).json);
    expect(a.tasks.map((t) => t.task_id)).toEqual([taskId(5)]);
    expect(a.resources).toEqual([{ type: 'AWS::S3::Object', id: bucketArn(5), account: '111122223333', events: 1, first_seen: BASE_MS + 5500, last_seen: BASE_MS + 5500 }]);
    const before = IdentityActivitySchema.parse((await get(`/v1/identities/${credentialId(5)}?to=${BASE_MS}`)).json);
    expect(before).toMatchObject({ events: 0, first_seen: null, tasks: [], resources: [] });
  });
});

describe('POST /v1/sql', () => {
  it('runs a read-only query with parameters', async () => {
    const r = await post('/v1/sql', { sql: 'SELECT count() AS n FROM events_dedup WHERE source = {s:String}', params: { s: 'resource' } });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ rows: [{ n: String(TASKS) }], row_count: 1 });
  });

  it('caps the rows', async () => {
    const r = await post('/v1/sql', { sql: 'SELECT number FROM system.numbers LIMIT 100', max_rows: 7 });
    expect(r.status).toBe(200);
    expect((r.json as { row_count: number }).row_count).toBe(7);
  });

  it('refuses writes with 400 and leaves the data alone', async () => {
    for (const sql of ['DROP TABLE events', "INSERT INTO findings (id) VALUES ('x')", 'SELECT 1; DROP TABLE events']) {
      const r = await post('/v1/sql', { sql }, T.admin);
      expect(r.status, sql).toBe(400);
      expect(r.json).toMatchObject({ error: 'query_rejected' });
    }
    const still = await post('/v1/sql', { sql: 'SELECT count() AS n FROM findings FINAL' });
    expect(still.json).toEqual({ rows: [{ n: String(FINDING_TASKS) }], row_count: 1 });
    expect((await post('/v1/sql', { query: 'SELECT 1' })).status).toBe(400);
  });
});
