import { closeSync, openSync, writeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { z } from 'zod';
import { RuntrailError } from '../../shared/errors.ts';
import { IngestFormatSchema } from '../../shared/event.ts';
import { streamTraffic, type GeneratedBody, type TrafficOptions, type TrafficStats } from './generator.ts';

/**
 * A spool: generated request bodies in a file, in arrival order, for loads whose bodies do not fit
 * in memory (a million open tasks is ~25 GB of bodies). Generation writes it before the timed part;
 * the timed part reads it back sequentially, one chunk ahead, so reading costs a buffer copy per
 * body and memory stays at a couple of chunks.
 *
 * Frame: u32 LE length of a JSON header, the header, then the body (`header.bytes` long).
 */

/** A source of bodies in arrival order; `undefined` once exhausted. */
export interface BodySource {
  /** Bodies in the source (known up front). */
  readonly count: number;
  next(): Promise<GeneratedBody | undefined>;
  close(): Promise<void>;
}

/** Bodies already in memory; each is released as it is handed out, as a shipper forgets a sent body. */
export function memorySource(bodies: GeneratedBody[]): BodySource {
  const held: Array<GeneratedBody | undefined> = bodies;
  let i = 0;
  return {
    count: bodies.length,
    next: () => {
      if (i >= held.length) return Promise.resolve(undefined);
      const b = held[i];
      held[i++] = undefined;
      return Promise.resolve(b);
    },
    close: () => Promise.resolve(),
  };
}

const HeaderSchema = z.strictObject({
  format: IngestFormatSchema,
  contentType: z.string(),
  events: z.number().int().nonnegative(),
  records: z.number().int().nonnegative(),
  sentAt: z.number(),
  bytes: z.number().int().nonnegative(),
});

/** The spool file does not hold what its writer wrote (truncated, or not a spool). */
export class SpoolFormatError extends RuntrailError {
  constructor(path: string, offset: number, reason: string) {
    super('spool_format', `spool ${path} at byte ${offset}: ${reason}`);
  }
}

/** Generates traffic straight into a spool file at `path`; returns the totals and the body count. */
export function writeSpool(path: string, opts: TrafficOptions): TrafficStats {
  const fd = openSync(path, 'w');
  try {
    const len = Buffer.alloc(4);
    return streamTraffic(opts, (b) => {
      const header = Buffer.from(JSON.stringify({ format: b.format, contentType: b.contentType, events: b.events, records: b.records, sentAt: b.sentAt, bytes: b.body.length }));
      len.writeUInt32LE(header.length, 0);
      writeSync(fd, len);
      writeSync(fd, header);
      writeSync(fd, b.body);
    });
  } finally {
    closeSync(fd);
  }
}

/** Read size; several of the largest bodies (an OTLP export of 512 spans is under 1 MiB). */
const CHUNK = 8 * 1024 * 1024;

/** Reads a spool written by {@link writeSpool}, one chunk ahead of the consumer. */
export async function spoolSource(path: string, count: number): Promise<BodySource> {
  const fh = await open(path, 'r');
  return new SpoolReader(path, fh, count);
}

class SpoolReader implements BodySource {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  /** File offset of `buf[0]`, for error messages. */
  private base = 0;
  /** File offset of the next chunk to read. */
  private offset = 0;
  private eof = false;
  private ahead: Promise<Buffer> | undefined;
  /** Serializes concurrent `next()` calls: frames must be taken in file order. */
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly path: string,
    private readonly fh: FileHandle,
    readonly count: number,
  ) {}

  next(): Promise<GeneratedBody | undefined> {
    const p = this.chain.then(() => this.take());
    this.chain = p.catch(() => undefined);
    return p;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.ahead?.catch(() => undefined);
    await this.fh.close();
  }

  private async take(): Promise<GeneratedBody | undefined> {
    if (!(await this.fill(4))) return undefined;
    const headerLen = this.buf.readUInt32LE(this.pos);
    const at = this.base + this.pos;
    if (!(await this.fill(4 + headerLen))) throw new SpoolFormatError(this.path, at, 'truncated header');
    let header: z.infer<typeof HeaderSchema>;
    try {
      header = HeaderSchema.parse(JSON.parse(this.buf.toString('utf8', this.pos + 4, this.pos + 4 + headerLen)));
    } catch (err) {
      throw new SpoolFormatError(this.path, at, `bad header: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!(await this.fill(4 + headerLen + header.bytes))) throw new SpoolFormatError(this.path, at, 'truncated body');
    const start = this.pos + 4 + headerLen;
    // A copy, so the chunk is not kept alive by a body still in the pipeline.
    const body = Buffer.from(this.buf.subarray(start, start + header.bytes));
    this.pos = start + header.bytes;
    return { format: header.format, contentType: header.contentType, body, events: header.events, records: header.records, sentAt: header.sentAt };
  }

  /** Makes at least `n` unread bytes available; false at the end of the file with fewer. */
  private async fill(n: number): Promise<boolean> {
    while (this.buf.length - this.pos < n) {
      if (this.eof && this.ahead === undefined) return false;
      const chunk = await (this.ahead ?? this.read());
      this.ahead = undefined;
      if (chunk.length === 0) {
        this.eof = true;
        continue;
      }
      this.buf = Buffer.concat([this.buf.subarray(this.pos), chunk]);
      this.base += this.pos;
      this.pos = 0;
      // One chunk ahead: the next read runs while the pipeline works through this one.
      if (!this.eof) this.ahead = this.read();
    }
    return true;
  }

  private async read(): Promise<Buffer> {
    const chunk = Buffer.allocUnsafe(CHUNK);
    const { bytesRead } = await this.fh.read(chunk, 0, CHUNK, this.offset);
    this.offset += bytesRead;
    if (bytesRead < CHUNK) this.eof = true;
    return chunk.subarray(0, bytesRead);
  }
}
