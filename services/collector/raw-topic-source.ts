import type { Consumer, Kafka, KafkaMessage } from 'kafkajs';
import type { Bus, DeadLetter } from '../../shared/bus/bus.ts';
import { kafkaClient } from '../../shared/bus/kafka-bus.ts';
import type { Config } from '../../shared/config.ts';
import { RuntrailError, errorCode, errorMessage } from '../../shared/errors.ts';
import type { IngestFormat } from '../../shared/event.ts';
import { RateLimitedLog, type Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { TOPIC } from '../../shared/names.ts';
import { retryUntilStopped } from '../../shared/retry.ts';
import { ADAPTERS } from './adapters/index.ts';
import { mediaType } from './collector-routes.ts';
import type { Ingestor } from './ingest.ts';

/**
 * Shippers that write their standard records straight to Kafka (Fluent Bit's `kafka` output,
 * Vector's `kafka` sink) instead of POSTing them: the collector service consumes those topics
 * (`kafka.rawTopics`, one per format) and converts each message as the HTTP endpoint of its format
 * converts a body: the same adapter, redaction, and publish to the ingest topics.
 *
 * At least once: a partition's offset is committed only after its messages' events are on the
 * ingest topics (acks from all in-sync replicas); a crash redelivers, and deterministic event ids
 * make the second copy a duplicate that storage drops. A message that cannot be read at all, and
 * each rejected record of one that can, go to the dead-letter topic with the reason (the collector
 * has no store), and the partition moves on.
 */

/** The consumer group of the collectors' raw-topic source (after `kafka.groupPrefix`). */
export const RAW_SOURCE_GROUP = 'runtrail-collector-raw';

/** Payload bytes kept in a dead letter (the rest is cut; the record stays on its topic for its retention). */
const MAX_DEAD_LETTER_PAYLOAD = 64 * 1024;

/** Dependencies of {@link RawTopicSource}. */
export interface RawTopicSourceDeps {
  kafka: Config['kafka'];
  ingestor: Ingestor;
  bus: Bus;
  log: Logger;
  metrics: MetricsRegistry;
  /** First retry delay when publishing fails, ms; doubles up to 5 s. Default 200. */
  retryBaseMs?: number;
}

/** Consumes `kafka.rawTopics` and converts every message (see the module comment). */
export class RawTopicSource {
  private readonly formatOf = new Map<string, IngestFormat>();
  private readonly kafka: Kafka;
  private consumer: Consumer | undefined;
  private stopped = false;
  private readonly log: Logger;
  private readonly retryLog: RateLimitedLog;

  constructor(private readonly deps: RawTopicSourceDeps) {
    for (const [format, topic] of Object.entries(deps.kafka.rawTopics) as Array<[IngestFormat, string]>) this.formatOf.set(topic, format);
    this.log = deps.log.child({ component: 'raw-topic-source' });
    this.retryLog = new RateLimitedLog(this.log, 'publishing events of a raw-topic message failed; retrying');
    this.kafka = kafkaClient(deps.kafka, this.log);
  }

  /** Raw topics consumed (physical names). */
  get topics(): string[] {
    return [...this.formatOf.keys()];
  }

  /** Creates missing raw topics, joins the group and starts consuming from the earliest offset a new group has. */
  async start(): Promise<void> {
    if (this.formatOf.size === 0) return;
    await this.ensureTopics();
    const consumer = this.kafka.consumer({ groupId: `${this.deps.kafka.groupPrefix}${RAW_SOURCE_GROUP}`, sessionTimeout: 30_000, rebalanceTimeout: 60_000, allowAutoTopicCreation: false });
    this.consumer = consumer;
    await consumer.connect();
    // From the beginning for a new group: what shippers wrote before the first start is converted too.
    await consumer.subscribe({ topics: this.topics, fromBeginning: true });
    const messages = this.deps.metrics.counter('runtrail_collector_raw_messages_total', 'Messages consumed from raw shipper topics, by topic');
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
        const format = this.formatOf.get(batch.topic);
        if (!format) return;
        let next: string | undefined;
        for (const m of batch.messages) {
          if (!isRunning() || isStale()) break;
          await this.handle(format, batch.topic, batch.partition, m);
          resolveOffset(m.offset);
          next = (BigInt(m.offset) + 1n).toString();
          messages.inc({ topic: batch.topic });
          await heartbeat();
        }
        if (next !== undefined) await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: next }]);
      },
    });
    this.log.info({ topics: Object.fromEntries([...this.formatOf].map(([t, f]) => [f, t])) }, 'consuming raw shipper topics');
  }

  private async ensureTopics(): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const existing = new Set(await admin.listTopics());
      const missing = this.topics.filter((t) => !existing.has(t));
      if (missing.length > 0) {
        const k = this.deps.kafka;
        await admin.createTopics({
          waitForLeaders: true,
          topics: missing.map((topic) => ({ topic, numPartitions: k.partitions, replicationFactor: k.replicationFactor, configEntries: [{ name: 'retention.ms', value: String(k.retentionMs) }] })),
        });
      }
    } finally {
      await admin.disconnect();
    }
  }

  /** Converts one message; resolves once its events (and dead letters) are published. */
  private async handle(format: IngestFormat, topic: string, partition: number, m: KafkaMessage): Promise<void> {
    const body = m.value;
    // Tombstones and empty messages carry no records.
    if (!body || body.length === 0) return;
    const adapter = ADAPTERS[format];
    const header = m.headers?.['content-type'];
    const declared = mediaType((Array.isArray(header) ? header[0] : header)?.toString());
    // A header the format's endpoint would refuse is ignored rather than failing the message.
    const contentType = header !== undefined && adapter.contentTypes.includes(declared) ? declared : (adapter.undeclaredContentType ?? 'application/json');
    const letter = (code: string, reason: string): DeadLetter => ({
      stage: 'collector',
      topic,
      partition,
      offset: m.offset,
      key: m.key ? m.key.toString() : null,
      code,
      reason,
      payload: body.subarray(0, MAX_DEAD_LETTER_PAYLOAD).toString('utf8'),
      time: Date.now(),
    });
    const retry = {
      what: `convert ${topic}/${partition}@${m.offset}`,
      baseMs: this.deps.retryBaseMs ?? 200,
      stopped: () => this.stopped,
      log: this.retryLog,
      // Only the bus's own failures (unreachable, backpressure) are worth waiting out; a message the
      // adapter cannot read (or an unexpected error reading it) would block its partition forever.
      permanent: (err: unknown) => !(err instanceof RuntrailError) || !err.retriable,
    };
    let letters: DeadLetter[];
    try {
      const r = await retryUntilStopped(() => this.deps.ingestor.ingest(adapter, body, contentType), retry);
      letters = r.rejected.map((x) => letter('record_invalid', `record ${x.index}: field \`${x.field}\`: ${x.reason}`));
      if (r.rejectedCount > r.rejected.length) letters.push(letter('record_invalid', `${r.rejectedCount - r.rejected.length} more records rejected (not listed)`));
    } catch (err) {
      if (this.stopped) throw err;
      letters = [letter(errorCode(err), errorMessage(err))];
    }
    if (letters.length === 0) return;
    const { bus, metrics } = this.deps;
    await retryUntilStopped(() => bus.publish(TOPIC.deadLetter, letters.map((d) => ({ key: `${d.topic}/${d.partition}/${d.offset}`, value: d }))), { ...retry, what: 'publish dead letters', permanent: undefined });
    const counter = metrics.counter('runtrail_dead_letters_total', 'Messages dead-lettered, by stage and code');
    for (const d of letters) counter.inc({ stage: 'collector', code: d.code });
    this.log.warn({ topic, partition, offset: m.offset, letters: letters.length, first: letters[0]?.reason }, 'raw-topic message records dead-lettered');
  }

  /** Stops consuming; a batch in progress finishes its current message and commits what it handled. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.consumer?.disconnect();
  }
}
