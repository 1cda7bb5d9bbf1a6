import type { AlertMessage, NotificationKind } from '../../../shared/alert.ts';
import type { Bus } from '../../../shared/bus/bus.ts';
import { DEFAULT_CHANNEL_RATE_PER_MINUTE, type ChannelConfig } from '../../../shared/config.ts';
import { RuntrailError } from '../../../shared/errors.ts';
import type { Severity } from '../../../shared/finding.ts';

/** What a channel is asked to send. */
export interface Delivery {
  /** Outbox entry id: stable across retries, so receivers can de-duplicate. */
  id: string;
  kind: NotificationKind;
  message: AlertMessage;
  /** The channel's handle from an earlier delivery of the same incident ('' = none). */
  ref: string;
}

/** What a successful send returns. */
export interface DeliveryResult {
  /** Handle for later updates in place (Slack `channel|ts`); '' = none. */
  ref: string;
}

/** An incident channel. `send` throws {@link DeliveryError} on failure. */
export interface Channel {
  readonly name: string;
  readonly type: ChannelConfig['type'];
  readonly minSeverity: Severity;
  readonly route: ChannelConfig['route'];
  readonly ratePerMinute: number;
  readonly burst: number;
  /** True when later deliveries need the `ref` of the first (Slack's update in place). */
  readonly updatesInPlace: boolean;
  /** False for notifications this channel has no use for (PagerDuty ignores plain updates). */
  accepts(kind: NotificationKind): boolean;
  send(d: Delivery): Promise<DeliveryResult>;
}

/** What channels may use besides their config. */
export interface ChannelContext {
  /** The bus, for the Kafka channel. */
  bus?: Bus;
  /** Per-request time limit, ms. */
  requestTimeoutMs: number;
  /** Data directory (relative JSONL paths resolve against it). */
  dataDir: string;
  /** Where `jsonl` with `path: "-"` writes; default stdout. */
  stdout?: (line: string) => void;
  now?: () => number;
}

/** The fields every channel takes from its config. */
export abstract class BaseChannel<C extends ChannelConfig> implements Channel {
  abstract readonly type: ChannelConfig['type'];
  readonly name: string;
  readonly minSeverity: Severity;
  readonly route: ChannelConfig['route'];
  readonly ratePerMinute: number;
  readonly burst: number;
  readonly updatesInPlace: boolean = false;

  constructor(
    protected readonly cfg: C,
    protected readonly ctx: ChannelContext,
  ) {
    this.name = cfg.name ?? cfg.type;
    this.minSeverity = cfg.minSeverity;
    this.route = cfg.route;
    this.ratePerMinute = cfg.ratePerMinute ?? DEFAULT_CHANNEL_RATE_PER_MINUTE[cfg.type];
    this.burst = cfg.burst;
  }

  accepts(_kind: NotificationKind): boolean {
    return true;
  }

  abstract send(d: Delivery): Promise<DeliveryResult>;
}

/**
 * A delivery failed. `retriable` decides between a retry and a dead letter; `retryAfterMs` is the
 * receiver's own Retry-After (429), which holds back the whole channel rather than tripping its breaker.
 */
export class DeliveryError extends RuntrailError {
  readonly retryAfterMs: number | undefined;
  readonly status: number | undefined;

  constructor(code: string, message: string, opts: { retriable: boolean; retryAfterMs?: number; status?: number; cause?: unknown }) {
    super(code, message, { retriable: opts.retriable, cause: opts.cause });
    this.retryAfterMs = opts.retryAfterMs;
    this.status = opts.status;
  }
}

/** Parses Retry-After (delta seconds or an HTTP date) to ms from `now`; undefined when absent or bad. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const s = Number(value);
  if (Number.isFinite(s) && s >= 0) return Math.round(s * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * POSTs a body and classifies the answer: 2xx resolves with the response text; 429 and 408 and 5xx
 * and network errors or timeouts are retriable; any other status is permanent (the request itself
 * is wrong: bad URL, key or payload), so retrying cannot help.
 */
export async function postJson(
  url: string,
  body: string,
  opts: { headers?: Record<string, string>; timeoutMs: number; now?: () => number },
): Promise<{ status: number; text: string }> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8', 'user-agent': 'runtrail-alerter', ...opts.headers },
      body,
      signal: AbortSignal.timeout(opts.timeoutMs),
    });
  } catch (err) {
    const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
    throw new DeliveryError(
      timedOut ? 'delivery_timeout' : 'delivery_unreachable',
      timedOut ? `no answer within ${opts.timeoutMs} ms` : `cannot reach ${new URL(url).host}: ${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}`,
      { retriable: true, cause: err },
    );
  }
  const text = await res.text().catch(() => '');
  if (res.ok) return { status: res.status, text };
  const excerpt = text.slice(0, 200);
  if (res.status === 429) {
    const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'), (opts.now ?? Date.now)());
    throw new DeliveryError('delivery_rate_limited', `HTTP 429 (rate limited${retryAfterMs === undefined ? '' : `, retry after ${retryAfterMs} ms`}): ${excerpt}`, {
      retriable: true,
      retryAfterMs,
      status: 429,
    });
  }
  const retriable = res.status === 408 || res.status >= 500;
  throw new DeliveryError(retriable ? 'delivery_failed' : 'delivery_rejected', `HTTP ${res.status}: ${excerpt}`, { retriable, status: res.status });
}
