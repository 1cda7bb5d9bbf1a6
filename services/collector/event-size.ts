import type { CanonicalEvent } from '../../shared/event.ts';

/**
 * Keeps every published event under a size bound (`collector.maxEventBytes`). One tool result
 * of several megabytes (an agent reading a file) would otherwise exceed Kafka's message limit
 * (1 MiB by default), the broker would refuse the whole publish, and the shipper, answered 503
 * again and again, would finally drop its batch, good records included. It would also cost its
 * size in every buffer and detector window that holds the event.
 *
 * An event over the bound keeps everything that identifies and correlates it: its longest texts
 * are cut (every string longer than a common cap, chosen so the event fits), each cut says so in
 * the text (`…[truncated: N chars]`), and `attributes["runtrail.truncated"]` lists the cut fields
 * with their original lengths, so an analyst knows the stored text is a prefix. Should texts cut to
 * {@link MIN_CAP} characters not be enough (a record with many thousands of attributes), the
 * original attributes go too, then credential tags and tool annotations, then list entries past
 * the first {@link MAX_LIST_ENTRIES} (and fewer, halving, until it fits). What is left then is bounded by the fixed fields, each at most
 * {@link MIN_CAP} characters long.
 *
 * Only an event over the bound pays for any of this: the check is on the serialized line the bus
 * needs anyway.
 */

/** Strings are never cut below this many characters. */
export const MIN_CAP = 1024;
/** Entries kept of `resources` and `data_classes` when the event still does not fit. */
export const MAX_LIST_ENTRIES = 256;
/** Attribute listing what was cut (field path -> original length in characters). */
export const TRUNCATED_ATTRIBUTE = 'runtrail.truncated';

/** A string inside the event: where it is and how long it is. */
interface Leaf {
  holder: Record<string, unknown> | unknown[];
  key: string | number;
  path: string;
  chars: number;
  /** Its size in the serialized line (UTF-8, JSON escapes included). */
  bytes: number;
}

/** Nesting walked when collecting strings (adapters bound record depth well below this). */
const MAX_WALK_DEPTH = 64;

/** Default `collector.maxEventBytes`: 512 KiB, half of Kafka's default message limit. */
export const DEFAULT_MAX_EVENT_BYTES = 512 * 1024;

/** Whether a serialized line is within `maxBytes` (cheap for the common, small line). */
export function fitsIn(serialized: string, maxBytes: number): boolean {
  // A UTF-16 unit is at most 3 bytes of UTF-8: most lines are known to fit without measuring.
  return serialized.length * 3 <= maxBytes || Buffer.byteLength(serialized) <= maxBytes;
}

/**
 * Returns the event's serialized line, cut to fit `maxBytes` when it does not (see the module
 * comment). `serialized` is `JSON.stringify(e)`. The event must be mutable: it is changed in place
 * when cut (the adapter's fresh output, owned by the ingest path).
 */
