import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { ClickHouseClient } from '@clickhouse/client';
import { z } from 'zod';
import type { Incident, OutboxEntry, OutboxStatus } from '../../shared/alert.ts';
import type { AlertDelivery, DeadLetter } from '../../shared/bus/bus.ts';
import type { StorageConfig } from '../../shared/config.ts';
import { AttributionSchema, EVENT_TYPE, type CredentialBinding, type TimelineEvent, type ToolCallRecord } from '../../shared/event.ts';
import { StorageError, errorMessage } from '../../shared/errors.ts';
import type { Finding } from '../../shared/finding.ts';
import type { Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { TABLE } from '../../shared/names.ts';
import { BatchWriter, StorageMetrics } from './batch-writer.ts';
import { clickhouseErrorCode, createClickHouse, openSession, tableRef, type ClickHouseSession } from './clickhouse.ts';
import { applyMigrations, reconcileRetention, type MigrationReport } from './migrations.ts';
import { QueryRejectedError, checkReadOnlySql } from './read-only-sql.ts';
import {
  ALERTS_CODEC,
  BINDINGS_CODEC,
  BINDING_SELECT,
  DEAD_LETTERS_CODEC,
  EVENTS_CODEC,
  EVENT_SELECT,
  EVIDENCE_SELECT,
  FINDINGS_CODEC,
  FINDING_SELECT,
  INCIDENTS_CODEC,
  INCIDENT_SELECT,
  OUTBOX_CODEC,
  OUTBOX_SELECT,
  decodeBinding,
  decodeEvent,
  decodeEvidence,
  decodeFinding,
  decodeIncident,
  decodeOutbox,
  decodeToolCall,
  TOOL_CALL_SELECT,
  type StoredEvidence,
  type TableCodec,
} from './rows.ts';

export type { StoredEvidence } from './rows.ts';

/**
 * Runtrail's storage: timelines, bindings, findings, alert deliveries and dead letters in
 * ClickHouse (a server, or chDB in-process). Writes are batched per table; every insert
 * resolves only once its rows are stored. Reads deduplicate with FINAL, so replays (at-least-once
 * delivery) never show twice.
 */
const IdRowSchema = z.object({ id: z.string() });

export interface Store {
  /** Connects and brings the schema up to date. */
  start(): Promise<void>;
  /** True when the database answers (readiness probes). Never throws. */
  ping(): Promise<boolean>;
  /** Stores timeline events. Resolves once stored; safe to call concurrently. */
  insertEvents(rows: readonly TimelineEvent[]): Promise<void>;
  insertBindings(rows: readonly CredentialBinding[]): Promise<void>;
  insertFindings(rows: readonly Finding[]): Promise<void>;
  insertDeadLetters(rows: readonly DeadLetter[]): Promise<void>;
  insertAlerts(rows: readonly AlertDelivery[]): Promise<void>;
  /** Stores incident versions (the alerter's state; the latest version of an id wins). */
  upsertIncidents(rows: readonly Incident[]): Promise<void>;
  /** Stores outbox entry versions (the latest version of an id wins). */
  upsertOutbox(rows: readonly OutboxEntry[]): Promise<void>;
  /** The latest incident (by opening time) of each fingerprint given. */
  incidentsByFingerprint(fingerprints: readonly string[]): Promise<Incident[]>;
  /** Incidents, most recently changed first; `status` filters. */
  listIncidents(opts?: { status?: Incident['status']; limit?: number }): Promise<Incident[]>;
  /** Outbox entries, oldest first; `status` filters, `channel` too. */
  listOutbox(opts?: { status?: OutboxStatus; channel?: string; limit?: number }): Promise<OutboxEntry[]>;
  /** The channel handle (`ref`) of the latest delivered entry of an incident on a channel; '' if none. */
  deliveryRef(incidentId: string, channel: string): Promise<string>;
  /**
   * What an alert shows of stored events, by id, in event-time order: the summary and every
   * resource id (for resource suppressions). Reads only those columns; ids not stored are absent.
   */
  evidenceByIds(eventIds: readonly string[]): Promise<StoredEvidence[]>;
  /**
   * How the given events were stored, if they were: task id, attribution, join key and reason per
   * event id (one row per id). `fromTime`/`toTime` (epoch ms, inclusive) bound the events' times,
   * so months that cannot hold them are not read.
   */
  storedAttributions(eventIds: readonly string[], fromTime: number, toTime: number): Promise<Map<string, StoredAttribution>>;
  /** Current state of the most recently changed bindings (latest version per credential), newest first. */
  loadBindings(limit: number): Promise<CredentialBinding[]>;
  /** Distinct stored events (a replayed event counts once). */
  countEvents(): Promise<number>;
  /** A task's events in event-time order (ties by event id), at most `opts.limit` (default 100 000). */
  timeline(taskId: string, opts?: { limit?: number }): Promise<TimelineEvent[]>;
  /** A task's findings in time order. */
  findings(taskId: string): Promise<Finding[]>;
  /**
   * The most recent `perTask` stored events of each given task, in event-time order per task: what
   * a restarted detector replays to rebuild the state of tasks that were running when it stopped.
   */
  recentEvents(taskIds: readonly string[], perTask: number): Promise<TimelineEvent[]>;
  /** Ids of the findings stored for the given tasks (so a rebuilt state does not emit them again). */
  findingIds(taskIds: readonly string[]): Promise<string[]>;
  /**
   * The agents' stored tool calls since `sinceMs` (event time), the most recent `limit` of them,
   * grouped by task in event-time order: what a starting detector rebuilds baselines from.
   */
  toolCallHistory(sinceMs: number, limit: number): Promise<ToolCallRecord[]>;
  /**
   * Runs one read-only analyst statement with `{name:Type}` parameters. Refuses anything but a
   * read (QueryRejectedError); returns at most `maxRows` rows (default 10 000) and stops after
   * `maxSeconds` (default 30). Unqualified table names resolve to the Runtrail database. 64-bit
   * integers (`count()`, UInt64 columns) come back as decimal strings, as over ClickHouse HTTP.
   * Count with FINAL or the `events_dedup` view: replays are collapsed only there.
   */
  querySql(
    sql: string,
    params?: Record<string, unknown>,
    opts?: { maxRows?: number; maxSeconds?: number },
  ): Promise<Record<string, unknown>[]>;
  /** Stores everything accepted, then closes. Idempotent. */
  shutdown(): Promise<void>;
}

/** Defaults and hard caps of {@link Store.querySql}. */
export const QUERY_LIMITS = {
  defaultMaxRows: 10_000,
  maxRows: 1_000_000,
  defaultMaxSeconds: 30,
  maxSeconds: 300,
} as const;

/**
 * Inserts into `events` in flight at once. Two let chDB parse one batch while the next is encoded
 * and sent, and use a second core; order does not matter there (identical rows collapse). The
 * other tables insert one batch at a time, in arrival order.
 */
export const EVENT_INSERT_CONCURRENCY = 2;

/** Tables whose writers insert as soon as they are idle (see `writer`). */
const EAGER_TABLES: ReadonlySet<string> = new Set([TABLE.bindings, TABLE.findings, TABLE.deadLetters, TABLE.incidents]);

/** Default cap on {@link Store.timeline}. */
export const DEFAULT_TIMELINE_LIMIT = 100_000;

/** Rows per page when reading timelines and bindings. */
const READ_PAGE_ROWS = 20_000;

const int64 = z.union([z.number(), z.string().regex(/^-?\d+$/)]);
const BindingKeySchema = z.object({ updated_us: int64, credential_id: z.string() });
const EventKeySchema = z.object({ event_time_us: int64, event_id: z.string() });
const CountSchema = z.array(z.object({ n: z.union([z.number(), z.string().regex(/^\d+$/)]) }));
const ResultRowsSchema = z.array(z.record(z.string(), z.unknown()));

/** Errors in analyst SQL that are the query's fault, not the store's: reported as rejections. */
const QUERY_FAULT_CODES = new Set([
  '36', // BAD_ARGUMENTS
  '43', // ILLEGAL_TYPE_OF_ARGUMENT
  '46', // UNKNOWN_FUNCTION
  '47', // UNKNOWN_IDENTIFIER
  '53', // TYPE_MISMATCH
  '60', // UNKNOWN_TABLE
  '62', // SYNTAX_ERROR
  '81', // UNKNOWN_DATABASE
  '159', // TIMEOUT_EXCEEDED
  '160', // TOO_SLOW
  '164', // READONLY
  '215', // NOT_AN_AGGREGATE
  '241', // MEMORY_LIMIT_EXCEEDED
  '456', // UNKNOWN_QUERY_PARAMETER
  '457', // BAD_QUERY_PARAMETER
]);

/** {@link Store} on ClickHouse / chDB. */
export class ClickHouseStore implements Store {
  private readonly cfg: Readonly<StorageConfig>;
  private readonly dataDir: string;
  private readonly log: Logger;
  private readonly metrics: StorageMetrics | undefined;
  private client: ClickHouseClient | undefined;
  private readonly sessions: ClickHouseSession[] = [];
  private writers:
    | {
        events: BatchWriter<TimelineEvent>;
        bindings: BatchWriter<CredentialBinding>;
        findings: BatchWriter<Finding>;
        alerts: BatchWriter<AlertDelivery>;
        deadLetters: BatchWriter<DeadLetter>;
        incidents: BatchWriter<Incident>;
        outbox: BatchWriter<OutboxEntry>;
      }
    | undefined;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  /** What {@link start} did to the schema; for the CLI's `schema` command and tests. */
  migration: MigrationReport | undefined;

  /**
   * @param cfg `storage` section of the config.
   * @param dataDir Runtrail data directory; chDB keeps its data under `<dataDir>/clickhouse`.
   * @param log Parent logger; the store logs as `{ component: 'storage' }`.
   * @param metrics Registry for the storage metrics (rows written, insert errors, flush durations, buffered rows).
   */
  constructor(cfg: Readonly<StorageConfig>, dataDir: string, log: Logger, metrics?: MetricsRegistry) {
    this.cfg = cfg;
    this.dataDir = dataDir;
    this.log = log.child({ component: 'storage' });
    this.metrics = metrics ? new StorageMetrics(metrics) : undefined;
  }

  start(): Promise<void> {
    this.starting ??= this.doStart();
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const client = await createClickHouse(this.cfg, this.dataDir, this.log);
    this.client = client;
    const ctx = { db: this.cfg.database, retentionDays: this.cfg.retentionDays };
    this.migration = await applyMigrations(client, ctx, this.log);
    await reconcileRetention(client, ctx, this.log);
    this.writers = {
      events: await this.writer(EVENTS_CODEC),
      bindings: await this.writer(BINDINGS_CODEC),
      findings: await this.writer(FINDINGS_CODEC),
      alerts: await this.writer(ALERTS_CODEC),
      deadLetters: await this.writer(DEAD_LETTERS_CODEC),
      incidents: await this.writer(INCIDENTS_CODEC),
      outbox: await this.writer(OUTBOX_CODEC),
    };
    this.log.info({ schemaVersion: this.migration.to, applied: this.migration.applied }, 'storage started');
  }

  async ping(): Promise<boolean> {
    if (!this.client || this.stopping) return false;
    try {
      return (await this.client.ping()).success;
    } catch {
      return false;
    }
  }

  /**
   * A writer whose inserts run on sessions of their own (one per concurrent insert), so a
   * per-insert setting (the dedup token) can never be picked up by another statement: on chDB
   * settings are session state.
   */
  private async writer<T>(codec: TableCodec<T>): Promise<BatchWriter<T>> {
    const concurrency = codec.table === TABLE.events ? EVENT_INSERT_CONCURRENCY : 1;
    const free: ClickHouseSession[] = [];
    for (let i = 0; i < concurrency; i++) {
      const session = await openSession(this.cfg, this.dataDir, this.ready());
      this.sessions.push(session);
      free.push(session);
    }
    const query = `INSERT INTO ${tableRef(this.cfg.database, codec.table)} (${codec.columns.join(', ')}) FORMAT ${codec.format}`;
    return new BatchWriter<T>({
      name: codec.table,
      maxRows: this.cfg.batchMaxRows,
      maxDelayMs: this.cfg.batchMaxDelayMs,
      maxPendingRows: this.cfg.maxPendingRows,
      attempts: this.cfg.insertAttempts,
      concurrency,
      // The low-volume tables on a pipeline's path go out as soon as their writer is idle: their
      // callers (the detector storing a batch's findings, the correlator its bindings) wait for
      // the insert before they commit, and holding a handful of rows for batchMaxDelayMs stalled
      // them on every batch. Rows arriving while an insert runs still gather into the next one.
      // The delivery records (alerts, outbox) wait for batchMaxDelayMs instead: each delivery
      // writes a row to both, mostly in the background, and inserted eagerly they made ~900
      // one-to-seven-row parts in a 300 000-event bench (a fixed cost per part in the engine,
      // then merges) where gathering makes ~230; the alerter's wait for a batch's outbox rows
      // grows by at most that delay.
      eagerRows: EAGER_TABLES.has(codec.table) ? 1 : undefined,
      encode: (row) => codec.encode(row),
      tokenKey: codec.tokenKey ? (row) => (codec.tokenKey as (r: T) => string)(row) : undefined,
      log: this.log,
      metrics: this.metrics,
      write: async (body, _rows, token) => {
        // The writer never runs more than `concurrency` inserts, so a session is always free.
        const session = free.pop() as ClickHouseSession;
        try {
          const res = await session.client.exec({
            query,
            // A string chunk in object mode: what the client itself sends for a string body, and
            // chDB takes it without a Buffer round trip.
            values: Readable.from([body]),
            clickhouse_settings: {
              insert_deduplication_token: token,
              // Synchronous insert with our own batching (shared/notes/clickhouse.md: tokens with
              // async inserts lost rows on partitioned tables in some 26.x releases).
              async_insert: 0,
              // Measured on chDB, full events schema: ~15-20% more rows per CPU-second with both
              // off. Parallel parsing of one batch buys little when batches already run side by
              // side; in-block collapsing is redundant with FINAL and background merges.
              input_format_parallel_parsing: 0,
              optimize_on_insert: 0,
              // A batch may span any number of months (a replay, a backfill, one old event among
              // new ones); past the default limit of 100 partitions the insert failed for good
              // and the batch was retried forever. Wide batches are rare: their extra parts merge.
              max_partitions_per_insert_block: '0',
            },
          });
          res.stream.resume();
          await finished(res.stream);
        } finally {
          free.push(session);
        }
      },
    });
  }

  private ready(): ClickHouseClient {
    if (this.stopping) throw new StorageError('storage is shut down', { retriable: false });
    if (!this.client) throw new StorageError('storage is not started (call start() first)', { retriable: false });
    return this.client;
  }

  private writerSet(): NonNullable<ClickHouseStore['writers']> {
    this.ready();
    if (!this.writers) throw new StorageError('storage is not started (call start() first)', { retriable: false });
    return this.writers;
  }

  async insertEvents(rows: readonly TimelineEvent[]): Promise<void> {
    await this.writerSet().events.add(rows);
  }

  async insertBindings(rows: readonly CredentialBinding[]): Promise<void> {
    await this.writerSet().bindings.add(rows);
  }

  async insertFindings(rows: readonly Finding[]): Promise<void> {
    await this.writerSet().findings.add(rows);
  }

  async insertDeadLetters(rows: readonly DeadLetter[]): Promise<void> {
    await this.writerSet().deadLetters.add(rows);
  }

  async insertAlerts(rows: readonly AlertDelivery[]): Promise<void> {
    await this.writerSet().alerts.add(rows);
  }

  async upsertIncidents(rows: readonly Incident[]): Promise<void> {
    await this.writerSet().incidents.add(rows);
  }

  async upsertOutbox(rows: readonly OutboxEntry[]): Promise<void> {
    await this.writerSet().outbox.add(rows);
  }

  async incidentsByFingerprint(fingerprints: readonly string[]): Promise<Incident[]> {
    if (fingerprints.length === 0) return [];
    const rows = await this.select(
      `SELECT ${INCIDENT_SELECT} FROM ${this.t(TABLE.incidents)} FINAL
WHERE fingerprint IN {fps:Array(String)}
ORDER BY opened_at DESC, id
LIMIT 1 BY fingerprint`,
      { fps: [...new Set(fingerprints)] },
    );
    return decodeAll(rows, decodeIncident, TABLE.incidents);
  }

  async listIncidents(opts: { status?: Incident['status']; limit?: number } = {}): Promise<Incident[]> {
    const rows = await this.select(
      `SELECT ${INCIDENT_SELECT} FROM ${this.t(TABLE.incidents)} FINAL
${opts.status ? 'WHERE status = {status:String}' : ''}
ORDER BY updated_at DESC, id
LIMIT {n:UInt64}`,
      { n: clampInt(opts.limit ?? 1000, 1, QUERY_LIMITS.maxRows), ...(opts.status ? { status: opts.status } : {}) },
    );
    return decodeAll(rows, decodeIncident, TABLE.incidents);
  }

  async listOutbox(opts: { status?: OutboxStatus; channel?: string; limit?: number } = {}): Promise<OutboxEntry[]> {
    const where = [opts.status ? 'status = {status:String}' : '', opts.channel ? 'channel = {channel:String}' : ''].filter(Boolean);
    const rows = await this.select(
      `SELECT ${OUTBOX_SELECT} FROM ${this.t(TABLE.alertOutbox)} FINAL
${where.length ? `WHERE ${where.join(' AND ')}` : ''}
ORDER BY created_at, id
LIMIT {n:UInt64}`,
      {
        n: clampInt(opts.limit ?? 1000, 1, QUERY_LIMITS.maxRows),
        ...(opts.status ? { status: opts.status } : {}),
        ...(opts.channel ? { channel: opts.channel } : {}),
      },
    );
    return decodeAll(rows, decodeOutbox, TABLE.alertOutbox);
  }

  async deliveryRef(incidentId: string, channel: string): Promise<string> {
    const rows = z.array(z.object({ ref: z.string() })).parse(
      await this.select(
        `SELECT ref FROM ${this.t(TABLE.alertOutbox)} FINAL
WHERE incident_id = {incident:String} AND channel = {channel:String} AND status = 'delivered' AND ref != ''
ORDER BY created_at DESC
LIMIT 1`,
        { incident: incidentId, channel },
      ),
    );
    return rows[0]?.ref ?? '';
  }

  async storedAttributions(eventIds: readonly string[], fromTime: number, toTime: number): Promise<Map<string, StoredAttribution>> {
    const out = new Map<string, StoredAttribution>();
    const ids = [...new Set(eventIds)];
    // Query parameters travel in the URL over HTTP; servers cap its length (Node's HTTP server at
    // 16 KiB), so a large batch is looked up in slices.
    for (let i = 0; i < ids.length; i += ATTRIBUTION_LOOKUP_IDS) {
      // No FINAL: every stored copy of an event says how it was stored (copies share the key).
      const rows = await this.select(
        `SELECT event_id, task_id, attribution, join_key, unattributed_reason FROM ${this.t(TABLE.events)}
WHERE event_id IN {ids:Array(String)}
  AND event_time >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND event_time <= fromUnixTimestamp64Milli({to:Int64}, 'UTC')
LIMIT 1 BY event_id`,
        { ids: ids.slice(i, i + ATTRIBUTION_LOOKUP_IDS), from: Math.floor(fromTime), to: Math.ceil(toTime) },
      );
      for (const r of z.array(StoredAttributionRowSchema).parse(rows)) {
        out.set(r.event_id, { task_id: r.task_id, attribution: r.attribution, join_key: r.join_key, unattributed_reason: r.unattributed_reason });
      }
    }
    return out;
  }

  async evidenceByIds(eventIds: readonly string[]): Promise<StoredEvidence[]> {
    if (eventIds.length === 0) return [];
    // By id alone, so evidence from other tasks (an identity's, a shared credential's) is found
    // too: the event_id skip index picks the granules, and only the summary columns are read. A
    // granule of this table is megabytes of messages, tool results and attributes; reading every
    // column cost ~300 ms a lookup at 300 000 events, most of the engine time alerting took. No
    // FINAL (under which ClickHouse skips the skip index): `LIMIT 1 BY` drops the copies of an
    // event stored twice before a merge.
    const rows = await this.select(
      `SELECT ${EVIDENCE_SELECT} FROM ${this.t(TABLE.events)}
WHERE event_id IN {ids:Array(String)}
ORDER BY event_time, event_id
LIMIT 1 BY event_id`,
      { ids: [...new Set(eventIds)] },
    );
    return decodeAll(rows, decodeEvidence, TABLE.events);
  }

  async loadBindings(limit: number): Promise<CredentialBinding[]> {
    const want = Math.max(0, Math.floor(limit));
    const out: CredentialBinding[] = [];
    let after: { us: string; id: string } | undefined;
    // Keyset pages bound the transient result text (chDB materialises a whole result); the
    // correlator asks for up to a million bindings at start. The filter on the version column
    // applies after FINAL has picked each credential's latest row.
    while (out.length < want) {
      const n = Math.min(READ_PAGE_ROWS, want - out.length);
      const where = after
        ? `WHERE updated_at < fromUnixTimestamp64Micro({u:Int64}, 'UTC')
   OR (updated_at = fromUnixTimestamp64Micro({u:Int64}, 'UTC') AND credential_id > {c:String})`
        : '';
      const rows = await this.select(
        `SELECT ${BINDING_SELECT}, toUnixTimestamp64Micro(updated_at) AS updated_us
FROM ${this.t(TABLE.bindings)} FINAL
${where}
ORDER BY updated_at DESC, credential_id
LIMIT {n:UInt64}`,
        { n, ...(after ? { u: after.us, c: after.id } : {}) },
      );
      out.push(...decodeAll(rows, decodeBinding, TABLE.bindings));
      const last = BindingKeySchema.safeParse(rows[rows.length - 1]);
      if (rows.length < n || !last.success) break;
      after = { us: String(last.data.updated_us), id: last.data.credential_id };
    }
    return out;
  }

  async countEvents(): Promise<number> {
    const rows = CountSchema.parse(await this.select(`SELECT count() AS n FROM ${this.t(TABLE.events)} FINAL`));
    return Number(rows[0]?.n ?? 0);
  }

  async timeline(taskId: string, opts: { limit?: number } = {}): Promise<TimelineEvent[]> {
    const want = Math.max(0, Math.floor(opts.limit ?? DEFAULT_TIMELINE_LIMIT));
    const out: TimelineEvent[] = [];
    let after: { us: string; id: string } | undefined;
    // Keyset pages over the sorting key, for the same reason as in loadBindings.
    while (out.length < want) {
      const n = Math.min(READ_PAGE_ROWS, want - out.length);
      const rows = await this.select(
        `SELECT ${EVENT_SELECT} FROM ${this.t(TABLE.events)} FINAL
WHERE task_id = {task:String}${after ? ` AND (event_time, event_id) > (fromUnixTimestamp64Micro({t:Int64}, 'UTC'), {id:String})` : ''}
ORDER BY event_time, event_id
LIMIT {n:UInt64}`,
        { task: taskId, n, ...(after ? { t: after.us, id: after.id } : {}) },
      );
      out.push(...decodeAll(rows, decodeEvent, TABLE.events));
      const last = EventKeySchema.safeParse(rows[rows.length - 1]);
      if (rows.length < n || !last.success) break;
      after = { us: String(last.data.event_time_us), id: last.data.event_id };
    }
    return out;
  }

  async findings(taskId: string): Promise<Finding[]> {
    const rows = await this.select(
      `SELECT ${FINDING_SELECT} FROM ${this.t(TABLE.findings)} FINAL WHERE task_id = {task:String} ORDER BY time, id`,
      { task: taskId },
    );
    return decodeAll(rows, decodeFinding, TABLE.findings);
  }

  async recentEvents(taskIds: readonly string[], perTask: number): Promise<TimelineEvent[]> {
    if (taskIds.length === 0 || perTask < 1) return [];
    // Newest first to keep the last `perTask` of each task, then back into event-time order.
    const rows = await this.select(
      `SELECT * FROM (
  SELECT ${EVENT_SELECT} FROM ${this.t(TABLE.events)} FINAL
  WHERE task_id IN {tasks:Array(String)}
  ORDER BY task_id, event_time DESC, event_id DESC
  LIMIT {n:UInt64} BY task_id
) ORDER BY task_id, event_time_us, event_id`,
      { tasks: [...taskIds], n: Math.floor(perTask) },
    );
    return decodeAll(rows, decodeEvent, TABLE.events);
  }

  async toolCallHistory(sinceMs: number, limit: number): Promise<ToolCallRecord[]> {
    if (limit < 1) return [];
    // Four short columns of the tool calls only; LIMIT 1 BY event_id drops an event stored twice
    // before a merge (cheaper than FINAL over the whole window).
    const rows = await this.select(
      `SELECT ${TOOL_CALL_SELECT} FROM (
  SELECT task_id, agent_id, tool_name, event_time FROM ${this.t(TABLE.events)}
  WHERE type = {type:String} AND source = 'agent' AND task_id != '' AND tool_name != ''
    AND event_time >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
  ORDER BY event_time DESC, event_id
  LIMIT 1 BY event_id
  LIMIT {n:UInt64}
) ORDER BY task_id, event_time`,
      { type: EVENT_TYPE.toolCall, since: Math.max(0, Math.floor(sinceMs)), n: Math.floor(limit) },
    );
    return decodeAll(rows, decodeToolCall, TABLE.events);
  }

  async findingIds(taskIds: readonly string[]): Promise<string[]> {
    if (taskIds.length === 0) return [];
    const rows = await this.select(`SELECT DISTINCT id FROM ${this.t(TABLE.findings)} WHERE task_id IN {tasks:Array(String)}`, { tasks: [...taskIds] });
    return rows.map((r) => IdRowSchema.parse(r).id);
  }

  async querySql(
    sql: string,
    params: Record<string, unknown> = {},
    opts: { maxRows?: number; maxSeconds?: number } = {},
  ): Promise<Record<string, unknown>[]> {
    const statement = checkReadOnlySql(sql);
    const maxRows = clampInt(opts.maxRows ?? QUERY_LIMITS.defaultMaxRows, 1, QUERY_LIMITS.maxRows);
    const maxSeconds = clampInt(opts.maxSeconds ?? QUERY_LIMITS.defaultMaxSeconds, 1, QUERY_LIMITS.maxSeconds);
    const session = await openSession(this.cfg, this.dataDir, this.ready());
    try {
      const rs = await session.client.query({
        query: statement,
        format: 'JSONEachRow',
        ...(Object.keys(params).length > 0 ? { query_params: params } : {}),
        // Order matters on chDB, where these become SET statements run in turn: once readonly = 1
        // is in force no setting may change, so it goes last. `break` stops at a block boundary,
        // hence the slice below.
        clickhouse_settings: {
          max_result_rows: String(maxRows),
          result_overflow_mode: 'break',
          max_execution_time: maxSeconds,
          // The HTTP default, set for chDB too (its default is 0): 64-bit integers as strings,
          // exact, and the same on both backends.
          output_format_json_quote_64bit_integers: 1,
          readonly: '1',
        },
      });
      const rows = ResultRowsSchema.parse(await rs.json());
      return rows.length > maxRows ? rows.slice(0, maxRows) : rows;
    } catch (err) {
      const code = clickhouseErrorCode(err);
      if (code !== undefined && QUERY_FAULT_CODES.has(code)) {
        const engine = errorMessage(err).trim();
        const msg =
          code === '159' || code === '160'
            ? `query exceeded the time limit of ${maxSeconds} s`
            : code === '164'
              ? `queries are read-only: ${engine}`
              : engine;
        throw new QueryRejectedError(msg, err);
      }
      throw new StorageError(`query failed: ${errorMessage(err)}`, { cause: err });
    } finally {
      await session.close();
    }
  }

  shutdown(): Promise<void> {
    this.stopping ??= this.doShutdown();
    return this.stopping;
  }

  private async doShutdown(): Promise<void> {
    // A start still in flight finishes first, so its connections are closed too.
    await this.starting?.catch(() => undefined);
    if (this.writers) {
      await Promise.all(Object.values(this.writers).map((w) => w.close()));
    }
    for (const s of this.sessions.splice(0)) await s.close();
    await this.client?.close();
    this.log.info('storage shut down');
  }

  private t(table: string): string {
    return tableRef(this.cfg.database, table);
  }

  private async select(query: string, params: Record<string, unknown> = {}): Promise<unknown[]> {
    const client = this.ready();
    try {
      const rs = await client.query({
        query,
        format: 'JSONEachRow',
        ...(Object.keys(params).length > 0 ? { query_params: params } : {}),
      });
      return z.array(z.unknown()).parse(await rs.json());
    } catch (err) {
      throw new StorageError(`storage query failed: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/** Event ids per attribution lookup: about 7 KiB of URL. */
const ATTRIBUTION_LOOKUP_IDS = 200;

const StoredAttributionRowSchema = z.object({
  event_id: z.string(),
  task_id: z.string(),
  attribution: AttributionSchema,
  join_key: z.string(),
  unattributed_reason: z.string(),
});

/** How a stored event was attributed (see {@link Store.storedAttributions}). */
export type StoredAttribution = Pick<TimelineEvent, 'task_id' | 'attribution' | 'join_key' | 'unattributed_reason'>;

/** Decodes stored rows; a row that does not decode means schema and code disagree (not retriable). */
function decodeAll<T>(rows: readonly unknown[], decode: (raw: unknown) => T, table: string): T[] {
  return rows.map((raw, i) => {
    try {
      return decode(raw);
    } catch (err) {
      throw new StorageError(`row ${i} of ${table} does not decode: ${errorMessage(err)}`, { retriable: false, cause: err });
    }
  });
}

function clampInt(v: number, min: number, max: number): number {
  if (!Number.isFinite(v)) return max;
  return Math.min(max, Math.max(min, Math.floor(v)));
}
