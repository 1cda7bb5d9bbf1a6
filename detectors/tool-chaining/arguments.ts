/**
 * Tool-call arguments as leaves: every string (or number) in the argument document with its path and
 * the name of the field that holds it. Arguments that are not JSON are one unnamed leaf.
 */

/** One argument leaf. */
export interface ArgumentLeaf {
  /** Dotted path, e.g. `recipients.0` or `message.to`; `''` for non-JSON arguments. */
  path: string;
  /** Name of the nearest named field (`to` for `message.to`, `recipients` for `recipients.0`). */
  name: string;
  value: string;
}

/** Leaves kept per call (the rest is ignored). */
const MAX_LEAVES = 200;

/** Flattens raw arguments (usually a JSON string) into leaves. */
export function argumentLeaves(raw: string | undefined): ArgumentLeaf[] {
  if (!raw) return [];
  let doc: unknown;
  try {
    doc = JSON.parse(raw);
  } catch {
    return [{ path: '', name: '', value: raw }];
  }
  const out: ArgumentLeaf[] = [];
  const walk = (v: unknown, path: string, name: string, depth: number): void => {
    if (out.length >= MAX_LEAVES || depth > 8) return;
    if (typeof v === 'string') out.push({ path, name, value: v });
    else if (typeof v === 'number' || typeof v === 'bigint') out.push({ path, name, value: String(v) });
    else if (Array.isArray(v)) v.forEach((x, i) => walk(x, path ? `${path}.${i}` : String(i), name, depth + 1));
    else if (typeof v === 'object' && v !== null) {
      for (const [k, x] of Object.entries(v)) walk(x, path ? `${path}.${k}` : k, k, depth + 1);
    }
  };
  walk(doc, '', '', 0);
  return out;
}
