import type { ChannelConfig } from '../../../shared/config.ts';
import type { Channel, ChannelContext } from './channel.ts';
import { JsonlChannel } from './jsonl.ts';
import { KafkaChannel } from './kafka.ts';
import { PagerDutyChannel } from './pagerduty.ts';
import { SlackChannel } from './slack.ts';
import { WebhookChannel } from './webhook.ts';

/** One channel type: its config `type` and how to build it. */
interface ChannelType<T extends ChannelConfig['type']> {
  type: T;
  create(cfg: Extract<ChannelConfig, { type: T }>, ctx: ChannelContext): Channel;
}

/** Every channel type. Adding one = a file in this folder, a config schema, and one line here. */
export const CHANNEL_TYPES = [
  { type: 'slack', create: (c, ctx) => new SlackChannel(c, ctx) } satisfies ChannelType<'slack'>,
  { type: 'pagerduty', create: (c, ctx) => new PagerDutyChannel(c, ctx) } satisfies ChannelType<'pagerduty'>,
  { type: 'webhook', create: (c, ctx) => new WebhookChannel(c, ctx) } satisfies ChannelType<'webhook'>,
  { type: 'kafka', create: (c, ctx) => new KafkaChannel(c, ctx) } satisfies ChannelType<'kafka'>,
  { type: 'jsonl', create: (c, ctx) => new JsonlChannel(c, ctx) } satisfies ChannelType<'jsonl'>,
] as const;

/** Builds the configured channels (names are unique: the config schema checks it). */
export function createChannels(configs: readonly ChannelConfig[], ctx: ChannelContext): Channel[] {
  return configs.map((c) => {
    const t = CHANNEL_TYPES.find((x) => x.type === c.type);
    if (!t) throw new Error(`unknown channel type ${c.type}`);
    return (t.create as (cfg: ChannelConfig, ctx: ChannelContext) => Channel)(c, ctx);
  });
}
