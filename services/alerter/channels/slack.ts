import { z } from 'zod';
import type { AlertMessage, NotificationKind } from '../../../shared/alert.ts';
import type { SlackChannelSchema } from '../../../shared/config.ts';
import type { Severity } from '../../../shared/finding.ts';
import { BaseChannel, DeliveryError, postJson, type Delivery, type DeliveryResult } from './channel.ts';

const SEVERITY_MARK: Readonly<Record<Severity, string>> = {
  critical: ':red_circle:',
  high: ':large_orange_circle:',
  medium: ':large_yellow_circle:',
  low: ':large_blue_circle:',
  info: ':white_circle:',
};

const KIND_LABEL: Readonly<Record<NotificationKind, string>> = {
  trigger: 'New incident',
  escalate: 'Severity raised',
  update: 'Incident updated',
  resolve: 'Resolved',
};

/** Block Kit text fields are limited to 3000 characters. */
const clip = (s: string, n = 2900): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const iso = (ms: number): string => new Date(ms).toISOString().replace('.000Z', 'Z');

/** The readable Block Kit message (plus fallback `text`) for a notification. */
export function slackBlocks(kind: NotificationKind, m: AlertMessage): { text: string; blocks: unknown[] } {
  const i = m.incident;
  const status = i.status === 'resolved' ? 'resolved' : 'open';
  const text = `${KIND_LABEL[kind]}: [${i.severity}] ${i.title} (task ${m.task_id || '-'})`;
  const evidence = m.evidence.map(
    (e) => `• ${iso(e.time)} \`${e.type}\` ${[e.tool && `tool ${e.tool}`, e.action, e.resource, e.outcome].filter(Boolean).join(' · ')}`,
  );
  if (m.evidence_omitted > 0) evidence.push(`…and ${m.evidence_omitted} more`);
  const blocks: unknown[] = [
    { type: 'header', text: { type: 'plain_text', text: clip(`${KIND_LABEL[kind]}: ${i.title}`, 150) } },
    { type: 'section', text: { type: 'mrkdwn', text: clip(`${SEVERITY_MARK[i.severity]} *${i.severity.toUpperCase()}* · ${status} · ${i.finding_count} finding(s)\n${i.summary}`) } },
    {
      type: 'section',
      fields: [
        { type: 'mrkdwn', text: `*Task*\n\`${m.task_id || '-'}\`` },
        { type: 'mrkdwn', text: `*Agent*\n\`${m.agent_id || '-'}\`` },
        { type: 'mrkdwn', text: `*Workload*\n\`${m.workload_id || '-'}\`` },
        { type: 'mrkdwn', text: `*Detector*\n${i.detector}${i.rule ? ` / ${i.rule}` : ''}` },
        { type: 'mrkdwn', text: `*First seen*\n${iso(i.first_seen)}` },
        { type: 'mrkdwn', text: `*Last seen*\n${iso(i.last_seen)}` },
      ],
    },
  ];
  if (evidence.length > 0) blocks.push({ type: 'section', text: { type: 'mrkdwn', text: clip(`*Evidence*\n${evidence.join('\n')}`) } });
  if (m.frameworks.length > 0) blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: clip(`Frameworks: ${m.frameworks.join(', ')}`) }] });
  blocks.push({
    type: 'actions',
    elements: [
      { type: 'button', text: { type: 'plain_text', text: 'Open timeline' }, url: m.links.ui },
      { type: 'button', text: { type: 'plain_text', text: 'Timeline (API)' }, url: m.links.timeline },
    ],
  });
  return { text, blocks };
}

const SlackApiAnswer = z.object({ ok: z.boolean(), error: z.string().optional(), ts: z.string().optional(), channel: z.string().optional() }).loose();

/**
 * Slack. With an incoming webhook every notification is a new message. With a bot token the
 * trigger is posted with `chat.postMessage` and its `channel|ts` kept as the delivery's ref;
 * updates and the resolution rewrite that message with `chat.update`, and a severity rise also
 * posts a threaded reply broadcast to the channel, so the rise notifies people.
 */
export class SlackChannel extends BaseChannel<z.infer<typeof SlackChannelSchema>> {
  readonly type = 'slack' as const;
  override readonly updatesInPlace = this.cfg.botToken !== undefined;

  async send(d: Delivery): Promise<DeliveryResult> {
    const content = slackBlocks(d.kind, d.message);
    const { botToken, channel, webhookUrl } = this.cfg;
    if (botToken === undefined || channel === undefined) {
      await postJson(webhookUrl as string, JSON.stringify(content), { timeoutMs: this.ctx.requestTimeoutMs, now: this.ctx.now });
      return { ref: '' };
    }
    const [refChannel, ts] = d.ref.split('|');
    if (d.kind === 'trigger' || !ts || !refChannel) {
      const posted = await this.api('chat.postMessage', { channel, ...content });
      return { ref: `${posted.channel ?? channel}|${posted.ts ?? ''}` };
    }
    await this.api('chat.update', { channel: refChannel, ts, ...content });
    if (d.kind === 'escalate') {
      await this.api('chat.postMessage', { channel: refChannel, thread_ts: ts, reply_broadcast: true, text: content.text });
    }
    return { ref: d.ref };
  }

  private async api(method: string, body: Record<string, unknown>): Promise<z.infer<typeof SlackApiAnswer>> {
    const url = `${this.cfg.apiUrl.replace(/\/+$/, '')}/${method}`;
    const res = await postJson(url, JSON.stringify(body), {
      headers: { authorization: `Bearer ${this.cfg.botToken ?? ''}` },
      timeoutMs: this.ctx.requestTimeoutMs,
      now: this.ctx.now,
    });
    let parsed: z.infer<typeof SlackApiAnswer>;
    try {
      parsed = SlackApiAnswer.parse(JSON.parse(res.text));
    } catch (err) {
      throw new DeliveryError('delivery_failed', `Slack ${method}: unexpected answer: ${res.text.slice(0, 200)}`, { retriable: true, cause: err });
    }
    // The Web API answers 200 with ok=false; only rate limiting and server trouble are worth a retry.
    if (!parsed.ok) {
      const retriable = parsed.error === 'ratelimited' || parsed.error === 'internal_error' || parsed.error === 'fatal_error';
      throw new DeliveryError(retriable ? 'delivery_failed' : 'delivery_rejected', `Slack ${method}: ${parsed.error ?? 'not ok'}`, { retriable });
    }
    return parsed;
  }
}
