import { sleep } from '../../shared/sleep.ts';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { z } from 'zod';
import { nodeOptionsFlags, type Config } from '../../shared/config.ts';
import { sampleThreads, threadCpuOver, type ThreadSample } from './thread-cpu.ts';
import { BackpressureError, RuntrailError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { TABLE } from '../../shared/names.ts';
import { ADAPTERS } from '../collector/adapters/index.ts';
import { createPipeline, type Pipeline } from '../pipeline.ts';
import type { Store } from '../storage/store.ts';
import { generateTraffic, type GeneratedBody, type TrafficOptions, type TrafficStats } from './generator.ts';
import { memorySource, spoolSource, writeSpool, type BodySource } from './spool.ts';

/**
 * `runtrail bench`: pushes generated, realistic mixed traffic (see generator.ts) through the
 * embedded pipeline and measures it end to end, from the collector's parser to rows stored in
 * ClickHouse.
 *
 * What is timed: for every body, the adapter's parse and `Ingestor.publish` (the work the HTTP
 * collector does per request, minus HTTP), with `concurrency` bodies in flight, then
 * `drain(true)`, which returns once every event is correlated, stored and evaluated. Generating
 * the bodies is not timed. Arrival-to-stored latency comes from the stored rows themselves
 * (`stored_at` is set by ClickHouse at insert, `ingested_at` by the ingestor at publish), so it
 * is exact per event rather than bucketed.
 *
 * Memory: RSS is sampled every 100 ms; in addition, once everything is consumed but before the
 * final drain closes the open tasks, the process is garbage-collected and measured, which gives
 * the memory held per open task. That pause is excluded from the elapsed time.
 */

/** What to run. */
export interface BenchOptions {
  /** Base configuration; `dataDir` is replaced by the bench's own directory. */
  cfg: Readonly<Config>;
  log: Logger;
  /** Canonical events to generate (tasks and noise). */
  events: number;
  /** Agent tasks in flight at once in the simulated fleet. */
  tasks: number;
  eventsPerTask: number;
  /** Bodies parsed and published concurrently. */
  concurrency: number;
  /**
   * Offered load, events/s: bodies are sent no faster than this on average (a fleet of shippers
   * at a steady rate), for latency at a given load. Unset = as fast as the pipeline takes them.
   */
  rate?: number;
  seed: number;
  /** Share of events that are unattributed noise. Default 0.05. */
  noiseRatio?: number;
  /** Share of agent tasks carrying an injected attack whose detection is checked. Default 0.01. */
  attackRatio?: number;
  /**
   * `live` (default): durable, fsync'd write-ahead log and wall-clock grace, as `runtrail start`
   * runs. `replay`: no log, event time only, as `runtrail replay` runs.
   */
  mode: 'live' | 'replay';
  /** Data directory to use (must be empty or absent); default a fresh temporary one. */
  dataDir?: string;
  /** Keep the data directory afterwards. A directory given in `dataDir` is always kept. */
  keep: boolean;
  /** Called about once a second while the timed part runs. */
  onProgress?: (p: BenchProgress) => void;
  /** Called with one-line notes on what the bench is doing (generation, measurement). */
  onPhase?: (message: string) => void;
  /**
   * Write a V8 CPU profile of the timed part only (not generation) to this file. The memory
   * measurement at idle then skips its forced GC, so the profile's GC share stays honest.
   */
  cpuProfile?: string;
  /**
   * Generate the bodies into a file in the data directory instead of memory, and read them back
   * during the timed part: for loads whose bodies do not fit in memory (1M open tasks is ~25 GB).
   * Costs a sequential file read per body in the timed part; keeps the bodies out of the memory
   * figures.
   */
  spool?: boolean;
}

/** A progress sample. */
export interface BenchProgress {
  elapsedS: number;
  published: number;
  stored: number;
  /** Events/s over the last interval, by publish and by storage. */
  publishRate: number;
  storeRate: number;
  openTasks: number;
  pending: number;
  /** Messages published to the ingest topics but not yet consumed by the correlator. */
  ingestLag: number;
  /** Messages the in-process bus holds in memory, all topics (consumed but not committed included). */
  busRetained: number;
  rssMb: number;
}

/** Everything measured. All `*_mb` are MiB. */
export interface BenchResult {
  events: number;
  elapsed_s: number;
  events_per_s: number;
  /** Arrival (publish) to stored, from the stored rows, ms. */
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  /**
   * p99 over attributed events only: unattributed events wait out the correlator's grace period
   * (`correlator.graceMs`) by design, so with 5% noise they alone set the overall p99.
   */
  p99_attributed_ms: number;
  /**
   * Arrival to finding, ms: for each finding, `emitted_at` minus the arrival (`ingested_at`) of
   * the last of its evidence events to arrive, i.e. of the event that completed the pattern.
   * Null when the run produced no finding.
   */
  finding_latency: {
    findings: number;
    p50_ms: number;
    p99_ms: number;
    max_ms: number;
    /**
     * p99 over findings whose completing event carried its task id (attribution `direct`), so
     * no correlation join could hold it back: what the pipeline itself adds. The others include
     * the wait for a join partner (a request id's span, a session's issuance) that arrives later.
     */
    p99_direct_ms: number;
    /**
     * p50/p99 from the moment the finding could first exist: the latest, over its evidence events,
     * of each event's arrival and of the arrival of the join partner that tied it to its task (the
     * issuing event of a credential, the first span carrying a request id or trace id with its task
     * id). Events joined another way count from their own arrival (an upper bound). This is the
     * delay the pipeline adds, join waits included, without the time the sources took to send the
     * partner.
     */
    p50_ready_ms: number;
    p99_ready_ms: number;
  } | null;
  /**
   * Alert deliveries (embedded mode's default JSONL channel, or the configured ones): how many
   * were delivered or dead-lettered, and how long after the pipeline had stored and evaluated
   * everything the last due delivery finished. Alerting runs beside the pipeline, so it is not in
   * `elapsed_s`. Null when alerting is off.
   */
  alerts: { delivered: number; dead: number; done_s_after_pipeline: number } | null;
  /**
   * CPU seconds of the timed part by thread group (Linux `/proc`; null elsewhere): the main thread,
   * the other Node threads (parse workers, GC helpers, libuv), the embedded engine's threads; their
   * total, the cores that kept busy on average, and microseconds of CPU per event.
   */
  cpu: { main_s: number; node_threads_s: number; engine_s: number; total_s: number; cores_busy: number; us_per_event: number } | null;
  /** Peak resident set size over the run (sampled every 100 ms). */
  rss_mb: number;
  peak_open_tasks: number;
  mode: 'embedded';
  bus: 'live' | 'replay';
  /** Node version and the V8/Node flags of this process (command line and NODE_OPTIONS): they move the figures. */
  node: { version: string; flags: string[] };
  scale: {
    tasks: number;
    events_per_task: number;
    concurrency: number;
    /** Offered load, events/s; null = unpaced. */
    rate: number | null;
    seed: number;
    noise_ratio: number;
    attack_ratio: number;
    /** Bodies were read back from a spool file during the run instead of held in memory. */
    spool: boolean;
  };
  /**
   * Injected attacks and the tasks flagged by a finding of severity high or critical: how many
   * attack tasks were caught, and how many other tasks were flagged (false alarms, or the
   * fleet's real anomalies such as a long-lived key reused across tasks).
   */
  detection: {
    attack_tasks: number;
    detected: number;
    /** Up to five attack task ids without a high or critical finding. */
    missed_examples: string[];
    other_tasks_flagged: number;
    other_tasks: number;
  };
  /** Phases of the timed part, seconds. */
  timing: {
    /**
     * Time spent inside adapters' parse: on the pipeline's thread, or, with parse workers, summed
     * over the workers (then it runs beside the pipeline, not on its thread).
     */
    parse_s: number;
    /** Collector parse worker threads (0: parsing on the pipeline's thread). */
    parse_workers: number;
    /** First parse to last publish. */
    publish_done_s: number;
    generate_s: number;
  };
  input: {
    bodies: number;
    bytes: number;
    records: number;
    rejected: number;
    tasks_generated: number;
    event_time_span_s: number;
    by_kind: { agent: number; cloudtrail: number; vault: number; noise: number };
  };
  stored: {
    /** Distinct event ids in the events table after the run. */
    events: number;
    rows: number;
  };
  pipeline: {
    peak_pending: number;
    peak_ingest_lag: number;
    /** Most messages the in-process bus held in memory at once, all topics, sampled each second. */
    peak_bus_retained: number;
    backpressure_retries: number;
    resolved: Record<string, number>;
    pending_evicted: number;
    tasks_evicted: number;
    late_events: number;
    /** Detector engine: recent-event windows it held at idle, and what it dropped to stay in budget. */
    engine: { tasks_at_idle: number; events_at_idle: number; tasks_evicted: number; events_evicted: number; events_truncated: number };
    /**
     * Evicted from the detectors' own bounded state, by `detectors.<id>.<limit>` (non-zero only).
     * Non-empty means the policy's limits are smaller than the load, and findings may be missed.
     */
    detector_state_evicted: Record<string, number>;
  };
  memory: {
    /** After the pipeline started (before generation), after a full GC. */
    baseline_rss_mb: number;
    baseline_heap_mb: number;
    /** Generated bodies held before the timed part. */
    bodies_mb: number;
    /** Everything consumed, tasks still open, after a full GC. */
    idle_rss_mb: number;
    idle_heap_mb: number;
    idle_open_tasks: number;
    /** Messages the bus still held in memory at idle, by topic (topics holding none omitted). */
    idle_bus_retained: Record<string, number>;
    /** (idle - baseline) / idle open tasks; null when no task was open. */
    rss_bytes_per_open_task: number | null;
    heap_bytes_per_open_task: number | null;
    /**
     * (idle heap - final heap) / idle open tasks: the heap the open tasks held, i.e. what closing
     * them released. The figures above also count state that outlives tasks (bindings, join keys,
     * detectors' per-credential and per-identity state, caches), which does not grow with open tasks.
     */
    heap_bytes_per_open_task_released: number | null;
    /** After the final drain closed every task, after a full GC. */
    final_rss_mb: number;
    final_heap_mb: number;
    peak_heap_mb: number;
  };
  data_dir: string | null;
}

const MB = 1024 * 1024;

const LatencyRowSchema = z.object({
  n: z.coerce.number(),
  uniq_events: z.coerce.number(),
  p50: z.coerce.number(),
  p99: z.coerce.number(),
  max: z.coerce.number(),
  p99_attributed: z.coerce.number(),
});

const AlertCountRowSchema = z.object({ delivered: z.coerce.number(), dead: z.coerce.number() });

const FindingLatencyRowSchema = z.object({
  n: z.coerce.number(),
  p50: z.coerce.number(),
  p99: z.coerce.number(),
  max: z.coerce.number(),
  p99_direct: z.coerce.number(),
  p50_ready: z.coerce.number(),
  p99_ready: z.coerce.number(),
});

const BUS_BACKLOG_LINE = /^runtrail_bus_backlog_messages\{topic="([^"]*)"\} (\d+)$/gm;

