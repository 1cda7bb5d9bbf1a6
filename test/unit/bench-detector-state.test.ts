import { describe, expect, it } from 'vitest';
import { DETECTORS } from '../../detectors/registry.ts';
import { formatDetectorStateTable, measureDetectorState } from '../../services/bench/detector-state.ts';

/**
 * `runtrail bench --detector-state`: the heap per concurrent task of each detector with its limits
 * sized to follow every task. The figures are measurements (not asserted to a value); what must
 * hold is that every detector is measured, that the sized limits really held every task (else the
 * figure understates the cost), and that the detectors did their work on the generated tasks.
 */
describe('detector state measurement', () => {
  const result = measureDetectorState({ tasks: 3_000, eventsPerTask: 5, seed: 3, attackRatio: 0.05 });

  it('measures each registered detector alone and all together, on the tasks asked for', () => {
    expect(result.rows.map((r) => r.detector)).toEqual([...DETECTORS.map((d) => d.meta.id), 'all']);
    // Every generated task that has agent events is followed (a few may not have started yet at the cut).
    expect(result.tasks).toBeGreaterThan(2_900);
    expect(result.tasks).toBeLessThanOrEqual(3_000);
    expect(result.agent_events).toBeGreaterThanOrEqual(result.tasks * 3);
  });

  it('sizes the limits so that nothing is evicted, and the detectors find the injected attacks', () => {
    for (const r of result.rows) expect(r.evicted).toEqual({});
    const byId = new Map(result.rows.map((r) => [r.detector, r]));
    // About 5 % of 3 000 tasks carry an attack; tool-chaining flags them, and so does the whole set.
    expect(byId.get('tool-chaining')?.findings).toBeGreaterThan(100);
    expect(byId.get('all')?.findings).toBeGreaterThanOrEqual(byId.get('tool-chaining')?.findings ?? 0);
    // Following a task costs something for the task-scoped detectors, and all together cost more than one alone.
    expect(byId.get('tool-chaining')?.bytes_per_task).toBeGreaterThan(0);
    expect(byId.get('blast-radius')?.bytes_per_task).toBeGreaterThan(0);
    expect(byId.get('all')?.bytes_per_task).toBeGreaterThan(byId.get('tool-chaining')?.bytes_per_task ?? 0);
  });

  it('prints a row per subject', () => {
    const table = formatDetectorStateTable(result).split('\n');
    expect(table).toHaveLength(2 + result.rows.length);
    expect(table[result.rows.length + 1]).toMatch(/^all\s+[\d,]+\s+[\d,]+\s+nothing$/);
  });
});
