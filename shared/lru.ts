/**
 * A size-bounded map that evicts the least recently used entry and counts what it evicted.
 * Every piece of per-task / per-credential state in Runtrail lives in one of these (or another
 * bounded structure), so memory stays bounded whatever the input.
 *
 * Recency is tracked in two generations (a segmented LRU without per-entry bookkeeping), because
 * a read is by far the most frequent operation and exact LRU costs a delete and a re-insert on
 * every one of them. New and updated entries go to the young generation; eviction takes the oldest
 * entry of the old generation, and when that is empty the young generation becomes the old one. A
 * read of an old entry promotes it to the young generation (second chance). A read of a young
 * entry moves nothing: it is noted in a ring of recent accesses (at most {@link ACCESS_RING} keys,
 * never more than the young generation holds), and at the generation change the entries accessed
 * last are re-inserted in access order, so they are evicted last and in LRU order. The bound on
 * size and the eviction counter are exact; eviction order is exact LRU as long as the young
 * generation saw no more than the ring's accesses, and otherwise entries whose last access fell
 * out of the ring compete by insertion time.
 */
/** Recent accesses remembered across a generation change, per map at most. */
export const ACCESS_RING = 4096;

/**
 * Stands in for a generation that has no entries yet. An empty Map costs ~190 B of heap, and
 * detectors keep several bounded maps per task (blast radius five per scope), most of which never
 * fill and never rotate: at a million open tasks the eager Maps alone were over a kilobyte per task.
 * Never written to: `old` is only read and deleted from (a no-op when empty) until a rotation
 * replaces it, and `set` swaps in a real Map before the first write to `young`.
 */
const NO_ENTRIES: Map<never, never> = new Map<never, never>();

export class BoundedMap<K, V> {
  /** Entries set or promoted since the last generation change, oldest first. */
  private young: Map<K, V> = NO_ENTRIES;
  /** The previous generation, oldest first; evicted from the front. */
  private old: Map<K, V> = NO_ENTRIES;
  /**
   * One iterator over `old` for all evictions: a fresh `entries().next()` would walk past every
   * entry already deleted from the front (V8 keeps them as holes until the table is rebuilt),
   * which makes each eviction O(n). A live Map iterator skips each hole once.
   */
  private cursor: IterableIterator<[K, V]> | undefined;
  /**
   * Keys of recent accesses, oldest at `accessPos` once the ring is full. Created at the first noted
   * access: detectors keep several maps per task or scope, most never read back.
   */
  private accesses: K[] | undefined;
  private accessPos = 0;
  /** Entries evicted because the map was full (or by {@link evictOldest}). */
  evicted = 0;