export function fitEvent(e: CanonicalEvent, serialized: string, maxBytes: number): string {
  // As fitsIn, keeping the measured size for what follows.
  if (serialized.length * 3 <= maxBytes) return serialized;
  let bytes = Buffer.byteLength(serialized);
  if (bytes <= maxBytes) return serialized;
  const cut: Record<string, number> = {};
  // Room for the truncation notes themselves.
  const budget = Math.floor(maxBytes * 0.95);
  const leaves = collectLeaves(e);
  let cap = capFor(leaves, bytes, budget);
  for (let attempt = 0; attempt < 4 && leaves.length > 0; attempt++) {
    for (const l of leaves) if (l.chars > cap) cutLeaf(l, cap, cut);
    bytes = Buffer.byteLength((serialized = serializeWithNote(e, cut)));
    if (bytes <= maxBytes || cap <= MIN_CAP) break;
    // The estimate was short (escapes, many mid-sized strings): tighten.
    cap = Math.max(MIN_CAP, Math.floor(cap / 2));
  }
  if (bytes > maxBytes && Object.keys(e.attributes).some((k) => k !== TRUNCATED_ATTRIBUTE)) {
    cut.attributes = Object.keys(e.attributes).length;
    e.attributes = {};
    bytes = Buffer.byteLength((serialized = serializeWithNote(e, cut)));
  }
  // Maps whose keys are not texts to cut: session tags and tool annotations go whole.
  if (bytes > maxBytes) {
    const tags = e.credential?.tags;
    if (e.credential && tags) {
      cut['credential.tags'] = Object.keys(tags).length;
      delete e.credential.tags;
    }
    const annotations = e.tool?.annotations;
    if (e.tool && annotations) {
      cut['tool.annotations'] = Object.keys(annotations).length;
      delete e.tool.annotations;
    }
    bytes = Buffer.byteLength((serialized = serializeWithNote(e, cut)));
  }
  // Lists last: at most MAX_LIST_ENTRIES entries, halved until the event fits (the first ones stay).
  for (let keep = MAX_LIST_ENTRIES; bytes > maxBytes && keep >= 1; keep = Math.floor(keep / 2)) {
    for (const k of ['resources', 'data_classes'] as const) {
      const list = e[k];
      if (list.length > keep) {
        cut[k] ??= list.length;
        list.length = keep;
      }
    }
    bytes = Buffer.byteLength((serialized = serializeWithNote(e, cut)));
  }
  return serialized;
}

function serializeWithNote(e: CanonicalEvent, cut: Record<string, number>): string {
  e.attributes[TRUNCATED_ATTRIBUTE] = { ...cut };
  return JSON.stringify(e);
}

/** Every string leaf of the event longer than {@link MIN_CAP} (depth-bounded), with its serialized size. */
function collectLeaves(e: CanonicalEvent): Leaf[] {
  const out: Leaf[] = [];
  const stack: Array<{ v: Record<string, unknown> | unknown[]; path: string; depth: number }> = [{ v: e as unknown as Record<string, unknown>, path: '', depth: 0 }];
  while (stack.length > 0) {
    const { v, path, depth } = stack.pop() as (typeof stack)[number];
    const keys: Array<string | number> = Array.isArray(v) ? v.map((_, i) => i) : Object.keys(v);
    for (const key of keys) {
      const x: unknown = (v as Record<string | number, unknown>)[key];
      const p = path === '' ? String(key) : `${path}.${key}`;
      if (typeof x === 'string') {
        if (x.length > MIN_CAP) out.push({ holder: v, key, path: p, chars: x.length, bytes: Buffer.byteLength(JSON.stringify(x)) });
      } else if (typeof x === 'object' && x !== null && depth < MAX_WALK_DEPTH) {
        stack.push({ v: x as Record<string, unknown>, path: p, depth: depth + 1 });
      }
    }
  }
  return out;
}

/**
 * The largest character cap that brings the event under `budget`, estimated from each string's
 * bytes per character: bytes saved by capping a string at `cap` ~ bytes x (1 - cap / chars).
 */
function capFor(leaves: readonly Leaf[], bytes: number, budget: number): number {
  const saved = (cap: number) => leaves.reduce((s, l) => (l.chars > cap ? s + l.bytes * (1 - cap / l.chars) : s), 0);
  let lo = MIN_CAP;
  let hi = Math.max(MIN_CAP, ...leaves.map((l) => l.chars));
  if (bytes - saved(lo) > budget) return MIN_CAP;
  while (hi - lo > 64) {
    const mid = Math.floor((lo + hi) / 2);
    if (bytes - saved(mid) <= budget) lo = mid;
    else hi = mid;
  }
  return lo;
}

function cutLeaf(l: Leaf, cap: number, cut: Record<string, number>): void {
  const holder = l.holder as Record<string | number, unknown>;
  const s = holder[l.key];
  if (typeof s !== 'string' || s.length <= cap) return;
  // Never split a surrogate pair: half a character is not valid UTF-8.
  let end = cap;
  const c = s.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--;
  cut[l.path] ??= s.length;
  holder[l.key] = `${s.slice(0, end)}…[truncated: ${cut[l.path]} chars]`;
}
