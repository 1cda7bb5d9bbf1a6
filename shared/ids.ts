import { createHash } from 'node:crypto';

/**
 * Deterministic event id: a 128-bit hex digest of the producing format and the record's natural
 * identity (e.g. CloudTrail `eventID`, OTLP trace+span id), so a replayed or re-shipped record maps
 * to the same id and storage can deduplicate it.
 */
export function eventId(format: string, ...parts: Array<string | number | undefined>): string {
  const h = createHash('sha256');
  h.update(format);
  for (const p of parts) {
    h.update('\u0000');
    h.update(p === undefined ? '' : String(p));
  }
  return hex128(h.digest());
}

/** Short stable hash (hex) of arbitrary text, used for record fingerprints when no natural id exists. */
export function contentHash(text: string | Uint8Array): string {
  return hex128(createHash('sha256').update(text).digest());
}

/**
 * The first 16 bytes of a digest as 32 hex characters, encoded as a string of their own: a slice
 * of the whole digest's hex would keep all 64 characters alive behind every id a detector,
 * window or dedup map holds (~110 bytes an id instead of ~50).
 */
function hex128(digest: Buffer): string {
  return digest.toString('hex', 0, 16);
}
