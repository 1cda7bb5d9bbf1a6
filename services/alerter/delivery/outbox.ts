import { AlertMessageSchema, type AlertMessage, type NotificationKind, type OutboxEntry } from '../../../shared/alert.ts';
import type { DeliveryConfig } from '../../../shared/config.ts';
import { errorMessage } from '../../../shared/errors.ts';
import { RateLimitedLog, type Logger } from '../../../shared/logger.ts';
import { retryUntilStopped } from '../../../shared/retry.ts';
import { BoundedMap } from '../../../shared/lru.ts';
import type { MetricsRegistry } from '../../../shared/metrics.ts';
import { TOPIC } from '../../../shared/names.ts';
import type { Store } from '../../storage/store.ts';
import { DeliveryError, type Channel } from '../channels/channel.ts';
import { backoffMs } from './backoff.ts';
import { BREAKER_STATE, CircuitBreaker } from './circuit-breaker.ts';
import { RateLimiter } from './rate-limiter.ts';

/** Remembered Slack refs and last-delivery times, per (incident, channel). */
const MEMO_SIZE = 20_000;

/** A notification to deliver. */
export interface OutgoingNotification {
  incidentId: string;
  fingerprint: string;
  channel: string;
  kind: NotificationKind;
  /** The incident's notification sequence number: makes the outbox id. */
  seq: number;
  message: AlertMessage;
}

/** Dependencies of the {@link Outbox}. */
export interface OutboxDeps {
  store: Store;
  channels: readonly Channel[];
  cfg: Readonly<DeliveryConfig>;
  /** Least gap between update notifications of one incident on one channel, ms. */
  updateIntervalMs: number;
  log: Logger;
  metrics: MetricsRegistry;
  now?: () => number;
  random?: () => number;
}

/** One channel's queue and delivery state. Deliveries of a channel go out one at a time, in order. */
interface Lane {
  channel: Channel;
  /** Pending entries held in memory, oldest first. */
  entries: OutboxEntry[];
  inflight: OutboxEntry | undefined;
  running: Promise<void> | undefined;
  breaker: CircuitBreaker;
  limiter: RateLimiter;
  /** A 429's Retry-After holds the whole channel back until then (epoch ms). */
  pausedUntil: number;
  timer: NodeJS.Timeout | undefined;
  /**
   * More pending entries are stored than held (queue full). New entries then go to storage only,
   * so they cannot overtake the spilled ones; the queue reloads (oldest first) once it is down to
   * half.
   */
  spilled: boolean;
  reloading: boolean;
  /** The last load of stored entries failed: nothing goes out (it could overtake them) until one succeeds. */
  needsReload: boolean;
  /** When to try that load again (epoch ms). */
  reloadAt: number;
}

const KIND_STRENGTH: Readonly<Record<NotificationKind, number>> = { update: 0, escalate: 1, trigger: 2, resolve: 3 };

/**
 * The durable outbox and its delivery workers. A notification is stored (`alert_outbox`, status
 * `pending`) before its first attempt, and every attempt's outcome is stored, so a restart resumes
 * what was pending with its attempt count and schedule. Per channel: one delivery at a time in
 * creation order (an incident's notifications never overtake each other, which Slack's update in
 * place and PagerDuty's trigger/resolve need); an entry waiting for its retry does not hold back
 * other incidents. Retries back off exponentially with jitter, a 429's Retry-After holds the
 * channel back, a circuit breaker stops hammering a failing channel, and a token bucket spaces
 * deliveries out; all of these only delay, never drop. An entry that runs out of attempts, or that
 * the receiver rejects for good (4xx), becomes a dead letter: status `dead` with its reason, a row
 * in `alerts` (status `dead`) and in `dead_letters`, and a metric.
 *
 * A pending update of an incident that has not gone out yet absorbs newer ones (same id, latest
 * message), so a storm of findings becomes one message per `updateIntervalMs`.
 *
 * Delivery is at least once: a crash between a successful send and storing its outcome sends again.
 */
