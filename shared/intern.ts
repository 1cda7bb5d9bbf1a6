/**
 * Canonical instances of values that repeat across many events: agent ids, workload ids, tool
 * names. Events decoded from the bus carry a string of their own for each of them, so state that
 * keeps a reference per event (evidence copies, per task, for as long as the task runs) would
 * otherwise hold thousands of equal copies. Bounded: once `max` distinct values are held, new ones
 * are returned as they are (counted in {@link Interner.overflow}), never evicted, so a value once
 * shared stays shared.
 */
export class Interner<T> {
  private readonly values = new Map<string, T>();
  /** Values returned uninterned because the interner was full. */
  overflow = 0;

  /**
   * @param max Most distinct values held.
   * @param make The canonical value for a key (e.g. a frozen object); called once per key held.
   */
  constructor(
    private readonly max: number,
    private readonly make: (key: string) => T,
  ) {}

  /** The canonical value for `key` (made on first sight), or a fresh one when full. */
  get(key: string): T {
    const v = this.values.get(key);
    if (v !== undefined) return v;
    const made = this.make(key);
    if (this.values.size >= this.max) this.overflow++;
    else this.values.set(key, made);
    return made;
  }

  /** Distinct values held. */
  get size(): number {
    return this.values.size;
  }
}
