import type { z } from 'zod';
import { RequestError } from '../../shared/errors.ts';

/**
 * Opaque keyset cursors: the last item's sort key as base64url JSON. Clients pass them back
 * unchanged; the server validates the decoded key before using it as query parameters.
 */

/** Encodes a sort key as a cursor. */
export function encodeCursor(key: readonly string[]): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

/** Decodes a cursor into its sort key; throws {@link RequestError} for anything else. */
export function decodeCursor<T extends z.ZodType>(cursor: string, schema: T): z.infer<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new RequestError('cursor: not a cursor returned by this API (pass next_cursor unchanged)');
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new RequestError('cursor: not a cursor returned by this API (pass next_cursor unchanged)');
  return r.data;
}

/**
 * One page from rows fetched with `LIMIT limit + 1`: the first `limit` decoded, and a cursor made
 * from the last one's sort key when the extra row shows there is more.
 */
export function toPage<R, T>(rows: readonly R[], limit: number, decode: (row: R) => T, sortKey: (item: T) => readonly string[]): { items: T[]; next_cursor: string | null } {
  const items = rows.slice(0, limit).map(decode);
  const last = items[items.length - 1];
  return { items, next_cursor: rows.length > limit && last !== undefined ? encodeCursor(sortKey(last)) : null };
}