export class Outbox {
  private readonly lanes = new Map<string, Lane>();
  /** Entries being rewritten by {@link add}; workers skip them until stored. */
  private readonly held = new Set<string>();
  /** Status writes of delivered entries still on their way to storage. */
  private readonly writes = new Set<Promise<void>>();
  /** Ids of the entries those writes record. */
  private readonly recording = new Set<string>();
  private readonly refs = new BoundedMap<string, string>(MEMO_SIZE);
  private readonly lastSent = new BoundedMap<string, number>(MEMO_SIZE);
  private readonly log: Logger;
  private readonly retryLog: RateLimitedLog;
  private readonly now: () => number;
  private lastVersion = 0;
  private stopped = false;
  private readonly m;

  constructor(private readonly deps: OutboxDeps) {
    this.log = deps.log.child({ component: 'alerter' });
    this.retryLog = new RateLimitedLog(this.log, 'storing an alert delivery outcome failed; retrying');
    this.now = deps.now ?? Date.now;
    const now = this.now();
    for (const ch of deps.channels) {
      this.lanes.set(ch.name, {
        channel: ch,
        entries: [],
        inflight: undefined,
        running: undefined,
        breaker: new CircuitBreaker(deps.cfg.breakerThreshold, deps.cfg.breakerOpenMs),
        limiter: new RateLimiter(ch.ratePerMinute, ch.burst, now),
        pausedUntil: 0,
        timer: undefined,
        spilled: false,
        reloading: false,
        needsReload: false,
        reloadAt: 0,
      });
    }
    const mx = deps.metrics;
    this.m = {
      deliveries: mx.counter('runtrail_alert_deliveries_total', 'Alert delivery attempts, by channel and outcome (delivered, retry, dead)'),
      deadLetters: mx.counter('runtrail_alert_dead_letters_total', 'Alert deliveries given up (dead letters), by channel'),
      rateLimited: mx.counter('runtrail_alert_rate_limited_total', 'Times a due delivery waited for its channel rate limit, by channel'),
      breakerOpened: mx.counter('runtrail_alert_breaker_opened_total', 'Times a channel circuit breaker opened, by channel'),
    };
    mx.gauge('runtrail_alert_queue_depth', 'Pending alert deliveries held in memory, by channel').collect(() =>
      [...this.lanes.values()].map((l) => [{ channel: l.channel.name }, l.entries.length]),
    );
    mx.gauge('runtrail_alert_breaker_state', 'Channel circuit breaker: 0 closed, 1 open, 2 half-open').collect(() =>
      [...this.lanes.values()].map((l) => [{ channel: l.channel.name }, BREAKER_STATE[l.breaker.state]]),
    );
  }

  /** Loads the stored pending entries of every configured channel and starts delivering them. */
  async start(): Promise<void> {
    for (const lane of this.lanes.values()) await this.reload(lane);
  }

  /** A row version above every version this process (or an earlier one, by the clock) wrote. */
  private version(): number {
    this.lastVersion = Math.max(this.now() * 1000, this.lastVersion + 1);
    return this.lastVersion;
  }

