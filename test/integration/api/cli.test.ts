import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../shared/config.ts';
import type { HttpService } from '../../../shared/http.ts';
import { silentLogger } from '../../../shared/logger.ts';
import { MetricsRegistry } from '../../../shared/metrics.ts';
import { startApiServer } from '../../../services/api/api-server.ts';
import { hashToken, newToken } from '../../../services/api/auth.ts';
import { FindingPageSchema, IdentityActivitySchema, TaskPageSchema, TimelineResponseSchema } from '../../../services/api/schemas.ts';
import { main } from '../../../services/cli/main.ts';
import { ClickHouseStore } from '../../../services/storage/store.ts';
import { FINDING_TASKS, TASKS, agentId, credentialId, eventId, loadFixture, taskId } from './api-fixture.ts';

/**
 * The analyst CLI commands against the data directory and against a running API (same data,
 * same answers), with tables by default and --json.
 */

const log = silentLogger();
const TOKEN = newToken();
let dir: string;
let store: ClickHouseStore;
let api: HttpService;
let tokenFile: string;

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (t) => (out += t), err: (t) => (err += t), isTty: false });
  return { code, out, err };
}
const local = (...argv: string[]) => run(...argv, '--data', dir, '--log-level', 'silent');
const remote = (...argv: string[]) => run(...argv, '--api', api.url, '--token-file', tokenFile);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-cli-'));
  tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`);
  const cfg = parseConfig({ dataDir: dir, api: { port: 0, tokens: [{ name: 'alice', role: 'analyst', sha256: hashToken(TOKEN) }] } });
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

describe('runtrail tasks', () => {
  it('prints a table of the newest tasks and the next page cursor', async () => {
    const r = await local('tasks', '--limit', '5');
    expect(r.code, r.err).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines[0]).toMatch(/^task\s+first_seen\s+last_seen\s+events\s+agents\s+workloads\s+findings\s+severity$/);
    expect(lines[2]).toMatch(new RegExp(`^${taskId(TASKS - 1)}\\s+2026-05-01T12:01:59.000Z`));
    expect(r.out).toContain('(5 rows)');
    const cursor = /next page: --cursor (\S+)/.exec(r.out)?.[1];
    expect(cursor).toBeDefined();
    const next = await local('tasks', '--limit', '5', '--cursor', cursor ?? '', '--json');
    expect(TaskPageSchema.parse(JSON.parse(next.out)).items[0]?.task_id).toBe(taskId(TASKS - 6));
  });

  it('gives the same JSON from the data directory and from the API, filters included', async () => {
    const a = await local('tasks', '--has-findings', '--agent', agentId(1), '--limit', '100', '--json');
    const b = await remote('tasks', '--has-findings', '--agent', agentId(1), '--limit', '100', '--json');
    expect(a.code, a.err).toBe(0);
    expect(b.code, b.err).toBe(0);
    const page = TaskPageSchema.parse(JSON.parse(a.out));
    expect(page.items).toHaveLength(FINDING_TASKS / 2);
    expect(JSON.parse(b.out)).toEqual(JSON.parse(a.out));
  });

  it('reports bad filters and refused tokens with a message and a non-zero exit', async () => {
    const bad = await local('tasks', '--from', 'last tuesday');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--from: expected epoch milliseconds or RFC 3339/);
    const refused = await run('tasks', '--api', api.url, '--token', 'rt_wrong');
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/API answered 401: invalid token/);
  });
});

describe('runtrail timeline, findings, identity', () => {
  it('prints a task timeline with its evidence marked, its credentials and findings', async () => {
    const r = await local('timeline', taskId(3));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`task ${taskId(3)}: 2 events, 1 credentials, 1 findings`);
    const marked = r.out.split('\n').filter((l) => l.startsWith('*'));
    expect(marked.map((l) => l.trim().split(/\s+/).pop())).toEqual([eventId(3, 0), eventId(3, 1)]);
    expect(r.out).toMatch(/credentials\ncredential\s+kind/);
    expect(r.out).toContain(credentialId(3));
    expect(r.out).toMatch(/findings\ntime\s+severity\s+detector/);
    const json = await remote('timeline', taskId(3), '--json');
    expect(TimelineResponseSchema.parse(JSON.parse(json.out)).findings[0]?.evidence).toEqual([eventId(3, 0), eventId(3, 1)]);
    const missing = await remote('timeline', 'no-such-task');
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('no events or findings for task no-such-task');
  });

  it('lists findings by severity', async () => {
    const r = await remote('findings', '--severity', 'high', '--limit', '100', '--json');
    const page = FindingPageSchema.parse(JSON.parse(r.out));
    expect(page.items).toHaveLength(FINDING_TASKS / 3);
    expect(page.items.every((f) => f.severity === 'high')).toBe(true);
    const table = await local('findings', '--limit', '2');
    expect(table.out).toMatch(/^time\s+severity\s+detector\s+rule\s+task\s+title/);
    expect(table.out).toContain(taskId(FINDING_TASKS - 1));
  });

  it("prints an identity's credentials, tasks and resources", async () => {
    const r = await local('identity', credentialId(8));
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(new RegExp(`^identity ${credentialId(8)}: 1 events`));
    expect(r.out).toContain('arn:aws:s3:::bucket-008/report.csv');
    const json = await remote('identity', agentId(0), '--json');
    expect(IdentityActivitySchema.parse(JSON.parse(json.out)).tasks).toHaveLength(TASKS / 2);
  });
});

describe('runtrail token', () => {
  it('makes a token and the config entry with its hash', async () => {
    const r = await run('token', 'new', '--name', 'ci', '--role', 'ingest');
    const token = /token:\s+(\S+)/.exec(r.out)?.[1] ?? '';
    const entry = JSON.parse(/config: (.*)/.exec(r.out)?.[1] ?? '{}') as Record<string, string>;
    expect(entry).toEqual({ name: 'ci', role: 'ingest', sha256: hashToken(token) });
    expect(parseConfig({ api: { tokens: [entry] } }).api.tokens).toHaveLength(1);
    expect((await run('token', 'hash', token)).out.trim()).toBe(hashToken(token));
    expect((await run('token', 'new', '--name', 'x', '--role', 'root')).code).toBe(2);
  });
});
