/**
 * A size-bounded map that evicts the least recently used entry and counts what it evicted.
 * Every piece of per-task / per-credential state in Runtrail lives in one of these (or another
 * bounded structure), so memory stays bounded whatever the input.
 */
export class BoundedMap<K, V> {
  private readonly map = new Map<K, V>();
  /** Entries evicted because the map was full. */
  evicted = 0;

  constructor(
    readonly maxSize: number,
    private readonly onEvict?: (key: K, value: V) => void,
  ) {
    if (maxSize < 1) throw new RangeError('maxSize must be at least 1');
  }

  get size(): number {
    return this.map.size;
  }

  /** Reads and marks as recently used. */
  get(key: K): V | undefined {
    const v = this.map.get(key);
    if (v !== undefined) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }

  /** Reads without changing recency. */
  peek(key: K): V | undefined {
    return this.map.get(key);
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  set(key: K, value: V): void {
    if (this.map.has(key)) this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.maxSize) {
      const oldest = this.map.keys().next();
      if (oldest.done) break;
      const k = oldest.value;
      const v = this.map.get(k) as V;
      this.map.delete(k);
      this.evicted++;
      this.onEvict?.(k, v);
    }
  }

  /**
   * Evicts the least recently used entry as if the map were full (counted in {@link evicted},
   * reported to `onEvict`), for owners that bound something other than the entry count.
   */
  evictOldest(): [K, V] | undefined {
    const oldest = this.map.entries().next();
    if (oldest.done) return undefined;
    const [k, v] = oldest.value;
    this.map.delete(k);
    this.evicted++;
    this.onEvict?.(k, v);
    return [k, v];
  }

  delete(key: K): boolean {
    return this.map.delete(key);
  }

  /** Entries from least to most recently used. */
  entries(): IterableIterator<[K, V]> {
    return this.map.entries();
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }
}