  /** Stores notifications as pending entries (merging into queued updates), then delivers them. */
  async add(notifications: readonly OutgoingNotification[]): Promise<void> {
    const now = this.now();
    const rows: OutboxEntry[] = [];
    const merged = new Map<string, OutboxEntry>();
    const fresh: Array<{ lane: Lane; entry: OutboxEntry }> = [];
    for (const n of notifications) {
      const lane = this.lanes.get(n.channel);
      if (!lane || !lane.channel.accepts(n.kind)) continue;
      const payload = JSON.stringify(n.message);
      const key = `${n.incidentId}|${n.channel}`;
      const target = n.kind === 'resolve' ? undefined : this.mergeTarget(lane, n.incidentId);
      if (target) {
        // The merged entry keeps the stronger kind (a trigger not sent yet stays a trigger) and
        // carries the newest message, relabelled with that kind.
        const kind = KIND_STRENGTH[n.kind] > KIND_STRENGTH[target.kind] ? n.kind : target.kind;
        const next = target.attempts > 0 ? target.next_attempt_at : this.firstAttemptAt(kind, key, now);
        const row: OutboxEntry = {
          ...(merged.get(target.id) ?? target),
          kind,
          payload: JSON.stringify({ ...n.message, kind }),
          next_attempt_at: next,
          version: this.version(),
        };
        this.held.add(target.id);
        merged.set(target.id, row);
        continue;
      }
      const id = `${n.incidentId}:${n.channel}:${n.seq}`;
      // A redelivered batch recreates the ids it created before; the entry is already here.
      if (lane.inflight?.id === id || lane.entries.some((e) => e.id === id)) continue;
      const entry: OutboxEntry = {
        id,
        incident_id: n.incidentId,
        fingerprint: n.fingerprint,
        channel: n.channel,
        kind: n.kind,
        status: 'pending',
        attempts: 0,
        next_attempt_at: this.firstAttemptAt(n.kind, key, now),
        last_error: '',
        ref: '',
        payload,
        created_at: now,
        version: this.version(),
      };
      fresh.push({ lane, entry });
    }
    rows.push(...merged.values(), ...fresh.map((f) => f.entry));
    if (rows.length === 0) return;
    try {
      await this.deps.store.upsertOutbox(rows);
    } finally {
      for (const id of merged.keys()) this.held.delete(id);
    }
    for (const row of merged.values()) {
      const lane = this.lanes.get(row.channel);
      const i = lane?.entries.findIndex((e) => e.id === row.id) ?? -1;
      if (lane && i >= 0) lane.entries[i] = row;
    }
    for (const { lane, entry } of fresh) {
      if (lane.spilled || lane.needsReload || lane.entries.length >= this.deps.cfg.maxQueued) lane.spilled = true;
      else lane.entries.push(entry);
    }
    for (const lane of this.lanes.values()) this.drive(lane);
  }

  /** The queued, not yet attempted-now entry of the incident that a new notification can merge into. */
  private mergeTarget(lane: Lane, incidentId: string): OutboxEntry | undefined {
    for (let i = lane.entries.length - 1; i >= 0; i--) {
      const e = lane.entries[i] as OutboxEntry;
      if (e.incident_id !== incidentId) continue;
      // Only the newest entry of the incident; a resolve or one on the wire cannot change.
      return e.kind === 'resolve' || lane.inflight?.id === e.id ? undefined : e;
    }
    return undefined;
  }

  private firstAttemptAt(kind: NotificationKind, key: string, now: number): number {
    if (kind !== 'update') return now;
    const last = this.lastSent.peek(key);
    return last === undefined ? now : Math.max(now, last + this.deps.updateIntervalMs);
  }

  /**
   * When an entry may go. An update also waits `updateIntervalMs` after the incident's last
   * delivery on the channel: it may have been created while that delivery was on the wire.
   */
  private dueAt(e: OutboxEntry): number {
    if (e.kind !== 'update' || e.attempts > 0) return e.next_attempt_at;
    const last = this.lastSent.peek(`${e.incident_id}|${e.channel}`);
    return last === undefined ? e.next_attempt_at : Math.max(e.next_attempt_at, last + this.deps.updateIntervalMs);
  }

  /** True when no delivery is on the wire and none is due (entries waiting for a retry do not count). */
  idle(): boolean {
    const now = this.now();
    if (this.held.size > 0 || this.writes.size > 0) return false;
    for (const lane of this.lanes.values()) {
      if (lane.inflight || lane.reloading) return false;
      if (lane.entries.some((e) => this.dueAt(e) <= now)) return false;
    }
    return true;
  }

