import { sleep } from '../../shared/sleep.ts';
import { createReadStream, createWriteStream, statSync, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import type { Config } from '../../shared/config.ts';
import { BackpressureError, RuntrailError } from '../../shared/errors.ts';
import type { IngestFormat } from '../../shared/event.ts';
import type { Finding } from '../../shared/finding.ts';
import type { Logger } from '../../shared/logger.ts';
import { TOPIC } from '../../shared/names.ts';
import type { Adapter } from '../collector/adapters/adapter.ts';
import { ADAPTERS } from '../collector/adapters/index.ts';
import { createPipeline } from '../pipeline.ts';

/** `--format` names accepted by replay, mapped to adapters. */
export const REPLAY_FORMATS: Readonly<Record<string, IngestFormat>> = Object.freeze({
  'otlp-json': 'otlp-traces',
  'otlp-logs-json': 'otlp-logs',
  cloudtrail: 'cloudtrail',
  vault: 'vault',
  'k8s-audit': 'k8s-audit',
  falco: 'falco',
  spire: 'spire',
  runtrail: 'runtrail',
});

/** Replay statistics (written by `--stats`). */
export interface ReplayStats {
  files: number;
  records_read: number;
  events_accepted: number;
  records_rejected: number;
  records_skipped: number;
  tasks: number;
  unattributed_events: number;
  findings: number;
  elapsed_s: number;
  events_per_s: number;
}

/** Options for {@link replay}. */
export interface ReplayOptions {
  files: readonly string[];
  format: string;
  cfg: Readonly<Config>;
  log: Logger;
  findingsOut?: string;
  /** Progress callback (called at most a few times per second). */
  onProgress?: (p: { file: string; bytesRead: number; bytesTotal: number; records: number; accepted: number; rejected: number }) => void;
  /** Rejections are reported here (file, record index, field, reason). */
  onReject?: (r: { file: string; index: number; field: string; reason: string }) => void;
}

/** An input file cannot be read. */
export class InputError extends RuntrailError {
  constructor(message: string, cause?: unknown) {
    super('input_unreadable', message, { cause });
  }
}

/** Lines per body when a line-oriented file is replayed. */
const LINES_PER_BODY = 1000;

/**
 * Runs the whole pipeline in-process over files: the same adapters, correlator, detectors and
 * store as a live server, driven by event time only. This is how a policy is backtested.
 */
export async function replay(opts: ReplayOptions): Promise<ReplayStats> {
  const format = REPLAY_FORMATS[opts.format];
  if (!format) throw new RuntrailError('usage', `unknown --format "${opts.format}" (known: ${Object.keys(REPLAY_FORMATS).join(', ')})`);
  const adapter = ADAPTERS[format];
  for (const f of opts.files) {
    try {
      statSync(f);
    } catch (err) {
      throw new InputError(`cannot read input ${f}: ${(err as Error).message}`, err);
    }
  }
  const contentType = adapter.undeclaredContentType ?? 'application/json';
  const started = Date.now();
  const pipeline = await createPipeline({ cfg: opts.cfg, log: opts.log, mode: 'replay' });
  const tasks = new Set<string>();
  let unattributed = 0;
  let findings = 0;
  let findingsFile: WriteStream | undefined;
  if (opts.findingsOut) findingsFile = createWriteStream(opts.findingsOut);
  const timelineSub = await pipeline.bus.subscribe({
    topics: [TOPIC.timeline],
    onBatch: async (b) => {
      for (const m of b.messages) {
        if (m.value.task_id) tasks.add(m.value.task_id);
        else unattributed++;
      }
    },
  });
  const findingsSub = await pipeline.bus.subscribe({
    topics: [TOPIC.findings],
    onBatch: async (b) => {
      for (const m of b.messages) {
        findings++;
        if (findingsFile) findingsFile.write(`${JSON.stringify(findingLine(m.value))}\n`);
      }
    },
  });
  const stats = { records: 0, accepted: 0, rejected: 0, skipped: 0 };
  try {
    for (const file of opts.files) {
      await replayFile(file, format, adapter, async (body, baseIndex) => {
        const parsed = adapter.parse(body, contentType);
        stats.records += parsed.records;
        stats.rejected += parsed.rejectedCount;
        stats.skipped += parsed.skipped;
        for (const r of parsed.rejected) opts.onReject?.({ file, index: baseIndex + r.index, field: r.field, reason: r.reason });
        await publishWithBackpressure(() => pipeline.ingestor.publish(parsed.events));
        stats.accepted += parsed.events.length;
      }, (bytesRead, bytesTotal) => opts.onProgress?.({ file, bytesRead, bytesTotal, records: stats.records, accepted: stats.accepted, rejected: stats.rejected }));
    }
    await pipeline.drain(true);
    // Let the group-less readers see the last batches.
    while ((await timelineSub.lag()) > 0 || (await findingsSub.lag()) > 0) await sleep(10);
  } finally {
    await timelineSub.shutdown();
    await findingsSub.shutdown();
    await pipeline.shutdown();
    if (findingsFile) await new Promise<void>((resolve) => (findingsFile as WriteStream).end(resolve));
  }
  const elapsed = (Date.now() - started) / 1000;
  return {
    files: opts.files.length,
    records_read: stats.records,
    events_accepted: stats.accepted,
    records_rejected: stats.rejected,
    records_skipped: stats.skipped,
    tasks: tasks.size,
    unattributed_events: unattributed,
    findings,
    elapsed_s: Number(elapsed.toFixed(3)),
    events_per_s: Math.round(stats.accepted / Math.max(elapsed, 0.001)),
  };
}

/** The JSONL shape of a finding (`--findings`). */
export function findingLine(f: Finding): Record<string, unknown> {
  return { ...f };
}

async function publishWithBackpressure(fn: () => Promise<void>): Promise<void> {
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof BackpressureError)) throw err;
      await sleep(20);
    }
  }
}

