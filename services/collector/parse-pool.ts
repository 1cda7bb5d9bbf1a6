import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { BodyError, RecordError, RuntrailError } from '../../shared/errors.ts';
import { DEFAULT_MAX_EVENT_BYTES } from './event-size.ts';
import type { SOURCE_TOPIC } from '../../shared/names.ts';
import type { RedactorOptions } from '../../shared/redaction.ts';
import type { EventValidation, Rejection } from './adapters/adapter.ts';

/**
 * A pool of worker threads that run the collectors' adapters, so parsing request bodies (the
 * largest single cost of ingest) leaves the thread that runs the bus, the correlator and storage.
 * A worker converts one body, stamps arrival time, and hands back each source topic's events as
 * write-ahead-log lines plus the same lines as one JSON array: the main thread parses that array
 * once (cheaper than converting the source format) and writes the lines to the log as they are.
 */

/** An ingest topic. */
export type SourceTopicId = (typeof SOURCE_TOPIC)[keyof typeof SOURCE_TOPIC];

/** A body to convert (main -> worker). */
export interface ParseRequest {
  id: number;
  format: string;
  contentType: string;
  body: Uint8Array;
}

/** One source topic's share of a body, serialized. */
export interface SerializedTopic {
  topic: SourceTopicId;
  count: number;
  /** Write-ahead-log lines (`[key,value]\n` each), exactly as the bus writes them. */
  wal: string;
  /** The same `[key,value]` pairs as one JSON array. */
  array: string;
}

/** A worker's answer (worker -> main). */
export type ParseReply =
  | {
      id: number;
      ok: true;
      topics: SerializedTopic[];
      accepted: number;
      rejected: Rejection[];
      rejectedCount: number;
      records: number;
      skipped: number;
      /** Time the worker spent converting and serializing, ms. */
      parseMs: number;
    }
  | { id: number; ok: false; code: string; field: string | undefined; message: string };

/** A successful reply. */
export type ParsedBody = Extract<ParseReply, { ok: true }>;

/** Workers for a machine: one per core beyond the main thread's, at least one, at most four. */
export function defaultParseWorkers(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

interface Pending {
  resolve: (r: ParsedBody) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  outstanding: number;
  /** Requests this worker holds, so its failure fails exactly those. */
  ids: Set<number>;
}

/** A parse worker died (uncaught error, exit); its requests fail with this retriable error (503). */
export class ParseWorkerError extends RuntrailError {
  constructor(message: string, cause?: unknown) {
    super('parse_worker_failed', message, { retriable: true, cause });
  }
}

/**
 * The pool. Requests go to the worker with the fewest outstanding; each worker takes them in
 * order. A worker that dies is replaced at once; the requests it held are rejected with a
 * retriable {@link ParseWorkerError}, so shippers are asked to retry rather than left waiting.
 */
export class ParsePool {
  private readonly workers: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;
  /** Total worker time spent converting bodies, ms. */
  parseMs = 0;
  /** Workers that died and were replaced. */
  restarts = 0;

  /**
   * @param redaction Secret redaction each worker applies to the events it converts; unset = off.
   * @param maxEventBytes Size bound of a published event (see event-size.ts).
   */
  constructor(
    size: number,
    private readonly validation: EventValidation,
    private readonly redaction?: RedactorOptions,
    private readonly maxEventBytes = DEFAULT_MAX_EVENT_BYTES,
  ) {
    for (let i = 0; i < Math.max(1, size); i++) {
      const slot = { outstanding: 0, ids: new Set<number>() } as unknown as Slot;
      this.spawn(slot);
      this.workers.push(slot);
    }
  }

  /** Starts a worker for a slot (at construction, and to replace one that died). */
  private spawn(slot: Slot): void {
    const worker = new Worker(new URL('./parse-worker.mjs', import.meta.url), { workerData: { validation: this.validation, redaction: this.redaction, maxEventBytes: this.maxEventBytes } });
    slot.worker = worker;
    worker.on('message', (reply: ParseReply) => {
      slot.outstanding--;
      slot.ids.delete(reply.id);
      if (slot.outstanding === 0) worker.unref();
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) {
        this.parseMs += reply.parseMs;
        p.resolve(reply);
      } else {
        p.reject(rebuildError(reply));
      }
    });
    let failed = false;
    const fail = (why: string, cause?: unknown): void => {
      if (failed || slot.worker !== worker) return;
      failed = true;
      const err = new ParseWorkerError(`parse worker failed (${why}); retry the request`, cause);
      for (const id of slot.ids) {
        const p = this.pending.get(id);
        this.pending.delete(id);
        p?.reject(err);
      }
      slot.ids.clear();
      slot.outstanding = 0;
      if (this.closed) return;
      this.restarts++;
      void worker.terminate().catch(() => undefined);
      this.spawn(slot);
    };
    worker.on('error', (err) => fail(`error: ${err.message}`, err));
    worker.on('exit', (code) => fail(`exited with code ${code}`));
    // An idle worker must not keep the process alive; one with requests in hand must.
    worker.unref();
  }

  get size(): number {
    return this.workers.length;
  }

  /** Converts a body on a worker. Rejects with the adapter's own error (BodyError, ...). */
  parse(format: string, contentType: string, body: Buffer): Promise<ParsedBody> {
    if (this.closed) return Promise.reject(new Error('parse pool is shut down'));
    let slot = this.workers[0] as Slot;
    for (const w of this.workers) if (w.outstanding < slot.outstanding) slot = w;
    const id = this.nextId++;
    return new Promise<ParsedBody>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      slot.ids.add(id);
      if (slot.outstanding++ === 0) slot.worker.ref();
      // Copied, not transferred: the caller still owns its buffer (which may be a pooled slice).
      slot.worker.postMessage({ id, format, contentType, body } satisfies ParseRequest);
    });
  }

  private failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(err);
    }
    for (const w of this.workers) {
      w.ids.clear();
      w.outstanding = 0;
    }
  }

  /** Stops the workers; requests still pending are rejected. Idempotent. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new Error('parse pool is shut down'));
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
  }

  /** Test hook: terminates one worker as a crash would (the pool must replace it). */
  async crashWorkerForTest(index = 0): Promise<void> {
    await this.workers[index]?.worker.terminate();
  }
}

/** The worker's error as the same class the adapter threw, so callers map it to the same response. */
function rebuildError(r: Extract<ParseReply, { ok: false }>): Error {
  if (r.code === 'body_invalid') return new BodyError(r.message);
  if (r.code === 'record_invalid') return new RecordError(r.field ?? '', r.message);
  if (r.code !== 'internal') return new RuntrailError(r.code, r.message);
  return new Error(r.message);
}
