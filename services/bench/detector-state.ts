import { ToolCatalog } from '../../detectors/catalog/tool-catalog.ts';
import type { Detector } from '../../detectors/detector.ts';
import { DetectorEngine } from '../../detectors/engine.ts';
import { configResolver, parsePolicy, type Policy } from '../../detectors/policy.ts';
import { DETECTORS } from '../../detectors/registry.ts';
import type { TimelineEvent } from '../../shared/event.ts';
import { ADAPTERS } from '../collector/adapters/index.ts';
import { fullGc } from './bench.ts';
import { streamTraffic } from './generator.ts';

/**
 * `runtrail bench --detector-state`: the heap each detector holds per concurrent task when its
 * limits are sized to follow every task (no eviction), which is what deciding those limits for a
 * fleet needs (README "Bounded memory"). The full benchmark cannot tell detectors apart, and its
 * idle heap also holds the correlator, storage caches and the bus.
 *
 * Agent tasks come from the bench's generator (same shapes, seed and attack share), their OTLP
 * bodies go through the real adapter, and each task's agent events (task start and end, model
 * calls, tool calls with arguments and results) are fed in order to an engine holding one detector
 * at a time, then all of them. Resource and credential events are left out: they reach a task
 * only through the correlator's joins, and they key the identity- and credential-scoped state,
 * which grows with credentials rather than tasks. The figures are therefore the task-scoped share.
 */

/** Options of {@link measureDetectorState}. */
export interface DetectorStateOptions {
  /** Concurrent agent tasks to generate and follow. */
  tasks: number;
  /** Events per task (the generator's, at least 5; the task's agent events are a part of them). */
  eventsPerTask: number;
  seed: number;
  /** Share of tasks carrying an injected attack (0..1). */
  attackRatio: number;
  /** Called with one-line notes on progress. */
  onPhase?: (message: string) => void;
}

/** One row of the result: a detector (or `all`) and what it holds. */
export interface DetectorStateRow {
  detector: string;
  /** Heap after the run minus before, over the tasks, after full collections (bytes). */
  bytes_per_task: number;
  findings: number;
  /** State the sized limits still evicted (should be empty; a non-empty map understates the figure). */
  evicted: Record<string, number>;
}

/** Result of {@link measureDetectorState}; printed as a table and a final JSON line. */
export interface DetectorStateResult {
  tasks: number;
  agent_events: number;
  events_per_task: number;
  seed: number;
  rows: DetectorStateRow[];
}

/** The policy that sizes every per-task and per-credential limit for `n` tasks. */
export function sizedPolicy(n: number): Record<string, unknown> {
  const room = Math.ceil(n * 1.1);
  return {
    detectors: {
      'tool-chaining': { limits: { max_tasks: room } },
      'blast-radius': { max_scopes: room },
      'credential-lifecycle': { max_tasks: room, max_credentials: room },
      'lateral-movement': { max_credentials: room },
    },
  };
}

/** Generates the tasks' agent events, in arrival order, as the correlator hands them on. */
function agentEvents(opts: DetectorStateOptions): { events: TimelineEvent[]; tasks: number } {
  const events: TimelineEvent[] = [];
  const tasks = new Set<string>();
  streamTraffic(
    {
      seed: opts.seed,
      openTasks: opts.tasks,
      eventsPerTask: opts.eventsPerTask,
      totalEvents: opts.tasks * opts.eventsPerTask,
      startTime: Date.parse('2026-06-01T00:00:00Z'),
      attackRatio: opts.attackRatio,
      noiseRatio: 0,
    },
    (body) => {
      if (body.format !== 'otlp-traces') return;
      const parsed = ADAPTERS[body.format].parse(body.body, body.contentType);
      for (const e of parsed.events) {
        if (!e.task_id) continue;
        tasks.add(e.task_id);
        // The timeline form of an event its own task id attributes (the correlator's `direct`).
        events.push({ ...e, task_id: e.task_id, attribution: 'direct', join_key: e.task_id, unattributed_reason: '', ingested_at: e.ingested_at ?? 0, late: false });
      }
    },
  );
  return { events, tasks: tasks.size };
}

