import type { PartitionOffset } from '../../shared/bus/bus.ts';
import type { TopicId } from '../../shared/names.ts';

/**
 * Tracks, per topic-partition, which received offsets are fully handled, and yields the offset that
 * is safe to commit: the first offset still unhandled (an event still waiting in the correlator's
 * pending buffer holds its partition's commit back, so a crash redelivers it), or the end of the
 * last batch when everything is handled.
 */
export class OffsetTracker {
  private readonly parts = new Map<
    string,
    { topic: TopicId; partition: number; queue: number[]; head: number; done: Set<number>; end: number; committed: number; maxReceived: number }
  >();

  private part(topic: TopicId, partition: number) {
    const k = `${topic}\u0000${partition}`;
    let p = this.parts.get(k);
    if (!p) this.parts.set(k, (p = { topic, partition, queue: [], head: 0, done: new Set(), end: -1, committed: -1, maxReceived: -1 }));
    return p;
  }

  /**
   * Registers the offsets of a delivered batch and where the batch ends. An offset delivered again
   * (a batch whose handling failed is redelivered) is registered once: a second copy in the queue
   * would wait for a second `done` that never comes, and hold the partition's commits back for good.
   */
  received(topic: TopicId, partition: number, offsets: readonly string[], nextOffset: string): void {
    const p = this.part(topic, partition);
    for (const o of offsets) {
      const n = Number(o);
      if (n <= p.maxReceived) continue;
      p.queue.push(n);
      p.maxReceived = n;
    }
    p.end = Math.max(p.end, Number(nextOffset));
  }

  /** Marks offsets as handled (stored and published downstream). */
  done(topic: TopicId, partition: number, offset: string): void {
    this.part(topic, partition).done.add(Number(offset));
  }

  /**
   * Offsets that advanced since the last successful commit, ready to commit; report the commit
   * with {@link committed}. Until then the same offsets are offered again, so a failed commit is
   * retried by the next call even on a partition that has gone quiet.
   */
  commitable(): PartitionOffset[] {
    const out: PartitionOffset[] = [];
    for (const p of this.parts.values()) {
      while (p.head < p.queue.length && p.done.has(p.queue[p.head] as number)) {
        p.done.delete(p.queue[p.head] as number);
        p.head++;
      }
      if (p.head > 1024 && p.head * 2 > p.queue.length) {
        p.queue = p.queue.slice(p.head);
        p.head = 0;
      }
      const next = p.head < p.queue.length ? (p.queue[p.head] as number) : p.end;
      if (next > p.committed) out.push({ topic: p.topic, partition: p.partition, offset: String(next) });
    }
    return out;
  }

  /** Records offsets the bus has committed (from {@link commitable}). */
  committed(offsets: readonly PartitionOffset[]): void {
    for (const o of offsets) {
      const p = this.parts.get(`${o.topic}\u0000${o.partition}`);
      if (p) p.committed = Math.max(p.committed, Number(o.offset));
    }
  }

  /** Forgets partitions that were revoked (their next owner starts from the committed offset). */
  forget(topic: TopicId, partition: number): void {
    this.parts.delete(`${topic}\u0000${partition}`);
  }

  /** Offsets received but not yet handled. */
  get outstanding(): number {
    let n = 0;
    for (const p of this.parts.values()) n += p.queue.length - p.head;
    return n;
  }
}
