import type { Bus, OutgoingMessage } from '../../shared/bus/bus.ts';
import type { CanonicalEvent } from '../../shared/event.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { SOURCE_TOPIC } from '../../shared/names.ts';
import { createRedactor, type Redactor, type RedactorOptions } from '../../shared/redaction.ts';
import { DEFAULT_MAX_EVENT_BYTES, fitEvent, fitsIn } from './event-size.ts';
import { eventValidation, type Adapter, type Rejection } from './adapters/adapter.ts';
import { ParsePool, type ParsedBody, type SerializedTopic, type SourceTopicId } from './parse-pool.ts';

/** Outcome of ingesting one body. */
export interface IngestResult {
  /** Events accepted and durable on the bus. */
  accepted: number;
  /** The first rejections (at most MAX_LISTED_REJECTIONS). */
  rejected: Rejection[];
  /** All rejections, listed or not. */
  rejectedCount: number;
  records: number;
  skipped: number;
}

/** A body converted into canonical events, grouped by ingest topic, ready to publish (and to re-publish after backpressure). */
export interface PreparedBody {
  format: string;
  accepted: number;
  rejected: Rejection[];
  rejectedCount: number;
  records: number;
  skipped: number;
  topics: Array<{
    topic: SourceTopicId;
    messages: OutgoingMessage<SourceTopicId>[];
    /** The messages as write-ahead-log lines, when a parse worker already serialized them. */
    wal?: string;
  }>;
}

/**
 * A bus that can take messages already serialized as its log lines (the LocalBus), so a parse
 * worker's serialization is not done again on the main thread.
 */
export interface SerializedPublisher {
  publishSerialized(topic: SourceTopicId, messages: readonly OutgoingMessage<SourceTopicId>[], lines: string): Promise<void>;
}

function takesSerialized(bus: Bus): bus is Bus & SerializedPublisher {
  return typeof (bus as Partial<SerializedPublisher>).publishSerialized === 'function';
}

/** Options of an {@link Ingestor}. */
export interface IngestorOptions {
  /**
   * Worker threads that convert bodies (`collector.parseWorkers`); 0 converts on the calling
   * thread. Workers only pay off with a bus that takes their serialized lines (the LocalBus).
   */
  parseWorkers?: number;
  /**
   * Secret redaction, applied to every event before it is published (in the parse workers when
   * there are any), so neither the bus nor storage ever holds a clear secret. Unset = off.
   */
  redaction?: RedactorOptions;
  /** Largest event published, bytes of JSON (`collector.maxEventBytes`; see event-size.ts). Default 512 KiB. */
  maxEventBytes?: number;
}

/**
 * Partition key for an ingest topic: the most specific correlation key the event carries, so
 * related events tend to share a partition (and keep their relative order).
 */
export function ingestKey(e: CanonicalEvent): string {
  return e.task_id ?? e.credential_id ?? e.credential?.id ?? e.trace_id ?? e.workload_id ?? e.event_id;
}

const SOURCES = ['agent', 'workload', 'resource'] as const;

/**
 * Stamps arrival time on events that have none and serializes them per ingest topic, as the
 * LocalBus writes them to its log (`JSON.stringify([key, value])` per line). Runs in the parse
 * workers; pure.
 */
export function serializeForBus(events: readonly CanonicalEvent[], now: number, maxEventBytes: number): SerializedTopic[] {
  const lines: Record<(typeof SOURCES)[number], string[]> = { agent: [], workload: [], resource: [] };
  for (const e of events) {
    if (e.ingested_at === undefined) (e as { ingested_at?: number }).ingested_at = now;
    let line = JSON.stringify([ingestKey(e), e]);
    // The line is the key plus the event: over the bound, fit the event first (the key is made of
    // its ids, which fitting may cut), then rebuild the line.
    if (!fitsIn(line, maxEventBytes)) {
      const fitted = fitEvent(e, JSON.stringify(e), maxEventBytes);
      line = `[${JSON.stringify(ingestKey(e))},${fitted}]`;
    }
    lines[e.source].push(line);
  }
  const out: SerializedTopic[] = [];
  for (const source of SOURCES) {
    const l = lines[source];
    if (l.length === 0) continue;
    out.push({ topic: SOURCE_TOPIC[source], count: l.length, wal: `${l.join('\n')}\n`, array: `[${l.join(',')}]` });
  }
  return out;
}

/**
 * Converts a body with its adapter and publishes the events to the per-source topics. Resolves
 * only once the bus holds them durably: the caller acknowledges the shipper after this returns.
 * Shared by the HTTP collector, the benchmark and `runtrail replay`. With parse workers, the
 * conversion and the log serialization run off the calling thread ({@link ParsePool}).
 */
export class Ingestor {
  private pool: ParsePool | undefined;
  private readonly redactor: Redactor | undefined;

  private readonly maxEventBytes: number;

  constructor(
    private readonly bus: Bus,
    private readonly metrics: MetricsRegistry,
    private readonly opts: IngestorOptions = {},
  ) {
    this.redactor = createRedactor(opts.redaction);
    this.maxEventBytes = opts.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
  }

  /** Starts the parse workers, if any. */
  start(): void {
    const n = this.opts.parseWorkers ?? 0;
    if (n > 0 && !this.pool && takesSerialized(this.bus)) this.pool = new ParsePool(n, eventValidation(), this.opts.redaction, this.maxEventBytes);
  }

