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
