import { sleep } from '../../shared/sleep.ts';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { KafkaBus } from '../../shared/bus/kafka-bus.ts';
import { isDistributed, parseConfig, type Config } from '../../shared/config.ts';
import { BackpressureError, RuntrailError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { DEFAULT_TOPIC_NAMES, TABLE, TOPIC_IDS } from '../../shared/names.ts';
import { ADAPTERS } from '../collector/adapters/index.ts';
import { Ingestor } from '../collector/ingest.ts';
import { CorrelatorStage } from '../correlator/correlator-stage.ts';
import { ClickHouseStore } from '../storage/store.ts';
import { generateTraffic } from './generator.ts';

/**
 * `runtrail bench --kafka`: the distributed path on a real broker. The generated traffic is parsed
 * and published to fresh, namespaced Kafka topics (as the collector does, acks from all in-sync
 * replicas), and ONE correlator instance consumes it, stores timelines in ClickHouse (chDB, or
 * the server named by CLICKHOUSE_URL) and publishes them downstream. Reported: publish rate,
 * events/s through the correlator (first publish to last event stored), and end-to-end lag
 * (arrival at the collector to stored) per event from the stored rows.
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
  onProgress?: (line: string) => void;
}

/** Result (also the final JSON line). */
export interface KafkaBenchResult {
  mode: 'kafka';
  events: number;
  published_per_s: number;
  elapsed_s: number;
  events_per_s: number;
  lag_p50_ms: number;
  lag_p99_ms: number;
  lag_max_ms: number;
  partitions: number;
  correlator_instances: 1;
  brokers: string[];
}

const LagSchema = z.object({ n: z.coerce.number(), p50: z.coerce.number(), p99: z.coerce.number(), max: z.coerce.number() });

/** Runs the Kafka benchmark; needs a reachable broker (KAFKA_BROKERS, or `npm run kafka:start`). */
export async function runKafkaBench(o: KafkaBenchOptions): Promise<KafkaBenchResult> {
  if (!isDistributed(o.cfg)) {
    throw new RuntrailError('usage', 'bench --kafka needs a broker: set KAFKA_BROKERS (e.g. 127.0.0.1:19092 after `npm run kafka:start`)');
  }
  const run = `bench-${Date.now().toString(36)}-${randomUUID().slice(0, 6)}`;
  const dir = mkdtempSync(join(tmpdir(), 'runtrail-kbench-'));
  const cfg = parseConfig({
    ...o.cfg,
    dataDir: dir,
    kafka: {
      ...o.cfg.kafka,
      clientId: run,
      groupPrefix: `${run}-`,
      partitions: o.partitions,
      topics: Object.fromEntries(TOPIC_IDS.map((id) => [id, `${run}.${DEFAULT_TOPIC_NAMES[id]}`])),
    },
  });
  const traffic = generateTraffic({ seed: o.seed, openTasks: o.openTasks, eventsPerTask: o.eventsPerTask, totalEvents: o.events, startTime: Date.parse('2026-05-01T00:00:00Z') });
  const metrics = new MetricsRegistry();
  const store = new ClickHouseStore(cfg.storage, cfg.dataDir, o.log, metrics);
  const producerBus = new KafkaBus({ kafka: cfg.kafka, log: o.log, metrics });
  const consumerBus = new KafkaBus({ kafka: cfg.kafka, log: o.log, metrics });
  let stage: CorrelatorStage | undefined;
  try {
    await store.start();
    await producerBus.start();
    await consumerBus.start();
    stage = new CorrelatorStage({ bus: consumerBus, store, cfg: cfg.correlator, log: o.log, metrics, wallClock: true });
    await stage.start();
    const ingestor = new Ingestor(producerBus, metrics);
    let accepted = 0;
    const started = Date.now();
    let lastProgress = started;
    // Several bodies in flight, as several shippers would send them.
    const queue = [...traffic.bodies];
    const worker = async (): Promise<void> => {
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
          o.onProgress?.(`published ${accepted} events (${Math.round(accepted / ((Date.now() - started) / 1000))}/s)`);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    const published = Date.now();
    // Events/s through the correlator: until every published event is stored, except unattributed
    // noise still waiting out its grace period by design (it is then flushed, not timed).
    let stored = 0;
    const correlator = stage.correlator;
    while (stored + correlator.pendingCount < accepted) {
      await sleep(250);
      stored = await store.countEvents();
      o.onProgress?.(`stored ${stored} / ${accepted} (${correlator.pendingCount} waiting for their grace period)`);
      if (Date.now() - published > 600_000) throw new RuntrailError('bench_timeout', `only ${stored} of ${accepted} events stored after 10 minutes`);
    }
    const done = Date.now();
    await stage.tick(true);
    while ((await store.countEvents()) < accepted) await sleep(250);
    const lagRows = await store.querySql(
      `SELECT count() AS n, quantileExact(0.5)(d) AS p50, quantileExact(0.99)(d) AS p99, max(d) AS max
       FROM (SELECT toUnixTimestamp64Milli(stored_at) - toUnixTimestamp64Milli(ingested_at) AS d FROM ${TABLE.events} FINAL)`,
      {},
      { maxRows: 1, maxSeconds: 120 },
    );
    const lag = LagSchema.parse(lagRows[0]);
    const elapsed = (done - started) / 1000;
    return {
      mode: 'kafka',
      events: accepted,
      published_per_s: Math.round(accepted / Math.max(0.001, (published - started) / 1000)),
      elapsed_s: Number(elapsed.toFixed(2)),
      events_per_s: Math.round(accepted / Math.max(0.001, elapsed)),
      lag_p50_ms: lag.p50,
      lag_p99_ms: lag.p99,
      lag_max_ms: lag.max,
      partitions: o.partitions,
      correlator_instances: 1,
      brokers: cfg.kafka.brokers,
    };
  } finally {
    await stage?.shutdown();
    await consumerBus.shutdown();
    await producerBus.shutdown();
    await store.shutdown();
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
    'Runtrail benchmark: distributed mode, one correlator on a real Kafka broker',
    `  brokers                  ${r.brokers.join(',')} (${r.partitions} partitions per topic)`,
    `  events                   ${r.events}`,
    `  published (acks=all)     ${r.published_per_s} events/s`,
    `  through one correlator   ${r.events_per_s} events/s (${r.elapsed_s} s, first publish to last stored)`,
    `  end-to-end lag           p50 ${r.lag_p50_ms} ms, p99 ${r.lag_p99_ms} ms, max ${r.lag_max_ms} ms (collector arrival to stored)`,
  ].join('\n');
}
