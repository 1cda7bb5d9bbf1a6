import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../shared/config.ts';
import { silentLogger } from '../../../shared/logger.ts';
import { Redactor, RedactionPolicySchema } from '../../../shared/redaction.ts';
import { REDACTION_KEY_FILE } from '../../../shared/redaction-key.ts';
import { hashToken, newToken } from '../../../services/api/auth.ts';
import { startEmbedded, type EmbeddedServer } from '../../../services/embedded.ts';
import { SECRET_SAMPLES } from '../../fixtures/secrets.ts';

/**
 * Secrets sent to the collector in tool arguments, tool results, messages and headers must not be
 * found in clear anywhere Runtrail keeps data: in any column of any table, nor in the bus's
 * write-ahead log. The embedded server runs with tokens, so ingest needs the ingest role.
 */

const TASK = 'task-redaction-1';
const T = { ingest: newToken(), analyst: newToken() };
let dir: string;
let server: EmbeddedServer;

function files(root: string): string[] {
  return readdirSync(root).flatMap((name) => {
    const p = join(root, name);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

const events = () =>
  SECRET_SAMPLES.map((s, i) => ({
    source: 'agent',
    type: 'tool.call',
    time: Date.parse('2026-05-01T12:00:00Z') + i * 1000,
    task_id: TASK,
    agent_id: 'agent-redact',
    credential_id: 'ASIAREDACTIONTEST001',
    tool: { name: 'run_shell', call_id: `call-${i}`, arguments: JSON.stringify({ command: s.text }), result: `ok: ${s.text}` },
    messages: { input: `please use ${s.text}` },
    attributes: { 'http.request.header.authorization': `Bearer ${s.secret}`, note: s.text },
  }));

async function post(body: string, token?: string): Promise<number> {
  const res = await fetch(`${server.http.url}/v1/events`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/x-ndjson', ...(token ? { authorization: `Bearer ${token}` } : {}) },
  });
  await res.text();
  return res.status;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-redaction-'));
  const cfg = parseConfig({
    dataDir: dir,
    collector: { port: 0 },
    api: {
      port: 0,
      tokens: [
        { name: 'shipper', role: 'ingest', sha256: hashToken(T.ingest) },
        { name: 'alice', role: 'analyst', sha256: hashToken(T.analyst) },
      ],
    },
    bus: { fsync: false },
  });
  server = await startEmbedded(cfg, silentLogger());
}, 60_000);

afterAll(async () => {
  await server?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('redaction before storage', () => {
  it('accepts ingest only with an ingest (or admin) token', async () => {
    const body = `${JSON.stringify(events()[0])}\n`;
    expect(await post(body)).toBe(401);
    expect(await post(body, T.analyst)).toBe(403);
  });

  it('stores no secret in clear in any table or in the bus log, and keeps equal secrets correlated', async () => {
    const body = `${events().map((e) => JSON.stringify(e)).join('\n')}\n`;
    expect(await post(body, T.ingest)).toBe(200);
    await server.pipeline.drain(false);
    const store = server.pipeline.store;
    const deadline = Date.now() + 20_000;
    while ((await store.timeline(TASK)).length < SECRET_SAMPLES.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect((await store.timeline(TASK)).length).toBe(SECRET_SAMPLES.length);

    const tables = await store.querySql(`SELECT name FROM system.tables WHERE database = currentDatabase()`);
    const names = tables.map((t) => String(t.name));
    expect(names).toEqual(expect.arrayContaining(['events', 'tasks', 'bindings', 'findings', 'alerts', 'dead_letters']));
    let dump = '';
    for (const name of names) {
      const rows = await store.querySql(`SELECT * FROM \`${name.replace(/`/g, '')}\``, {}, { maxRows: 100_000 });
      dump += `${JSON.stringify(rows)}\n`;
    }
    expect(dump).toContain('ASIAREDACTIONTEST001');
    for (const s of SECRET_SAMPLES) expect(dump, s.kind).not.toContain(s.secret);

    const busFiles = files(join(dir, 'bus'));
    expect(busFiles.length).toBeGreaterThan(0);
    const log = busFiles.map((f) => readFileSync(f, 'latin1')).join('\n');
    expect(log).toContain(TASK);
    for (const s of SECRET_SAMPLES) expect(log, `bus log: ${s.kind}`).not.toContain(s.secret);

    // The header of event i is the secret itself: its marker, made with the persisted key, is stored.
    const key = readFileSync(join(dir, REDACTION_KEY_FILE), 'utf8').trim();
    const redactor = new Redactor({ key, policy: RedactionPolicySchema.parse({}) });
    const github = SECRET_SAMPLES.find((s) => s.kind === 'github-token');
    if (!github) throw new Error('corpus lacks a github token');
    const marker = redactor.marker(github.secret);
    const timeline = await store.timeline(TASK);
    const withIt = timeline.filter((e) => JSON.stringify(e).includes(marker));
    expect(withIt.length).toBeGreaterThanOrEqual(1);
    // Arguments, result and messages of the same event all carry the one marker.
    expect(JSON.stringify(withIt[0]).split(marker).length - 1).toBeGreaterThanOrEqual(3);
  }, 60_000);
});
