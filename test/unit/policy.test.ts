import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configResolver, loadPolicy, parsePolicy, PolicyError } from '../../detectors/policy.ts';
import { DETECTORS } from '../../detectors/registry.ts';
import type { Detector } from '../../detectors/detector.ts';
import { main } from '../../services/cli/main.ts';

const blast = DETECTORS.find((d) => d.meta.id === 'blast-radius') as unknown as Detector<{ task: { notify: number; approval: number; contain: number } }>;

describe('policy as code', () => {
  it('accepts an empty file and fills every detector section with its defaults', () => {
    const p = parsePolicy(null);
    expect(Object.keys(p.detectors).sort()).toEqual(DETECTORS.map((d) => d.meta.id).sort());
    expect(p.catalog.infer).toBe(true);
  });

  it('names the bad field of an invalid policy', () => {
    expect(() => parsePolicy({ detectors: { 'blast-radius': { task: { notify: 'lots' } } } })).toThrow(/detectors.blast-radius.task.notify/);
    expect(() => parsePolicy({ detectors: { 'no-such-detector': {} } })).toThrow(PolicyError);
    expect(() => parsePolicy({ agents: { 'x-*': { detectors: { 'no-such-detector': {} } } } })).toThrow(/unknown detector/);
    expect(() => parsePolicy({ agents: { 'x-*': { detectors: { 'blast-radius': { task: { notify: -1 } } } } } })).toThrow(/agents.x-\*.detectors.blast-radius/);
  });

  it('applies per-agent overrides by glob on the agent id, over the base section', () => {
    const p = parsePolicy({
      detectors: { 'blast-radius': { task: { notify: 60, approval: 150, contain: 300 } } },
      agents: { 'etl-*': { detectors: { 'blast-radius': { task: { notify: 400, approval: 800, contain: 1600 } } } } },
    });
    const resolve = configResolver(p, blast);
    expect(resolve('billing-1').task.notify).toBe(60);
    expect(resolve('etl-nightly').task.notify).toBe(400);
  });

  it('is validated and shown by the CLI', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'runtrail-policy-'));
    try {
      const good = join(dir, 'good.yaml');
      writeFileSync(good, 'detectors:\n  blast-radius:\n    task: { notify: 70, approval: 140, contain: 280 }\n');
      const bad = join(dir, 'bad.yaml');
      writeFileSync(bad, 'catalog:\n  tools:\n    - { match: "pay_*", capabilities: [teleport] }\n');
      const out: string[] = [];
      const err: string[] = [];
      const io = { out: (t: string) => void out.push(t), err: (t: string) => void err.push(t), isTty: false };
      expect(await main(['policy', 'validate', good], io)).toBe(0);
      expect(await main(['policy', 'validate', bad], io)).toBe(1);
      expect(err.join('')).toMatch(/catalog.tools.0.capabilities.0/);
      expect(await main(['policy', 'show', good, '--json'], io)).toBe(0);
      const shown = JSON.parse(out[out.length - 1] as string) as { detectors: Record<string, { task: { notify: number } }> };
      expect(shown.detectors['blast-radius']?.task.notify).toBe(70);
      expect(loadPolicy(good).detectors).toHaveProperty('tool-chaining');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