  /** Pending entries held in memory, over all channels. */
  get queued(): number {
    let n = 0;
    for (const lane of this.lanes.values()) n += lane.entries.length;
    return n;
  }

  private schedule(lane: Lane, ms: number): void {
    if (this.stopped) return;
    if (lane.timer) clearTimeout(lane.timer);
    lane.timer = setTimeout(() => {
      lane.timer = undefined;
      this.drive(lane);
    }, Math.max(1, Math.min(ms, 2 ** 31 - 1)));
    lane.timer.unref();
  }

  private async reload(lane: Lane): Promise<void> {
    lane.reloading = true;
    try {
      const rows = await this.deps.store.listOutbox({ status: 'pending', channel: lane.channel.name, limit: this.deps.cfg.maxQueued });
      // Delivered entries whose status write has not landed yet still read as pending.
      const known = new Set([...lane.entries.map((e) => e.id), ...this.recording]);
      if (lane.inflight) known.add(lane.inflight.id);
      lane.entries.push(...rows.filter((r) => !known.has(r.id)));
      lane.entries.sort(byCreation);
      lane.spilled = rows.length >= this.deps.cfg.maxQueued;
      lane.needsReload = false;
      // Delivered entries whose status write is still on its way read as pending and are skipped:
      // the next load waits a little, or it could find only those and load again at once.
      lane.reloadAt = this.now() + 100;
      if (rows.length > 0) this.log.info({ channel: lane.channel.name, pending: rows.length }, 'pending deliveries loaded');
    } catch (err) {
      this.log.error({ channel: lane.channel.name, err: errorMessage(err) }, 'cannot load pending deliveries; retrying in 1 s');
      lane.needsReload = true;
      lane.reloadAt = this.now() + 1000;
    } finally {
      lane.reloading = false;
    }
    this.drive(lane);
  }

  /** Starts the next delivery of a lane, or sets a timer for when one can start. */
  private drive(lane: Lane): void {
    if (this.stopped || lane.inflight || lane.reloading) return;
    if (lane.timer) {
      clearTimeout(lane.timer);
      lane.timer = undefined;
    }
    const now = this.now();
    const wantReload = lane.needsReload || (lane.spilled && lane.entries.length <= this.deps.cfg.maxQueued / 2);
    if (wantReload && now >= lane.reloadAt) {
      void this.reload(lane);
      return;
    }
    if (lane.needsReload) return this.schedule(lane, lane.reloadAt - now);
    if (lane.entries.length === 0) {
      if (lane.spilled) this.schedule(lane, lane.reloadAt - now);
      return;
    }
    const seen = new Set<string>();
    let pick: OutboxEntry | undefined;
    let nextDue = Infinity;
    for (const e of lane.entries) {
      // Only the oldest entry per fingerprint may go: later ones wait for it. By fingerprint, not
      // incident: PagerDuty's dedup_key is the fingerprint, so a late resolve of an earlier
      // incident must not overtake, and then close, the page of the next incident of that key.
      const order = e.fingerprint || e.incident_id;
      if (seen.has(order)) continue;
      seen.add(order);
      if (this.held.has(e.id)) continue;
      const due = this.dueAt(e);
      if (due <= now) {
        pick = e;
        break;
      }
      nextDue = Math.min(nextDue, due);
    }
    if (!pick) {
      if (nextDue < Infinity) this.schedule(lane, nextDue - now);
      return;
    }
    const wait = Math.max(lane.pausedUntil - now, lane.breaker.waitMs(now));
    if (wait > 0) return this.schedule(lane, wait);
    const limited = lane.limiter.take(now);
    if (limited > 0) {
      this.m.rateLimited.inc({ channel: lane.channel.name });
      return this.schedule(lane, limited);
    }
    lane.breaker.started();
    const entry = pick;
    lane.inflight = entry;
    lane.running = this.attempt(lane, entry)
      .catch((err: unknown) => {
        // Only storage can fail here (send failures are handled): keep the entry and try later.
        this.log.error({ channel: lane.channel.name, id: entry.id, err: errorMessage(err) }, 'cannot record a delivery outcome');
        lane.pausedUntil = Math.max(lane.pausedUntil, this.now() + 1000);
      })
      .finally(() => {
        lane.inflight = undefined;
        lane.running = undefined;
        // No-op after a success or failure verdict; ends a trial that ended without one.
        lane.breaker.release();
        this.drive(lane);
      });
  }

