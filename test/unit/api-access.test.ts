import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../shared/config.ts';
import { AccessError, ConfigError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { assertAccessConfigured, createGuard, hashToken, isLoopback, newToken } from '../../services/api/auth.ts';
import { startEmbedded } from '../../services/embedded.ts';
import { decodeCursor, encodeCursor } from '../../services/api/pagination.ts';
import { z } from 'zod';

/** Access-control configuration and the guard, without a server. */

const req = (authorization?: string) => ({ headers: authorization === undefined ? {} : { authorization } }) as IncomingMessage;

describe('api config', () => {
  it('reads tokens from RUNTRAIL_API_TOKENS (JSON) and checks them', () => {
    const t = newToken();
    const cfg = loadConfig({ env: { RUNTRAIL_API_TOKENS: JSON.stringify([{ name: 'ci', role: 'ingest', sha256: hashToken(t) }]), RUNTRAIL_API_PORT: '9000' } });
    expect(cfg.api.tokens).toEqual([{ name: 'ci', role: 'ingest', sha256: hashToken(t), revoked: false }]);
    expect(cfg.api.port).toBe(9000);
    expect(() => loadConfig({ env: { RUNTRAIL_API_TOKENS: 'ci:ingest' } })).toThrow(/config field `api.tokens`/);
    expect(() => parseConfig({ api: { tokens: [{ name: 'x', role: 'ingest', sha256: t }] } })).toThrow(/api.tokens.0.sha256.*runtrail token hash/);
    expect(() => parseConfig({ api: { tokens: [{ name: 'x', role: 'root', sha256: hashToken(t) }] } })).toThrow(/api.tokens.0.role/);
    const dup = { name: 'x', role: 'analyst', sha256: hashToken(t) };
    expect(() => parseConfig({ api: { tokens: [dup, dup] } })).toThrow(/token names must be unique/);
    expect(() => parseConfig({ api: { tlsCertFile: 'cert.pem' } })).toThrow(/both tlsCertFile and tlsKeyFile/);
  });

  it('knows loopback hosts and refuses open servers beyond them', () => {
    for (const h of ['127.0.0.1', 'localhost', '::1', '[::1]', '127.1.2.3']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.5', 'api.example.com']) expect(isLoopback(h), h).toBe(false);
    const open = parseConfig({});
    expect(() => assertAccessConfigured(open.api, '0.0.0.0', 'collector')).toThrow(ConfigError);
    expect(() => assertAccessConfigured(open.api, '127.0.0.1', 'collector')).not.toThrow();
    const closed = parseConfig({ api: { tokens: [{ name: 'x', role: 'admin', sha256: hashToken('t') }] } });
    expect(() => assertAccessConfigured(closed.api, '0.0.0.0', 'collector')).not.toThrow();
  });

  it('refuses to start the embedded server with a collector beyond loopback and no tokens', async () => {
    const cfg = parseConfig({ dataDir: '/nonexistent/never-created', collector: { host: '0.0.0.0', port: 0 } });
    await expect(startEmbedded(cfg, silentLogger())).rejects.toThrow(/collector listens on 0.0.0.0 .* `api.tokens` is empty/);
  });
});

describe('guard', () => {
  const tokens = { a: newToken(), i: newToken(), x: newToken(), r: newToken() };
  let clock = Date.parse('2026-06-01T00:00:00Z');
  const cfg = parseConfig({
    api: {
      rateLimitBurst: 2,
      rateLimitPerSecond: 1,
      tokens: [
        { name: 'alice', role: 'analyst', sha256: hashToken(tokens.a) },
        { name: 'ship', role: 'ingest', sha256: hashToken(tokens.i) },
        { name: 'exp', role: 'admin', sha256: hashToken(tokens.x), expiresAt: '2026-06-01T00:00:10Z' },
        { name: 'rev', role: 'admin', sha256: hashToken(tokens.r), revoked: true },
      ],
    },
  });
  const guard = createGuard(cfg.api, silentLogger(), new MetricsRegistry(), () => clock);
  if (!guard) throw new Error('tokens are configured: a guard is expected');
  const status = (auth: string | undefined, role: 'analyst' | 'ingest' | 'admin' = 'analyst'): number => {
    try {
      guard(req(auth), { method: 'GET', path: '/x', role, handler: async () => {} });
      return 200;
    } catch (err) {
      if (err instanceof AccessError) return err.status;
      throw err;
    }
  };

  it('maps missing, malformed, unknown, revoked and expired tokens to 401 and wrong roles to 403', () => {
    expect(status(undefined)).toBe(401);
    expect(status(`Basic ${tokens.a}`)).toBe(401);
    expect(status('Bearer nope')).toBe(401);
    expect(status(`Bearer ${tokens.r}`)).toBe(401);
    expect(status(`Bearer ${tokens.x}`)).toBe(200);
    clock += 10_000;
    expect(status(`Bearer ${tokens.x}`)).toBe(401);
    expect(status(`Bearer ${tokens.i}`)).toBe(403);
    expect(status(`Bearer ${tokens.i}`, 'ingest')).toBe(200);
    expect(status(`Bearer ${tokens.a}`, 'admin')).toBe(403);
  });

  it('refills the bucket with time', () => {
    clock += 60_000;
    expect([status(`Bearer ${tokens.a}`), status(`Bearer ${tokens.a}`), status(`Bearer ${tokens.a}`)]).toEqual([200, 200, 429]);
    clock += 1_000;
    expect(status(`Bearer ${tokens.a}`)).toBe(200);
  });

  it('is absent without tokens', () => {
    expect(createGuard(parseConfig({}).api, silentLogger(), new MetricsRegistry())).toBeUndefined();
  });
});

describe('cursors', () => {
  it('round-trip and refuse anything else', () => {
    const schema = z.tuple([z.string(), z.string()]);
    expect(decodeCursor(encodeCursor(['1', 'a']), schema)).toEqual(['1', 'a']);
    expect(() => decodeCursor('not-base64-json', schema)).toThrow(/cursor/);
    expect(() => decodeCursor(encodeCursor(['1']), schema)).toThrow(/cursor/);
  });
});
