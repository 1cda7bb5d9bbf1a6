import type { CanonicalEvent, TimelineEvent } from '../../shared/event.ts';
import { BoundedMap } from '../../shared/lru.ts';
import type { StoredAttribution, Store } from '../storage/store.ts';

/**
 * Keeps a redelivered event stored once, under the attribution it was first stored with.
 *
 * An instance that takes over a partition (after a crash, a restart or a rebalance) reads again
 * what its previous owner read but did not commit. Event ids are deterministic, so a repeat with
 * the same attribution replaces its stored row. But attribution depends on what the instance
 * holds in memory: the previous owner may have joined an event through a request id it had seen,
 * or stored it unattributed when its grace period ran out, while the new owner resolves it
 * differently. The events table's key starts with the task id, so such a repeat would be a second
 * row under another task.
 *
 * So the first batches of every partition an instance starts reading are looked up in storage by
 * event id; the events found keep their stored attribution when the correlator emits them again
 * (they are still stored and published again, so the insert deduplicates and a detector that
 * missed them before a crash sees them). A partition is trusted again after `cleanBatches`
 * consecutive batches in which nothing was found stored: the redelivered tail is behind it.
 */

/** Options of {@link RedeliveryGuard}. */
export interface RedeliveryGuardOptions {
  store: Pick<Store, 'storedAttributions'>;
  /** Stored attributions held until their event is emitted again (oldest dropped beyond). Default 200 000. */
  maxRemembered?: number;
  /** Consecutive batches with nothing stored after which a partition is no longer checked. Default 2. */
  cleanBatches?: number;
}

/** Counters exposed as metrics. */
export interface RedeliveryGuardStats {
  /** Batches looked up in storage. */
  batchesChecked: number;
  /** Redelivered events found already stored. */
  foundStored: number;
  /** Emitted events whose attribution was set back to the stored one. */
  rewritten: number;
  /** Remembered attributions dropped at the size bound before their event was emitted again. */
  evicted: number;
}

/** See the module comment. */
export class RedeliveryGuard {
  private readonly counts = { batchesChecked: 0, foundStored: 0, rewritten: 0 };
  private readonly store: Pick<Store, 'storedAttributions'>;
  private readonly cleanBatches: number;
  /** Partitions being checked -> consecutive clean batches so far. */
  private readonly checking = new Map<string, number>();
  /** Partitions past their check. */
  private readonly trusted = new Set<string>();
  /** event id -> how it was stored, until the event is emitted again (oldest dropped beyond the bound). */
  private readonly remembered: BoundedMap<string, StoredAttribution>;

  constructor(opts: RedeliveryGuardOptions) {
    this.store = opts.store;
    this.remembered = new BoundedMap(opts.maxRemembered ?? 200_000);
    this.cleanBatches = opts.cleanBatches ?? 2;
  }

  /** Counters exposed as metrics. */
  get stats(): RedeliveryGuardStats {
    return { ...this.counts, evicted: this.remembered.evicted };
  }

  /** Whether a batch of this partition would be looked up. */
  isChecking(topic: string, partition: number): boolean {
    return !this.trusted.has(`${topic}/${partition}`);
  }

  /**
   * Looks up a batch of a partition still being checked, and remembers the events found stored.
   * Storage errors propagate (the caller retries: the batch must not be correlated unchecked).
   */
  async check(topic: string, partition: number, events: readonly CanonicalEvent[]): Promise<void> {
    const key = `${topic}/${partition}`;
    if (this.trusted.has(key) || events.length === 0) return;
    let from = Infinity;
    let to = -Infinity;
    for (const e of events) {
      if (e.time < from) from = e.time;
      if (e.time > to) to = e.time;
    }
    const found = await this.store.storedAttributions(
      events.map((e) => e.event_id),
      from,
      to,
    );
    this.counts.batchesChecked++;
    this.counts.foundStored += found.size;
    if (found.size === 0) {
      const clean = (this.checking.get(key) ?? 0) + 1;
      if (clean >= this.cleanBatches) {
        this.checking.delete(key);
        this.trusted.add(key);
      } else {
        this.checking.set(key, clean);
      }
      return;
    }
    this.checking.set(key, 0);
    for (const [id, a] of found) this.remembered.set(id, a);
  }

  /** Sets emitted events that were found stored back to their stored attribution (in place). */
  apply(events: TimelineEvent[]): void {
    if (this.remembered.size === 0) return;
    for (const e of events) {
      const a = this.remembered.peek(e.event_id);
      if (!a) continue;
      this.remembered.delete(e.event_id);
      if (a.task_id === e.task_id && a.attribution === e.attribution) continue;
      e.task_id = a.task_id;
      e.attribution = a.attribution;
      e.join_key = a.join_key;
      e.unattributed_reason = a.unattributed_reason;
      this.counts.rewritten++;
    }
  }

  /** Partitions this instance no longer reads: checked again if they come back. */
  forget(parts: ReadonlyArray<{ topic: string; partition: number }>): void {
    for (const p of parts) {
      const key = `${p.topic}/${p.partition}`;
      this.trusted.delete(key);
      this.checking.delete(key);
    }
  }
}
