import type { Incident, NotificationKind } from '../../shared/alert.ts';
import type { IncidentsConfig } from '../../shared/config.ts';
import { severityRank, type Finding, type Severity } from '../../shared/finding.ts';
import { matchesAnyGlob } from '../../shared/glob.ts';
import { contentHash } from '../../shared/ids.ts';
import { BoundedMap } from '../../shared/lru.ts';
import type { SuppressionMatcher } from './suppression.ts';

/** Finding ids remembered per incident: skips redelivered findings, and lists the latest. */
const RECENT_FINDINGS = 50;
/** Framework tags kept per incident. */
const MAX_TAGS = 64;

/** What the manager needs of a channel to route notifications. */
export interface ChannelRouting {
  name: string;
  minSeverity: Severity;
  route: { detectors: readonly string[]; tags: readonly string[]; agents: readonly string[] };
}

/** One channel to tell about one incident change. */
export interface Notification {
  incident: Incident;
  channel: string;
  kind: NotificationKind;
  /** The incident's notification sequence number (part of the outbox id). */
  seq: number;
}

/** Result of feeding findings or sweeping. */
export interface IncidentChanges {
  /** Incidents whose state changed (to store). */
  changed: Incident[];
  notifications: Notification[];
  /** Findings whose notifications a suppression muted. */
  suppressed: number;
  /** Incidents opened. */
  opened: number;
}

/**
 * Groups findings into incidents by fingerprint and decides who is told what. Pure state machine
 * (no I/O): the stage loads missing incidents from storage first ({@link missing} /
 * {@link remember}) and stores what comes back in `changed`.
 *
 * Lifecycle: a finding with an unseen fingerprint (or one whose incident resolved) opens an
 * incident; later ones update it (count, last seen, highest severity, tags); {@link sweep}
 * resolves incidents with no finding for `resolveAfterMs`. Per channel: the first notice is a
 * `trigger`, a severity above what the channel was last told is an `escalate`, anything else an
 * `update`; a channel that was told gets the `resolve`. Suppressed findings update the incident
 * but tell no channel.
 */
export class IncidentManager {
  private readonly open: BoundedMap<string, Incident>;
  private lastTime = 0;

  constructor(
    private readonly cfg: Readonly<IncidentsConfig>,
    private readonly channels: readonly ChannelRouting[],
    private readonly suppressions: SuppressionMatcher,
    private readonly now: () => number = Date.now,
  ) {
    this.open = new BoundedMap(cfg.maxInMemory);
  }

  /** Incidents held in memory. */
  get size(): number {
    return this.open.size;
  }

  /** Open incidents evicted from memory (reloaded from storage when their fingerprint fires again). */
  get evicted(): number {
    return this.open.evicted;
  }

  /** The incident fingerprint of a finding: a hash of the configured grouping fields. */
  fingerprint(f: Finding): string {
    const parts = this.cfg.groupBy.map((field) => {
      switch (field) {
        case 'detector':
          return f.detector;
        case 'rule':
          return f.rule;
        case 'task':
          return f.task_id;
        case 'agent':
          return f.agent_id;
        case 'workload':
          return f.workload_id;
        case 'identity':
          return f.join_keys.credential_id ?? f.join_keys.principal ?? f.join_keys.workload_id ?? f.workload_id;
      }
    });
    return contentHash(`${this.cfg.groupBy.join(',')}\u0000${parts.join('\u0000')}`);
  }

  /** Fingerprints of these findings with no incident in memory (to look up in storage). */
  missing(findings: readonly Finding[]): string[] {
    const out = new Set<string>();
    for (const f of findings) {
      const fp = this.fingerprint(f);
      if (!this.open.has(fp)) out.add(fp);
    }
    return [...out];
  }

  /** Seeds incidents loaded from storage; resolved ones are kept only to skip redelivered findings. */
  remember(incidents: readonly Incident[]): void {
    for (const i of incidents) if (!this.open.has(i.fingerprint)) this.open.set(i.fingerprint, i);
  }

  /** Drops incidents from memory (their next finding reloads them from storage). */
  forget(fingerprints: readonly string[]): void {
    for (const fp of fingerprints) this.open.delete(fp);
  }

  /** A strictly increasing wall clock, so every stored version of an incident is newer than the last. */
  private tick(prev = 0): number {
    this.lastTime = Math.max(this.now(), this.lastTime + 1, prev + 1);
    return this.lastTime;
  }

