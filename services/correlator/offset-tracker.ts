import type { PartitionOffset } from '../../shared/bus/bus.ts';
import type { TopicId } from '../../shared/names.ts';

/**
 * Tracks, per topic-partition, which received offsets are fully handled, and yields the offset that
 * is safe to commit: the first offset still unhandled (an event still waiting in the correlator's
 * pending buffer holds its partition's commit back, so a crash redelivers it), or the end of the
 * last batch when everything is handled.
 */
export class OffsetTracker {
  private readonly parts = new Map<string, { topic: TopicId; partition: number; queue: number[]; head: number; done: Set<number>; end: number; committed: number }>();

  private part(topic: TopicId, partition: number) {
    const k = `${topic}\u0000${partition}`;
    let p = this.parts.get(k);
    if (!p) this.parts.set(k, (p = { topic, partition, queue: [], head: 0, done: new Set(), end: -1, committed: -1 }));
    return p;
  }

  /** Registers the offsets of a delivered batch and where the batch ends. */
  received(topic: TopicId, partition: number, offsets: readonly string[], nextOffset: string): void {
    const p = this.part(topic, partition);
    for (const o of offsets) p.queue.push(Number(o));
    p.end = Math.max(p.end, Number(nextOffset));
  }

  /** Marks offsets as handled (stored and published downstream). */
  done(topic: TopicId, partition: number, offset: string): void {
    this.part(topic, partition).done.add(Number(offset));
  }

  /** Offsets that advanced since the last call, ready to commit. */
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
      if (next > p.committed) {
        p.committed = next;
        out.push({ topic: p.topic, partition: p.partition, offset: String(next) });
      }
    }
    return out;
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
