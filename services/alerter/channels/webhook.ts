import { createHmac } from 'node:crypto';
import type { z } from 'zod';
import type { WebhookChannelSchema } from '../../../shared/config.ts';
import { BaseChannel, postJson, type Delivery, type DeliveryResult } from './channel.ts';

/**
 * The webhook signature: hex HMAC-SHA256 over `<timestamp>.<body>` (the timestamp in the signed
 * text lets a receiver reject replays of an old request).
 */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/**
 * Generic webhook: the alert message as the JSON body, custom headers, and when a secret is set
 * `<timestampHeader>: <epoch s>` and `<signatureHeader>: sha256=<hex>`. `x-runtrail-delivery`
 * carries the outbox id (stable across retries) for receivers that de-duplicate.
 */
export class WebhookChannel extends BaseChannel<z.infer<typeof WebhookChannelSchema>> {
  readonly type = 'webhook' as const;

  async send(d: Delivery): Promise<DeliveryResult> {
    const body = JSON.stringify(d.message);
    const headers: Record<string, string> = { ...this.cfg.headers, 'x-runtrail-delivery': d.id, 'x-runtrail-kind': d.kind };
    if (this.cfg.secret) {
      const ts = String(Math.floor((this.ctx.now ?? Date.now)() / 1000));
      headers[this.cfg.timestampHeader] = ts;
      headers[this.cfg.signatureHeader] = `sha256=${webhookSignature(this.cfg.secret, ts, body)}`;
    }
    await postJson(this.cfg.url, body, { headers, timeoutMs: this.ctx.requestTimeoutMs, now: this.ctx.now });
    return { ref: '' };
  }
}