  private async attempt(lane: Lane, e: OutboxEntry): Promise<void> {
    const ch = lane.channel;
    const { store, cfg } = this.deps;
    const key = `${e.incident_id}|${ch.name}`;
    let message: AlertMessage;
    try {
      message = AlertMessageSchema.parse(JSON.parse(e.payload));
    } catch (err) {
      return this.giveUp(lane, e, new DeliveryError('payload_invalid', `stored message does not decode: ${errorMessage(err)}`, { retriable: false }), e.attempts);
    }
    const ref = e.kind === 'trigger' || !ch.updatesInPlace ? '' : (this.refs.get(key) ?? (await store.deliveryRef(e.incident_id, ch.name)));
    const started = this.now();
    try {
      const res = await ch.send({ id: e.id, kind: e.kind, message, ref });
      lane.breaker.success();
      this.remove(lane, e);
      if (res.ref) this.refs.set(key, res.ref);
      this.lastSent.set(key, this.now());
      this.m.deliveries.inc({ channel: ch.name, status: 'delivered' });
      // Recorded in the background: the lane moves on to its next delivery, and the status rows
      // of deliveries made meanwhile reach the storage writers together, as one insert instead of
      // two single-row inserts per delivery. Should the process stop before they are stored, the
      // entry is still pending there and is sent again on the next start (at least once).
      this.record(
        Promise.all([
          store.upsertOutbox([{ ...e, status: 'delivered', attempts: e.attempts + 1, ref: res.ref, last_error: '', version: this.version() }]),
          store.insertAlerts([{ id: e.id, incident_id: e.incident_id, channel: ch.name, status: 'delivered', time: this.now(), payload: e.payload }]),
        ]),
        e,
      );
      this.log.debug({ channel: ch.name, id: e.id, kind: e.kind, ms: this.now() - started }, 'alert delivered');
    } catch (err) {
      const de =
        err instanceof DeliveryError ? err : new DeliveryError('delivery_failed', errorMessage(err), { retriable: true, cause: err });
      const now = this.now();
      const attempts = e.attempts + 1;
      if (de.retryAfterMs !== undefined) {
        // The receiver is up and asked for a pause: honour it for the whole channel, no breaker trip.
        lane.pausedUntil = Math.max(lane.pausedUntil, now + Math.min(de.retryAfterMs, cfg.maxRetryAfterMs));
      } else {
        const wasOpen = lane.breaker.state === 'open';
        lane.breaker.failure(now);
        if (!wasOpen && lane.breaker.state === 'open') {
          this.m.breakerOpened.inc({ channel: ch.name });
          this.log.warn({ channel: ch.name, openMs: cfg.breakerOpenMs }, 'circuit breaker opened');
        }
      }
      if (!de.retriable || attempts >= cfg.maxAttempts) return this.giveUp(lane, e, de, attempts);
      const delay = Math.max(backoffMs(cfg, attempts, this.deps.random), Math.min(de.retryAfterMs ?? 0, cfg.maxRetryAfterMs));
      const row: OutboxEntry = { ...e, attempts, next_attempt_at: now + delay, last_error: `${de.code}: ${de.message}`, version: this.version() };
      const i = lane.entries.findIndex((x) => x.id === e.id);
      if (i >= 0) lane.entries[i] = row;
      this.m.deliveries.inc({ channel: ch.name, status: 'retry' });
      this.log.info({ channel: ch.name, id: e.id, attempts, retryInMs: delay, err: de.message }, 'alert delivery failed, will retry');
      await store.upsertOutbox([row]);
    }
  }

