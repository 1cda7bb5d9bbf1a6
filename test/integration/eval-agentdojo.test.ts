import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { evalCommand } from '../../services/cli/eval-command.ts';
import { parseCommandArgs, type Io } from '../../services/cli/command.ts';
import { AGENTDOJO_TRACES, DEFAULT_AGENTDOJO_DIR, TARGETS, type AgentdojoReport } from '../../services/eval/agentdojo.ts';

/**
 * `runtrail eval agentdojo` end to end: the AgentDojo traces through the real pipeline (OTLP parser,
 * correlator, every registered detector, chDB store), scored against the labels exactly as
 * ../shared/datasets/README.md defines, and held to the targets. A fresh clone has no
 * ../shared, so the test says so and does not run there (CI has the datasets).
 */

const DATASET = join(DEFAULT_AGENTDOJO_DIR, AGENTDOJO_TRACES);
const hasDataset = existsSync(DATASET);
if (!hasDataset) console.warn(`AgentDojo dataset not found at ${DATASET}: the detection-quality evaluation does not run here (CI has it)`);

/** Runs the command in-process (the replay uses a temporary data directory it removes afterwards). */
async function evalCli(extra: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const io: Io = { out: (t) => void stdout.push(t), err: (t) => void stderr.push(t), isTty: false };
  const args = parseCommandArgs(evalCommand, ['agentdojo', '--log-level', 'silent', ...extra]);
  const code = await evalCommand.run(args, io);
  return { code, stdout: stdout.join(''), stderr: stderr.join('') };
}

describe.runIf(hasDataset)('runtrail eval agentdojo', () => {
  it('meets the detection targets on the AgentDojo banking and slack traces', async () => {
    const r = await evalCli(['--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim()) as AgentdojoReport;
    const o = report.overall;
    // The dataset as the README describes it: every labelled run replayed, every class present.
    expect(report.replay?.tasks).toBe(4826);
    expect(report.replay?.records_rejected).toBe(0);
    expect(report.missingRuns).toBe(0);
    expect(o.tp + o.fn).toBeGreaterThan(1000);
    expect(o.benignUserNegatives).toBeGreaterThan(300);
    expect(report.bySuite.map((s) => s.name)).toEqual(['banking', 'slack']);
    // The targets.
    expect(o.tpr).toBeGreaterThanOrEqual(TARGETS.tpr);
    expect(o.fpr).toBeLessThanOrEqual(TARGETS.fpr);
    expect(o.fprBenignUser).toBeLessThanOrEqual(TARGETS.fprBenignUser);
    // Each suite on its own (what holds on one suite must hold on the other).
    for (const s of report.bySuite) {
      expect(s.metrics.tpr, s.name).toBeGreaterThanOrEqual(TARGETS.tpr);
      expect(s.metrics.fpr, s.name).toBeLessThanOrEqual(TARGETS.fpr);
      expect(s.metrics.fprBenignUser, s.name).toBeLessThanOrEqual(TARGETS.fprBenignUser);
    }
  }, 300_000);

  it('prints the tables by attack type and by suite, with a held-out suite', async () => {
    const r = await evalCli(['--holdout', 'slack']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/By attack type/);
    expect(r.stdout).toMatch(/^important_instructions\s+\d+\s+\d+\s+\d+\s+\d+/m);
    expect(r.stdout).toMatch(/By suite/);
    expect(r.stdout).toMatch(/Held-out suite slack: TPR/);
    expect(r.stdout).toMatch(/Overall: TPR .*FPR all negatives .*FPR benign\+user_requested/);
  }, 300_000);
});

describe('runtrail eval usage', () => {
  it('rejects an unknown benchmark and a missing dataset clearly', async () => {
    await expect(evalCli(['--dataset', '/nonexistent'])).rejects.toThrow(/dataset file not found/);
    const args = parseCommandArgs(evalCommand, ['nope']);
    await expect(evalCommand.run(args, { out: () => undefined, err: () => undefined, isTty: false })).rejects.toThrow(/unknown benchmark/);
  });
});