/**
 * Messages the in-process bus holds in memory, by topic. Only its metrics gauge exposes this (the
 * Bus interface has no such method), so the registry is rendered and the gauge's lines read.
 */
function busRetainedByTopic(pipeline: Pipeline): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of pipeline.metrics.render().matchAll(BUS_BACKLOG_LINE)) {
    const n = Number(m[2]);
    if (n > 0) out[m[1] as string] = n;
  }
  return out;
}

function busRetained(pipeline: Pipeline): number {
  return Object.values(busRetainedByTopic(pipeline)).reduce((a, b) => a + b, 0);
}

/**
 * A full garbage collection, for memory figures that count live data rather than garbage waiting
 * for the next cycle. `--expose-gc` cannot be passed through `npm run bench`, so the flag is set
 * at run time; V8 then exposes `gc` in newly created contexts.
 */
export function fullGc(): void {
  setFlagsFromString('--expose-gc');
  const gc: unknown = runInNewContext('gc');
  if (typeof gc === 'function') (gc as () => void)();
}

/** A CPU profile of part of the run, through the inspector (so generation can be left out). */
class CpuProfiler {
  private readonly session = new Session();

  private post(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    return new Promise((resolve, reject) => this.session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
  }

  async start(): Promise<void> {
    this.session.connect();
    await this.post('Profiler.enable');
    await this.post('Profiler.start');
  }

  /** Stops and writes the profile as `.cpuprofile` JSON (what `node --cpu-prof` writes). */
  async stop(file: string): Promise<void> {
    const res = await this.post('Profiler.stop');
    const profile = res !== null && typeof res === 'object' && 'profile' in res ? res.profile : undefined;
    writeFileSync(file, JSON.stringify(profile));
    this.session.disconnect();
  }

  /** Abandons the profile (the run failed). */
  dispose(): void {
    this.session.disconnect();
  }
}

/** Runs the benchmark. Throws when an input is rejected or events go missing. */
export async function runBench(opts: BenchOptions): Promise<BenchResult> {
  const phase = opts.onPhase ?? (() => undefined);
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'runtrail-bench-'));
  if (!ownDir) {
    if (existsSync(dataDir) && readdirSync(dataDir).length > 0) {
      throw new BenchSetupError(`data directory ${dataDir} is not empty; the benchmark needs an empty store (omit --data for a temporary one)`);
    }
    mkdirSync(dataDir, { recursive: true });
  }
  const cfg: Readonly<Config> = { ...opts.cfg, dataDir };
  const noiseRatio = opts.noiseRatio ?? 0.05;
  const removeDir = ownDir && !opts.keep;
  // A temporary store holds gigabytes; Ctrl-C must not leave it behind. The signal is re-raised
  // once the directory is gone, so the process still ends the way the user asked.
  const onSignal = (signal: NodeJS.Signals): void => {
    rmSync(dataDir, { recursive: true, force: true });
    process.kill(process.pid, signal);
  };
  if (removeDir) {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  let pipeline: Pipeline | undefined;
  try {
    pipeline = await createPipeline({ cfg, log: opts.log, mode: opts.mode });
    fullGc();
    const base = process.memoryUsage();

    phase(`generating ${opts.events.toLocaleString('en-US')} events (${opts.tasks.toLocaleString('en-US')} tasks open at once, seed ${opts.seed})`);
    const genStart = performance.now();
    // Event times start an hour ago: inside the store's retention window, and never in the future.
    const trafficOpts: TrafficOptions = {
      seed: opts.seed,
      openTasks: opts.tasks,
      eventsPerTask: opts.eventsPerTask,
      totalEvents: opts.events,
      noiseRatio,
      attackRatio: opts.attackRatio ?? 0.01,
      startTime: Math.floor(Date.now() / 1000) * 1000 - 3_600_000,
    };
    let source: BodySource;
    let stats: TrafficStats;
    if (opts.spool) {
      const spoolFile = join(dataDir, 'bench-bodies.spool');
      stats = writeSpool(spoolFile, trafficOpts);
      // The generator's tasks and batches are garbage now; the baseline must not count them.
      fullGc();
      source = await spoolSource(spoolFile, stats.bodies);
    } else {
      const traffic = generateTraffic(trafficOpts);
      stats = traffic.stats;
      source = memorySource(traffic.bodies);
    }
    const generateS = (performance.now() - genStart) / 1000;
    phase(
      `generated ${stats.bodies.toLocaleString('en-US')} bodies, ${(stats.bytes / MB).toFixed(0)} MiB${opts.spool ? ' (spooled to disk)' : ''}, ` +
        `${stats.events.toLocaleString('en-US')} events in ${generateS.toFixed(1)} s; running the pipeline (${opts.mode})`,
    );
    let result: Omit<BenchResult, 'data_dir'>;
    try {
      result = await measure(pipeline, source, stats, opts, base, generateS, noiseRatio);
    } finally {
      await source.close();
    }
    await pipeline.shutdown();
    pipeline = undefined;
    return { ...result, data_dir: removeDir ? null : dataDir };
  } finally {
    if (pipeline) await pipeline.shutdown().catch(() => undefined);
    if (removeDir) {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
}

/** The bench cannot start as asked (e.g. a data directory that is not empty). */
export class BenchSetupError extends RuntrailError {
  constructor(message: string) {
    super('bench_setup', message);
  }
}

async function measure(
  pipeline: Pipeline,
  bodies: BodySource,
  stats: TrafficStats,
  opts: BenchOptions,
  base: NodeJS.MemoryUsage,
  generateS: number,
  noiseRatio: number,
): Promise<Omit<BenchResult, 'data_dir'>> {
  const correlator = pipeline.correlator.correlator;
  const storedCounter = pipeline.metrics.counter('runtrail_storage_rows_written_total', 'Rows stored, by table.');
  const storedEvents = (): number => storedCounter.get({ table: TABLE.events });

  let published = 0;
  let offered = 0;
  let parseMs = 0;
  let rejected = 0;
  let backpressureRetries = 0;
  const peaks = { rss: process.memoryUsage.rss(), heap: 0, openTasks: 0, pending: 0, ingestLag: 0, busRetained: 0 };
  let sampling = true;

  // Sampling runs on timers, so it sees the process between bodies (a parse is tens of ms at most).
  const sampler = setInterval(() => {
    const rss = process.memoryUsage.rss();
    if (rss > peaks.rss) peaks.rss = rss;
    if (correlator.openTaskCount > peaks.openTasks) peaks.openTasks = correlator.openTaskCount;
    if (correlator.pendingCount > peaks.pending) peaks.pending = correlator.pendingCount;
    void pipeline.correlator.lag().then((lag) => {
      if (lag > peaks.ingestLag) peaks.ingestLag = lag;
    });
  }, 100);
  const profiler = opts.cpuProfile === undefined ? undefined : new CpuProfiler();
  await profiler?.start();
  const t0 = performance.now();
  // CPU by thread over the timed part (the memory measurement at idle left out, like its time).
  const cpuAtStart = sampleThreads();
  let cpuAtIdle: ThreadSample;
  let cpuAtFinal: ThreadSample;
  let last = { t: t0, published: 0, stored: 0 };
  const progress = setInterval(() => {
    const heap = process.memoryUsage().heapUsed;
    if (heap > peaks.heap) peaks.heap = heap;
    const retained = busRetained(pipeline);
    if (retained > peaks.busRetained) peaks.busRetained = retained;
    if (!sampling || !opts.onProgress) return;
    const now = performance.now();
    const stored = storedEvents();
    const dt = Math.max(1e-3, (now - last.t) / 1000);
    const sample = {
      elapsedS: (now - t0) / 1000,
      published,
      stored,
      publishRate: (published - last.published) / dt,
      storeRate: (stored - last.stored) / dt,
      openTasks: correlator.openTaskCount,
      pending: correlator.pendingCount,
      busRetained: retained,
      rssMb: process.memoryUsage.rss() / MB,
    };
    last = { t: now, published, stored };
    void pipeline.correlator.lag().then((ingestLag) => opts.onProgress?.({ ...sample, ingestLag }));
  }, 1000);

  let idleAt = 0;
  let finalStart = 0;
  let publishDone = 0;
  let idle = { rss: 0, heap: 0, openTasks: 0, bus: {} as Record<string, number>, engineTasks: 0, engineEvents: 0 };
  try {
    let next = 0;
    let failed = false;
    const worker = async (): Promise<void> => {
      for (;;) {
        if (failed) return;
        const i = next++;
        // The source drops its reference: a shipper's body is gone once the collector has it.
        const b: GeneratedBody | undefined = await bodies.next();
        if (b === undefined) return;
        if (opts.rate !== undefined) {
          // Paced: this body is due once the events before it have had their time at the offered rate.
          const dueAt = t0 + (offered / opts.rate) * 1000;
          offered += b.events;
          const wait = dueAt - performance.now();
          if (wait > 1) await sleep(wait);
        }
        const p0 = performance.now();
        // The collector's own path: conversion on its parse workers when it has them.
        const parsed = await pipeline.ingestor.prepare(ADAPTERS[b.format], b.body, b.contentType);
        if (pipeline.ingestor.parseWorkers === 0) parseMs += performance.now() - p0;
        rejected += parsed.rejectedCount;
        if (parsed.accepted !== b.events || parsed.rejectedCount > 0) {
          const first = parsed.rejected[0];
          throw new Error(
            `generated ${b.format} body ${i} produced ${parsed.accepted} events, expected ${b.events}` +
              (first ? ` (record ${first.index}: ${first.field ? `field \`${first.field}\`: ` : ''}${first.reason})` : ''),
          );
        }
        for (;;) {
          try {
            await pipeline.ingestor.publishPrepared(parsed);
            break;
          } catch (err) {
            // The collector answers 503 + Retry-After here; a shipper re-sends. Same wait, shorter.
            if (!(err instanceof BackpressureError)) throw err;
            backpressureRetries++;
            await sleep(20);
          }
        }
        published += parsed.accepted;
        // Let timers and storage callbacks run between bodies, as they do between HTTP requests.
        await new Promise<void>((r) => setImmediate(r));
      }
    };
    // One failing worker stops the others, so the error surfaces without publishing the rest.
    const guarded = (): Promise<void> =>
      worker().catch((err: unknown) => {
        failed = true;
        throw err;
      });
    await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, guarded));
    publishDone = performance.now();
    // Alert delivery runs beside the pipeline and is timed on its own, below.
    await pipeline.drain(false, { alerts: false });
    idleAt = performance.now();
    cpuAtIdle = sampleThreads();

    // Everything is consumed and stored; tasks not yet past their linger are still open. Measure
    // what they hold. The pipeline has no work now, so pausing here does not change the result.
    sampling = false;
    opts.onPhase?.(`all events consumed; measuring memory with ${correlator.openTaskCount.toLocaleString('en-US')} tasks open`);
    if (!profiler) fullGc();
    const m = process.memoryUsage();
    idle = {
      rss: m.rss,
      heap: m.heapUsed,
      openTasks: correlator.openTaskCount,
      bus: busRetainedByTopic(pipeline),
      engineTasks: pipeline.engine.taskCount,
      engineEvents: pipeline.engine.eventCount,
    };
    if (m.rss > peaks.rss) peaks.rss = m.rss;
    sampling = true;

    finalStart = performance.now();
    cpuAtFinal = sampleThreads();
    await pipeline.drain(true, { alerts: false });
  } catch (err) {
    profiler?.dispose();
    throw err;
  } finally {
    clearInterval(sampler);
    clearInterval(progress);
  }
  const end = performance.now();
  const cpuAtEnd = sampleThreads();
  if (profiler && opts.cpuProfile !== undefined) {
    await profiler.stop(opts.cpuProfile);
    opts.onPhase?.(`CPU profile of the timed part written to ${opts.cpuProfile}`);
  }
  const elapsedS = (idleAt - t0 + (end - finalStart)) / 1000;
  const spent = threadCpuOver([
    [cpuAtStart, cpuAtIdle],
    [cpuAtFinal, cpuAtEnd],
  ]);
  let cpu: BenchResult['cpu'] = null;
  if (spent) {
    const total = spent.main_s + spent.node_threads_s + spent.engine_s;
    cpu = {
      ...spent,
      total_s: round(total, 1),
      cores_busy: round(total / Math.max(elapsedS, 0.001), 2),
      us_per_event: Math.round((total * 1e6) / Math.max(1, published)),
    };
  }
  let alerts: BenchResult['alerts'] = null;
  if (pipeline.alerter) {
    await pipeline.drain(false);
    const rows = await pipeline.store.querySql(`SELECT countIf(status = 'delivered') AS delivered, countIf(status = 'dead') AS dead FROM ${TABLE.alerts}`, {}, { maxRows: 1 });
    const r = AlertCountRowSchema.parse(rows[0]);
    alerts = { delivered: r.delivered, dead: r.dead, done_s_after_pipeline: round((performance.now() - end) / 1000, 2) };
  }

  const latency = await storedLatency(pipeline);
  const findingLatency = await findingLatencyOf(pipeline.store);
  const detection = await detectionOf(pipeline, stats);
  fullGc();
  const fin = process.memoryUsage();
  const events = published;
  if (latency.uniq_events !== events) {
    opts.onPhase?.(`warning: ${events} events published but ${latency.uniq_events} distinct events stored`);
  }
  const perTask = (now: number, before: number): number | null => (idle.openTasks > 0 ? Math.round((now - before) / idle.openTasks) : null);
  const s = correlator.stats;
  return {
    events,
    elapsed_s: round(elapsedS, 3),
    events_per_s: Math.round(events / Math.max(elapsedS, 1e-3)),
    p50_ms: latency.p50,
    p99_ms: latency.p99,
    max_ms: latency.max,
    p99_attributed_ms: latency.p99_attributed,
    finding_latency: findingLatency,
    alerts,
    cpu,
    rss_mb: round(peaks.rss / MB, 1),
    peak_open_tasks: peaks.openTasks,
    mode: 'embedded',
    bus: opts.mode,
    node: nodeRuntime(),
    scale: {
      tasks: opts.tasks,
      events_per_task: opts.eventsPerTask,
      concurrency: opts.concurrency,
      rate: opts.rate ?? null,
      seed: opts.seed,
      noise_ratio: noiseRatio,
      attack_ratio: opts.attackRatio ?? 0.01,
      spool: opts.spool === true,
    },
    detection,
    timing: {
      parse_s: round((pipeline.ingestor.parseWorkers > 0 ? pipeline.ingestor.workerParseMs : parseMs) / 1000, 3),
      parse_workers: pipeline.ingestor.parseWorkers,
      publish_done_s: round((publishDone - t0) / 1000, 3), generate_s: round(generateS, 3) },
    input: {
      bodies: stats.bodies,
      bytes: stats.bytes,
      records: stats.records,
      rejected,
      tasks_generated: stats.tasks,
      event_time_span_s: round(stats.spanMs / 1000, 1),
      by_kind: { agent: stats.agentEvents, cloudtrail: stats.cloudtrailEvents, vault: stats.vaultEvents, noise: stats.noiseEvents },
    },
    stored: { events: latency.uniq_events, rows: latency.n },
    pipeline: {
      peak_pending: peaks.pending,
      peak_ingest_lag: peaks.ingestLag,
      peak_bus_retained: peaks.busRetained,
      backpressure_retries: backpressureRetries,
      resolved: { ...s.resolved },
      pending_evicted: s.pendingEvicted,
      tasks_evicted: s.tasksEvicted,
      late_events: s.lateEvents,
      engine: {
        tasks_at_idle: idle.engineTasks,
        events_at_idle: idle.engineEvents,
        tasks_evicted: pipeline.engine.stats.evictedTasks,
        events_evicted: pipeline.engine.stats.evictedEvents,
        events_truncated: pipeline.engine.stats.truncatedEvents,
      },
      detector_state_evicted: pipeline.engine.stateEvictionsByPolicyPath(),
    },
    memory: {
      baseline_rss_mb: round(base.rss / MB, 1),
      baseline_heap_mb: round(base.heapUsed / MB, 1),
      bodies_mb: opts.spool ? 0 : round(stats.bytes / MB, 1),
      idle_rss_mb: round(idle.rss / MB, 1),
      idle_heap_mb: round(idle.heap / MB, 1),
      idle_open_tasks: idle.openTasks,
      idle_bus_retained: idle.bus,
      rss_bytes_per_open_task: perTask(idle.rss, base.rss),
      heap_bytes_per_open_task: perTask(idle.heap, base.heapUsed),
      heap_bytes_per_open_task_released: perTask(idle.heap, fin.heapUsed),
      final_rss_mb: round(fin.rss / MB, 1),
      final_heap_mb: round(fin.heapUsed / MB, 1),
      peak_heap_mb: round(peaks.heap / MB, 1),
    },
  };
}

/** Arrival-to-stored latency over every stored event: `stored_at` (insert time) - `ingested_at`. */
async function storedLatency(pipeline: Pipeline): Promise<z.infer<typeof LatencyRowSchema>> {
  const rows = await pipeline.store.querySql(
    `SELECT count() AS n, uniqExact(event_id) AS uniq_events,
            quantileExact(0.5)(d) AS p50, quantileExact(0.99)(d) AS p99, max(d) AS max,
            quantileExactIf(0.99)(d, attribution != 'unattributed') AS p99_attributed
     FROM (SELECT event_id, attribution, toUnixTimestamp64Milli(stored_at) - toUnixTimestamp64Milli(ingested_at) AS d FROM ${TABLE.events})`,
    {},
    { maxRows: 1, maxSeconds: 120 },
  );
  return LatencyRowSchema.parse(rows[0]);
}

/**
 * Arrival-to-finding latency over every stored finding: `emitted_at` (stamped by the detector
 * stage when the finding comes out of the engine) minus the latest `ingested_at` among its
 * evidence events. A finding cannot exist before its last piece of evidence arrived, so this is
 * the delay the pipeline added to the detection, plus, for evidence that reached its task through
 * a join, the wait for the join partner. The `ready` figures start instead when the partner had
 * arrived too (see {@link BenchResult}).
 */
export async function findingLatencyOf(store: Pick<Store, 'querySql'>): Promise<BenchResult['finding_latency']> {
  // Join partners' first arrival, by the join key the correlator recorded on the joined event.
  // Unmatched LEFT JOIN rows carry the epoch, so greatest() falls back to the event's own arrival.
  const ms = (c: string) => `toUnixTimestamp64Milli(${c})`;
  const rows = await store.querySql(
    `WITH
       cred AS (SELECT b.credential_id AS k, min(p.ingested_at) AS t
                FROM ${TABLE.bindings} AS b INNER JOIN ${TABLE.events} AS p ON toString(p.event_id) = b.event_id GROUP BY k),
       req AS (SELECT task_id, request_id AS k, min(ingested_at) AS t FROM ${TABLE.events}
               WHERE attribution = 'direct' AND request_id != '' GROUP BY task_id, k),
       trc AS (SELECT task_id, trace_id AS k, min(ingested_at) AS t FROM ${TABLE.events}
               WHERE attribution = 'direct' AND trace_id != '' GROUP BY task_id, k)
     SELECT count() AS n, quantileExact(0.5)(d) AS p50, quantileExact(0.99)(d) AS p99, max(d) AS max,
            quantileExactIf(0.99)(d, last_attribution = 'direct') AS p99_direct,
            quantileExact(0.5)(d_ready) AS p50_ready, quantileExact(0.99)(d_ready) AS p99_ready
     FROM (
       SELECT f.id, any(f.emitted_ms) - max(${ms('e.ingested_at')}) AS d,
              any(f.emitted_ms) - max(greatest(${ms('e.ingested_at')}, multiIf(
                e.attribution = 'credential', ${ms('cred.t')},
                e.attribution = 'request', ${ms('req.t')},
                e.attribution = 'trace', ${ms('trc.t')}, 0))) AS d_ready,
              argMax(e.attribution, e.ingested_at) AS last_attribution
       FROM (SELECT id, toUnixTimestamp64Milli(assumeNotNull(emitted_at)) AS emitted_ms, arrayJoin(evidence) AS ev
             FROM ${TABLE.findings} FINAL WHERE emitted_at IS NOT NULL) AS f
       INNER JOIN (SELECT toString(event_id) AS event_id, task_id, ingested_at, attribution, join_key FROM ${TABLE.events}) AS e ON e.event_id = f.ev
       LEFT JOIN cred ON cred.k = e.join_key
       LEFT JOIN req ON req.task_id = e.task_id AND req.k = e.join_key
       LEFT JOIN trc ON trc.task_id = e.task_id AND trc.k = e.join_key
       GROUP BY f.id
     )`,
    {},
    { maxRows: 1, maxSeconds: 120 },
  );
  const r = FindingLatencyRowSchema.parse(rows[0]);
  return r.n === 0
    ? null
    : { findings: r.n, p50_ms: r.p50, p99_ms: r.p99, max_ms: r.max, p99_direct_ms: r.p99_direct, p50_ready_ms: r.p50_ready, p99_ready_ms: r.p99_ready };
}

const FlaggedRowSchema = z.object({ task_id: z.string() });

/** Which tasks a high or critical finding flagged, against the injected attacks. */
async function detectionOf(pipeline: Pipeline, stats: TrafficStats): Promise<BenchResult['detection']> {
  const rows = await pipeline.store.querySql(
    `SELECT DISTINCT task_id FROM ${TABLE.findings} FINAL WHERE severity IN ('high', 'critical') AND task_id != ''`,
    {},
    { maxRows: 10_000_000, maxSeconds: 120 },
  );
  const flagged = new Set(rows.map((r) => FlaggedRowSchema.parse(r).task_id));
  const attacks = new Set(stats.attackTasks);
  const missed = stats.attackTasks.filter((t) => !flagged.has(t));
  let other = 0;
  for (const t of flagged) if (!attacks.has(t)) other++;
  return {
    attack_tasks: attacks.size,
    detected: attacks.size - missed.length,
    missed_examples: missed.slice(0, 5),
    other_tasks_flagged: other,
    other_tasks: stats.tasks - attacks.size,
  };
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}


/** The running Node and the flags it was started with (command line, then NODE_OPTIONS). */
export function nodeRuntime(): { version: string; flags: string[] } {
  return { version: process.version, flags: [...process.execArgv.filter((f) => f.startsWith('--') && !f.startsWith('--import')), ...nodeOptionsFlags()] };
}

/** The human-readable table printed before the JSON line. */
export function formatBenchTable(r: BenchResult): string {
  const n = (v: number) => v.toLocaleString('en-US');
  const rows: Array<[string, string]> = [
    ['mode', `embedded, bus ${r.bus === 'live' ? 'live (fsync\'d write-ahead log)' : 'replay (in memory)'}`],
    ['node', `${r.node.version}${r.node.flags.length > 0 ? ` ${r.node.flags.join(' ')}` : ' (no flags)'}`],
    [
      'scale',
      `${n(r.scale.tasks)} tasks open, ${r.scale.events_per_task} events/task, concurrency ${r.scale.concurrency}, ` +
        `${r.scale.rate === null ? 'unpaced' : `offered ${n(r.scale.rate)} events/s`}, seed ${r.scale.seed}`,
    ],
    ['input', `${n(r.input.bodies)} bodies, ${(r.input.bytes / MB).toFixed(0)} MiB, ${n(r.input.records)} records, ${r.input.event_time_span_s} s of event time`],
    ['events', `${n(r.events)} (agent ${n(r.input.by_kind.agent)}, cloudtrail ${n(r.input.by_kind.cloudtrail)}, vault ${n(r.input.by_kind.vault)}, noise ${n(r.input.by_kind.noise)})`],
    ['stored', `${n(r.stored.events)} distinct events`],
    [
      'elapsed',
      `${r.elapsed_s.toFixed(2)} s (all published at ${r.timing.publish_done_s.toFixed(2)} s; parsing ${r.timing.parse_s.toFixed(2)} s` +
        `${r.timing.parse_workers > 0 ? ` on ${r.timing.parse_workers} worker thread${r.timing.parse_workers === 1 ? '' : 's'}` : ''})`,
    ],
    ['throughput', `${n(r.events_per_s)} events/s end to end (parse to stored)`],
    [
      'cpu by thread',
      r.cpu === null
        ? 'n/a (needs Linux /proc)'
        : `main ${r.cpu.main_s} s, other Node threads ${r.cpu.node_threads_s} s, ClickHouse engine ${r.cpu.engine_s} s: ` +
          `${r.cpu.total_s} s, ${r.cpu.cores_busy} cores busy on average, ${n(r.cpu.us_per_event)} µs of CPU per event`,
    ],
    [
      'arrival->stored',
      `p50 ${n(r.p50_ms)} ms, p99 ${n(r.p99_ms)} ms, max ${n(r.max_ms)} ms; p99 of attributed events ${n(r.p99_attributed_ms)} ms ` +
        '(unattributed ones wait out correlator.graceMs)',
    ],
    [
      'arrival->finding',
      r.finding_latency === null
        ? 'no finding in this run'
        : `p50 ${n(r.finding_latency.p50_ms)} ms, p99 ${n(r.finding_latency.p99_ms)} ms, max ${n(r.finding_latency.max_ms)} ms ` +
          `over ${n(r.finding_latency.findings)} findings (from the arrival of the last evidence event); ` +
          `p99 ${n(r.finding_latency.p99_direct_ms)} ms where that event carried its task id (no join wait); ` +
          `p50 ${n(r.finding_latency.p50_ready_ms)} ms, p99 ${n(r.finding_latency.p99_ready_ms)} ms from when its join partners had arrived too`,
    ],
    [
      'attacks',
      r.detection.attack_tasks === 0
        ? 'none injected'
        : `${n(r.detection.detected)} of ${n(r.detection.attack_tasks)} injected attack tasks flagged high/critical` +
          (r.detection.missed_examples.length > 0 ? ` (missed e.g. ${r.detection.missed_examples.slice(0, 2).join(', ')})` : '') +
          `; ${n(r.detection.other_tasks_flagged)} of ${n(r.detection.other_tasks)} other tasks flagged`,
    ],
    [
      'alerts',
      r.alerts === null
        ? 'alerting off'
        : `${n(r.alerts.delivered)} delivered, ${n(r.alerts.dead)} dead-lettered; all due deliveries done ${r.alerts.done_s_after_pipeline} s after the pipeline (not in elapsed)`,
    ],
    [
      'peak RSS',
      `${n(r.rss_mb)} MiB (baseline ${n(r.memory.baseline_rss_mb)} MiB, ` +
        `${r.scale.spool ? 'bodies spooled to disk, read one chunk ahead' : `bodies ${n(r.memory.bodies_mb)} MiB`}); peak heap ${n(r.memory.peak_heap_mb)} MiB`,
    ],
    ['open tasks', `peak ${n(r.peak_open_tasks)}; ${n(r.memory.idle_open_tasks)} open at idle`],
    [
      'per open task',
      r.memory.rss_bytes_per_open_task === null
        ? 'n/a (no task open at idle)'
        : `${n(r.memory.rss_bytes_per_open_task)} B RSS, ${n(r.memory.heap_bytes_per_open_task ?? 0)} B heap ` +
          `(idle RSS ${n(r.memory.idle_rss_mb)} MiB, heap ${n(r.memory.idle_heap_mb)} MiB, less baseline, over open tasks; ` +
          'includes bus backlog and store caches, so only large --tasks runs give a per-task figure)',
    ],
    [
      'bus at idle',
      Object.keys(r.memory.idle_bus_retained).length === 0
        ? 'holds no messages'
        : `holds ${Object.entries(r.memory.idle_bus_retained).map(([t, v]) => `${t} ${n(v)}`).join(', ')} messages`,
    ],
    [
      'after close',
      `RSS ${n(r.memory.final_rss_mb)} MiB, heap ${n(r.memory.final_heap_mb)} MiB` +
        (r.memory.heap_bytes_per_open_task_released === null
          ? ''
          : `; closing the open tasks released ${n(r.memory.heap_bytes_per_open_task_released)} B of heap per task`),
    ],
    [
      'pending',
      `peak ${n(r.pipeline.peak_pending)} unresolved; peak ingest lag ${n(r.pipeline.peak_ingest_lag)}; ` +
        `peak bus retained ${n(r.pipeline.peak_bus_retained)} messages; backpressure retries ${n(r.pipeline.backpressure_retries)}`,
    ],
    ['attribution', Object.entries(r.pipeline.resolved).map(([k, v]) => `${k} ${n(v)}`).join(', ')],
    ['evicted', `pending ${n(r.pipeline.pending_evicted)}, tasks ${n(r.pipeline.tasks_evicted)}; late events ${n(r.pipeline.late_events)}`],
    [
      'detector engine',
      `${n(r.pipeline.engine.events_at_idle)} events of ${n(r.pipeline.engine.tasks_at_idle)} tasks held at idle; ` +
        `windows evicted ${n(r.pipeline.engine.tasks_evicted)} (${n(r.pipeline.engine.events_evicted)} events), events truncated ${n(r.pipeline.engine.events_truncated)}`,
    ],
    [
      'detector state',
      Object.keys(r.pipeline.detector_state_evicted).length === 0
        ? 'nothing evicted (the policy limits held the load)'
        : `evicted ${Object.entries(r.pipeline.detector_state_evicted).map(([k, v]) => `${k} ${n(v)}`).join(', ')}: patterns spanning evicted state are missed; raise these limits in the policy`,
    ],
    ['generation', `${r.timing.generate_s.toFixed(1)} s (not timed)`],
  ];
  if (r.data_dir) rows.push(['data kept in', r.data_dir]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}
