import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Kafka, logLevel, type Admin, type Consumer, type Producer, type LogEntry } from 'kafkajs';
import type { Config } from '../config.ts';
import { RuntrailError, errorMessage } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { MetricsRegistry } from '../metrics.ts';
import { TOPIC, TOPIC_IDS, type TopicId } from '../names.ts';
import {
  decodePayload,
  type Bus,
  type DeliveredMessage,
  type OutgoingMessage,
  type PartitionOffset,
  type SubscribeOptions,
  type Subscription,
  type UndecodableMessage,
} from './bus.ts';

/**
 * The distributed-mode bus on Apache Kafka (kafkajs). Same contract as the LocalBus:
 * - `publish` resolves once every in-sync replica has the records (acks = -1, idempotent producer);
 *   when Kafka is unreachable it fails fast with a retriable `kafka_unavailable` error, which the
 *   collector turns into 503 + Retry-After;
 * - consumers never auto-commit: stages commit offsets after what they derived is stored;
 * - a group-less subscription (a global table such as the bindings topic) reads every partition
 *   from the beginning under a private, never-committed group.
 */

/** Kafka is unreachable or refused the write; retry later. */
export class KafkaUnavailableError extends RuntrailError {
  constructor(message: string, cause?: unknown) {
    super('kafka_unavailable', message, { retriable: true, cause });
  }
}

/** Options for {@link KafkaBus}. */
export interface KafkaBusOptions {
  kafka: Config['kafka'];
  log: Logger;
  metrics?: MetricsRegistry;
  /** Time limit of one publish before it is reported as unavailable, ms. Default 10 000. */
  publishTimeoutMs?: number;
}

/** Upper bound of one produce request's payload, bytes (the broker's default limit is 1 MiB). */
const MAX_REQUEST_BYTES = 512 * 1024;

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/**
 * A kafkajs client for the configured brokers, logging through pino: the bus's, and that of
 * anything else in the process that talks to the same cluster (the collector's raw-topic source).
 */
export function kafkaClient(kafka: Config['kafka'], log: Logger): Kafka {
  return new Kafka({
    clientId: kafka.clientId,
    brokers: kafka.brokers,
    connectionTimeout: 3000,
    requestTimeout: 10_000,
    retry: { initialRetryTime: 200, retries: 5 },
    logLevel: logLevel.WARN,
    logCreator: () => (entry: LogEntry) => {
      const level = LEVELS[entry.level] ?? 'info';
      const { message, ...rest } = entry.log;
      log[level]({ kafka: entry.namespace, ...rest }, String(message));
    },
  });
}

/** Kafka-backed bus. */
export class KafkaBus implements Bus {
  readonly kind = 'kafka' as const;
  private readonly kafka: Kafka;
  private producer?: Producer;
  private admin?: Admin;
  private readonly consumers = new Set<Consumer>();
  private readonly subs = new Set<Subscription>();
  private readonly nameToId = new Map<string, TopicId>();
  private connected = false;
  private closed = false;
  private readonly log: Logger;

  constructor(private readonly opts: KafkaBusOptions) {
    this.log = opts.log.child({ component: 'kafka' });
    this.kafka = kafkaClient(opts.kafka, this.log);
    for (const id of TOPIC_IDS) this.nameToId.set(this.topicName(id), id);
  }

  /** Physical topic name of a logical topic id. */
  topicName(id: TopicId): string {
    return this.opts.kafka.topics[id];
  }

