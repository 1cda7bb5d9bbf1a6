import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { KafkaBus } from '../../shared/bus/kafka-bus.ts';
import { isDistributed, parseConfig, type Config, type ConfigInput } from '../../shared/config.ts';
import { BackpressureError, RuntrailError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { DEFAULT_TOPIC_NAMES, GROUP, TABLE, TOPIC_IDS } from '../../shared/names.ts';
import { sleep } from '../../shared/sleep.ts';
import { ADAPTERS } from '../collector/adapters/index.ts';
import { Ingestor } from '../collector/ingest.ts';
import { startChdbHttpServer, type ChdbHttpServer } from '../storage/chdb-http-server.ts';
import { ClickHouseStore } from '../storage/store.ts';
import { generateTraffic } from './generator.ts';
import { metricTotal, startService, writeConfig, type ServiceProcess } from './service-process.ts';

/**
 * `runtrail bench --kafka`: the distributed path on a real broker, with correlators as real
 * `runtrail correlator` processes (as deployed) writing to one ClickHouse over HTTP (the server
 * named by CLICKHOUSE_URL, or the embedded engine served over HTTP by the bench, since chDB binds
 * a directory to one process).
 *
 * Two phases on fresh, namespaced topics:
 * 1. live: the bench parses the generated traffic and publishes it as the collector does (acks
 *    from all in-sync replicas) while one correlator process consumes it. Reports the publish
 *    rate, events/s first publish to last stored, and arrival→stored lag from the stored rows.
 * 2. drain, once per instance count of `correlators` (default 1 then 2): a fresh consumer group
 *    of N correlator processes reads the topics the live phase filled, from the beginning, into
 *    a fresh database. Events/s from all N instances being up to the last event stored (what
 *    they handled before is subtracted) is the correlators' own throughput, without the producer
 *    competing for the CPU; the ratio between the counts is the scaling.
 */

/** Options of the Kafka benchmark. */
export interface KafkaBenchOptions {
  cfg: Readonly<Config>;
  log: Logger;
  events: number;
  openTasks: number;
  eventsPerTask: number;
  seed: number;
  partitions: number;
  /** Correlator instance counts of the drain phases, in order (e.g. `[1, 2]`). */
  correlators: readonly number[];
  onProgress?: (line: string) => void;
}

/** One drain phase. */
export interface DrainResult {
  correlators: number;
  elapsed_s: number;
  events_per_s: number;
  /** Events already handled when the last instance was up (excluded from events_per_s). */
  handled_before_timing: number;
  /** Events found stored when the timed part ended. */
  stored: number;
  /** Events still inside their grace period when the timed part ended. */
  pending: number;
  /**
   * After the timed part, once the grace periods ran out (or `correlator.graceWallMs` + 10 s, at
   * most 2 minutes): distinct event ids stored, and rows in `events FINAL`. Equal when no event
   * was stored twice; `settled_events` = events when nothing was lost.
   */
  settled_events: number;
  settled_rows: number;
  /** Events still waiting when the settling stopped (0 when it completed). */
  settled_pending: number;
}

/** Result (also the final JSON line). */
export interface KafkaBenchResult {
  mode: 'kafka';
  events: number;
  /** Parse + publish (acks=all) rate of the live phase. */
  published_per_s: number;
  /** Live phase: first publish to last stored, one correlator process consuming while the bench publishes. */
  live_events_per_s: number;
  live_elapsed_s: number;
  lag_p50_ms: number;
  lag_p99_ms: number;
  lag_max_ms: number;
  /** Drain throughput of one correlator instance (the first drain phase with one instance), or 0. */
  events_per_s: number;
  drain: DrainResult[];
  /** Last drain phase's events/s over the first's (per instance added: linear = instance ratio). */
  scaling: number | null;
  partitions: number;
  storage: 'clickhouse-server' | 'chdb-over-http';
  brokers: string[];
}

const CountsSchema = z.object({ events: z.coerce.number(), rows: z.coerce.number() });
const LagSchema = z.object({ n: z.coerce.number(), p50: z.coerce.number(), p99: z.coerce.number(), max: z.coerce.number() });

/** Runs the Kafka benchmark; needs a reachable broker (KAFKA_BROKERS, or `npm run kafka:start`). */
export async function runKafkaBench(o: KafkaBenchOptions): Promise<KafkaBenchResult> {
  if (!isDistributed(o.cfg)) {
    throw new RuntrailError('usage', 'bench --kafka needs a broker: set KAFKA_BROKERS (e.g. 127.0.0.1:19092 after `npm run kafka:start`)');
  }
  const run = `bench-${Date.now().toString(36)}-${randomUUID().slice(0, 6)}`;
  const dir = mkdtempSync(join(tmpdir(), 'runtrail-kbench-'));
  const topics = Object.fromEntries(TOPIC_IDS.map((id) => [id, `${run}.${DEFAULT_TOPIC_NAMES[id]}`]));
  const kafka = { ...o.cfg.kafka, clientId: run, groupPrefix: `${run}-`, partitions: o.partitions, topics };
  const cfg = parseConfig({ ...o.cfg, dataDir: dir, kafka });
  const traffic = generateTraffic({ seed: o.seed, openTasks: o.openTasks, eventsPerTask: o.eventsPerTask, totalEvents: o.events, startTime: Date.parse('2026-05-01T00:00:00Z') });
  const metrics = new MetricsRegistry();
  let chdb: ChdbHttpServer | undefined;
  const children: ServiceProcess[] = [];
  const stores: ClickHouseStore[] = [];
  const producerBus = new KafkaBus({ kafka: cfg.kafka, log: o.log, metrics });
  try {
    const url = cfg.storage.clickhouseUrl ?? (chdb = await startChdbHttpServer({ path: join(dir, 'clickhouse'), log: o.log })).url;
    const database = (phase: string) => `${run.replace(/-/g, '_')}_${phase}`;
    /** Starts `n` correlator processes in one consumer group, storing into the phase's database. */
    const correlators = async (phase: string, n: number): Promise<ServiceProcess[]> => {
      const input: ConfigInput = {
        dataDir: join(dir, phase),
        logLevel: 'warn',
        kafka: { ...kafka, clientId: `${run}-${phase}`, groupPrefix: `${run}-${phase}-` },
        storage: { ...cfg.storage, clickhouseUrl: url, database: database(phase) },
        correlator: cfg.correlator,
        service: { healthPort: 0 },
      };
      const file = writeConfig(dir, phase, input);
      const started = await Promise.all(Array.from({ length: n }, () => startService('correlator', file)));
      children.push(...started);
      return started;
    };
    /** A store on the phase's database, for exact counts and the lag query. */
    const phaseStore = async (phase: string): Promise<ClickHouseStore> => {
      const sc = parseConfig({ dataDir: dir, storage: { ...cfg.storage, clickhouseUrl: url, database: database(phase) } });
      const st = new ClickHouseStore(sc.storage, dir, o.log, metrics);
      await st.start();
      stores.push(st);
      return st;
    };
    /** Rows the instances report stored (an event can be written twice: unattributed, then resolved) and events waiting out their grace period. */
    const reported = async (procs: readonly ServiceProcess[]): Promise<{ written: number; pending: number }> => {
      let written = 0;
      let pending = 0;
      for (const p of procs) {
        written += await metricTotal(p.url, 'runtrail_storage_rows_written_total', `table="${TABLE.events}"`);
        pending += await metricTotal(p.url, 'runtrail_correlator_pending_events');
      }
      return { written, pending };
    };
    /**
     * Waits until every event is stored or inside its grace period: polled on the instances'
     * metrics (cheap), then confirmed with an exact count of distinct stored events.
     */
    const waitStored = async (procs: readonly ServiceProcess[], store: ClickHouseStore, total: number, label: string): Promise<{ stored: number; pending: number }> => {
      const deadline = Date.now() + 600_000;
      for (;;) {
        const { written, pending } = await reported(procs);
        if (written + pending >= total) {
          const stored = await store.countEvents();
          if (stored + pending >= total) return { stored, pending };
        }
        if (Date.now() > deadline) throw new RuntrailError('bench_timeout', `${label}: only ${written} of ${total} events stored after 10 minutes`);
        o.onProgress?.(`${label}: stored ${written} / ${total} (${pending} waiting for their grace period)`);
        await sleep(250);
      }
    };
    /**
     * Waits until the group's rebalance is over: every ingest partition assigned, and every
     * instance holding some (when there are enough partitions). At most 60 s.
     */
    const waitAssigned = async (procs: readonly ServiceProcess[]): Promise<void> => {
      const total = 3 * o.partitions;
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        const held = await Promise.all(procs.map((p) => metricTotal(p.url, 'runtrail_bus_assigned_partitions', `group="${GROUP.correlator}"`)));
        if (held.reduce((a, b) => a + b, 0) === total && (procs.length > total || held.every((h) => h > 0))) return;
        o.onProgress?.(`waiting for the consumer group to settle (partitions held: ${held.join(', ')} of ${total})`);
        await sleep(100);
      }
    };
    /** Untimed: waits for the grace periods to run out, then counts distinct events and rows. */
    const settle = async (procs: readonly ServiceProcess[], store: ClickHouseStore): Promise<{ settled_events: number; settled_rows: number; settled_pending: number }> => {
      const until = Date.now() + Math.min(120_000, cfg.correlator.graceWallMs + 10_000);
      let pending = (await reported(procs)).pending;
      while (pending > 0 && Date.now() < until) {
        o.onProgress?.(`settling: ${pending} events waiting for their grace period`);
        await sleep(500);
        pending = (await reported(procs)).pending;
      }
      // The last expired events' inserts may still be in flight: a few seconds for them to land.
      const count = async () => CountsSchema.parse((await store.querySql(`SELECT uniqExact(event_id) AS events, count() AS rows FROM ${TABLE.events} FINAL`))[0]);
      let rows = await count();
      for (let i = 0; i < 20 && pending === 0 && rows.events < accepted; i++) {
        await sleep(250);
        rows = await count();
      }
      return { settled_events: rows.events, settled_rows: rows.rows, settled_pending: pending };
    };
    const stopAll = async (procs: readonly ServiceProcess[]): Promise<void> => {
      const codes = await Promise.all(procs.map((p) => p.stop()));
      if (codes.some((c) => c !== 0)) throw new RuntrailError('bench_failed', `a correlator exited with ${codes.join(', ')}:\n${procs.flatMap((p) => p.stderr).join('').slice(-4000)}`);
    };

    // Phase 1, live.
    await producerBus.start();
    const live = await correlators('live', 1);
    const ingestor = new Ingestor(producerBus, metrics, { maxEventBytes: o.cfg.collector.maxEventBytes });
    let accepted = 0;
    const started = Date.now();
    let lastProgress = started;
    // Several bodies in flight, as several shippers would send them.
    const queue = [...traffic.bodies];
    const sender = async (): Promise<void> => {
      for (let b = queue.shift(); b; b = queue.shift()) {
        const parsed = ADAPTERS[b.format].parse(b.body, b.contentType);
        for (;;) {
          try {
            await ingestor.publish(parsed.events);
            break;
          } catch (err) {
            if (!(err instanceof BackpressureError)) throw err;
            await sleep(50);
          }
        }
        accepted += parsed.events.length;
        if (Date.now() - lastProgress > 1000) {
          lastProgress = Date.now();
          o.onProgress?.(`live: published ${accepted} events (${Math.round(accepted / ((Date.now() - started) / 1000))}/s)`);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, sender));
    const published = Date.now();
    const liveStore = await phaseStore('live');
    await waitStored(live, liveStore, accepted, 'live');
    const liveDone = Date.now();
    // Lag over what is stored: the unattributed events still inside their grace period are not
    // (a stopping correlator leaves them uncommitted for redelivery rather than storing them early).
    const lagRows = await liveStore.querySql(
      `SELECT count() AS n, quantileExact(0.5)(d) AS p50, quantileExact(0.99)(d) AS p99, max(d) AS max
       FROM (SELECT toUnixTimestamp64Milli(stored_at) - toUnixTimestamp64Milli(ingested_at) AS d FROM ${TABLE.events} FINAL)`,
      {},
      { maxRows: 1, maxSeconds: 120 },
    );
    const lag = LagSchema.parse(lagRows[0]);
    await stopAll(live);

    // Phase 2, drain with 1..N instances.
    const drain: DrainResult[] = [];
    for (const [i, n] of o.correlators.entries()) {
      const phase = `drain${i}`;
      const store = await phaseStore(phase);
      const procs = await correlators(phase, n);
      await waitAssigned(procs);
      // Timed from the moment every instance holds its partitions; what the first ones handled
      // while the others were still joining is subtracted: the figure is the rate of all N together.
      const t0 = Date.now();
      const before = (await store.countEvents()) + (await reported(procs)).pending;
      const end = await waitStored(procs, store, accepted, `drain with ${n} correlator${n === 1 ? '' : 's'}`);
      const elapsed = (Date.now() - t0) / 1000;
      const settled = await settle(procs, store);
      drain.push({
        correlators: n,
        elapsed_s: Number(elapsed.toFixed(2)),
        events_per_s: Math.round(Math.max(0, accepted - before) / Math.max(0.001, elapsed)),
        handled_before_timing: before,
        ...end,
        ...settled,
      });
      await stopAll(procs);
    }
    const one = drain.find((d) => d.correlators === 1);
    const first = drain[0];
    const last = drain[drain.length - 1];
    const liveElapsed = (liveDone - started) / 1000;
    return {
      mode: 'kafka',
      events: accepted,
      published_per_s: Math.round(accepted / Math.max(0.001, (published - started) / 1000)),
      live_events_per_s: Math.round(accepted / Math.max(0.001, liveElapsed)),
      live_elapsed_s: Number(liveElapsed.toFixed(2)),
      lag_p50_ms: lag.p50,
      lag_p99_ms: lag.p99,
      lag_max_ms: lag.max,
      events_per_s: one?.events_per_s ?? 0,
      drain,
      scaling: first && last && first !== last ? Number((last.events_per_s / first.events_per_s).toFixed(2)) : null,
      partitions: o.partitions,
      storage: cfg.storage.clickhouseUrl ? 'clickhouse-server' : 'chdb-over-http',
      brokers: cfg.kafka.brokers,
    };
  } finally {
    for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) await c.kill();
    for (const st of stores) await st.shutdown();
    await producerBus.shutdown();
    await chdb?.close();
    await deleteTopics(cfg, o.log).catch((err: unknown) => o.log.warn({ err }, 'could not delete bench topics'));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Removes the run's topics so repeated benchmarks do not fill the broker. */
async function deleteTopics(cfg: Readonly<Config>, log: Logger): Promise<void> {
  const bus = new KafkaBus({ kafka: cfg.kafka, log });
  await bus.start();
  try {
    await bus.adminClient().deleteTopics({ topics: TOPIC_IDS.map((id) => cfg.kafka.topics[id]) });
  } finally {
    await bus.shutdown();
  }
}

/** Readable table of a Kafka run. */
export function formatKafkaBenchTable(r: KafkaBenchResult): string {
  return [
    'Runtrail benchmark: distributed mode, correlator processes on a real Kafka broker',
    `  brokers                  ${r.brokers.join(',')} (${r.partitions} partitions per topic)`,
    `  storage                  ${r.storage}`,
    `  events                   ${r.events}`,
    `  live: published          ${r.published_per_s} events/s (parse + produce, acks=all)`,
    `  live: one correlator     ${r.live_events_per_s} events/s (${r.live_elapsed_s} s, first publish to last stored, publishing alongside)`,
    `  live: end-to-end lag     p50 ${r.lag_p50_ms} ms, p99 ${r.lag_p99_ms} ms, max ${r.lag_max_ms} ms (collector arrival to stored)`,
    ...r.drain.map(
      (d) =>
        `  drain: ${String(d.correlators).padEnd(2)} correlator${d.correlators === 1 ? ' ' : 's'}   ${d.events_per_s} events/s (${d.elapsed_s} s, all up to last stored); ` +
        `settled: ${d.settled_events} events in ${d.settled_rows} rows${d.settled_pending > 0 ? `, ${d.settled_pending} still waiting` : ''}`,
    ),
    ...(r.scaling === null ? [] : [`  scaling                  ${r.scaling}x from ${r.drain[0]?.correlators} to ${r.drain[r.drain.length - 1]?.correlators} instances`]),
  ].join('\n');
}
