import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../services/cli/main.ts';
import type { Io } from '../../services/cli/command.ts';

/**
 * `runtrail replay` end to end on the real third-party datasets in ../shared/datasets (present in
 * CI; a user's fresh clone has no ../shared, so these tests say so and do not run there), through
 * the real CLI, the real pipeline and the real ClickHouse engine.
 */

const DATASETS = fileURLToPath(new URL('../../../shared/datasets/', import.meta.url));
const AGENTDOJO = join(DATASETS, 'agentdojo/banking-slack.otlp.ndjson.gz');
const STRATUS = join(DATASETS, 'cloudtrail-stratus');
const hasAgentdojo = existsSync(AGENTDOJO);
const hasStratus = existsSync(STRATUS);
if (!hasAgentdojo || !hasStratus) console.warn(`datasets not found under ${DATASETS}: dataset replay tests do not run here (CI has them)`);

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'runtrail-replay-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function captureIo(): Io & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => void stdout.push(t), err: (t) => void stderr.push(t), isTty: false };
}

async function runtrail(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const io = captureIo();
  const code = await main(args, io);
  return { code, stdout: io.stdout.join(''), stderr: io.stderr.join('') };
}

async function sqlJson(data: string, query: string): Promise<Record<string, unknown>[]> {
  const r = await runtrail(['sql', query, '--data', data, '--format', 'json', '--log-level', 'silent']);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe.runIf(hasAgentdojo)('replay of AgentDojo OTLP traces', () => {
  it('processes all 4,826 tasks with zero rejected records, and a second replay adds no events', async () => {
    const data = tempDir();
    const statsFile = join(data, 'stats.json');
    const findingsFile = join(data, 'findings.jsonl');
    const first = await runtrail(['replay', AGENTDOJO, '--format', 'otlp-json', '--data', data, '--stats', statsFile, '--findings', findingsFile, '--quiet']);
    expect(first.code, first.stderr).toBe(0);
    const stats = JSON.parse(readFileSync(statsFile, 'utf8')) as Record<string, number>;
    expect(stats.tasks).toBe(4826);
    expect(stats.records_rejected).toBe(0);
    expect(stats.records_read).toBeGreaterThan(40_000);
    expect(stats.events_accepted).toBeGreaterThanOrEqual(stats.records_read as number);
    for (const k of ['records_read', 'events_accepted', 'records_rejected', 'tasks', 'findings', 'elapsed_s']) expect(stats).toHaveProperty(k);
    expect(existsSync(findingsFile)).toBe(true);

    const [before] = await sqlJson(data, 'SELECT count() AS n, uniqExact(task_id) AS tasks FROM events FINAL');
    expect(Number(before?.n)).toBe(stats.events_accepted);
    expect(Number(before?.tasks)).toBe(4826);

    const second = await runtrail(['replay', AGENTDOJO, '--format', 'otlp-json', '--data', data, '--quiet']);
    expect(second.code, second.stderr).toBe(0);
    const [after] = await sqlJson(data, 'SELECT count() AS n FROM events FINAL');
    expect(Number(after?.n)).toBe(Number(before?.n));
  }, 240_000);
});

describe.runIf(hasStratus)('replay of Stratus Red Team CloudTrail files', () => {
  it('ingests every file with zero rejected records and resolves AssumeRole-issued keys to their session', async () => {
    const data = tempDir();
    const files = readdirSync(STRATUS)
      .filter((f) => f.endsWith('.json'))
      .map((f) => join(STRATUS, f));
    const statsFile = join(data, 'stats.json');
    const r = await runtrail(['replay', ...files, '--format', 'cloudtrail', '--data', data, '--stats', statsFile, '--quiet']);
    expect(r.code, r.stderr).toBe(0);
    const stats = JSON.parse(readFileSync(statsFile, 'utf8')) as Record<string, number>;
    expect(stats.records_rejected).toBe(0);
    expect(stats.events_accepted).toBe(stats.records_read);

    const issued = await sqlJson(
      data,
      "SELECT task_id, JSONExtractString(credential, 'id') AS key, JSONExtractString(credential, 'session_name') AS session FROM events FINAL WHERE type = 'credential.issued'",
    );
    expect(issued.length).toBeGreaterThan(0);
    const used = await sqlJson(data, "SELECT credential_id, task_id, attribution FROM events FINAL WHERE type = 'resource.access' AND credential_id LIKE 'ASIA%'");
    expect(used.length).toBeGreaterThan(0);
    let joined = 0;
    for (const u of used) {
      const issuance = issued.find((i) => i.key === u.credential_id);
      if (issuance) {
        // The call lands in the session its key was issued to, joined through the credential.
        expect(u.task_id).toBe(issuance.session);
        expect(u.attribution).toBe('credential');
        joined++;
      } else {
        // A session key whose issuance is not in the logs: nobody issued it to a task.
        expect(u.task_id).toBe('');
        expect(u.attribution).toBe('unattributed');
      }
    }
    expect(joined).toBeGreaterThan(10);
    // Calls made with long-lived keys nobody issued to a task are stored unattributed, with the reason.
    const orphans = await sqlJson(data, "SELECT count() AS n, any(unattributed_reason) AS why FROM events FINAL WHERE attribution = 'unattributed'");
    expect(Number(orphans[0]?.n)).toBeGreaterThan(0);
    expect(String(orphans[0]?.why)).toMatch(/grace period/);
  }, 120_000);
});

describe('replay input errors', () => {
  it('exits non-zero and names the file when an input cannot be read', async () => {
    const r = await runtrail(['replay', '/nonexistent/file.json', '--format', 'cloudtrail', '--data', tempDir(), '--quiet']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('/nonexistent/file.json');
  });

  it('exits non-zero for a corrupt gzip file', async () => {
    const dir = tempDir();
    const bad = join(dir, 'broken.ndjson.gz');
    writeFileSync(bad, Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x01, 0x02, 0x03]));
    const r = await runtrail(['replay', bad, '--format', 'runtrail', '--data', join(dir, 'data'), '--quiet']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('broken.ndjson.gz');
  }, 60_000);

  it('refuses an unknown format with usage help', async () => {
    const r = await runtrail(['replay', 'x.json', '--format', 'syslog']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown --format "syslog"/);
  });
});

describe('replay of SPIRE Server logs', () => {
  it('reads a server log in the default text format (JSON lines mixed in), skipping what is not issuance or audit', async () => {
    const dir = tempDir();
    const file = join(dir, 'spire-server.log');
    const serial = '209514317385420880713512338458016221337';
    writeFileSync(
      file,
      [
        'time="2026-11-21T08:59:00Z" level=info msg="Starting Server APIs" address="[::]:8081" subsystem_name=endpoints',
        `time="2026-11-21T09:00:01Z" level=debug msg="Signed X509 SVID" caller_id="spiffe://prod.example/spire/agent/x" expiration="2026-11-21T10:00:01Z" method=BatchNewX509SVID serial_num=${serial} spiffe_id="spiffe://prod.example/ns/agents/sa/billing"`,
        '{"time":"2026-11-21T09:00:03Z","level":"info","msg":"API accessed","type":"audit","method":"BatchCreateEntry","status":"success","caller_uid":0,"caller_path":"/opt/spire/bin/spire-server","spiffe_id":"spiffe://prod.example/ns/x","request_id":"r1"}',
        'time="2026-11-21T09:00:04Z" level=debug msg="Signed X509 SVID" expiration="2026-11-21T10:00:04Z"',
        '',
      ].join('\n'),
    );
    const stats = join(dir, 'stats.json');
    const r = await runtrail(['replay', file, '--format', 'spire', '--data', join(dir, 'data'), '--stats', stats, '--quiet', '--log-level', 'silent']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(stats, 'utf8'))).toMatchObject({ records_read: 4, events_accepted: 2, records_rejected: 1, records_skipped: 1 });
    const rows = await sqlJson(join(dir, 'data'), 'SELECT type, format, task_id, credential_id FROM runtrail.events FINAL ORDER BY event_time');
    expect(rows.map((x) => [x.type, x.format, x.task_id])).toEqual([
      ['credential.issued', 'spire', `session:${serial}`],
      ['resource.access', 'spire', ''],
    ]);
  }, 60_000);
});
