import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { TimelineResponseSchema } from '../../services/api/schemas.ts';
import { agentTrace } from '../fixtures/scenario.ts';

/**
 * The README's promise, as a user runs it: `npm start` (package.json's script, the `runtrail` bin
 * and its tsx loader, no build step) brings the whole embedded pipeline up; a trace POSTed to the
 * collector comes back as a timeline from the analyst API; SIGTERM stops it cleanly with exit 0,
 * and a second `npm start` on the same data directory still serves that timeline.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'runtrail-npm-start-'));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Started {
  collector: string;
  api: string;
  stop(): Promise<number | null>;
}

/** `npm start -- --data DIR --port 0 --api-port 0`, waited on until it announces its URLs. */
async function npmStart(): Promise<Started> {
  // The environment must not point the process at a broker or a ClickHouse server: this is the embedded default.
  const env = { ...process.env, KAFKA_BROKERS: '', CLICKHOUSE_URL: '', RUNTRAIL_CONFIG: '', RUNTRAIL_LOG_LEVEL: 'warn' };
  const child = spawn('npm', ['start', '--silent', '--', '--data', dir, '--port', '0', '--api-port', '0'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stderr = '';
  child.stdout.resume();
  const urls = await new Promise<[string, string]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`npm start did not come up in 90 s:\n${stderr}`)), 90_000);
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /runtrail listening on (http:\/\/\S+), analyst API and page on (http:\/\/\S+)\/ui/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve([m[1] as string, m[2] as string]);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`npm start exited with ${code}:\n${stderr}`));
    });
  });
  return {
    collector: urls[0],
    api: urls[1],
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

async function timeline(api: string, task: string): Promise<{ status: number; types: string[] }> {
  const res = await fetch(`${api}/v1/tasks/${task}/timeline`);
  if (res.status !== 200) return { status: res.status, types: [] };
  return { status: 200, types: TimelineResponseSchema.parse(await res.json()).events.map((e) => e.type) };
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('npm start', () => {
  it('runs the whole embedded pipeline: ingest, correlate, store, serve; stops cleanly and keeps what it stored', async () => {
    const task = 'task-npm-start-1';
    let p = await npmStart();
    const health = await fetch(`${p.collector}/healthz`);
    expect(health.status).toBe(200);
    const res = await fetch(`${p.collector}/v1/traces`, { method: 'POST', body: JSON.stringify(agentTrace({ trace: 'c3'.repeat(16), task })), headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ accepted: 3 });
    const expected = ['task.started', 'tool.call', 'task.ended'];
    expect(await until(() => timeline(p.api, task), (t) => t.types.length >= 3)).toEqual({ status: 200, types: expected });
    const metrics = await (await fetch(`${p.collector}/metrics`)).text();
    expect(metrics).toMatch(/^runtrail_collector_accepted_total\{format="otlp-traces"\} 3$/m);
    expect(await p.stop()).toBe(0);

    p = await npmStart();
    expect(await timeline(p.api, task)).toEqual({ status: 200, types: expected });
    expect(await p.stop()).toBe(0);
  }, 240_000);
});