  /** Applies findings in order. `resourcesOf` gives the resources a finding's evidence touched. */
  apply(findings: readonly Finding[], resourcesOf: (f: Finding) => readonly string[] = () => []): IncidentChanges {
    const touched = new Map<string, Incident>();
    /** Per incident id: did any unsuppressed finding arrive in this call? */
    const audible = new Set<string>();
    let suppressedCount = 0;
    let opened = 0;
    for (const f of findings) {
      const fp = this.fingerprint(f);
      let inc = touched.get(fp) ?? this.open.get(fp);
      if (inc && inc.recent_findings.includes(f.id)) continue;
      const now = this.now();
      const suppression = this.suppressions.empty ? undefined : this.suppressions.match(f, resourcesOf(f), now);
      if (!inc || inc.status === 'resolved') {
        opened++;
        inc = {
          id: contentHash(`${fp}\u0000${f.id}`),
          fingerprint: fp,
          status: 'open',
          severity: f.severity,
          detector: f.detector,
          rule: f.rule,
          title: f.title,
          summary: f.summary,
          task_id: f.task_id,
          agent_id: f.agent_id,
          workload_id: f.workload_id,
          finding_count: 0,
          first_seen: f.time,
          last_seen: f.time,
          opened_at: now,
          updated_at: 0,
          resolved_at: 0,
          recent_findings: [],
          evidence: f.evidence,
          tags: [],
          suppressed: '',
          notified: {},
          seq: 0,
        };
      } else {
        inc = { ...inc };
      }
      inc.finding_count += 1;
      inc.first_seen = Math.min(inc.first_seen, f.time);
      inc.last_seen = Math.max(inc.last_seen, f.time);
      if (severityRank(f.severity) >= severityRank(inc.severity)) {
        inc.severity = f.severity;
        inc.title = f.title;
        inc.summary = f.summary;
        inc.evidence = f.evidence;
        inc.rule = f.rule;
      }
      if (!inc.agent_id) inc.agent_id = f.agent_id;
      if (!inc.workload_id) inc.workload_id = f.workload_id;
      inc.tags = [...new Set([...inc.tags, ...f.tags])].slice(0, MAX_TAGS);
      inc.recent_findings = [...inc.recent_findings, f.id].slice(-RECENT_FINDINGS);
      inc.suppressed = suppression ? suppression.reason : '';
      if (suppression) suppressedCount++;
      else audible.add(inc.id);
      inc.updated_at = this.tick(inc.updated_at);
      touched.set(fp, inc);
    }

    const notifications: Notification[] = [];
    for (const [fp, inc] of touched) {
      if (audible.has(inc.id)) {
        const notified = { ...inc.notified };
        for (const ch of this.channels) {
          if (!this.routes(ch, inc)) continue;
          const told = notified[ch.name];
          const kind: NotificationKind = told === undefined ? 'trigger' : severityRank(inc.severity) > severityRank(told) ? 'escalate' : 'update';
          notified[ch.name] = inc.severity;
          inc.seq += 1;
          notifications.push({ incident: inc, channel: ch.name, kind, seq: inc.seq });
        }
        inc.notified = notified;
      }
      this.open.set(fp, inc);
    }
    return { changed: [...touched.values()], notifications, suppressed: suppressedCount, opened };
  }

  /** Resolves open incidents with no finding for `resolveAfterMs`; tells the channels that were told. */
  sweep(): IncidentChanges {
    const cutoff = this.now() - this.cfg.resolveAfterMs;
    const changed: Incident[] = [];
    const notifications: Notification[] = [];
    for (const inc of [...this.open.values()]) {
      if (inc.status !== 'open' || inc.updated_at > cutoff) continue;
      const updated_at = this.tick(inc.updated_at);
      const resolved: Incident = { ...inc, status: 'resolved', resolved_at: updated_at, updated_at };
      for (const ch of Object.keys(inc.notified)) {
        resolved.seq += 1;
        notifications.push({ incident: resolved, channel: ch, kind: 'resolve', seq: resolved.seq });
      }
      changed.push(resolved);
      this.open.set(inc.fingerprint, resolved);
    }
    return { changed, notifications, suppressed: 0, opened: 0 };
  }

  private routes(ch: ChannelRouting, inc: Incident): boolean {
    if (severityRank(inc.severity) < severityRank(ch.minSeverity)) return false;
    const r = ch.route;
    if (r.detectors.length > 0 && !matchesAnyGlob(r.detectors, inc.detector)) return false;
    if (r.agents.length > 0 && !matchesAnyGlob(r.agents, inc.agent_id)) return false;
    if (r.tags.length > 0 && !inc.tags.some((t) => matchesAnyGlob(r.tags, t))) return false;
    return true;
  }
}