  private async giveUp(lane: Lane, e: OutboxEntry, de: DeliveryError, attempts: number): Promise<void> {
    const { store } = this.deps;
    const ch = lane.channel;
    const now = this.now();
    const reason = `${de.code}: ${de.message} (after ${attempts} attempt${attempts === 1 ? '' : 's'})`;
    this.log.warn({ channel: ch.name, id: e.id, incident: e.incident_id, reason }, 'alert delivery failed for good (dead letter)');
    // Stored before the entry leaves the queue (the lane waits meanwhile): a dead letter that
    // could not be written would otherwise be neither delivered nor visible anywhere. Should the
    // process stop first, the entry is still pending in storage and is tried again on the next start.
    const version = this.version();
    await retryUntilStopped(
      () =>
        Promise.all([
          store.upsertOutbox([{ ...e, status: 'dead', attempts, last_error: reason, version }]),
          store.insertAlerts([{ id: e.id, incident_id: e.incident_id, channel: ch.name, status: 'dead', time: now, payload: e.payload }]),
          store.insertDeadLetters([
            { stage: 'alerter', topic: TOPIC.alerts, partition: -1, offset: '', key: e.id, code: de.code, reason: `${ch.name}: ${reason}`, payload: e.payload, time: now },
          ]),
        ]),
      { what: 'record a dead letter', baseMs: 500, stopped: () => this.stopped, log: this.retryLog },
    );
    this.remove(lane, e);
    this.m.deliveries.inc({ channel: ch.name, status: 'dead' });
    this.m.deadLetters.inc({ channel: ch.name });
  }

  /** Tracks a background status write, so {@link idle} and {@link shutdown} wait for it. */
  private record(write: Promise<unknown>, e: OutboxEntry): void {
    const tracked: Promise<void> = write.then(
      () => undefined,
      (err: unknown) => this.log.warn({ id: e.id, err: errorMessage(err) }, 'recording a delivery failed; it stays pending and is sent again on restart'),
    );
    this.writes.add(tracked);
    this.recording.add(e.id);
    void tracked.finally(() => {
      this.writes.delete(tracked);
      this.recording.delete(e.id);
    });
  }

  private remove(lane: Lane, e: OutboxEntry): void {
    const i = lane.entries.findIndex((x) => x.id === e.id);
    if (i >= 0) lane.entries.splice(i, 1);
  }

  /**
   * Stops starting deliveries; waits up to `shutdownGraceMs` for those on the wire. Whatever is
   * pending stays in the stored outbox for the next start. Idempotent.
   */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const running: Promise<void>[] = [];
    for (const lane of this.lanes.values()) {
      if (lane.timer) clearTimeout(lane.timer);
      lane.timer = undefined;
      if (lane.running) running.push(lane.running);
    }
    if (running.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled(running), new Promise<void>((r) => (timer = setTimeout(r, this.deps.cfg.shutdownGraceMs)))]);
      clearTimeout(timer);
    }
    await Promise.allSettled([...this.writes]);
  }
}

/** Sequence number at the end of an outbox id (`incident:channel:seq`). */
function seqOf(id: string): number {
  return Number(id.slice(id.lastIndexOf(':') + 1));
}

/**
 * Creation order: by time, then by the incident's sequence number as a number (entries of one
 * incident created in the same millisecond: `…:10` comes after `…:9`, which a string order breaks).
 */
export function byCreation(a: OutboxEntry, b: OutboxEntry): number {
  return a.created_at - b.created_at || a.incident_id.localeCompare(b.incident_id) || seqOf(a.id) - seqOf(b.id) || a.id.localeCompare(b.id);
}
