import { describe, expect, it } from 'vitest';
import { main } from '../../services/cli/main.ts';
import type { Io } from '../../services/cli/command.ts';
import { generateTraffic } from '../../services/bench/generator.ts';

/**
 * `runtrail bench` at a small scale through the real CLI, pipeline and ClickHouse engine. Asserts
 * what the benchmark measures and checks (nothing lost, injected attacks detected, latency figures
 * present), never how fast: speed is for `npm run bench` to print, not for a test to time.
 */

async function bench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = { out: (t) => void out.push(t), err: (t) => void err.push(t), isTty: false };
  const code = await main(['bench', ...args], io);
  return { code, stdout: out.join(''), stderr: err.join('') };
}

describe('generator attacks', () => {
  it('marks the share of tasks asked for as attacks, deterministically per seed', () => {
    const opts = { seed: 3, openTasks: 200, eventsPerTask: 12, totalEvents: 20_000, startTime: Date.UTC(2026, 0, 1), attackRatio: 0.1 };
    const a = generateTraffic(opts);
    const b = generateTraffic(opts);
    expect(a.stats.attackTasks).toEqual(b.stats.attackTasks);
    const share = a.stats.attackTasks.length / a.stats.tasks;
    expect(share).toBeGreaterThan(0.05);
    expect(share).toBeLessThan(0.15);
    // The attacker's lure and value travel in an OTLP tool result of the attack task.
    const otlp = a.bodies.filter((x) => x.format === 'otlp-traces').map((x) => x.body.toString()).join('\n');
    const firstAttack = a.stats.attackTasks[0] as string;
    expect(otlp).toContain(firstAttack);
    expect(generateTraffic({ ...opts, attackRatio: 0 }).stats.attackTasks).toEqual([]);
  });
});

describe('runtrail bench', () => {
  it('stores every event, reports latency to stored and to finding, and detects the injected attacks', async () => {
    const r = await bench(['--events', '6000', '--tasks', '150', '--events-per-task', '12', '--attacks', '0.2', '--mode', 'replay', '--seed', '5', '-q']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const result: unknown = JSON.parse(lines[lines.length - 1] as string);
    expect(result).toMatchObject({
      mode: 'embedded',
      bus: 'replay',
      input: { rejected: 0 },
      scale: { attack_ratio: 0.2 },
    });
    const res = result as {
      events: number;
      stored: { events: number };
      finding_latency: { findings: number; p50_ms: number; p99_ms: number } | null;
      detection: { attack_tasks: number; detected: number; other_tasks_flagged: number; missed_examples: string[] };
    };
    expect(res.stored.events).toBe(res.events);
    expect(res.detection.attack_tasks).toBeGreaterThan(5);
    expect(res.detection.missed_examples).toEqual([]);
    expect(res.detection.detected).toBe(res.detection.attack_tasks);
    expect(res.finding_latency).not.toBeNull();
    expect(res.finding_latency?.findings).toBeGreaterThanOrEqual(res.detection.attack_tasks);
    expect(res.finding_latency?.p99_ms).toBeGreaterThanOrEqual(res.finding_latency?.p50_ms ?? 0);
    // The readable table comes first and names the figures.
    expect(r.stdout).toMatch(/arrival->finding\s+p50 [\d,]+ ms, p99 [\d,]+ ms/);
    expect(r.stdout).toMatch(new RegExp(`attacks\\s+${res.detection.attack_tasks} of ${res.detection.attack_tasks} injected attack tasks flagged`));
  }, 120_000);

  it('rejects an out-of-range --attacks with a message naming the option', async () => {
    const r = await bench(['--attacks', '1.5', '-q']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('--attacks: expected a number from 0 to 1, got "1.5"');
  });
});
