import type { Bus, OutgoingMessage } from '../../shared/bus/bus.ts';
import type { CanonicalEvent } from '../../shared/event.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { SOURCE_TOPIC } from '../../shared/names.ts';
import type { Adapter, Rejection } from './adapters/adapter.ts';

/** Outcome of ingesting one body. */
export interface IngestResult {
  /** Events accepted and durable on the bus. */
  accepted: number;
  rejected: Rejection[];
  records: number;
  skipped: number;
}

/**
 * Partition key for an ingest topic: the most specific correlation key the event carries, so
 * related events tend to share a partition (and keep their relative order).
 */
export function ingestKey(e: CanonicalEvent): string {
  return e.task_id ?? e.credential_id ?? e.credential?.id ?? e.trace_id ?? e.workload_id ?? e.event_id;
}

/**
 * Converts a body with its adapter and publishes the events to the per-source topics. Resolves
 * only once the bus holds them durably: the caller acknowledges the shipper after this returns.
 * Shared by the HTTP collector and `runtrail replay`.
 */
export class Ingestor {
  constructor(
    private readonly bus: Bus,
    private readonly metrics: MetricsRegistry,
  ) {}

  async ingest(adapter: Adapter, body: Buffer, contentType: string): Promise<IngestResult> {
    const parsed = adapter.parse(body, contentType);
    await this.publish(parsed.events);
    const m = this.metrics;
    m.counter('runtrail_collector_records_total', 'Records read by the collector, by format').inc({ format: adapter.format }, parsed.records);
    m.counter('runtrail_collector_accepted_total', 'Events accepted by the collector, by format').inc({ format: adapter.format }, parsed.events.length);
    if (parsed.rejected.length > 0) {
      m.counter('runtrail_collector_rejected_total', 'Records rejected by the collector, by format').inc({ format: adapter.format }, parsed.rejected.length);
    }
    return { accepted: parsed.events.length, rejected: parsed.rejected, records: parsed.records, skipped: parsed.skipped };
  }

  /** Publishes canonical events to their source topics; stamps arrival time. */
  async publish(events: readonly CanonicalEvent[]): Promise<void> {
    if (events.length === 0) return;
    const now = Date.now();
    const bySource = {
      agent: [] as OutgoingMessage<typeof SOURCE_TOPIC.agent>[],
      workload: [] as OutgoingMessage<typeof SOURCE_TOPIC.workload>[],
      resource: [] as OutgoingMessage<typeof SOURCE_TOPIC.resource>[],
    };
    for (const e of events) {
      const value = e.ingested_at === undefined ? { ...e, ingested_at: now } : e;
      bySource[e.source].push({ key: ingestKey(e), value });
    }
    // A retry after a partial failure re-publishes everything; event ids make that idempotent downstream.
    await Promise.all([
      this.bus.publish(SOURCE_TOPIC.agent, bySource.agent),
      this.bus.publish(SOURCE_TOPIC.workload, bySource.workload),
      this.bus.publish(SOURCE_TOPIC.resource, bySource.resource),
    ]);
  }
}