  /** Worker time spent converting bodies so far, ms (0 without workers). */
  get workerParseMs(): number {
    return this.pool?.parseMs ?? 0;
  }

  /** Parse workers running. */
  get parseWorkers(): number {
    return this.pool?.size ?? 0;
  }

  async ingest(adapter: Adapter, body: Buffer, contentType: string): Promise<IngestResult> {
    const prepared = await this.prepare(adapter, body, contentType);
    await this.publishPrepared(prepared);
    const m = this.metrics;
    m.counter('runtrail_collector_records_total', 'Records read by the collector, by format').inc({ format: adapter.format }, prepared.records);
    m.counter('runtrail_collector_accepted_total', 'Events accepted by the collector, by format').inc({ format: adapter.format }, prepared.accepted);
    if (prepared.rejectedCount > 0) {
      m.counter('runtrail_collector_rejected_total', 'Records rejected by the collector, by format').inc({ format: adapter.format }, prepared.rejectedCount);
    }
    return { accepted: prepared.accepted, rejected: prepared.rejected, rejectedCount: prepared.rejectedCount, records: prepared.records, skipped: prepared.skipped };
  }

  /** Converts a body (on a worker when there are any); throws the adapter's BodyError for an unreadable body. */
  async prepare(adapter: Adapter, body: Buffer, contentType: string): Promise<PreparedBody> {
    if (!this.pool) {
      const parsed = adapter.parse(body, contentType);
      if (this.redactor) for (const e of parsed.events) this.redactor.redactEvent(e);
      return { format: adapter.format, accepted: parsed.events.length, rejected: parsed.rejected, rejectedCount: parsed.rejectedCount, records: parsed.records, skipped: parsed.skipped, topics: this.group(parsed.events, true) };
    }
    return fromWorker(adapter.format, await this.pool.parse(adapter.format, contentType, body));
  }

  /** Publishes a prepared body; may be called again after a BackpressureError. */
  async publishPrepared(p: PreparedBody): Promise<void> {
    const bus = this.bus;
    // A retry after a partial failure re-publishes everything; event ids make that idempotent downstream.
    await Promise.all(
      p.topics.map((t) => (t.wal !== undefined && takesSerialized(bus) ? bus.publishSerialized(t.topic, t.messages, t.wal) : bus.publish(t.topic, t.messages))),
    );
  }

  /**
   * Publishes canonical events to their source topics; stamps arrival time on events that have
   * none. The stamp is written into the event objects themselves: they are the adapter's fresh
   * output and belong to the bus from here on, and a copy per event (an object spread gives each
   * copy a hidden class of its own) was a measurable share of the collector's allocations. A
   * retried publish keeps the first attempt's stamp.
   */
  async publish(events: readonly CanonicalEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.publishPrepared({ format: '', accepted: events.length, rejected: [], rejectedCount: 0, records: events.length, skipped: 0, topics: this.group(events, false) });
  }

  /** Groups events by ingest topic; `alreadyRedacted` when they came through {@link prepare}. */
  private group(events: readonly CanonicalEvent[], alreadyRedacted = true): PreparedBody['topics'] {
    const redact = alreadyRedacted ? undefined : this.redactor;
    const now = Date.now();
    const bySource = {
      agent: [] as OutgoingMessage<SourceTopicId>[],
      workload: [] as OutgoingMessage<SourceTopicId>[],
      resource: [] as OutgoingMessage<SourceTopicId>[],
    };
    for (const e of events) {
      // Events handed in directly (replay, benchmarks) are redacted here; a worker's were already.
      let value = redact ? redact.redactEvent(e) : e;
      if (value.ingested_at === undefined) {
        // A frozen event (a test fixture, say) cannot take the stamp: it gets a copy.
        if (Object.isExtensible(value)) (value as { ingested_at?: number }).ingested_at = now;
        else value = { ...value, ingested_at: now };
      }
      // Serialized here once, for the size bound; the bus reuses it rather than serializing again.
      let serialized = JSON.stringify(value);
      if (!fitsIn(serialized, this.maxEventBytes)) {
        if (Object.isFrozen(value) || Object.isFrozen(value.attributes)) value = structuredClone(value);
        serialized = fitEvent(value, serialized, this.maxEventBytes);
      }
      bySource[value.source].push({ key: ingestKey(value), value, serialized });
    }
    return SOURCES.filter((s) => bySource[s].length > 0).map((s) => ({ topic: SOURCE_TOPIC[s], messages: bySource[s] }));
  }

  /** Stops the parse workers. Idempotent. */
  async shutdown(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    await pool?.shutdown();
  }
}

/**
 * A worker's reply as a prepared body. The values are parsed from the worker's own serialization
 * of events it has just validated with the canonical schema (same code, same process), so they
 * are not validated a second time: that would cost what the worker saved.
 */
function fromWorker(format: string, r: ParsedBody): PreparedBody {
  return {
    format,
    accepted: r.accepted,
    rejected: r.rejected,
    rejectedCount: r.rejectedCount,
    records: r.records,
    skipped: r.skipped,
    topics: r.topics.map((t) => {
      const pairs = JSON.parse(t.array) as Array<[string, CanonicalEvent]>;
      return { topic: t.topic, wal: t.wal, messages: pairs.map(([key, value]) => ({ key, value })) };
    }),
  };
}
