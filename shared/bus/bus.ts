import { z } from 'zod';
import { CanonicalEventSchema, CredentialBindingSchema, TimelineMessageSchema } from '../event.ts';
import { FindingSchema } from '../finding.ts';
import { TOPIC, type TopicId } from '../names.ts';

/**
 * The Bus connects pipeline stages. Two implementations share this interface: the in-process
 * `LocalBus` (embedded mode, write-ahead log on disk) and `KafkaBus` (distributed mode). Stages
 * only see this file, so the same stage code runs in both modes.
 *
 * Semantics follow Kafka's: topics have partitions, messages have offsets, consumer groups commit
 * the next offset to read, and an uncommitted message is delivered again after a restart
 * (at-least-once). `publish` resolves only once the messages are durable.
 */

/** A message that could not be processed, with why (the dead-letter topic's payload). */
export const DeadLetterSchema = z.object({
  /** Stage that gave up on it. */
  stage: z.string(),
  /** Logical topic it came from. */
  topic: z.string(),
  partition: z.number().int(),
  offset: z.string(),
  key: z.string().nullable(),
  /** Error code and human-readable reason. */
  code: z.string(),
  reason: z.string(),
  /** The raw payload (as text), so it can be inspected and replayed. */
  payload: z.string(),
  /** Epoch ms. */
  time: z.number(),
});
export type DeadLetter = z.infer<typeof DeadLetterSchema>;

/** Alert delivery record (filled in by the alerting issue; kept open here). */
export const AlertDeliverySchema = z.object({
  id: z.string(),
  incident_id: z.string(),
  channel: z.string(),
  status: z.string(),
  time: z.number(),
  payload: z.string(),
});
export type AlertDelivery = z.infer<typeof AlertDeliverySchema>;

/** Payload schema of each topic: the type of a message follows from its topic. */
export const TOPIC_SCHEMAS = {
  [TOPIC.eventsAgent]: CanonicalEventSchema,
  [TOPIC.eventsWorkload]: CanonicalEventSchema,
  [TOPIC.eventsResource]: CanonicalEventSchema,
  [TOPIC.bindings]: CredentialBindingSchema,
  [TOPIC.timeline]: TimelineMessageSchema,
  [TOPIC.findings]: FindingSchema,
  [TOPIC.alerts]: AlertDeliverySchema,
  [TOPIC.deadLetter]: DeadLetterSchema,
} as const satisfies Record<TopicId, z.ZodType>;

/** Payload type of a topic. */
export type TopicPayload<T extends TopicId> = z.infer<(typeof TOPIC_SCHEMAS)[T]>;

/** A message to publish. The key chooses the partition (same key, same partition, same order). */
export interface OutgoingMessage<T extends TopicId> {
  key: string;
  value: TopicPayload<T>;
  /** `JSON.stringify(value)` when the publisher already has it (the collector does): not redone. */
  serialized?: string;
}

/** A message as delivered to a consumer. */
export interface DeliveredMessage<T extends TopicId = TopicId> {
  topic: T;
  partition: number;
  /** Offset as a decimal string (Kafka offsets are 64-bit). */
  offset: string;
  key: string | null;
  value: TopicPayload<T>;
}

/** A message whose payload failed validation; handed to the consumer so it can dead-letter it. */
export interface UndecodableMessage {
  topic: TopicId;
  partition: number;
  offset: string;
  key: string | null;
  raw: string;
  reason: string;
}

/** One batch: messages of one topic-partition, in offset order. */
export interface MessageBatch<T extends TopicId = TopicId> {
  topic: T;
  partition: number;
  messages: DeliveredMessage<T>[];
  /** Messages in this batch whose payload did not decode. */
  undecodable: UndecodableMessage[];
  /** Offset just past the last message (valid or not) in this batch. */
  nextOffset: string;
}

/** Where a consumer group has got to on one partition: the next offset to read. */
export interface PartitionOffset {
  topic: TopicId;
  partition: number;
  offset: string;
}

/** Options for {@link Bus.subscribe}. */
export interface SubscribeOptions<T extends TopicId> {
  /** Consumer group. Omit for a group-less reader that sees every partition (e.g. a global table). */
  groupId?: string;
  topics: readonly T[];
  /** Start at the earliest retained offset when the group has no committed offset. */
  fromBeginning?: boolean;
  /** Called with one partition's batch at a time; must not resolve before the batch is handled. */
  onBatch: (batch: MessageBatch<T>) => Promise<void>;
  /**
   * Called before partitions are taken away (rebalance, shutdown). The stage flushes what it holds
   * for them and commits, so the next owner resumes where this one stopped.
   */
  onRevoke?: (partitions: ReadonlyArray<{ topic: T; partition: number }>) => Promise<void>;
  /** Called after partitions are assigned. */
  onAssign?: (partitions: ReadonlyArray<{ topic: T; partition: number }>) => Promise<void>;
}

/** A live subscription. */
export interface Subscription {
  /** Commits offsets (next offset to read) for the group. No-op for group-less readers. */
  commit(offsets: readonly PartitionOffset[]): Promise<void>;
  /** Messages published but not yet consumed by this subscription, summed over its partitions. */
  lag(): Promise<number>;
  /** Stops consuming; calls `onRevoke` for held partitions first. Idempotent. */
  shutdown(): Promise<void>;
}

/** The bus itself. */
export interface Bus {
  readonly kind: 'local' | 'kafka';
  start(): Promise<void>;
  /** Appends messages; resolves once they are durable. Throws BackpressureError when saturated. */
  publish<T extends TopicId>(topic: T, messages: readonly OutgoingMessage<T>[]): Promise<void>;
  subscribe<T extends TopicId>(opts: SubscribeOptions<T>): Promise<Subscription>;
  /** True when the bus can take writes (for readiness probes). */
  ready(): boolean;
  /** Stops every subscription and closes the bus. Idempotent. */
  shutdown(): Promise<void>;
}

/** Decodes a topic payload with its schema. */
export function decodePayload<T extends TopicId>(
  topic: T,
  raw: string,
): { ok: true; value: TopicPayload<T> } | { ok: false; reason: string } {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    return { ok: false, reason: `payload is not JSON: ${(err as Error).message}` };
  }
  const res = TOPIC_SCHEMAS[topic].safeParse(json);
  if (!res.success) {
    const i = res.error.issues[0];
    return { ok: false, reason: `field \`${i?.path.join('.') ?? ''}\`: ${i?.message ?? 'invalid'}` };
  }
  return { ok: true, value: res.data as TopicPayload<T> };
}
