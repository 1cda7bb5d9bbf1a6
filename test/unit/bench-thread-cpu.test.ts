import { describe, expect, it } from 'vitest';
import { sampleThreads, threadCpuBetween } from '../../services/bench/thread-cpu.ts';

/** The bench's CPU-by-thread figures read Linux's /proc; these machines (and CI) are Linux. */
describe('CPU by thread', () => {
  it('finds the main thread and attributes CPU it burns to it', () => {
    const before = sampleThreads();
    expect(before).toBeDefined();
    expect(before?.get(process.pid)?.group).toBe('main_s');
    // Burn 300 ms of CPU on this thread (measured as CPU, not wall time, so a busy machine cannot fail it).
    const start = process.cpuUsage().user;
    let x = 0;
    while (process.cpuUsage().user - start < 300_000) x += Math.sqrt(x + 1);
    const cpu = threadCpuBetween(before, sampleThreads());
    expect(x).toBeGreaterThan(0);
    expect(cpu?.main_s).toBeGreaterThanOrEqual(0.2);
    expect(typeof cpu?.engine_s).toBe('number');
  });

  it('is undefined when either sample is missing (no /proc)', () => {
    expect(threadCpuBetween(undefined, sampleThreads())).toBeUndefined();
  });
});
