import { join } from 'node:path';
import type { Config } from '../config.ts';
import { isDistributed } from '../config.ts';
import type { Logger } from '../logger.ts';
import type { MetricsRegistry } from '../metrics.ts';
import type { Bus } from './bus.ts';
import { KafkaBus } from './kafka-bus.ts';
import { LocalBus } from './local-bus.ts';

/**
 * The one place that chooses the bus: Kafka when `kafka.brokers` is set (distributed mode), else
 * the in-process LocalBus (with its write-ahead log when `durable`).
 */
export function createBus(cfg: Readonly<Config>, log: Logger, metrics: MetricsRegistry, opts: { durable: boolean; forceLocal?: boolean }): Bus {
  if (isDistributed(cfg) && !opts.forceLocal) return new KafkaBus({ kafka: cfg.kafka, log, metrics });
  return new LocalBus({
    dir: opts.durable && cfg.bus.durable ? join(cfg.dataDir, 'bus') : null,
    fsync: cfg.bus.fsync,
    maxBatch: cfg.bus.maxBatch,
    maxBacklog: cfg.bus.maxBacklog,
    segmentBytes: cfg.bus.segmentBytes,
    log: log.child({ component: 'bus' }),
    metrics,
  });
}
