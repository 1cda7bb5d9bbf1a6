import { sleep } from '../sleep.ts';
import { closeSync, existsSync, fsync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, truncateSync, unlinkSync, write, writeFileSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { RateLimitedLog, type Logger } from '../logger.ts';
import { BackpressureError, StorageError, errorCode, errorMessage } from '../errors.ts';
import type { MetricsRegistry } from '../metrics.ts';
import { TOPIC_IDS, type TopicId } from '../names.ts';
import {
  decodePayload,
  type Bus,
  type DeliveredMessage,
  type MessageBatch,
  type OutgoingMessage,
  type PartitionOffset,
  type SubscribeOptions,
  type Subscription,
  type TopicPayload,
  type UndecodableMessage,
} from './bus.ts';

/**
 * The embedded-mode bus: one partition per topic, Kafka-like offsets and consumer groups, and a
 * write-ahead log on disk so that `publish` resolving means "on disk" and a restart redelivers
 * everything a group had not committed. Messages live in memory from the lowest offset any
 * registered group still needs; the backlog is bounded and publishers get a BackpressureError
 * (HTTP 503 at the collector) when consumers fall too far behind.
 *
 * Group commit: a publish serializes its messages at once (one JSON.stringify each) and queues
 * them; one flush cycle at a time writes everything queued, across topics, and fsyncs each file it
 * wrote, off the main thread (libuv's pool). Publishes that arrive while a cycle is in progress wait
 * for the next cycle. A publish resolves only after the fsync that covers its bytes, and its
 * messages become visible to consumers only then (Kafka's high watermark), so nothing a consumer
 * sees, stores or commits past can be lost in a crash.
 *
 * A failed write (a full disk, a quota) fails only the publishes of the topic it was writing, with
 * a retriable error (HTTP 503 + Retry-After at the collector): the file is cut back to its last
 * acknowledged byte, so it holds exactly the messages whose offsets consumers know, and the next
 * cycle writes again once space is back. A failed fsync, or a write whose partial bytes cannot be
 * cut, stops the log for good (after a failed fsync the file's state is unknown): publishes are
 * refused and the bus reports itself not ready until the process is restarted and recovers the log.
 */

/** Options for {@link LocalBus}. */
export interface LocalBusOptions {
  /** Directory for the write-ahead log and committed offsets; `null` keeps everything in memory only. */
  dir: string | null;
  /** fsync the log before a publish resolves (one fsync per file per flush cycle, shared by the publishes in it). */
  fsync: boolean;
  /** Largest batch handed to a consumer. */
  maxBatch: number;
  /** Unconsumed messages per topic before publish is refused. */
  maxBacklog: number;
  /** Segment size in bytes before rolling to a new file. */
  segmentBytes: number;
  log: Logger;
  metrics?: MetricsRegistry;
  /** The log's file writes; tests substitute a write that fails as a full disk does. Default: node:fs. */
  fileOps?: LogFileOps;
}

/** The write-ahead log's file operations (see {@link LocalBusOptions.fileOps}). */
export interface LogFileOps {
  /** Writes `buf` from `offset` at the end of the file; resolves with the bytes written. */
  write(fd: number, buf: Buffer, offset: number): Promise<number>;
  fsync(fd: number): Promise<void>;
}

interface Entry {
  key: string | null;
  value: unknown;
  /** Serialized line as in the log (kept only when it failed to decode). */
  raw?: string;
  bad?: string;
}

interface Segment {
  base: number;
  path: string;
  bytes: number;
  count: number;
}

class TopicLog {
  /** Offset of the first entry held in memory. */
  base = 0;
  /** Entries from `head` on are live; the head index avoids O(n) splices on every trim. */
  private entries: Entry[] = [];
  private head = 0;
  /** Offset just past the last visible (durable) message. */
  end = 0;
  /** Messages published and queued for the log but not yet durable (not visible yet). */
  unsynced = 0;
  readonly segments: Segment[] = [];
  fd: number | null = null;
  private waiters: Array<() => void> = [];

  constructor(readonly topic: TopicId) {}

  /** Messages held in memory. */
  get size(): number {
    return this.entries.length - this.head;
  }

  push(e: Entry): void {
    this.entries.push(e);
  }

  get(offset: number): Entry | undefined {
    return offset < this.base ? undefined : this.entries[this.head + (offset - this.base)];
  }

  /** Forgets in-memory entries before `offset`. */
  dropBefore(offset: number): void {
    if (offset <= this.base) return;
    const n = Math.min(offset - this.base, this.size);
    this.head += n;
    this.base = offset;
    if (this.size === 0) {
      this.entries = [];
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves when a message at or past `offset` exists (or immediately). */
  waitFor(offset: number): Promise<void> {
    if (this.end > offset) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

interface Sub<T extends TopicId> {
  opts: SubscribeOptions<T>;
  positions: Map<TopicId, number>;
  stopped: boolean;
  loop: Promise<void>;
  wake: () => void;
}

/** A publish waiting for its flush cycle. */
interface QueuedPublish {
  t: TopicLog;
  /** Its messages as log lines, each ending in a newline. */
  text: string;
  messages: ReadonlyArray<OutgoingMessage<TopicId>>;
  resolve: () => void;
  reject: (err: Error) => void;
}

const SEGMENT_SUFFIX = '.log';

/** In-process bus with an optional write-ahead log. */
export class LocalBus implements Bus {
  readonly kind = 'local' as const;
  private readonly topics = new Map<TopicId, TopicLog>();
  /** group -> topic -> committed offset (next to read). */
  private readonly committed = new Map<string, Map<TopicId, number>>();
  /** Groups registered per topic (have subscribed or have committed offsets on disk). */
  private readonly groupsByTopic = new Map<TopicId, Set<string>>();
  private readonly subs = new Set<Sub<TopicId>>();
  /** Offsets file writes: the one in progress, and the next one that callers arriving meanwhile share. */
  private offsetsWrite: Promise<void> = Promise.resolve();
  private offsetsNext: Promise<void> | undefined;
  /** Publishes waiting for the next flush cycle, in publish order. */
  private queue: QueuedPublish[] = [];
  private flushing: Promise<void> | undefined;
  private flushScheduled = false;
  /** Set when a log write or fsync failed: the log is stopped. */
  private failed: Error | undefined;
  /** Topics kept in memory only, even with a log directory (see {@link keepInMemoryOnly}). */
  private readonly volatile = new Set<TopicId>();
  /** Callers of {@link whenCommitted}, by group and topic. */
  private readonly commitWaiters = new Map<string, Array<{ offset: number; resolve: () => void }>>();
  private started = false;
  private closed = false;
  /** The directory's lock file while this bus holds it. */
  private lockPath: string | undefined;
  private readonly fileOps: LogFileOps;
  private readonly writeFailedLog: RateLimitedLog;

  constructor(private readonly opts: LocalBusOptions) {
    for (const t of TOPIC_IDS) this.topics.set(t, new TopicLog(t));
    this.fileOps = opts.fileOps ?? { write: writeAsync, fsync: fsyncAsync };
    this.writeFailedLog = new RateLimitedLog(opts.log, 'bus write-ahead log write failed; publishes refused with retry until it succeeds');
    const m = opts.metrics;
    if (m) {
      m.gauge('runtrail_bus_backlog_messages', 'Messages held in the in-process bus per topic').collect(() =>
        [...this.topics.values()].map((t) => [{ topic: t.topic }, t.size]),
      );
    }
  }

  private get offsetsPath(): string | null {
    return this.opts.dir ? join(this.opts.dir, 'offsets.json') : null;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const dir = this.opts.dir;
    if (!dir) return;
    mkdirSync(dir, { recursive: true });
    this.lockPath = lockDirectory(dir);
    const op = this.offsetsPath as string;
    if (existsSync(op)) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(readFileSync(op, 'utf8'));
      } catch (err) {
        // Written by tmp file + rename, so only damage from outside gets here; guessing offsets could drop acknowledged events.
        throw new StorageError(
          `bus offsets file ${op} is not readable JSON (${errorMessage(err)}): restore it, or delete it to have every consumer group re-read the whole write-ahead log (duplicates collapse on event ids)`,
          { retriable: false, cause: err },
        );
      }
      if (typeof parsed === 'object' && parsed !== null) {
        for (const [group, topics] of Object.entries(parsed as Record<string, unknown>)) {
          if (typeof topics !== 'object' || topics === null) continue;
          for (const [topic, off] of Object.entries(topics as Record<string, unknown>)) {
            if (!TOPIC_IDS.includes(topic as TopicId) || typeof off !== 'number') continue;
            this.setCommitted(group, topic as TopicId, off);
          }
        }
      }
    }
    for (const t of this.topics.values()) this.recoverTopic(t, dir);
  }

  private setCommitted(group: string, topic: TopicId, offset: number): void {
    let g = this.committed.get(group);
    if (!g) this.committed.set(group, (g = new Map()));
    const now = Math.max(offset, g.get(topic) ?? 0);
    g.set(topic, now);
    let set = this.groupsByTopic.get(topic);
    if (!set) this.groupsByTopic.set(topic, (set = new Set()));
    set.add(group);
    const key = `${group}\u0000${topic}`;
    const waiters = this.commitWaiters.get(key);
    if (waiters) {
      const still = waiters.filter((w) => w.offset > now);
      for (const w of waiters) if (w.offset <= now) w.resolve();
      if (still.length > 0) this.commitWaiters.set(key, still);
      else this.commitWaiters.delete(key);
    }
  }

  /**
   * Keeps a topic in memory only, even when the bus has a log directory: publishes to it resolve at
   * once and a restart starts it empty, at the highest offset any group had committed on it (so
   * committed offsets stay valid). Sound only for a topic derived from another one whose commits
   * wait for this topic's consumers (see {@link whenCommitted}): then a crash loses nothing that
   * is not redelivered upstream. Must be called before {@link start}.
   */
  keepInMemoryOnly(topic: TopicId): void {
    if (this.started) throw new Error(`keepInMemoryOnly(${topic}) must be called before start()`);
    this.volatile.add(topic);
  }

  /** Offset just past the last message published on a topic so far (durable or on its way). */
  endOffset(topic: TopicId): number {
    const t = this.topics.get(topic) as TopicLog;
    return t.end + t.unsynced;
  }

  /** Resolves once `group` has committed `topic` up to `offset` (the next offset to read). */
  whenCommitted(group: string, topic: TopicId, offset: number): Promise<void> {
    if ((this.committed.get(group)?.get(topic) ?? 0) >= offset) return Promise.resolve();
    return new Promise((resolve) => {
      const key = `${group}\u0000${topic}`;
      let list = this.commitWaiters.get(key);
      if (!list) this.commitWaiters.set(key, (list = []));
      list.push({ offset, resolve });
    });
  }

  /** Lowest offset any registered group still needs on this topic (end when none registered). */
  private retainFrom(t: TopicLog): number {
    const groups = this.groupsByTopic.get(t.topic);
    if (!groups || groups.size === 0) return t.end;
    let min = t.end;
    for (const g of groups) min = Math.min(min, this.committed.get(g)?.get(t.topic) ?? 0);
    // Live subscriptions may be behind their last commit only transiently; never keep less than they read.
    return min;
  }

  private recoverTopic(t: TopicLog, dir: string): void {
    const tdir = join(dir, t.topic);
    mkdirSync(tdir, { recursive: true });
    const files = readdirSync(tdir)
      .filter((f) => f.endsWith(SEGMENT_SUFFIX))
      .sort();
    const need = (() => {
      const groups = this.groupsByTopic.get(t.topic);
      // No group has ever committed here: keep everything, a new group may start from the beginning.
      if (!groups || groups.size === 0) return 0;
      let min = Number.POSITIVE_INFINITY;
      for (const g of groups) min = Math.min(min, this.committed.get(g)?.get(t.topic) ?? 0);
      return min;
    })();
    let expectedBase: number | null = null;
    for (const f of files) {
      const base = Number(f.slice(0, -SEGMENT_SUFFIX.length));
      const path = join(tdir, f);
      let text = readFileSync(path, 'utf8');
      // A crash mid-append can leave a torn last line; it was never acknowledged, so cut it.
      const lastNl = text.lastIndexOf('\n');
      if (lastNl !== text.length - 1) {
        truncateSync(path, Buffer.byteLength(text.slice(0, lastNl + 1)));
        text = text.slice(0, lastNl + 1);
        this.opts.log.warn({ topic: t.topic, segment: f }, 'truncated torn write at end of bus segment');
      }
      const lines = text === '' ? [] : text.slice(0, -1).split('\n');
      if (expectedBase === null) {
        t.base = base;
        t.end = base;
      }
      expectedBase = base + lines.length;
      t.segments.push({ base, path, bytes: statSync(path).size, count: lines.length });
      for (let i = 0; i < lines.length; i++) {
        const off = base + i;
        if (off >= need) t.push(this.decodeLine(t.topic, lines[i] as string));
        else t.base = off + 1;
      }
      t.end = base + lines.length;
    }
    if (t.size === 0) t.base = t.end;
    if (this.volatile.has(t.topic) && t.segments.length === 0) {
      // Nothing of it survived the last run: continue its offsets past every group's commit.
      let max = 0;
      for (const g of this.groupsByTopic.get(t.topic) ?? []) max = Math.max(max, this.committed.get(g)?.get(t.topic) ?? 0);
      t.base = t.end = max;
    }
    if (t.segments.length > 0) this.opts.log.info({ topic: t.topic, from: t.base, to: t.end }, 'bus topic recovered');
  }

  private decodeLine(topic: TopicId, line: string): Entry {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (err) {
      return { key: null, value: undefined, raw: line, bad: `log line is not JSON: ${(err as Error).message}` };
    }
    if (!Array.isArray(parsed) || parsed.length !== 2) return { key: null, value: undefined, raw: line, bad: 'log line is not [key, value]' };
    const key = typeof parsed[0] === 'string' ? parsed[0] : null;
    const dec = decodePayload(topic, JSON.stringify(parsed[1]));
    if (!dec.ok) return { key, value: undefined, raw: line, bad: dec.reason };
    return { key, value: dec.value };
  }

  ready(): boolean {
    return this.started && !this.closed && this.failed === undefined;
  }

  publish<T extends TopicId>(topic: T, messages: readonly OutgoingMessage<T>[]): Promise<void> {
    return this.append(topic, messages, undefined);
  }

  /**
   * Like {@link publish}, for messages already serialized as this bus's log lines
   * (`JSON.stringify([key, value])` + newline each, in order): a collector's parse worker does that
   * off the main thread. `lines` must hold exactly `messages`.
   */
  publishSerialized<T extends TopicId>(topic: T, messages: readonly OutgoingMessage<T>[], lines: string): Promise<void> {
    return this.append(topic, messages, lines);
  }

  private append<T extends TopicId>(topic: T, messages: readonly OutgoingMessage<T>[], lines: string | undefined): Promise<void> {
    if (this.closed) return Promise.reject(new BackpressureError('bus is shutting down', 1));
    if (this.failed) return Promise.reject(new StorageError(`bus write-ahead log failed earlier: ${this.failed.message}`, { retriable: false, cause: this.failed }));
    if (messages.length === 0) return Promise.resolve();
    const t = this.topics.get(topic) as TopicLog;
    const backlog = t.end + t.unsynced - this.slowestPosition(t);
    // Refuse only while consumers are behind: one body larger than the limit is still accepted when
    // the topic is drained, or it could never be accepted at all.
    if (backlog > 0 && backlog + messages.length > this.opts.maxBacklog) {
      return Promise.reject(
        new BackpressureError(`bus topic ${topic} has ${backlog} unconsumed messages (bus.maxBacklog ${this.opts.maxBacklog}); retry shortly`, 1),
      );
    }
    if (!this.opts.dir || this.volatile.has(topic)) {
      this.makeVisible(t, messages);
      return Promise.resolve();
    }
    // Serialized now, once: the log holds the value as it was when published.
    let text = lines ?? '';
    if (lines === undefined) {
      for (const m of messages) text += m.serialized === undefined ? `${JSON.stringify([m.key, m.value])}\n` : `[${JSON.stringify(m.key)},${m.serialized}]\n`;
    }
    t.unsynced += messages.length;
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ t, text, messages, resolve, reject });
      this.scheduleFlush();
    });
  }

  /** Appends messages to memory and lets consumers see them (they are durable by now). */
  private makeVisible(t: TopicLog, messages: ReadonlyArray<OutgoingMessage<TopicId>>): void {
    const retained = (this.groupsByTopic.get(t.topic)?.size ?? 0) > 0 || this.hasLiveReader(t.topic);
    if (retained) for (const m of messages) t.push({ key: m.key, value: m.value });
    t.end += messages.length;
    if (!retained) t.dropBefore(t.end);
    this.opts.metrics?.counter('runtrail_bus_published_total', 'Messages published on the in-process bus').inc({ topic: t.topic }, messages.length);
    t.notify();
  }

  /**
   * Starts a flush cycle after the current synchronous run, so publishes made together (the
   * ingestor's three topics, a stage's publishes of one batch) share it.
   */
  private scheduleFlush(): void {
    if (this.flushing || this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      this.flushing = this.flushLoop().finally(() => {
        this.flushing = undefined;
        // A publish queued after the loop's last check, while `flushing` was still set.
        if (this.queue.length > 0) this.scheduleFlush();
      });
    });
  }

  /**
   * Runs flush cycles until nothing is queued: write + fsync, then visible and resolved, in publish
   * order. A topic whose write failed has its publishes rejected; the other topics of the cycle go on.
   */
  private async flushLoop(): Promise<void> {
    while (this.queue.length > 0) {
      const cycle = this.queue;
      this.queue = [];
      const failures = await this.writeCycle(cycle);
      if (this.failed) {
        this.opts.log.error({ err: this.failed.message }, 'bus write-ahead log failed; refusing further publishes until restart');
        const failure = new StorageError(`bus write-ahead log failed: ${this.failed.message}`, { retriable: false, cause: this.failed });
        for (const p of [...cycle, ...this.queue.splice(0)]) {
          p.t.unsynced -= p.messages.length;
          p.reject(failure);
        }
        return;
      }
      for (const p of cycle) {
        p.t.unsynced -= p.messages.length;
        const err = failures.get(p.t);
        if (err) {
          p.reject(err);
          continue;
        }
        this.makeVisible(p.t, p.messages);
        p.resolve();
      }
    }
  }

  /**
   * Writes one cycle's publishes to their topics' logs (topics in parallel) and fsyncs each file
   * once. Returns the topics whose write failed and was undone (retriable); sets `failed` when the
   * log can no longer be trusted.
   */
  private async writeCycle(cycle: readonly QueuedPublish[]): Promise<Map<TopicLog, StorageError>> {
    const byTopic = new Map<TopicLog, { texts: string[]; count: number }>();
    for (const p of cycle) {
      let w = byTopic.get(p.t);
      if (!w) byTopic.set(p.t, (w = { texts: [], count: 0 }));
      w.texts.push(p.text);
      w.count += p.messages.length;
    }
    const failures = new Map<TopicLog, StorageError>();
    await Promise.all(
      [...byTopic].map(async ([t, w]) => {
        let seg: Segment;
        try {
          // Nothing of this cycle is in a file yet if opening (or rolling) the segment fails.
          seg = this.openSegment(t);
        } catch (err) {
          failures.set(t, this.writeFailed(t, err));
          return;
        }
        const fd = t.fd as number;
        let written = 0;
        try {
          // In pieces of at most WRITE_CHUNK_CHARS: one cycle can hold many large publishes, and a
          // string joined from all of them could pass V8's string length limit.
          for (const piece of chunkTexts(w.texts)) {
            const buf = Buffer.from(piece);
            let off = 0;
            while (off < buf.length) {
              const n = await this.fileOps.write(fd, buf, off);
              off += n;
              written += n;
            }
          }
        } catch (err) {
          if (written > 0) {
            try {
              // The partial bytes were never acknowledged, and later writes must follow the last
              // acknowledged line or the file's offsets would part from the consumers'.
              ftruncateSync(fd, seg.bytes);
            } catch (cut) {
              this.failed ??= new Error(`could not undo a partial write to ${seg.path} (${errorMessage(cut)}) after: ${errorMessage(err)}`);
              return;
            }
          }
          failures.set(t, this.writeFailed(t, err));
          return;
        }
        if (this.opts.fsync) {
          try {
            await this.fileOps.fsync(fd);
          } catch (err) {
            this.failed ??= new Error(`fsync of ${seg.path} failed: ${errorMessage(err)}`);
            return;
          }
          this.opts.metrics?.counter('runtrail_bus_log_fsyncs_total', 'fsyncs of the bus write-ahead log, by topic (one per flush cycle that wrote the topic)').inc({ topic: t.topic });
        }
        seg.bytes += written;
        seg.count += w.count;
      }),
    );
    return failures;
  }

  /** Counts and logs a write that failed and was undone; returns the error its publishers get. */
  private writeFailed(t: TopicLog, err: unknown): StorageError {
    const code = errorCode(err);
    this.opts.metrics?.counter('runtrail_bus_log_write_errors_total', 'Failed writes to the bus write-ahead log (undone; publishers told to retry), by topic and code').inc({ topic: t.topic, code });
    this.writeFailedLog.hit({ topic: t.topic, code, err: errorMessage(err) });
    return new StorageError(`bus write-ahead log write failed (${code}): ${errorMessage(err)}; nothing of it was kept, retry shortly`, { retriable: true, cause: err });
  }

  /**
   * The segment the next write goes to, rolling to a new file when the current one is full. Runs
   * between cycles' writes only, so no write is in flight on the file it closes. The directory is
   * fsynced after creating a file, or a crash could lose the file's entry and with it the file.
   */
  private openSegment(t: TopicLog): Segment {
    const dir = join(this.opts.dir as string, t.topic);
    let seg = t.segments[t.segments.length - 1];
    if (!seg || seg.bytes >= this.opts.segmentBytes) {
      if (t.fd !== null) closeSync(t.fd);
      t.fd = null;
      // Every earlier message is visible by now (cycles run one at a time), so `end` is the base.
      const path = join(dir, `${String(t.end).padStart(20, '0')}${SEGMENT_SUFFIX}`);
      mkdirSync(dir, { recursive: true });
      seg = { base: t.end, path, bytes: 0, count: 0 };
      t.fd = openSync(path, 'a');
      t.segments.push(seg);
      if (this.opts.fsync) fsyncDir(dir);
    } else if (t.fd === null) {
      t.fd = openSync(seg.path, 'a');
    }
    return seg;
  }

  private hasLiveReader(topic: TopicId): boolean {
    for (const s of this.subs) if (!s.stopped && s.positions.has(topic)) return true;
    return false;
  }

  /** Position of the slowest live subscription (or registered group) on a topic. */
  private slowestPosition(t: TopicLog): number {
    let min = t.end;
    for (const s of this.subs) {
      const p = s.positions.get(t.topic);
      if (p !== undefined && !s.stopped) min = Math.min(min, p);
    }
    return min;
  }

  async subscribe<T extends TopicId>(opts: SubscribeOptions<T>): Promise<Subscription> {
    if (!this.started) await this.start();
    const positions = new Map<TopicId, number>();
    for (const topic of opts.topics) {
      const t = this.topics.get(topic) as TopicLog;
      let pos: number;
      if (opts.groupId) {
        const c = this.committed.get(opts.groupId)?.get(topic);
        pos = c ?? (opts.fromBeginning ? t.base : t.end);
        this.setCommitted(opts.groupId, topic, c ?? pos);
      } else {
        pos = opts.fromBeginning ? t.base : t.end;
      }
      positions.set(topic, Math.max(pos, t.base));
    }
    let wake: () => void = () => undefined;
    const sub: Sub<T> = { opts, positions, stopped: false, loop: Promise.resolve(), wake: () => wake() };
    this.subs.add(sub as unknown as Sub<TopicId>);
    // Registering the group on disk keeps its starting point across a crash before its first commit.
    if (opts.groupId) await this.persistOffsets();
    if (opts.onAssign) await opts.onAssign(opts.topics.map((topic) => ({ topic, partition: 0 })));
    sub.loop = this.runLoop(sub, (w) => (wake = w));
    const bus = this;
    return {
      async commit(offsets: readonly PartitionOffset[]): Promise<void> {
        if (!opts.groupId) return;
        for (const o of offsets) bus.setCommitted(opts.groupId, o.topic, Number(o.offset));
        await bus.persistOffsets();
        await Promise.all(offsets.map((o) => bus.trimDisk(bus.topics.get(o.topic) as TopicLog)));
      },
      async lag(): Promise<number> {
        let n = 0;
        for (const [topic, p] of positions) n += (bus.topics.get(topic) as TopicLog).end - p;
        return n;
      },
      async shutdown(): Promise<void> {
        if (sub.stopped) return;
        sub.stopped = true;
        sub.wake();
        await sub.loop;
        if (opts.onRevoke) await opts.onRevoke(opts.topics.map((topic) => ({ topic, partition: 0 })));
        bus.subs.delete(sub as unknown as Sub<TopicId>);
      },
    };
  }

  private async runLoop<T extends TopicId>(sub: Sub<T>, setWake: (w: () => void) => void): Promise<void> {
    const topics = sub.opts.topics;
    let rr = 0;
    while (!sub.stopped) {
      let delivered = false;
      for (let i = 0; i < topics.length && !sub.stopped; i++) {
        const topic = topics[(rr + i) % topics.length] as T;
        const t = this.topics.get(topic) as TopicLog;
        const pos = sub.positions.get(topic) as number;
        if (pos >= t.end) continue;
        const from = Math.max(pos, t.base);
        const to = Math.min(t.end, from + this.opts.maxBatch);
        const batch = this.makeBatch(topic, t, from, to);
        try {
          await sub.opts.onBatch(batch);
        } catch (err) {
          // The stage could not handle the batch (e.g. storage down after retries): redeliver it later,
          // exactly as Kafka would after an uncommitted batch.
          this.opts.log.error({ err, topic, from }, 'consumer batch failed; will redeliver');
          await sleep(500);
          continue;
        }
        sub.positions.set(topic, to);
        this.trimMemory(t);
        delivered = true;
      }
      rr++;
      if (!delivered && !sub.stopped) {
        await new Promise<void>((resolve) => {
          setWake(resolve);
          for (const topic of topics) {
            const t = this.topics.get(topic) as TopicLog;
            void t.waitFor(sub.positions.get(topic) as number).then(resolve);
          }
        });
      }
    }
  }

  private makeBatch<T extends TopicId>(topic: T, t: TopicLog, from: number, to: number): MessageBatch<T> {
    const messages: DeliveredMessage<T>[] = [];
    const undecodable: UndecodableMessage[] = [];
    for (let off = from; off < to; off++) {
      const e = t.get(off);
      if (!e) continue;
      if (e.bad !== undefined) {
        undecodable.push({ topic, partition: 0, offset: String(off), key: e.key, raw: e.raw ?? '', reason: e.bad });
      } else {
        messages.push({ topic, partition: 0, offset: String(off), key: e.key, value: e.value as TopicPayload<T> });
      }
    }
    return { topic, partition: 0, messages, undecodable, nextOffset: String(to) };
  }

  /**
   * Memory holds messages from the slowest live reader's position (or the committed offset of a
   * group registered on disk that has not subscribed yet). Consumed but uncommitted messages stay
   * only on disk: a restart recovers them from there, so they cost no memory meanwhile.
   */
  private trimMemory(t: TopicLog): void {
    let keep = t.end;
    const live = new Set<string>();
    for (const s of this.subs) {
      const p = s.positions.get(t.topic);
      if (p === undefined || s.stopped) continue;
      keep = Math.min(keep, p);
      if (s.opts.groupId) live.add(s.opts.groupId);
    }
    for (const g of this.groupsByTopic.get(t.topic) ?? []) {
      if (!live.has(g)) keep = Math.min(keep, this.committed.get(g)?.get(t.topic) ?? 0);
    }
    t.dropBefore(keep);
  }

  /**
   * Deletes whole log segments that every registered group has committed past. The unlinks run off
   * the main thread (unlinking a large file takes the kernel a while); the returned promise settles
   * when they are done. Never the last segment, which is the one being written.
   */
  private trimDisk(t: TopicLog): Promise<void> {
    const keepFrom = this.retainFrom(t);
    const doomed: string[] = [];
    while (t.segments.length > 1) {
      const s = t.segments[0] as Segment;
      const next = t.segments[1] as Segment;
      if (next.base > keepFrom) break;
      doomed.push(s.path);
      t.segments.shift();
    }
    if (doomed.length === 0) return Promise.resolve();
    return Promise.all(
      doomed.map((path) =>
        unlink(path).catch((err: unknown) => {
          // Left behind, the file is only disk space: recovery skips offsets every group committed.
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.opts.log.warn({ path, err: errorMessage(err) }, 'could not delete bus segment');
        }),
      ),
    ).then(() => undefined);
  }

  /**
   * Writes committed offsets (tmp file, fsync, rename), asynchronously. Calls made while a write is
   * in progress share the next write, which snapshots the offsets when it starts, so each call
   * resolves once a write that includes its state is on disk. The directory is not fsynced: a
   * rename lost in a crash leaves the previous offsets, which only means redelivery.
   */
  private persistOffsets(): Promise<void> {
    const path = this.offsetsPath;
    if (!path) return Promise.resolve();
    if (this.offsetsNext) return this.offsetsNext;
    const next = this.offsetsWrite.then(() => {
      this.offsetsNext = undefined;
      return this.writeOffsets(path);
    });
    this.offsetsNext = next;
    this.offsetsWrite = next.catch(() => undefined);
    return next;
  }

  private async writeOffsets(path: string): Promise<void> {
    const obj: Record<string, Record<string, number>> = {};
    for (const [g, m] of this.committed) obj[g] = Object.fromEntries(m);
    const tmp = `${path}.tmp`;
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(obj));
      if (this.opts.fsync) await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  }

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.subs]) {
      s.stopped = true;
      s.wake();
    }
    await Promise.all([...this.subs].map((s) => s.loop));
    // Publishes already queued still complete (or fail) before the files close.
    while (this.flushing || this.flushScheduled) await (this.flushing ?? Promise.resolve());
    await this.offsetsWrite;
    for (const t of this.topics.values()) {
      if (t.fd !== null) closeSync(t.fd);
      t.fd = null;
      t.notify();
    }
    if (this.lockPath) unlockDirectory(this.lockPath);
    this.lockPath = undefined;
  }
}

