import { appendFile, mkdir } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import type { z } from 'zod';
import { errorMessage } from '../../../shared/errors.ts';
import type { JsonlChannelSchema } from '../../../shared/config.ts';
import { BaseChannel, DeliveryError, type ChannelContext, type Delivery, type DeliveryResult } from './channel.ts';

/**
 * One JSON line per notification (`{ "delivery": id, ...message }`) appended to a file, or written
 * to stdout with `path: "-"`. Relative paths resolve against the data directory.
 */
export class JsonlChannel extends BaseChannel<z.infer<typeof JsonlChannelSchema>> {
  readonly type = 'jsonl' as const;
  private readonly file: string | undefined;

  constructor(cfg: z.infer<typeof JsonlChannelSchema>, ctx: ChannelContext) {
    super(cfg, ctx);
    this.file = cfg.path === '-' ? undefined : isAbsolute(cfg.path) ? cfg.path : join(ctx.dataDir, cfg.path);
  }

  async send(d: Delivery): Promise<DeliveryResult> {
    const line = `${JSON.stringify({ delivery: d.id, ...d.message })}\n`;
    if (this.file === undefined) {
      (this.ctx.stdout ?? ((l: string) => process.stdout.write(l)))(line);
      return { ref: '' };
    }
    try {
      await mkdir(dirname(this.file), { recursive: true });
      await appendFile(this.file, line);
    } catch (err) {
      throw new DeliveryError('delivery_failed', `cannot append to ${this.file}: ${errorMessage(err)}`, { retriable: true, cause: err });
    }
    return { ref: '' };
  }
}
