import { describe, expect, it } from 'vitest';
import type { Detector, DetectorFixture } from '../../detectors/detector.ts';
import { createDetectorEngine, parsePolicy } from '../../detectors/policy.ts';
import { DETECTORS } from '../../detectors/registry.ts';
import { severityRank, type Finding } from '../../shared/finding.ts';

/**
 * Every fixture of every registered detector, replayed through ALL detectors (the real engine built
 * from the fixture's policy), in event-time order as the correlator would deliver them. Each
 * fixture's own detector must produce every expected rule at or above the expected severity, and a
 * negative fixture (no expectations) must produce nothing at all from its detector.
 */

interface Case {
  detector: Detector<never>;
  fixture: DetectorFixture;
}

const CASES: Case[] = DETECTORS.flatMap((detector) => detector.fixtures.map((fixture) => ({ detector, fixture })));

function run(fixture: DetectorFixture): Finding[] {
  const engine = createDetectorEngine(parsePolicy(fixture.policy ?? {}), { maxTasks: 1_000, maxEventsPerTask: 2_000 });
  const events = [...fixture.events].sort((a, b) => a.time - b.time);
  const findings = engine.process(events);
  const tasks = [...new Set(events.map((e) => e.task_id).filter((t) => t !== ''))];
  return [...findings, ...engine.close(tasks)];
}

describe('detector fixtures', () => {
  it('registers detectors with unique kebab-case ids', () => {
    expect(DETECTORS.length).toBeGreaterThan(0);
    const ids = DETECTORS.map((d) => d.meta.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/);
  });

  // One check per detector, so a detector still missing fixtures is named on its own.
  it.each(DETECTORS.map((d) => [d.meta.id, d] as const))('%s ships a positive fixture for every rule and a negative fixture', (_id, d) => {
    expect(d.fixtures.some((f) => f.expect.length === 0), 'a negative fixture').toBe(true);
    const covered = new Set(d.fixtures.flatMap((f) => f.expect.map((x) => x.rule)));
    const missing = Object.keys(d.meta.rules).filter((rule) => !covered.has(rule));
    expect(missing, 'rules without a positive fixture').toEqual([]);
  });

  it('replays all fixtures of all detectors through all detectors and meets each expectation', () => {
    expect(CASES.length).toBeGreaterThan(0);
    const failures: string[] = [];
    for (const { detector, fixture } of CASES) {
      const own = run(fixture).filter((f) => f.detector === detector.meta.id);
      const label = `${detector.meta.id} / ${fixture.name}`;
      if (fixture.expect.length === 0 && own.length > 0) {
        failures.push(`${label}: expected no finding, got ${own.map((f) => `${f.rule}(${f.severity}): ${f.title}`).join('; ')}`);
      }
      for (const want of fixture.expect) {
        const hit = own.find((f) => f.rule === want.rule && severityRank(f.severity) >= severityRank(want.minSeverity));
        if (!hit) failures.push(`${label}: expected ${want.rule} >= ${want.minSeverity}, got ${own.map((f) => `${f.rule}(${f.severity})`).join(', ') || 'nothing'}`);
      }
      for (const f of own) {
        // Every finding carries its evidence, and the evidence is events of the fixture.
        if (f.evidence.length === 0) failures.push(`${label}: finding ${f.rule} has no evidence`);
        const ids = new Set(fixture.events.map((e) => e.event_id));
        for (const id of f.evidence) if (!ids.has(id)) failures.push(`${label}: finding ${f.rule} cites unknown event ${id}`);
        if (!(f.rule in detector.meta.rules)) failures.push(`${label}: finding rule ${f.rule} is not declared in meta.rules`);
      }
    }
    expect(failures).toEqual([]);
  });
});
