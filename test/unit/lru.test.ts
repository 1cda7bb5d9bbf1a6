import { describe, expect, it } from 'vitest';
import { BoundedMap, ClosingMap } from '../../shared/lru.ts';

describe('BoundedMap', () => {
  it('never holds more than maxSize entries, and counts and reports every eviction', () => {
    const evicted: Array<[string, number]> = [];
    const m = new BoundedMap<string, number>(3, (k, v) => evicted.push([k, v]));
    for (let i = 0; i < 10; i++) m.set(`k${i}`, i);
    expect(m.size).toBe(3);
    expect(m.evicted).toBe(7);
    expect(evicted).toEqual(Array.from({ length: 7 }, (_, i) => [`k${i}`, i]));
    expect([...m.entries()]).toEqual([
      ['k7', 7],
      ['k8', 8],
      ['k9', 9],
    ]);
  });

  it('maps that start empty share nothing: every operation on a fresh map, then writes to one, leave the others empty', () => {
    const maps = Array.from({ length: 3 }, () => new BoundedMap<string, number>(2));
    const [a, b, c] = maps as [BoundedMap<string, number>, BoundedMap<string, number>, BoundedMap<string, number>];
    // Reads, deletes, touches and iteration on a map that was never written to.
    expect([a.get('x'), a.peek('x'), a.has('x'), a.delete('x'), a.touch('x'), a.evictOldest(), [...a.entries()], [...a.values()], a.size]).toEqual([
      undefined, undefined, false, false, false, undefined, [], [], 0,
    ]);
    a.set('x', 1);
    a.set('y', 2);
    a.set('z', 3); // evicts x: a has rotated its generations
    b.set('w', 4);
    expect([...a.entries()]).toEqual([['y', 2], ['z', 3]]);
    expect([...b.entries()]).toEqual([['w', 4]]);
    expect([c.size, c.has('x'), c.has('w'), [...c.entries()]]).toEqual([0, false, false, []]);
    expect(new BoundedMap<string, number>(2).size).toBe(0);
  });

  it('evicts in insertion order when nothing is read', () => {
    const m = new BoundedMap<number, number>(100);
    for (let i = 0; i < 1000; i++) m.set(i, i);
    expect([...m.entries()].map(([k]) => k)).toEqual(Array.from({ length: 100 }, (_, i) => 900 + i));
  });

  it('keeps an entry that is read while it is among the oldest (second chance)', () => {
    const m = new BoundedMap<string, number>(4);
    for (const k of ['a', 'b', 'c', 'd']) m.set(k, 1);
    m.set('e', 1); // generation change: a..d become the old generation; a is evicted
    expect(m.has('a')).toBe(false);
    expect(m.get('b')).toBe(1); // read while old: promoted
    m.set('f', 1); // evicts c, the oldest not read
    m.set('g', 1); // evicts d
    expect(m.has('b')).toBe(true);
    expect(m.has('c')).toBe(false);
    expect(m.has('d')).toBe(false);
    expect(m.size).toBe(4);
  });

  it('peek and has do not change recency; set and touch make an entry the most recent', () => {
    const m = new BoundedMap<string, number>(3);
    for (const k of ['a', 'b', 'c']) m.set(k, 1);
    m.set('d', 1); // a evicted; b, c old
    expect(m.peek('b')).toBe(1);
    expect(m.has('b')).toBe(true);
    m.set('e', 1); // b evicted: peek/has did not save it
    expect(m.has('b')).toBe(false);
    // c is the oldest now; touch saves it exactly.
    expect(m.touch('c')).toBe(true);
    expect(m.touch('zz')).toBe(false);
    m.set('f', 1);
    expect(m.has('c')).toBe(true);
    expect(m.has('d')).toBe(false);
    // set of an existing key updates it and makes it the most recent.
    m.set('e', 2);
    m.set('g', 1);
    m.set('h', 1);
    expect(m.peek('e')).toBe(2);
    expect(m.has('c')).toBe(false);
  });

  it('evictOldest removes the least recent entry, counted and reported', () => {
    const seen: string[] = [];
    const m = new BoundedMap<string, number>(10, (k) => seen.push(k));
    for (const k of ['a', 'b', 'c']) m.set(k, 1);
    expect(m.evictOldest()).toEqual(['a', 1]);
    expect(m.evicted).toBe(1);
    expect(seen).toEqual(['a']);
    expect(m.delete('b')).toBe(true);
    expect(m.evictOldest()).toEqual(['c', 1]);
    expect(m.evictOldest()).toBeUndefined();
    expect(m.size).toBe(0);
  });

  it('stays consistent under a random mix of operations', () => {
    let seed = 42;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const max = 50;
    const live = new Map<number, number>();
    const m = new BoundedMap<number, number>(max, (k) => live.delete(k));
    for (let i = 0; i < 20_000; i++) {
      const k = rnd(200);
      const op = rnd(10);
      if (op < 4) {
        m.set(k, i);
        live.set(k, i);
      } else if (op < 8) {
        expect(m.get(k)).toBe(live.get(k));
      } else if (op < 9) {
        expect(m.delete(k)).toBe(live.delete(k));
      } else {
        const e = m.evictOldest();
        if (e) expect(live.has(e[0])).toBe(false);
      }
      expect(m.size).toBe(live.size);
      expect(m.size).toBeLessThanOrEqual(max);
    }
    expect(new Map(m.entries())).toEqual(live);
  });
});

describe('ClosingMap', () => {
  it('moves closed entries out of the open bound, reopens them on access, and counts only open evictions', () => {
    const m = new ClosingMap<string, number>(2, 1);
    m.set('a', 1);
    m.set('b', 2);
    expect(m.close('a')).toBe(1);
    expect(m.close('a')).toBeUndefined();
    // a's slot is free: c fits beside b without evicting anything.
    m.set('c', 3);
    expect([m.size, m.evicted, m.peekOpen('a'), m.has('a')]).toEqual([2, 0, undefined, true]);
    // A late access reopens a (evicting the least recently used open entry, b).
    expect(m.get('a')).toBe(1);
    expect([m.peekOpen('a'), m.has('b'), m.evicted]).toEqual([1, false, 1]);
    // The closed buffer drops its oldest silently.
    m.close('a');
    m.close('c');
    expect([m.has('a'), m.has('c'), m.get('a'), m.evicted]).toEqual([false, true, undefined, 1]);
  });
});