  constructor(
    readonly maxSize: number,
    private readonly onEvict?: (key: K, value: V) => void,
  ) {
    if (maxSize < 1) throw new RangeError('maxSize must be at least 1');
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  /** Reads and marks as recently used (see the class comment for what that guarantees). */
  get(key: K): V | undefined {
    const v = this.young.get(key);
    if (v !== undefined) {
      this.noteAccess(key);
      return v;
    }
    if (this.old.size === 0) return v;
    const o = this.old.get(key);
    if (o !== undefined) {
      this.old.delete(key);
      this.young.set(key, o);
      this.noteAccess(key);
    }
    return o;
  }

  /** Reads without changing recency. */
  peek(key: K): V | undefined {
    const v = this.young.get(key);
    return v !== undefined ? v : this.old.get(key);
  }

  has(key: K): boolean {
    return this.young.has(key) || this.old.has(key);
  }

  /** Inserts or replaces; the entry becomes the most recently used. */
  set(key: K, value: V): void {
    if (this.young === NO_ENTRIES) this.young = new Map();
    else if (!this.young.delete(key)) this.old.delete(key);
    this.young.set(key, value);
    this.noteAccess(key);
    while (this.size > this.maxSize) this.evictOne();
  }

  /** Makes an existing entry exactly the most recently used; false when absent. */
  touch(key: K): boolean {
    let v = this.young.get(key);
    if (v !== undefined || this.young.has(key)) this.young.delete(key);
    else {
      v = this.old.get(key);
      if (v === undefined && !this.old.has(key)) return false;
      this.old.delete(key);
    }
    this.young.set(key, v as V);
    this.noteAccess(key);
    return true;
  }

  /**
   * Evicts the least recently used entry as if the map were full (counted in {@link evicted},
   * reported to `onEvict`), for owners that bound something other than the entry count.
   */
  evictOldest(): [K, V] | undefined {
    return this.size === 0 ? undefined : this.evictOne();
  }

  delete(key: K): boolean {
    return this.young.delete(key) || this.old.delete(key);
  }

  /** Entries from least to most recently used (approximately; see the class comment). */
  entries(): IterableIterator<[K, V]> {
    // A map that never filled has one generation: its native iterator is much cheaper than a generator.
    if (this.old.size === 0) return this.young.entries();
    if (this.young.size === 0) return this.old.entries();
    return chain(this.old.entries(), this.young.entries());
  }

  values(): IterableIterator<V> {
    if (this.old.size === 0) return this.young.values();
    if (this.young.size === 0) return this.old.values();
    return chain(this.old.values(), this.young.values());
  }

  private noteAccess(key: K): void {
    const r = (this.accesses ??= []);
    if (r.length < Math.min(ACCESS_RING, this.young.size)) {
      if (r[r.length - 1] !== key) r.push(key);
      return;
    }
    if (r.length === 0) return;
    const last = this.accessPos === 0 ? r.length - 1 : this.accessPos - 1;
    if (r[last] === key) return;
    r[this.accessPos] = key;
    this.accessPos = this.accessPos + 1 === r.length ? 0 : this.accessPos + 1;
  }

  /**
   * The young generation becomes the old one. With `keepRecent`, the entries in the access ring are
   * moved back to the (new) young generation in access order, oldest access first.
   */
  private rotate(keepRecent: boolean): void {
    const ring = this.accesses ?? [];
    const start = this.accessPos;
    this.accesses = undefined;
    this.accessPos = 0;
    this.old = this.young;
    this.young = new Map();
    this.cursor = undefined;
    if (!keepRecent) return;
    for (let i = 0; i < ring.length; i++) {
      const k = ring[(start + i) % ring.length] as K;
      const v = this.old.get(k);
      if (v !== undefined || this.old.has(k)) {
        this.old.delete(k);
        this.young.set(k, v as V);
      } else if (this.young.has(k)) {
        // Accessed again later in the ring: move it to its later place.
        const y = this.young.get(k) as V;
        this.young.delete(k);
        this.young.set(k, y);
      }
    }
  }

  private evictOne(): [K, V] {
    if (this.old.size === 0) this.rotate(true);
    // Every entry was accessed recently: the young generation is in access order now.
    if (this.old.size === 0) this.rotate(false);
    this.cursor ??= this.old.entries();
    // Every entry still in `old` lies ahead of the cursor: `old` only loses entries.
    const first = this.cursor.next().value as [K, V];
    this.old.delete(first[0]);
    this.evicted++;
    this.onEvict?.(first[0], first[1]);
    return first;
  }
}

function* chain<T>(a: IterableIterator<T>, b: IterableIterator<T>): IterableIterator<T> {
  yield* a;
  yield* b;
}

/**
 * Per-task state that tells running tasks from finished ones: open entries live in a bounded LRU
 * sized for the tasks running at once, and closing a task moves its entry to a smaller buffer of
 * closed ones, kept for late events (which reopen it) and dropped oldest-closed first. So finished
 * tasks never push out a running one, and a limit sized for concurrency does not keep every
 * finished task's state. Only evictions of open entries count as lost state ({@link evicted}).
 */
export class ClosingMap<K, V> {
  private readonly open: BoundedMap<K, V>;
  private readonly closed: BoundedMap<K, V>;

  constructor(maxOpen: number, maxClosed: number) {
    this.open = new BoundedMap(maxOpen);
    this.closed = new BoundedMap(maxClosed);
  }

  /** Open entries evicted to stay within `maxOpen`. */
  get evicted(): number {
    return this.open.evicted;
  }

  /** Open entries. */
  get size(): number {
    return this.open.size;
  }

  /** An open entry (marked recently used), or a closed one, which becomes open again. */
  get(key: K): V | undefined {
    const v = this.open.get(key);
    if (v !== undefined) return v;
    const c = this.closed.peek(key);
    if (c === undefined) return undefined;
    this.closed.delete(key);
    this.open.set(key, c);
    return c;
  }

  /** An open entry without changing its recency; closed ones are not returned. */
  peekOpen(key: K): V | undefined {
    return this.open.peek(key);
  }

  /** Whether the key is held, open or closed. */
  has(key: K): boolean {
    return this.open.has(key) || this.closed.has(key);
  }

  set(key: K, value: V): void {
    this.open.set(key, value);
  }

  /** Moves an open entry to the closed buffer; returns it, or undefined when it was not open. */
  close(key: K): V | undefined {
    const v = this.open.peek(key);
    if (v === undefined) return undefined;
    this.open.delete(key);
    this.closed.set(key, v);
    return v;
  }
}
