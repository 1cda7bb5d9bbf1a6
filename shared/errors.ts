/**
 * Typed errors. Every error Runtrail raises on purpose carries a stable `code`, whether a retry
 * can help (`retriable`), and the underlying `cause`, so consumer loops can decide between
 * "retry with backoff" and "dead-letter and move on" without parsing messages.
 */

/** Base class for every deliberate Runtrail error. */
export class RuntrailError extends Error {
  /** Stable machine-readable code, e.g. `record_invalid`. */
  readonly code: string;
  /** True when the same operation may succeed if tried again later. */
  readonly retriable: boolean;

  constructor(code: string, message: string, options: { retriable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}

/** A single input record is invalid. Permanent: the rest of its batch is still processed. */
export class RecordError extends RuntrailError {
  /** Dotted path of the offending field inside the record, `''` for the record as a whole. */
  readonly field: string;

  constructor(field: string, reason: string, cause?: unknown) {
    // No stack trace: the error is about the data, not the code, and capturing one cost ~5 µs per
    // rejected record, which let a small compressed body of millions of bad records burn minutes.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super('record_invalid', field ? `field \`${field}\`: ${reason}` : reason, { cause });
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.field = field;
  }

  /** The reason without the field prefix, for structured rejection lists. */
  get reason(): string {
    return this.field ? this.message.slice(this.field.length + 10) : this.message;
  }
}

/** A request body cannot be parsed at all (not one record could be read). */
export class BodyError extends RuntrailError {
  constructor(message: string, cause?: unknown) {
    super('body_invalid', message, { cause });
  }
}

/** The input exceeds a configured size limit (before or after decompression). */
export class TooLargeError extends RuntrailError {
  constructor(message: string) {
    super('body_too_large', message);
  }
}

/** The content type or format is not one Runtrail knows. */
export class UnsupportedFormatError extends RuntrailError {
  constructor(message: string) {
    super('unsupported_format', message);
  }
}

/** A component cannot take more work right now; the caller should retry later. */
export class BackpressureError extends RuntrailError {
  /** Suggested wait before retrying, in seconds. */
  readonly retryAfterS: number;

  constructor(message: string, retryAfterS = 1, cause?: unknown) {
    super('backpressure', message, { retriable: true, cause });
    this.retryAfterS = retryAfterS;
  }
}

/** Storage (ClickHouse) failed; retriable unless the cause says otherwise. */
export class StorageError extends RuntrailError {
  constructor(message: string, options: { retriable?: boolean; cause?: unknown } = {}) {
    super('storage_failed', message, { retriable: options.retriable ?? true, cause: options.cause });
  }
}

/** Configuration is invalid; the process must not start. */
export class ConfigError extends RuntrailError {
  constructor(message: string) {
    super('config_invalid', message);
  }
}

/**
 * A request is refused by access control. `status` is the HTTP answer: 401 (no, unknown, expired
 * or revoked token), 403 (the token's role may not do this), 429 (rate limit). The message never
 * names the token or its hash.
 */
export class AccessError extends RuntrailError {
  /** HTTP status to answer with. */
  readonly status: 401 | 403 | 429;
  /** Seconds to wait before retrying (429 only). */
  readonly retryAfterS: number | undefined;

  constructor(status: 401 | 403 | 429, message: string, retryAfterS?: number) {
    super(status === 401 ? 'unauthenticated' : status === 403 ? 'forbidden' : 'rate_limited', message, { retriable: status === 429 });
    this.status = status;
    this.retryAfterS = retryAfterS;
  }
}

/** A request's parameters are invalid (HTTP 400); the message names the parameter. */
export class RequestError extends RuntrailError {
  constructor(message: string) {
    super('request_invalid', message);
  }
}

/** True when `err` is known to be retriable. Unknown errors are treated as retriable infrastructure faults. */
export function isRetriable(err: unknown): boolean {
  if (err instanceof RuntrailError) return err.retriable;
  return true;
}

/** Best-effort stable code for metrics labels. */
export function errorCode(err: unknown): string {
  if (err instanceof RuntrailError) return err.code;
  if (err instanceof Error && typeof (err as { code?: unknown }).code === 'string') {
    return String((err as { code?: unknown }).code);
  }
  return 'internal';
}

/** Message of any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
