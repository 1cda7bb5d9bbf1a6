import { CanonicalEventSchema, type CanonicalEvent, type CanonicalEventInput, type IngestFormat } from '../../../shared/event.ts';
import { BodyError, RecordError } from '../../../shared/errors.ts';

/**
 * Collector adapters turn one request body (already decompressed) of a given source format into
 * canonical events. A body that cannot be read at all throws {@link BodyError}; a single bad record
 * becomes a {@link Rejection} and the rest of the body is still converted.
 */

/** A rejected record: where it was, which field, and why. */
export interface Rejection {
  /** 0-based index of the record in the body (line for NDJSON, element for arrays, span/log for OTLP). */
  index: number;
  /** Dotted path of the offending field, `''` when the record as a whole is bad. */
  field: string;
  reason: string;
}

/** What an adapter made of one body. */
export interface AdapterResult {
  events: CanonicalEvent[];
  rejected: Rejection[];
  /** Records read (accepted + rejected + skipped). */
  records: number;
  /** Records deliberately ignored (e.g. Vault `request` entries whose `response` carries the same data). */
  skipped: number;
}

/** A source-format adapter. */
export interface Adapter {
  readonly format: IngestFormat;
  /** Content types (lowercase, without parameters) this adapter accepts. */
  readonly contentTypes: readonly string[];
  /** Converts one decompressed body. */
  parse(body: Buffer, contentType: string): AdapterResult;
}

/** Decodes UTF-8 strictly, so invalid byte sequences are reported rather than silently replaced. */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes a body as UTF-8, throwing a BodyError that says where the bad bytes are. */
export function decodeUtf8(body: Buffer): string {
  try {
    return strictUtf8.decode(body);
  } catch {
    // Locate the first bad byte cheaply for the message: decode prefixes by halving.
    let lo = 0;
    let hi = body.length;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      try {
        strictUtf8.decode(body.subarray(0, mid));
        lo = mid;
      } catch {
        hi = mid;
      }
    }
    throw new BodyError(`body is not valid UTF-8 (first invalid byte near offset ${lo})`);
  }
}

/** One record read from a JSON / NDJSON body, or the reason it could not be read. */
export type FramedRecord = { index: number; value: unknown } | { index: number; error: string };

/**
 * Splits a JSON body into records. Accepts a JSON array, a single JSON object, a wrapper object
 * with an array under one of `wrapperKeys` (e.g. CloudTrail's `Records`), or NDJSON (one value per
 * line; a bad line is one rejected record). Throws BodyError when no record can be read at all.
 */
export function frameJsonRecords(body: Buffer, wrapperKeys: readonly string[] = []): FramedRecord[] {
  const text = decodeUtf8(body);
  const trimmed = text.trim();
  if (trimmed === '') return [];
  // Whole-document parse first: arrays, single objects and wrapper objects.
  if (trimmed[0] === '[' || trimmed[0] === '{') {
    let doc: unknown;
    let parsed = false;
    try {
      doc = JSON.parse(trimmed);
      parsed = true;
    } catch {
      // Not one document: fall through to NDJSON (a multi-line `{...}\n{...}` body).
    }
    if (parsed) {
      if (Array.isArray(doc)) return doc.map((value, index) => ({ index, value }));
      if (typeof doc === 'object' && doc !== null) {
        for (const k of wrapperKeys) {
          const inner = (doc as Record<string, unknown>)[k];
          if (Array.isArray(inner)) return inner.map((value, index) => ({ index, value }));
        }
      }
      return [{ index: 0, value: doc }];
    }
    if (trimmed[0] === '[') throw new BodyError('body is not valid JSON: a JSON array that does not parse');
  }
  const out: FramedRecord[] = [];
  const lines = text.split('\n');
  let index = 0;
  let good = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    try {
      out.push({ index, value: JSON.parse(line) });
      good++;
    } catch (err) {
      out.push({ index, error: `line ${i + 1}: not valid JSON (${(err as Error).message})` });
    }
    index++;
  }
  if (good === 0) throw new BodyError('body is not valid JSON or NDJSON: no record could be parsed');
  return out;
}

/**
 * Validates adapter output against the canonical schema. Used by every adapter, so a mapping bug
 * becomes a clear rejection naming the field rather than a bad row downstream.
 */
export function finalizeEvent(input: CanonicalEventInput): CanonicalEvent {
  const res = CanonicalEventSchema.safeParse(input);
  if (!res.success) {
    const issue = res.error.issues[0];
    throw new RecordError(issue?.path.join('.') ?? '', issue?.message ?? 'invalid event');
  }
  return res.data;
}

/** Collects events and rejections while an adapter walks its records. */
export class ResultBuilder {
  readonly events: CanonicalEvent[] = [];
  readonly rejected: Rejection[] = [];
  records = 0;
  skipped = 0;

  /** Runs `fn` for one record; a thrown RecordError (or any error) becomes a rejection of that record. */
  record(index: number, fn: () => CanonicalEventInput[] | null): void {
    this.records++;
    try {
      const produced = fn();
      if (produced === null) {
        this.skipped++;
        return;
      }
      for (const e of produced) this.events.push(finalizeEvent(e));
    } catch (err) {
      if (err instanceof RecordError) this.rejected.push({ index, field: err.field, reason: err.reason });
      else this.rejected.push({ index, field: '', reason: err instanceof Error ? err.message : String(err) });
    }
  }

  /** Records a framing error (the record could not even be parsed). */
  reject(index: number, field: string, reason: string): void {
    this.records++;
    this.rejected.push({ index, field, reason });
  }

  result(): AdapterResult {
    return { events: this.events, rejected: this.rejected, records: this.records, skipped: this.skipped };
  }
}

/** Narrowing helpers for reading untyped JSON records with field-naming errors. */
export const read = {
  obj(v: unknown, field: string): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RecordError(field, `expected an object, got ${typeName(v)}`);
    return v as Record<string, unknown>;
  },
  optObj(v: unknown, field: string): Record<string, unknown> | undefined {
    return v === undefined || v === null ? undefined : read.obj(v, field);
  },
  str(v: unknown, field: string): string {
    if (typeof v !== 'string' || v === '') throw new RecordError(field, v === undefined ? 'missing' : `expected a non-empty string, got ${typeName(v)}`);
    return v;
  },
  optStr(v: unknown, field: string): string | undefined {
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw new RecordError(field, `expected a string, got ${typeName(v)}`);
    return v;
  },
  /** Accepts RFC 3339 strings or epoch milliseconds; returns epoch ms. */
  time(v: unknown, field: string): number {
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v;
    if (typeof v === 'string' && v !== '') {
      const t = Date.parse(v);
      if (!Number.isNaN(t)) return t + subMillis(v);
    }
    throw new RecordError(field, v === undefined ? 'missing' : `expected RFC 3339 or epoch milliseconds, got ${JSON.stringify(v)?.slice(0, 60)}`);
  },
};

/** Fractional milliseconds beyond Date.parse's precision (`.123456789Z` -> 0.456789). */
function subMillis(iso: string): number {
  const m = /\.(\d{4,9})(?:Z|[+-]\d\d:?\d\d)?$/.exec(iso);
  if (!m) return 0;
  const digits = (m[1] as string).padEnd(9, '0');
  return Number(digits.slice(3)) / 1e6;
}

/** Human-readable JSON type name for error messages. */
export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}
