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
  return h.digest('hex').slice(0, 32);
}

/** Short stable hash (hex) of arbitrary text, used for record fingerprints when no natural id exists. */
export function contentHash(text: string | Uint8Array): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 32);
}
