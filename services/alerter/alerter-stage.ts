import { deadLetterUndecodable } from '../dead-letters.ts';
import type { EvidenceSummary, Incident } from '../../shared/alert.ts';
import type { Bus, MessageBatch, Subscription } from '../../shared/bus/bus.ts';
import { JsonlChannelSchema, KafkaChannelSchema, type AlertingConfig, type ChannelConfig } from '../../shared/config.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Finding } from '../../shared/finding.ts';
import { BoundedMap } from '../../shared/lru.ts';
import { RateLimitedLog, type Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { Mutex } from '../../shared/mutex.ts';
import { sleep } from '../../shared/sleep.ts';
import { GROUP, TOPIC } from '../../shared/names.ts';
import { retryUntilStopped } from '../../shared/retry.ts';
import type { Suppression } from '../../detectors/policy.ts';
import type { Store, StoredEvidence } from '../storage/store.ts';
import type { Channel } from './channels/channel.ts';
import { createChannels } from './channels/registry.ts';
import { Outbox } from './delivery/outbox.ts';
import { IncidentManager, type IncidentChanges } from './incident-manager.ts';
import { composeMessage } from './message.ts';
import { SuppressionMatcher } from './suppression.ts';

/** Evidence ids per finding looked up for resource suppressions. */
const MAX_EVIDENCE_LOOKUP = 50;

/**
 * Waits before looking again for evidence events not found yet, ms. The correlator publishes an
 * event as soon as it is resolved and stores it in parallel, so a finding can reach the alerter
 * before its evidence is stored (one storage batch, `storage.batchMaxDelayMs`, later).
 */
const EVIDENCE_RETRY_MS = [100, 250, 500] as const;

/**
 * Evidence summaries kept from findings (`evidence_events`) for the notifications composed from
 * them: those of the batch at hand, and later updates or resolutions of the same incidents. About
 * 300 B each; a miss costs one storage read.
 */
const EVIDENCE_CACHE_SIZE = 20_000;

/** How the alerter runs, which decides the default channels (see {@link effectiveChannels}). */
export type AlerterMode = 'embedded' | 'replay' | 'distributed';

/**
 * The channels in force: the configured ones, else the mode's default. Embedded `start`: JSON lines
 * in `<dataDir>/alerts.jsonl` (a server's stdout is its log). `replay`: none, so replays of old
 * files do not notify anyone unless asked to. Distributed: JSON lines on stdout (what the alerter
 * did before channels existed) and the alerts topic.
 */
export function effectiveChannels(cfg: Readonly<AlertingConfig>, mode: AlerterMode): ChannelConfig[] {
  if (cfg.channels) return [...cfg.channels];
  switch (mode) {
    case 'embedded':
      return [JsonlChannelSchema.parse({ type: 'jsonl', path: 'alerts.jsonl' })];
    case 'replay':
      return [];
    case 'distributed':
      return [JsonlChannelSchema.parse({ type: 'jsonl', path: '-' }), KafkaChannelSchema.parse({ type: 'kafka' })];
  }
}

/** Dependencies of the alerter stage. */
export interface AlerterStageDeps {
  bus: Bus;
  store: Store;
  cfg: Readonly<AlertingConfig>;
  /** The channels to deliver to (see {@link effectiveChannels}). */
  channels: readonly ChannelConfig[];
  /** The policy's suppressions. */
  suppressions: readonly Suppression[];
  dataDir: string;
  log: Logger;
  metrics: MetricsRegistry;
  /** Where a `jsonl` channel with `path: "-"` writes; default stdout. */
  stdout?: (line: string) => void;
  now?: () => number;
  random?: () => number;
}

/**
 * Consumes findings, groups them into incidents, and hands notifications to the durable outbox.
 * Per batch: load unknown incidents from storage, apply the findings, look up the evidence events
 * of the incidents to notify, store the outbox entries and the incidents, then commit. A periodic
 * sweep resolves quiet incidents. Undecodable findings are dead-lettered like in the other stages.
 */
export class AlerterStage {
  private sub: Subscription | undefined;
  private readonly mutex = new Mutex();
  private readonly log: Logger;
  private readonly manager: IncidentManager;
  private readonly suppressions: SuppressionMatcher;
  private readonly channels: Channel[];
  readonly outbox: Outbox;
  private sweepTimer: NodeJS.Timeout | undefined;
  private stopped: Promise<void> | undefined;
  private readonly retryLog: RateLimitedLog;
  private readonly now: () => number;
  private readonly m;
  /** Evidence summaries the findings carried, by event id. */
  private readonly evidence = new BoundedMap<string, EvidenceSummary>(EVIDENCE_CACHE_SIZE);

  constructor(private readonly deps: AlerterStageDeps) {
    this.log = deps.log.child({ component: 'alerter' });
    this.retryLog = new RateLimitedLog(this.log, 'alerter storage call failed; retrying');
    this.now = deps.now ?? Date.now;
    this.channels = createChannels(deps.channels, {
      bus: deps.bus,
      requestTimeoutMs: deps.cfg.delivery.requestTimeoutMs,
      dataDir: deps.dataDir,
      stdout: deps.stdout,
      now: this.now,
    });
    this.suppressions = new SuppressionMatcher(deps.suppressions);
    this.manager = new IncidentManager(deps.cfg.incidents, this.channels, this.suppressions, this.now);
    this.outbox = new Outbox({
      store: deps.store,
      channels: this.channels,
      cfg: deps.cfg.delivery,
      updateIntervalMs: deps.cfg.incidents.updateIntervalMs,
      log: deps.log,
      metrics: deps.metrics,
      now: this.now,
      random: deps.random,
    });
    const mx = deps.metrics;
    this.m = {
      incidents: mx.counter('runtrail_incidents_total', 'Incident lifecycle changes (opened, resolved)'),
      notifications: mx.counter('runtrail_alert_notifications_total', 'Notifications created, by channel and kind'),
      suppressed: mx.counter('runtrail_alert_suppressed_total', 'Findings whose notifications a policy suppression muted'),
      evidence: mx.counter(
        'runtrail_alert_evidence_total',
        'Evidence events shown in messages, by where their summary came from (finding, storage, or missing: not stored yet or expired)',
      ),
    };
    mx.gauge('runtrail_incidents_in_memory', 'Incidents held by the alerter').collect(() => this.manager.size);
  }

  /** The channels in force (names, for logs and tests). */
  get channelNames(): string[] {
    return this.channels.map((c) => c.name);
  }

  async start(): Promise<void> {
    this.manager.remember(await this.deps.store.listIncidents({ status: 'open', limit: this.deps.cfg.incidents.maxInMemory }));
    await this.outbox.start();
    this.sub = await this.deps.bus.subscribe({
      groupId: GROUP.alerter,
      topics: [TOPIC.findings],
      fromBeginning: true,
      onBatch: (batch) => this.mutex.run(() => this.handle(batch)),
    });
    const every = Math.max(10, Math.min(60_000, Math.floor(this.deps.cfg.incidents.resolveAfterMs / 4)));
    this.sweepTimer = setInterval(() => void this.sweep(), every);
    this.sweepTimer.unref();
    this.log.info({ channels: this.channelNames }, 'alerter started');
  }

  private async handle(batch: MessageBatch<typeof TOPIC.findings>): Promise<void> {
    const { store, bus, metrics } = this.deps;
    await deadLetterUndecodable('alerter', batch.undecodable, { store, bus, metrics });
    await this.process(batch.messages.map((m) => m.value));
    await this.sub?.commit([{ topic: batch.topic, partition: batch.partition, offset: batch.nextOffset }]);
  }

  /** Retries a storage call until it succeeds or the stage stops (like the other stages' outputs). */
  private retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return retryUntilStopped(fn, { baseMs: 200, stopped: () => this.stopped !== undefined, log: this.retryLog, what });
  }

  /** Applies findings (in order) and stores what they change. */
  async process(findings: readonly Finding[]): Promise<void> {
    if (findings.length === 0) return;
    for (const f of findings) for (const e of f.evidence_events ?? []) this.evidence.set(e.event_id, e);
    const missing = this.manager.missing(findings);
    if (missing.length > 0) this.manager.remember(await this.retrying('load incidents', () => this.deps.store.incidentsByFingerprint(missing)));
    let resources = new Map<string, string[]>();
    if (this.suppressions.needsResources) {
      const stored = await this.lookupEvidence(findings.flatMap((f) => f.evidence.slice(0, MAX_EVIDENCE_LOOKUP)));
      resources = new Map(stored.map((e) => [e.summary.event_id, e.resources]));
    }
    const changes = this.manager.apply(findings, (f) => f.evidence.flatMap((id) => resources.get(id) ?? []));
    try {
      await this.emit(changes);
    } catch (err) {
      // Only when stopping: the batch stays uncommitted and is redelivered. Forget what it did to
      // the incidents, so the redelivery starts from the stored state instead of skipping the
      // findings as already counted.
      this.manager.forget(changes.changed.map((i) => i.fingerprint));
      throw err;
    }
    this.m.incidents.inc({ event: 'opened' }, changes.opened);
    this.m.suppressed.inc({}, changes.suppressed);
  }

  /** Resolves quiet incidents (also run by a timer). */
  sweep(): Promise<void> {
    return this.mutex.run(async () => {
      if (this.stopped) return;
      const changes = this.manager.sweep();
      try {
        await this.emit(changes);
      } catch (err) {
        // Only when stopping; the open incidents are loaded again at the next start.
        this.manager.forget(changes.changed.map((i) => i.fingerprint));
        this.log.warn({ err: errorMessage(err) }, 'incident sweep abandoned at shutdown');
        return;
      }
      this.m.incidents.inc({ event: 'resolved' }, changes.changed.length);
    });
  }

  private async emit(changes: IncidentChanges): Promise<void> {
    if (changes.changed.length === 0) return;
    const { store, cfg } = this.deps;
    const notified = new Map<string, Incident>();
    for (const n of changes.notifications) notified.set(n.incident.id, n.incident);
    const evidence = notified.size > 0 && cfg.incidents.evidenceLimit > 0 ? await this.evidenceOf([...notified.values()]) : [];
    const now = this.now();
    const outgoing = changes.notifications.map((n) => {
      this.m.notifications.inc({ channel: n.channel, kind: n.kind });
      return {
        incidentId: n.incident.id,
        fingerprint: n.incident.fingerprint,
        channel: n.channel,
        kind: n.kind,
        seq: n.seq,
        message: composeMessage(n.incident, n.kind, evidence, { apiBaseUrl: cfg.apiBaseUrl, evidenceLimit: cfg.incidents.evidenceLimit, now }),
      };
    });
    // Outbox first: were the process to stop before the incidents are stored, the redelivered
    // findings recreate the same entries (same ids) instead of losing them.
    await this.retrying('store outbox entries', () => this.outbox.add(outgoing));
    await this.retrying('store incidents', () => store.upsertIncidents(changes.changed));
  }

  /**
   * Summaries of the evidence the incidents' messages show: from their findings where those carried
   * them, else read from storage (evidence the detector's task window no longer held, or incidents
   * loaded after a restart).
   */
  private async evidenceOf(incidents: readonly Incident[]): Promise<EvidenceSummary[]> {
    const limit = this.deps.cfg.incidents.evidenceLimit;
    const out: EvidenceSummary[] = [];
    const missing = new Set<string>();
    for (const inc of incidents) {
      for (const id of inc.evidence.slice(0, limit)) {
        const s = this.evidence.get(id);
        if (s) out.push(s);
        else missing.add(id);
      }
    }
    this.m.evidence.inc({ source: 'finding' }, out.length);
    if (missing.size === 0) return out;
    const stored = await this.lookupEvidence([...missing]);
    for (const { summary } of stored) {
      this.evidence.set(summary.event_id, summary);
      out.push(summary);
    }
    this.m.evidence.inc({ source: 'storage' }, stored.length);
    this.m.evidence.inc({ source: 'missing' }, Math.max(0, missing.size - stored.length));
    return out;
  }

  /** Stored evidence events by id; looks again a few times while some are not stored yet. */
  private async lookupEvidence(ids: readonly string[]): Promise<StoredEvidence[]> {
    const want = [...new Set(ids)];
    const look = (): Promise<StoredEvidence[]> => this.retrying('look up evidence', () => this.deps.store.evidenceByIds(want));
    let found = await look();
    for (const wait of EVIDENCE_RETRY_MS) {
      if (found.length >= want.length || this.stopped) break;
      await sleep(wait);
      found = await look();
    }
    return found;
  }

  /** Findings published but not yet consumed. */
  async lag(): Promise<number> {
    return this.sub ? this.sub.lag() : 0;
  }

  /** True when every consumed finding is handled and no delivery is due or on the wire. */
  idle(): boolean {
    return this.outbox.idle();
  }

  /** Stops consuming and delivering; pending deliveries stay in the outbox. Idempotent. */
  shutdown(): Promise<void> {
    this.stopped ??= (async () => {
      if (this.sweepTimer) clearInterval(this.sweepTimer);
      await this.sub?.shutdown();
      await this.mutex.run(async () => undefined);
      await this.outbox.shutdown();
      this.log.info('alerter stopped');
    })();
    return this.stopped;
  }
}
