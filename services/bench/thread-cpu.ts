import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU time of this process by thread group, from Linux's `/proc/self/task/<tid>/stat`: the main
 * thread, the other Node threads (parse workers, V8's GC helpers, libuv's pool, all named `node`)
 * and the embedded ClickHouse engine's threads (chDB names its own: `ThreadPool`, `MergeMutate`,
 * ...). A CPU profile of the main thread cannot show this: it counts time the thread was runnable
 * but waiting for a core as busy, so on a machine whose cores are all busy it hides where the CPU
 * actually went.
 */

/** CPU seconds (user + system) per thread group. */
export interface ThreadCpu {
  main_s: number;
  node_threads_s: number;
  engine_s: number;
}

/** Clock ticks per second of `/proc` times; 100 on every Linux this runs on (`getconf CLK_TCK`). */
const TICKS_PER_S = 100;

/** Per thread: group and ticks so far. Undefined where `/proc` is not available (not Linux). */
export type ThreadSample = Map<number, { group: keyof ThreadCpu; ticks: number }> | undefined;

/** Samples every thread of this process. */
export function sampleThreads(): ThreadSample {
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return undefined;
  }
  const out = new Map<number, { group: keyof ThreadCpu; ticks: number }>();
  for (const t of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      // The name is in parentheses and may contain spaces: the fields after it are positional.
      const close = stat.lastIndexOf(')');
      const name = stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' ');
      // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
      const ticks = Number(fields[11]) + Number(fields[12]);
      const tid = Number(t);
      const group: keyof ThreadCpu = tid === process.pid ? 'main_s' : name === 'node' ? 'node_threads_s' : 'engine_s';
      if (Number.isFinite(ticks)) out.set(tid, { group, ticks });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

/**
 * CPU per group over spans between samples, summed (a run timed in parts). Threads that ended
 * within a span are missing from its end sample and count nothing (chDB's and Node's threads live
 * as long as the process; a parse worker too). Undefined when a sample is missing.
 */
export function threadCpuOver(spans: ReadonlyArray<readonly [ThreadSample, ThreadSample]>): ThreadCpu | undefined {
  const cpu: ThreadCpu = { main_s: 0, node_threads_s: 0, engine_s: 0 };
  for (const [before, after] of spans) {
    if (!before || !after) return undefined;
    for (const [tid, a] of after) cpu[a.group] += (a.ticks - (before.get(tid)?.ticks ?? 0)) / TICKS_PER_S;
  }
  return { main_s: round(cpu.main_s), node_threads_s: round(cpu.node_threads_s), engine_s: round(cpu.engine_s) };
}

/** CPU per group between two samples. */
export function threadCpuBetween(before: ThreadSample, after: ThreadSample): ThreadCpu | undefined {
  return threadCpuOver([[before, after]]);
}

function round(s: number): number {
  return Math.round(s * 10) / 10;
}
