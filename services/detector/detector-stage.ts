import { deadLetterUndecodable } from '../dead-letters.ts';
import type { Bus, MessageBatch, Subscription } from '../../shared/bus/bus.ts';
import type { Finding } from '../../shared/finding.ts';
import type { Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { Mutex } from '../../shared/mutex.ts';
import { GROUP, TOPIC } from '../../shared/names.ts';
import type { DetectorEngine } from '../../detectors/engine.ts';
import type { Store } from '../storage/store.ts';

/** Dependencies of the detector stage. */
export interface DetectorStageDeps {
  bus: Bus;
  store: Store;
  engine: DetectorEngine;
  log: Logger;
  metrics: MetricsRegistry;
}

/**
 * Consumes resolved timeline events, runs the detector engine on each as it arrives, stores and
 * publishes the findings, then commits. Poison timeline messages are dead-lettered.
 */
export class DetectorStage {
  private sub?: Subscription;
  private readonly mutex = new Mutex();
  private readonly log: Logger;
  private stopped = false;

  constructor(private readonly deps: DetectorStageDeps) {
    this.log = deps.log.child({ component: 'detector' });
    deps.metrics.gauge('runtrail_detector_tasks', 'Task timelines held by the detector engine').collect(() => deps.engine.taskCount);
  }

  async start(): Promise<void> {
    this.sub = await this.deps.bus.subscribe({
      groupId: GROUP.detector,
      topics: [TOPIC.timeline],
      fromBeginning: true,
      onBatch: (batch) => this.mutex.run(() => this.handle(batch)),
    });
  }

  private async handle(batch: MessageBatch<typeof TOPIC.timeline>): Promise<void> {
    const { store, bus, engine, metrics } = this.deps;
    metrics.counter('runtrail_events_in_total', 'Events consumed, by stage and topic').inc({ stage: 'detector', topic: batch.topic }, batch.messages.length);
    await deadLetterUndecodable('detector', batch.undecodable, { store, bus, metrics });
    const findings = engine.process(batch.messages.map((m) => m.value));
    await this.emit(findings);
    await this.sub?.commit([{ topic: batch.topic, partition: batch.partition, offset: batch.nextOffset }]);
  }

  /** Runs close-time rules for tasks the correlator closed. */
  async closeTasks(taskIds: readonly string[]): Promise<void> {
    if (taskIds.length === 0) return;
    await this.mutex.run(() => this.emit(this.deps.engine.close(taskIds)));
  }

  private async emit(findings: Finding[]): Promise<void> {
    if (findings.length === 0) return;
    const now = Date.now();
    const stamped = findings.map((f) => ({ ...f, emitted_at: f.emitted_at ?? now }));
    await this.deps.store.insertFindings(stamped);
    await this.deps.bus.publish(TOPIC.findings, stamped.map((f) => ({ key: f.task_id || f.id, value: f })));
    this.deps.metrics.counter('runtrail_findings_total', 'Findings emitted, by detector and severity');
    for (const f of stamped) {
      this.deps.metrics.counter('runtrail_findings_total', 'Findings emitted, by detector and severity').inc({ detector: f.detector, severity: f.severity });
    }
    this.log.debug({ count: stamped.length }, 'findings emitted');
  }

  async lag(): Promise<number> {
    return this.sub ? this.sub.lag() : 0;
  }

  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.sub?.shutdown();
  }
}
