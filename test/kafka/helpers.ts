import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { inject } from 'vitest';
import { parseConfig, type Config, type ConfigInput } from '../../shared/config.ts';
import { DEFAULT_TOPIC_NAMES, TOPIC_IDS } from '../../shared/names.ts';

/** The broker the global setup provided. */
export function brokers(): string[] {
  return inject('kafkaBrokers').split(',');
}

/** A run id that namespaces topics and consumer groups, so test files never see each other's data. */
export function runId(): string {
  return `t${Date.now().toString(36)}${randomUUID().slice(0, 6)}`;
}

/** Topic names for a run. */
export function topicsFor(run: string): Record<string, string> {
  return Object.fromEntries(TOPIC_IDS.map((id) => [id, `${run}.${DEFAULT_TOPIC_NAMES[id]}`]));
}

/** Raw config input for a distributed-mode run on the test broker. */
export function kafkaConfigInput(run: string, dataDir: string, extra: ConfigInput = {}): ConfigInput {
  return {
    dataDir,
    logLevel: 'warn',
    ...extra,
    kafka: { brokers: brokers(), clientId: run, groupPrefix: `${run}-`, partitions: 6, topics: topicsFor(run), ...(extra.kafka ?? {}) },
    collector: { port: 0, ...(extra.collector ?? {}) },
    service: { healthPort: 0, ...(extra.service ?? {}) },
    correlator: { graceMs: 30_000, graceWallMs: 10_000, ...(extra.correlator ?? {}) },
  };
}

/** Validated config for a distributed-mode run. */
export function kafkaConfig(run: string, dataDir: string, extra: ConfigInput = {}): Readonly<Config> {
  return parseConfig(kafkaConfigInput(run, dataDir, extra));
}

/** Polls until `ok` holds or the time runs out; returns the last value. */
export async function waitFor<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * A connected idempotent producer on the test broker, one request in flight: what a test
 * publishes (with `acks: -1`) arrives once and in order, as the collector publishes.
 */
export async function connectedProducer(clientId: string): Promise<Producer> {
  const producer = new Kafka({ clientId, brokers: brokers(), logLevel: logLevel.NOTHING }).producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  return producer;
}