/**
 * Takes the log directory for this process (`LOCK`, holding the pid): two processes appending to
 * one log would interleave lines and cut each other's writes at recovery. A lock whose process is
 * gone (a crash; or this process's own pid, as a restarted container gets again) is taken over.
 */
function lockDirectory(dir: string): string {
  const path = join(dir, 'LOCK');
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx' });
      return path;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
    }
    const holder = Number(readFileSync(path, 'utf8').trim());
    if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && processAlive(holder)) {
      throw new StorageError(
        `bus directory ${dir} is in use by process ${holder} (${path}): run one Runtrail process per data directory; stop that one, or delete the lock file if no Runtrail process is running`,
        { retriable: false },
      );
    }
    unlinkSync(path);
  }
}

function unlockDirectory(path: string): void {
  try {
    // Only our own lock: a bus that outlived a takeover must not free the new holder's.
    if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
  } catch {
    // Already gone: nothing to release.
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Characters written at once at most (see writeCycle). */
const WRITE_CHUNK_CHARS = 32 * 1024 * 1024;

/** The texts joined into pieces of at most {@link WRITE_CHUNK_CHARS} (a longer text is a piece of its own). */
function* chunkTexts(texts: readonly string[]): Generator<string> {
  let group: string[] = [];
  let chars = 0;
  for (const t of texts) {
    if (group.length > 0 && chars + t.length > WRITE_CHUNK_CHARS) {
      yield group.length === 1 ? (group[0] as string) : group.join('');
      group = [];
      chars = 0;
    }
    group.push(t);
    chars += t.length;
  }
  if (group.length > 0) yield group.length === 1 ? (group[0] as string) : group.join('');
}

function writeAsync(fd: number, buf: Buffer, offset: number): Promise<number> {
  return new Promise((resolve, reject) => write(fd, buf, offset, buf.length - offset, null, (err, n) => (err ? reject(err) : resolve(n))));
}

function fsyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
}

/** fsync of a directory, so a file created or renamed in it survives a crash. */
function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