  async start(): Promise<void> {
    if (this.connected) return;
    this.admin = this.kafka.admin();
    await this.admin.connect();
    await this.ensureTopics();
    this.producer = this.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: { retries: 2, initialRetryTime: 100 } });
    await this.producer.connect();
    this.connected = true;
  }

  /** Creates missing topics with the configured partitions, replication and retention. */
  private async ensureTopics(): Promise<void> {
    const admin = this.admin as Admin;
    const existing = new Set(await admin.listTopics());
    const k = this.opts.kafka;
    const missing = TOPIC_IDS.filter((id) => !existing.has(this.topicName(id)));
    if (missing.length === 0) return;
    await admin.createTopics({
      waitForLeaders: true,
      topics: missing.map((id) => ({
        topic: this.topicName(id),
        numPartitions: k.partitions,
        replicationFactor: k.replicationFactor,
        configEntries:
          id === TOPIC.bindings
            ? [
                // A global table: the latest binding per credential is kept forever.
                { name: 'cleanup.policy', value: 'compact' },
                { name: 'min.compaction.lag.ms', value: '60000' },
              ]
            : [{ name: 'retention.ms', value: String(k.retentionMs) }],
      })),
    });
    this.log.info({ topics: missing.map((id) => this.topicName(id)) }, 'created topics');
  }

  ready(): boolean {
    return this.connected && !this.closed;
  }

  async publish<T extends TopicId>(topic: T, messages: readonly OutgoingMessage<T>[]): Promise<void> {
    if (messages.length === 0) return;
    if (!this.producer || this.closed) throw new KafkaUnavailableError('kafka producer is not connected');
    const timeout = this.opts.publishTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    // Requests stay well under the broker's default message.max.bytes (1 MiB per record batch):
    // a large batch of events is sent as several produce requests, all awaited before resolving.
    const producer = this.producer;
    const chunks: Array<Array<{ key: string; value: string }>> = [];
    let cur: Array<{ key: string; value: string }> = [];
    let bytes = 0;
    for (const m of messages) {
      const value = m.serialized ?? JSON.stringify(m.value);
      // Bytes, as the broker counts them (a string's length counts UTF-16 units).
      const size = Buffer.byteLength(value) + Buffer.byteLength(m.key) + 64;
      if (cur.length > 0 && bytes + size > MAX_REQUEST_BYTES) {
        chunks.push(cur);
        cur = [];
        bytes = 0;
      }
      cur.push({ key: m.key, value });
      bytes += size;
    }
    if (cur.length > 0) chunks.push(cur);
    try {
      await Promise.race([
        (async () => {
          for (const c of chunks) await producer.send({ topic: this.topicName(topic), acks: -1, messages: c });
        })(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new KafkaUnavailableError(`kafka did not acknowledge within ${timeout} ms`)), timeout);
        }),
      ]);
    } catch (err) {
      if (err instanceof KafkaUnavailableError) throw err;
      throw new KafkaUnavailableError(`kafka publish to ${this.topicName(topic)} failed: ${errorMessage(err)}`, err);
    } finally {
      if (timer) clearTimeout(timer);
    }
    this.opts.metrics?.counter('runtrail_bus_published_total', 'Messages published on the bus').inc({ topic }, messages.length);
  }

  async subscribe<T extends TopicId>(opts: SubscribeOptions<T>): Promise<Subscription> {
    if (!this.connected) await this.start();
    const groupless = !opts.groupId;
    const groupId = `${this.opts.kafka.groupPrefix}${opts.groupId ?? `${this.opts.kafka.clientId}-reader-${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`}`;
    const consumer = this.kafka.consumer({ groupId, sessionTimeout: 30_000, rebalanceTimeout: 60_000, heartbeatInterval: 3000, allowAutoTopicCreation: false, maxBytesPerPartition: 4 * 1024 * 1024 });
    this.consumers.add(consumer);
    await consumer.connect();
    await consumer.subscribe({ topics: opts.topics.map((t) => this.topicName(t)), fromBeginning: groupless ? true : (opts.fromBeginning ?? false) });
    /** partition key -> [position, high watermark] for lag. */
    const progress = new Map<string, [number, number]>();
    let assigned: Array<{ topic: T; partition: number }> = [];
    const log = this.log.child({ groupId });
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      const next: Array<{ topic: T; partition: number }> = [];
      for (const [name, parts] of Object.entries(e.payload.memberAssignment)) {
        const id = this.nameToId.get(name) as T | undefined;
        if (id) for (const p of parts) next.push({ topic: id, partition: p });
      }
      const lost = assigned.filter((a) => !next.some((n) => n.topic === a.topic && n.partition === a.partition));
      // Every partition held before this rebalance counts as revoked, kept ones too: kafkajs makes a
      // new offset manager at each group sync, so even a partition this instance keeps is fetched
      // again from its committed offset. Its consumer must forget what it tracked and held for it
      // (and look redelivered events up) exactly as a new owner would.
      const revoked = assigned;
      assigned = next;
      log.info({ partitions: next.length, lost: lost.length, restarted: revoked.length - lost.length }, 'partitions assigned');
      if (!groupless) this.assignedGauge()?.set(next.length, { group: opts.groupId ?? '' });
      // kafkajs offers no pre-revoke hook: this runs after the partitions moved. Commits happen
      // after every output, so a lost partition's uncommitted tail is simply redelivered to its new
      // owner (idempotent writes and the correlator's redelivery guard absorb repeats).
      if (revoked.length > 0 && opts.onRevoke) void opts.onRevoke(revoked).catch((err: unknown) => log.error({ err }, 'onRevoke failed'));
      if (opts.onAssign) void opts.onAssign(next).catch((err: unknown) => log.error({ err }, 'onAssign failed'));
    });
    consumer.on(consumer.events.CRASH, (e) => log.error({ err: e.payload.error, restart: e.payload.restart }, 'consumer crashed'));
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
        if (!isRunning() || isStale()) return;
        const id = this.nameToId.get(batch.topic) as T | undefined;
        if (!id) return;
        const messages: DeliveredMessage<T>[] = [];
        const undecodable: UndecodableMessage[] = [];
        for (const m of batch.messages) {
          const raw = m.value ? m.value.toString('utf8') : '';
          const key = m.key ? m.key.toString('utf8') : null;
          const dec = decodePayload(id, raw);
          if (dec.ok) messages.push({ topic: id, partition: batch.partition, offset: m.offset, key, value: dec.value });
          else undecodable.push({ topic: id, partition: batch.partition, offset: m.offset, key, raw, reason: dec.reason });
        }
        if (batch.messages.length === 0) return;
        const last = batch.lastOffset();
        const nextOffset = String(BigInt(last) + 1n);
        // Lag counts this batch until it is handled: a consumer stuck in a batch (storage slow or
        // down) must show its lag growing, not the figure from before it got stuck.
        const key = `${batch.topic}:${batch.partition}`;
        progress.set(key, [Number(batch.firstOffset()), Number(batch.highWatermark)]);
        await opts.onBatch({ topic: id, partition: batch.partition, messages, undecodable, nextOffset });
        // Advance the fetch position (not the committed offset: stages commit explicitly).
        resolveOffset(last);
        progress.set(key, [Number(nextOffset), Number(batch.highWatermark)]);
        await heartbeat();
      },
    });
    const bus = this;
    let stopped = false;
    const sub: Subscription = {
      async commit(offsets: readonly PartitionOffset[]) {
        if (groupless || offsets.length === 0) return;
        await consumer.commitOffsets(offsets.map((o) => ({ topic: bus.topicName(o.topic), partition: o.partition, offset: o.offset })));
      },
      async lag() {
        // Against the partitions' current end offsets: the high watermarks seen in fetched
        // batches stop moving when the consumer is stuck, and a stuck consumer is when lag matters.
        // Where nothing was read yet, the position is the group's committed offset (or the log start).
        const admin = bus.admin;
        if (!admin || groupless) {
          let n = 0;
          for (const [pos, hw] of progress.values()) n += Math.max(0, hw - pos);
          return n;
        }
        let n = 0;
        const names = [...new Set(assigned.map((a) => bus.topicName(a.topic)))];
        if (names.length === 0) return 0;
        // One request for the group's committed offsets on every topic; end offsets are per topic.
        const committed = await admin.fetchOffsets({ groupId, topics: names });
        for (const name of names) {
          const parts = new Set(assigned.filter((a) => bus.topicName(a.topic) === name).map((a) => a.partition));
          const ends = await admin.fetchTopicOffsets(name);
          const committedAt = new Map((committed.find((c) => c.topic === name)?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
          for (const e of ends) {
            if (!parts.has(e.partition)) continue;
            const seen = progress.get(`${name}:${e.partition}`)?.[0];
            const start = committedAt.get(e.partition) ?? -1;
            const pos = seen ?? (start >= 0 ? start : Number(e.low));
            n += Math.max(0, Number(e.high) - pos);
          }
        }
        return n;
      },
      async shutdown() {
        if (stopped) return;
        stopped = true;
        if (opts.onRevoke && assigned.length > 0) await opts.onRevoke(assigned);
        await consumer.disconnect();
        if (!groupless) bus.assignedGauge()?.set(0, { group: opts.groupId ?? '' });
        bus.consumers.delete(consumer);
        bus.subs.delete(sub);
      },
    };
    this.subs.add(sub);
    return sub;
  }

  /** Partitions this instance holds per consumer group (what a rebalance gave it). */
  private assignedGauge() {
    return this.opts.metrics?.gauge('runtrail_bus_assigned_partitions', 'Partitions assigned to this instance, by consumer group');
  }

  /** Admin access for tests and operational commands (lag, topic inspection). */
  adminClient(): Admin {
    if (!this.admin) throw new KafkaUnavailableError('kafka admin is not connected');
    return this.admin;
  }

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.subs]) await s.shutdown();
    for (const c of [...this.consumers]) await c.disconnect();
    await this.producer?.disconnect();
    await this.admin?.disconnect();
  }
}
