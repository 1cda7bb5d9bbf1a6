import { describe, expect, it } from 'vitest';
import { parseRetryAfter } from '../../services/alerter/channels/channel.ts';
import { webhookSignature } from '../../services/alerter/channels/webhook.ts';
import { backoffMs } from '../../services/alerter/delivery/backoff.ts';
import { CircuitBreaker } from '../../services/alerter/delivery/circuit-breaker.ts';
import { byCreation } from '../../services/alerter/delivery/outbox.ts';
import type { OutboxEntry } from '../../shared/alert.ts';
import { RateLimiter } from '../../services/alerter/delivery/rate-limiter.ts';
import { DeliveryConfigSchema, parseConfig } from '../../shared/config.ts';
import { createChannels } from '../../services/alerter/channels/registry.ts';

describe('backoff', () => {
  const cfg = DeliveryConfigSchema.parse({ backoffInitialMs: 100, backoffMultiplier: 2, backoffMaxMs: 1000, jitter: 0.2 });

  it('grows exponentially up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6].map((a) => backoffMs(cfg, a, () => 0.5))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('spreads by at most ±jitter', () => {
    expect(backoffMs(cfg, 2, () => 0)).toBe(160);
    expect(backoffMs(cfg, 2, () => 1)).toBe(240);
    for (let i = 0; i < 200; i++) {
      const v = backoffMs(cfg, 3, Math.random);
      expect(v).toBeGreaterThanOrEqual(320);
      expect(v).toBeLessThanOrEqual(480);
    }
  });
});

describe('circuit breaker', () => {
  it('opens after the threshold, lets one trial through after openMs, closes on success', () => {
    const b = new CircuitBreaker(3, 1000);
    b.failure(0);
    b.failure(0);
    expect(b.waitMs(0)).toBe(0);
    b.failure(10);
    expect(b.state).toBe('open');
    expect(b.waitMs(500)).toBe(510);
    expect(b.waitMs(1010)).toBe(0);
    expect(b.state).toBe('halfOpen');
    b.started();
    expect(b.waitMs(1011)).toBeGreaterThan(0); // one trial at a time
    b.success();
    expect(b.state).toBe('closed');
    expect(b.waitMs(1012)).toBe(0);
  });

  it('a trial that ends without a verdict (a 429, a bad stored entry) lets the next delivery be the trial', () => {
    const b = new CircuitBreaker(1, 100);
    b.failure(0);
    expect(b.waitMs(100)).toBe(0);
    b.started();
    expect(b.waitMs(101)).toBe(100); // the trial is running
    b.release();
    expect(b.state).toBe('halfOpen');
    expect(b.waitMs(102)).toBe(0);
  });

  it('a failed trial opens it again at once', () => {
    const b = new CircuitBreaker(1, 100);
    b.failure(0);
    expect(b.waitMs(100)).toBe(0);
    b.started();
    b.failure(100);
    expect(b.state).toBe('open');
    expect(b.waitMs(150)).toBe(50);
    expect(b.opened).toBe(2);
  });
});

describe('rate limiter', () => {
  it('allows the burst, then says how long to wait, never refusing for good', () => {
    const r = new RateLimiter(60, 2, 0); // one per second
    expect(r.take(0)).toBe(0);
    expect(r.take(0)).toBe(0);
    expect(r.take(0)).toBe(1000);
    expect(r.take(500)).toBe(500);
    expect(r.take(1000)).toBe(0);
    expect(r.take(1000)).toBe(1000);
  });

  it('is unlimited at an infinite rate (the local sinks by default), and remote channels default to 60 a minute', () => {
    const r = new RateLimiter(Number.POSITIVE_INFINITY, 1, 0);
    for (let i = 0; i < 1000; i++) expect(r.take(0)).toBe(0);
    const cfg = parseConfig({
      alerting: {
        channels: [
          { type: 'jsonl', path: 'alerts.jsonl' },
          { type: 'webhook', url: 'http://127.0.0.1:9/hook' },
          { type: 'jsonl', name: 'slow-file', path: 'slow.jsonl', ratePerMinute: 6 },
        ],
      },
    });
    const channels = createChannels(cfg.alerting.channels ?? [], { requestTimeoutMs: 1000, dataDir: '/tmp' });
    expect(channels.map((c) => [c.name, c.ratePerMinute])).toEqual([
      ['jsonl', Number.POSITIVE_INFINITY],
      ['webhook', 60],
      ['slow-file', 6],
    ]);
  });
});

describe('Retry-After', () => {
  it('reads delta seconds and HTTP dates', () => {
    const now = Date.parse('2026-06-01T10:00:00Z');
    expect(parseRetryAfter('2', now)).toBe(2000);
    expect(parseRetryAfter('0.5', now)).toBe(500);
    expect(parseRetryAfter('Mon, 01 Jun 2026 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter(null, now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
  });
});

describe('webhook signature', () => {
  it('is hex HMAC-SHA256 over "<timestamp>.<body>"', () => {
    // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'key'
    expect(webhookSignature('key', '1700000000', '{"a":1}')).toBe('a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03');
    expect(webhookSignature('key', '1700000000', '{"a":1}')).not.toBe(webhookSignature('key', '1700000001', '{"a":1}'));
  });
});

describe('outbox order', () => {
  it('orders entries by creation time, then by sequence number as a number', () => {
    const e = (id: string, created_at: number) => ({ id, incident_id: id.split(':')[0] as string, created_at }) as OutboxEntry;
    const sorted = [e('inc-a:webhook:10', 5), e('inc-a:webhook:9', 5), e('inc-b:webhook:1', 4), e('inc-a:webhook:2', 6)].sort(byCreation);
    expect(sorted.map((x) => x.id)).toEqual(['inc-b:webhook:1', 'inc-a:webhook:9', 'inc-a:webhook:10', 'inc-a:webhook:2']);
  });
});