/** One subject measured: what its engine holds after following every task. */
interface Measured {
  row: DetectorStateRow;
  tasks: number;
  agentEvents: number;
}

/**
 * Measures one subject. A function of its own so that nothing of the previous subject (its engine,
 * its events) is still referenced from a frame when the heap is measured before this one: a loop
 * body's locals stay in the interpreter's registers until overwritten, and the first runs of this
 * tool showed negative figures for exactly that reason.
 */
function measureOne(id: string, detectors: ReadonlyArray<Detector<unknown>>, policy: Policy, opts: DetectorStateOptions): Measured {
  // Fresh events and catalog for each subject: the catalog caches verdicts per tool object, which
  // would otherwise be counted by the first detector measured and be free for the others.
  const catalog = new ToolCatalog(policy.catalog);
  fullGc();
  const before = process.memoryUsage().heapUsed;
  // Generated after the baseline and released as they are processed (below), so an event a
  // detector keeps whole counts as its state, as it would in the pipeline, where nothing else
  // holds an event once it is evaluated.
  const { events, tasks } = agentEvents(opts);
  const total = events.length;
  // The engine's own recent-event windows and its window of event ids seen (redelivery dedup)
  // are kept minimal: they are the engine's fixed budget (engine.maxEvents, engine.dedupWindow),
  // not per-task detector state, and the ids alone were ~1 KB per task at 5 events a task.
  const engine = new DetectorEngine(
    detectors.map((d) => d.create(configResolver(policy, d), { catalog })),
    { maxTasks: 1_000, maxEventsPerTask: 1, dedupWindow: 1 },
    detectors.map((d) => d.meta.id),
  );
  let findings = 0;
  while (events.length > 0) findings += engine.process(events.splice(0, 1_000)).length;
  fullGc();
  const after = process.memoryUsage().heapUsed;
  const evicted = engine.stateEvictionsByPolicyPath();
  return { row: { detector: id, bytes_per_task: Math.round((after - before) / Math.max(1, tasks)), findings, evicted }, tasks, agentEvents: total };
}

/** Runs the measurement: each detector alone, then all together. Synchronous; seconds per 10 000 tasks. */
export function measureDetectorState(opts: DetectorStateOptions): DetectorStateResult {
  const policy = parsePolicy(sizedPolicy(opts.tasks));
  const subjects: Array<{ id: string; detectors: ReadonlyArray<Detector<unknown>> }> = [
    ...DETECTORS.map((d) => ({ id: d.meta.id, detectors: [d as Detector<unknown>] })),
    { id: 'all', detectors: DETECTORS as ReadonlyArray<Detector<unknown>> },
  ];
  const measured: Measured[] = [];
  for (const s of subjects) {
    opts.onPhase?.(`generating ${opts.tasks.toLocaleString('en-US')} tasks and measuring ${s.id}`);
    measured.push(measureOne(s.id, s.detectors, policy, opts));
  }
  const last = measured[measured.length - 1];
  return { tasks: last?.tasks ?? 0, agent_events: last?.agentEvents ?? 0, events_per_task: opts.eventsPerTask, seed: opts.seed, rows: measured.map((m) => m.row) };
}

/** The readable table of a result. */
export function formatDetectorStateTable(r: DetectorStateResult): string {
  const lines = [
    `detector state per concurrent task: ${r.tasks.toLocaleString('en-US')} tasks, ${r.agent_events.toLocaleString('en-US')} agent events, ` +
      `${r.events_per_task} events per task, seed ${r.seed}, limits sized to follow every task`,
    `${'detector'.padEnd(22)}${'bytes/task'.padStart(12)}${'findings'.padStart(10)}  evicted`,
  ];
  for (const row of r.rows) {
    const ev = Object.entries(row.evicted);
    lines.push(
      `${row.detector.padEnd(22)}${row.bytes_per_task.toLocaleString('en-US').padStart(12)}${row.findings.toLocaleString('en-US').padStart(10)}  ` +
        `${ev.length === 0 ? 'nothing' : ev.map(([k, v]) => `${k} ${v}`).join(', ')}`,
    );
  }
  return lines.join('\n');
}
