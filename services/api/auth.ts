import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { ApiConfig, ApiRole } from '../../shared/config.ts';
import { AccessError, ConfigError } from '../../shared/errors.ts';
import type { Route, RouteGuard } from '../../shared/http.ts';
import type { Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';

/**
 * Access control for the API and the collector: bearer tokens with roles, stored in config as
 * SHA-256 hashes and compared in constant time, a token-bucket rate limit per token, and the
 * start-up rule that a server bound beyond loopback needs tokens.
 */

/** SHA-256 of a token, lowercase hex: what `api.tokens[].sha256` holds. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** A new random token (32 bytes, base64url, `rt_` prefix so secret scanners recognise it). */
export function newToken(): string {
  return `rt_${randomBytes(32).toString('base64url')}`;
}

/** True when `host` only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * Refuses to start a server bound beyond loopback when no token is configured.
 * @param what Server named in the message, e.g. `collector`.
 */
export function assertAccessConfigured(api: Readonly<ApiConfig>, host: string, what: string): void {
  if (api.tokens.length > 0 || isLoopback(host)) return;
  throw new ConfigError(
    `the ${what} listens on ${host} (beyond loopback) but \`api.tokens\` is empty: configure tokens (runtrail token new) or bind 127.0.0.1`,
  );
}

/** Roles that satisfy a route's role: admin passes everything. */
function allows(have: ApiRole, need: ApiRole): boolean {
  return have === 'admin' || have === need;
}

/** Token bucket state of one token. */
interface Bucket {
  tokens: number;
  at: number;
}

/** The authenticated caller. */
export interface Caller {
  name: string;
  role: ApiRole;
}

/**
 * Builds the route guard for a server, or undefined when no token is configured (then the server
 * must be on loopback, see {@link assertAccessConfigured}). The bucket map holds one entry per
 * configured token, so it is bounded by the config.
 */
export function createGuard(api: Readonly<ApiConfig>, log: Logger, metrics: MetricsRegistry, now: () => number = Date.now): RouteGuard | undefined {
  if (api.tokens.length === 0) return undefined;
  const tokens = api.tokens.map((t) => ({
    ...t,
    digest: Buffer.from(t.sha256, 'hex'),
    expiresMs: t.expiresAt === undefined ? Number.POSITIVE_INFINITY : Date.parse(t.expiresAt),
  }));
  const buckets = new Map<string, Bucket>();
  const refused = metrics.counter('runtrail_api_refused_total', 'Requests refused by access control, by reason');
  const alog = log.child({ component: 'auth' });

  function identify(req: IncomingMessage): Caller {
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) {
      refused.inc({ reason: 'missing' });
      throw new AccessError(401, 'missing bearer token: send `Authorization: Bearer <token>`');
    }
    const digest = createHash('sha256').update(m[1] as string, 'utf8').digest();
    // Every configured hash is compared, so timing says nothing about which (if any) matched.
    let found: (typeof tokens)[number] | undefined;
    for (const t of tokens) if (timingSafeEqual(digest, t.digest) && !found) found = t;
    if (!found) {
      refused.inc({ reason: 'unknown' });
      throw new AccessError(401, 'invalid token');
    }
    if (found.revoked || found.expiresMs <= now()) {
      refused.inc({ reason: found.revoked ? 'revoked' : 'expired' });
      alog.info({ token: found.name, reason: found.revoked ? 'revoked' : 'expired' }, 'token refused');
      throw new AccessError(401, 'invalid token');
    }
    return { name: found.name, role: found.role };
  }

  function take(caller: Caller): void {
    const t = now();
    const b = buckets.get(caller.name) ?? { tokens: api.rateLimitBurst, at: t };
    b.tokens = Math.min(api.rateLimitBurst, b.tokens + ((t - b.at) / 1000) * api.rateLimitPerSecond);
    b.at = t;
    buckets.set(caller.name, b);
    if (b.tokens < 1) {
      refused.inc({ reason: 'rate_limited' });
      throw new AccessError(429, 'rate limit exceeded; retry later', Math.max(1, Math.ceil((1 - b.tokens) / api.rateLimitPerSecond)));
    }
    b.tokens -= 1;
  }

  return (req: IncomingMessage, route: Route) => {
    const caller = identify(req);
    const need = route.role ?? 'admin';
    if (!allows(caller.role, need)) {
      refused.inc({ reason: 'role' });
      throw new AccessError(403, `this endpoint needs the ${need} role`);
    }
    take(caller);
  };
}