/**
 * Streams a file (plain or gzip) into bodies for the adapter. OTLP files carry one export request
 * per line; whole-document JSON (a CloudTrail file, an array) is one body; other NDJSON is chunked.
 */
async function replayFile(
  file: string,
  format: IngestFormat,
  adapter: Adapter,
  onBody: (body: Buffer, baseIndex: number) => Promise<void>,
  onProgress: (bytesRead: number, bytesTotal: number) => void,
): Promise<void> {
  const total = statSync(file).size;
  const raw = createReadStream(file);
  let bytesRead = 0;
  raw.on('data', (c) => (bytesRead += c.length));
  const gz = file.endsWith('.gz');
  const stream = gz ? raw.pipe(createGunzip()) : raw;
  const failure = new Promise<never>((_, reject) => {
    const fail = (err: Error) => reject(new InputError(`cannot read input ${file}: ${err.message}`, err));
    raw.on('error', fail);
    if (gz) stream.on('error', fail);
  });
  failure.catch(() => undefined);
  const perLine = format === 'otlp-traces' || format === 'otlp-logs';
  const rl = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  let firstLine = true;
  let wholeDoc: string[] | null = null;
  let chunk: string[] = [];
  let index = 0;
  let lastProgress = 0;
  const work = (async () => {
    for await (const line of rl) {
      if (firstLine) {
        firstLine = false;
        const t = line.trimStart();
        // A pretty-printed or single-document JSON file is one body; NDJSON lines each start a record.
        if (!perLine && (t.startsWith('[') || (t.startsWith('{') && !isCompleteJson(t)))) wholeDoc = [];
      }
      if (wholeDoc) {
        wholeDoc.push(line);
        continue;
      }
      if (line.trim() === '') continue;
      if (perLine) {
        await onBody(Buffer.from(line), index);
        index++;
      } else {
        chunk.push(line);
        if (chunk.length >= LINES_PER_BODY) {
          await onBody(Buffer.from(chunk.join('\n')), index);
          index += chunk.length;
          chunk = [];
        }
      }
      const now = Date.now();
      if (now - lastProgress > 250) {
        lastProgress = now;
        onProgress(bytesRead, total);
      }
    }
    if (wholeDoc) await onBody(Buffer.from((wholeDoc as string[]).join('\n')), 0);
    else if (chunk.length > 0) await onBody(Buffer.from(chunk.join('\n')), index);
    onProgress(total, total);
  })();
  await Promise.race([work, failure]);
}

function isCompleteJson(line: string): boolean {
  try {
    JSON.parse(line);
    return true;
  } catch {
    return false;
  }
}
