import type { ClickHouseClient } from '@clickhouse/client';
import { z } from 'zod';
import { SENSITIVITY_LEVELS, EVENT_TYPE } from '../../shared/event.ts';
import { StorageError, errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { TABLE, type TableName } from '../../shared/names.ts';
import { tableRef } from './clickhouse.ts';

/**
 * The storage schema as versioned migrations, applied in order at start and recorded in
 * `schema_migrations`.
 *
 * Rules for adding a migration: append an entry with the next version, never edit an applied one;
 * every statement must be idempotent (`IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`, ...) because
 * two processes starting together may both apply it, and a crash between a statement and the
 * version record re-runs the whole migration.
 *
 * Deduplication and FINAL: `events`, `bindings` and `findings` are ReplacingMergeTree tables. A
 * retried identical batch is dropped at insert (insert_deduplication_token, see the batch writer);
 * a replay with different batching is stored again and collapsed when parts merge. Until then only
 * `FINAL` (or the `events_dedup` view) shows one row per key, so analyst queries that count
 * must read `events FINAL` / `events_dedup`. `tasks_summary` needs no FINAL: it counts distinct
 * event ids.
 *
 * Retention: TTL counts from `stored_at` (see {@link TTL_COLUMN}), and a change of
 * `storage.retentionDays` is applied at start by {@link reconcileRetention}.
 */

/** Views the schema defines. Belongs in `shared/names.ts` beside TABLE (requested). */
export const STORAGE_VIEW = {
  /** `events FINAL`: one row per (task_id, event_time, event_id). */
  eventsDedup: 'events_dedup',
  /** One row per task, merged from the `tasks` aggregate states. */
  tasksSummary: 'tasks_summary',
} as const;

/** What a migration's statements may depend on. */
export interface MigrationContext {
  /** Database name (validated identifier). */
  db: string;
  /** Retention of events, findings, alerts, dead letters and task summaries, days after storing. */
  retentionDays: number;
}

/** One schema version. */
export interface Migration {
  version: number;
  name: string;
  statements: (ctx: MigrationContext) => string[];
}

/**
 * Tables with TTL retention, and the column their TTL counts from: when Runtrail stored the row,
 * not the event time. A replay or backfill of logs older than the retention (the `replay`
 * command, an incident's CloudTrail export) must not be deleted on arrival.
 */
export const TTL_COLUMN: Partial<Record<TableName, string>> = {
  [TABLE.events]: 'stored_at',
  [TABLE.tasks]: 'last_stored',
  [TABLE.findings]: 'stored_at',
  [TABLE.alerts]: 'stored_at',
  [TABLE.deadLetters]: 'stored_at',
  [TABLE.incidents]: 'stored_at',
  [TABLE.alertOutbox]: 'stored_at',
};

/** The TTL expression for a table (ClickHouse TTL needs DateTime, not DateTime64). */
export function ttlExpression(column: string, days: number): string {
  return `toDateTime(${column}) + toIntervalDay(${days})`;
}

function ttl(table: TableName, days: number): string {
  const column = TTL_COLUMN[table];
  if (column === undefined) throw new Error(`table ${table} has no TTL column`);
  return `TTL ${ttlExpression(column, days)}`;
}

/**
 * Blocks remembered per table for insert deduplication. A retry arrives within seconds, during
 * which a busy writer inserts a few blocks per second per table; 1000 leaves a wide margin.
 */
const DEDUP_WINDOW = 1000;
const DEDUP = `non_replicated_deduplication_window = ${DEDUP_WINDOW}`;

/** `['unknown','public',...]` as a SQL array literal; ranks are 1-based positions in it. */
const SENSITIVITY_ARRAY = `[${SENSITIVITY_LEVELS.map((s) => `'${s}'`).join(', ')}]`;

/**
 * The identity access path: bloom-filter skip indexes, so "everything credential X did" reads only
 * the granules that may hold X. Skip indexes rather than a projection sorted by identity because
 * ReplacingMergeTree reads go through FINAL, which projections do not serve. Each index costs
 * about 4% of insert throughput, so only identity columns get one (not event_id or trace_id,
 * which analysts reach through the task).
 */
const IDENTITY_INDEXES = ['credential_id', 'workload_id', 'agent_id', 'request_id', 'principal']
  .map((c) => `INDEX idx_${c} ${c} TYPE bloom_filter(0.01) GRANULARITY 1`)
  .join(',\n  ');

/** All migrations, oldest first. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'init',
    statements: ({ db, retentionDays }) => {
      const t = (name: string): string => tableRef(db, name);
      return [
        `CREATE TABLE IF NOT EXISTS ${t(TABLE.events)} (
  task_id String,
  event_time DateTime64(6, 'UTC'),
  end_time Nullable(DateTime64(6, 'UTC')),
  event_id FixedString(32),
  source LowCardinality(String),
  type LowCardinality(String),
  format LowCardinality(String),
  attribution LowCardinality(String),
  outcome LowCardinality(String),
  sensitivity LowCardinality(String),
  agent_id String,
  agent_name LowCardinality(String),
  workload_id String,
  credential_id String,
  trace_id String,
  span_id String,
  parent_span_id String,
  request_id String,
  session_id String,
  principal String,
  action LowCardinality(String),
  resources Array(Tuple(type String, id String, account String)),
  data_classes Array(LowCardinality(String)),
  src_ip String,
  host String,
  user_agent String,
  tool_name LowCardinality(String),
  tool_call_id String,
  tool_arguments Nullable(String),
  tool_result Nullable(String),
  tool_error String,
  tool_server LowCardinality(String),
  tool_annotations String,
  model_name LowCardinality(String),
  model_provider LowCardinality(String),
  model_input_tokens Nullable(UInt64),
  model_output_tokens Nullable(UInt64),
  messages String,
  credential String,
  process String,
  network String,
  delegation String,
  attributes String,
  join_key String,
  unattributed_reason LowCardinality(String),
  ingested_at DateTime64(6, 'UTC'),
  late Bool,
  stored_at DateTime64(3, 'UTC') DEFAULT now64(3),
  ${IDENTITY_INDEXES}
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (task_id, event_time, event_id)
${ttl(TABLE.events, retentionDays)}
SETTINGS ${DEDUP}`,

        `CREATE VIEW IF NOT EXISTS ${t(STORAGE_VIEW.eventsDedup)} AS SELECT * FROM ${t(TABLE.events)} FINAL`,

        // Task summaries: partial aggregate states written per inserted block by tasks_mv, merged
        // in the background and by tasks_summary. Distinct-id counting keeps replays from
        // inflating counts; min/max are replay-safe by nature. Arrays are capped (100 values).
        `CREATE TABLE IF NOT EXISTS ${t(TABLE.tasks)} (
  task_id String,
  first_seen SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
  last_seen SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
  events AggregateFunction(uniqExact, FixedString(32)),
  agents AggregateFunction(groupUniqArrayIf(100), String, UInt8),
  workloads AggregateFunction(groupUniqArrayIf(100), String, UInt8),
  credentials AggregateFunction(groupUniqArrayIf(100), String, UInt8),
  principals AggregateFunction(groupUniqArrayIf(100), String, UInt8),
  data_classes AggregateFunction(groupUniqArrayArray(100), Array(String)),
  max_sensitivity_rank SimpleAggregateFunction(max, UInt8),
  ended SimpleAggregateFunction(max, UInt8),
  last_stored SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY task_id
${ttl(TABLE.tasks, retentionDays)}`,

        `CREATE MATERIALIZED VIEW IF NOT EXISTS ${t(TABLE.tasksMv)} TO ${t(TABLE.tasks)} AS
SELECT
  task_id,
  min(event_time) AS first_seen,
  max(event_time) AS last_seen,
  uniqExactState(event_id) AS events,
  groupUniqArrayIfState(100)(agent_id, agent_id != '') AS agents,
  groupUniqArrayIfState(100)(workload_id, workload_id != '') AS workloads,
  groupUniqArrayIfState(100)(credential_id, credential_id != '') AS credentials,
  groupUniqArrayIfState(100)(principal, principal != '') AS principals,
  groupUniqArrayArrayState(100)(CAST(data_classes, 'Array(String)')) AS data_classes,
  max(toUInt8(indexOf(${SENSITIVITY_ARRAY}, sensitivity))) AS max_sensitivity_rank,
  max(toUInt8(type = '${EVENT_TYPE.taskEnded}')) AS ended,
  max(stored_at) AS last_stored
FROM ${t(TABLE.events)}
WHERE task_id != ''
GROUP BY task_id`,

        `CREATE VIEW IF NOT EXISTS ${t(STORAGE_VIEW.tasksSummary)} AS
SELECT
  task_id,
  min(first_seen) AS first_seen,
  max(last_seen) AS last_seen,
  uniqExactMerge(events) AS events,
  groupUniqArrayIfMerge(100)(agents) AS agents,
  groupUniqArrayIfMerge(100)(workloads) AS workloads,
  groupUniqArrayIfMerge(100)(credentials) AS credentials,
  groupUniqArrayIfMerge(100)(principals) AS principals,
  groupUniqArrayArrayMerge(100)(data_classes) AS data_classes,
  ${SENSITIVITY_ARRAY}[greatest(max(max_sensitivity_rank), 1)] AS max_sensitivity,
  toBool(max(ended)) AS ended,
  max(last_stored) AS last_stored
FROM ${t(TABLE.tasks)}
GROUP BY task_id`,

        // The version column orders a binding's lifecycle (see bindingVersion), so FINAL keeps
        // the revoked row over a replayed issuance whatever the arrival order.
        `CREATE TABLE IF NOT EXISTS ${t(TABLE.bindings)} (
  credential_id String,
  kind LowCardinality(String),
  task_id String,
  agent_id String,
  workload_id String,
  principal String,
  subject String,
  session_name String,
  parent_credential_id String,
  issued_at DateTime64(6, 'UTC'),
  expires_at DateTime64(6, 'UTC'),
  revoked_at DateTime64(6, 'UTC'),
  src_ip String,
  host String,
  event_id String,
  bound_by LowCardinality(String),
  updated_at DateTime64(6, 'UTC'),
  stored_at DateTime64(3, 'UTC') DEFAULT now64(3),
  INDEX idx_task_id task_id TYPE bloom_filter(0.01) GRANULARITY 1,
  INDEX idx_workload_id workload_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY credential_id
SETTINGS ${DEDUP}`,

        `CREATE TABLE IF NOT EXISTS ${t(TABLE.findings)} (
  id String,
  detector LowCardinality(String),
  rule LowCardinality(String),
  severity LowCardinality(String),
  title String,
  summary String,
  task_id String,
  agent_id String,
  workload_id String,
  time DateTime64(6, 'UTC'),
  evidence Array(String),
  join_keys Map(String, String),
  window_start Nullable(DateTime64(6, 'UTC')),
  window_end Nullable(DateTime64(6, 'UTC')),
  metrics Map(String, Float64),
  tags Array(LowCardinality(String)),
  emitted_at Nullable(DateTime64(6, 'UTC')),
  stored_at DateTime64(3, 'UTC') DEFAULT now64(3),
  INDEX idx_detector detector TYPE set(100) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (task_id, time, id)
${ttl(TABLE.findings, retentionDays)}
SETTINGS ${DEDUP}`,

        `CREATE TABLE IF NOT EXISTS ${t(TABLE.alerts)} (
  id String,
  incident_id String,
  channel LowCardinality(String),
  status LowCardinality(String),
  time DateTime64(6, 'UTC'),
  payload String,
  stored_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (incident_id, time, id)
${ttl(TABLE.alerts, retentionDays)}
SETTINGS ${DEDUP}`,

        `CREATE TABLE IF NOT EXISTS ${t(TABLE.deadLetters)} (
  stage LowCardinality(String),
  topic LowCardinality(String),
  partition Int32,
  offset String,
  key Nullable(String),
  code LowCardinality(String),
  reason String,
  payload String,
  time DateTime64(6, 'UTC'),
  stored_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (stage, topic, time)
${ttl(TABLE.deadLetters, retentionDays)}
SETTINGS ${DEDUP}`,
      ];
    },
  },
  {
    version: 2,
    name: 'alerting',
    // Incidents and the delivery outbox are mutable state kept as versioned rows: each change
    // inserts the whole row with a higher `version`, and reads take the latest with FINAL. A pending
    // delivery is rewritten at every attempt, so its `stored_at` (the TTL clock) stays fresh.
    statements: ({ db, retentionDays }) => {
      const t = (name: string): string => tableRef(db, name);
      return [
        `CREATE TABLE IF NOT EXISTS ${t(TABLE.incidents)} (
  id String,
  fingerprint String,
  status LowCardinality(String),
  severity LowCardinality(String),
  detector LowCardinality(String),
  rule LowCardinality(String),
  task_id String,
  agent_id String,
  workload_id String,
  title String,
  finding_count UInt64,
  first_seen DateTime64(3, 'UTC'),
  last_seen DateTime64(3, 'UTC'),
  opened_at DateTime64(3, 'UTC'),
  updated_at DateTime64(3, 'UTC'),
  suppressed String,
  state String,
  version UInt64,
  stored_at DateTime64(3, 'UTC') DEFAULT now64(3),
  INDEX idx_fingerprint fingerprint TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id
${ttl(TABLE.incidents, retentionDays)}
SETTINGS ${DEDUP}`,

        `CREATE TABLE IF NOT EXISTS ${t(TABLE.alertOutbox)} (
  id String,
  incident_id String,
  fingerprint String,
  channel LowCardinality(String),
  kind LowCardinality(String),
  status LowCardinality(String),
  attempts UInt32,
  next_attempt_at DateTime64(3, 'UTC'),
  last_error String,
  ref String,
  payload String,
  created_at DateTime64(3, 'UTC'),
  version UInt64,
  stored_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id
${ttl(TABLE.alertOutbox, retentionDays)}
SETTINGS ${DEDUP}`,
      ];
    },
  },
  {
    version: 3,
    name: 'event-id-index',
    // A correlator taking over a partition (restart, crash, rebalance) looks up which redelivered
    // events are already stored, by event id alone (services/correlator/redelivery-guard.ts). The
    // primary key starts with task_id, so without this index that lookup reads every part. Parts
    // written before the index exist are still read whole; nothing else changes for them.
    statements: ({ db }) => [`ALTER TABLE ${tableRef(db, TABLE.events)} ADD INDEX IF NOT EXISTS idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1`],
  },
];

/** Highest schema version this build knows. */
export const LATEST_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));

const AppliedRowSchema = z.object({ version: z.number().int(), name: z.string() });

/** Result of {@link applyMigrations}. */
export interface MigrationReport {
  /** Version the database was at before. 0 = empty. */
  from: number;
  /** Version it is at now. */
  to: number;
  /** Versions applied by this call. */
  applied: number[];
}

/**
 * Brings the schema up to {@link LATEST_VERSION}. Idempotent. Refuses (non-retriable
 * StorageError) a database that is at a newer version than this build knows, rather than write
 * rows an unknown schema may not accept.
 */
export async function applyMigrations(
  client: ClickHouseClient,
  ctx: MigrationContext,
  log: Logger,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<MigrationReport> {
  const versions = tableRef(ctx.db, TABLE.migrations);
  await client.command({
    query: `CREATE TABLE IF NOT EXISTS ${versions} (
  version UInt32,
  name String,
  applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version`,
  });

  const rs = await client.query({ query: `SELECT version, name FROM ${versions} FINAL ORDER BY version`, format: 'JSONEachRow' });
  const applied = z.array(AppliedRowSchema).parse(await rs.json());
  const known = new Map(migrations.map((m) => [m.version, m]));
  const latest = Math.max(0, ...migrations.map((m) => m.version));
  const from = Math.max(0, ...applied.map((a) => a.version));
  if (from > latest) {
    throw new StorageError(
      `database \`${ctx.db}\` is at schema version ${from}, newer than this build of Runtrail knows (${latest}); ` +
        'upgrade Runtrail, or point it at another database (storage.database / CLICKHOUSE_DATABASE)',
      { retriable: false },
    );
  }
  for (const a of applied) {
    const m = known.get(a.version);
    if (m && m.name !== a.name) {
      log.warn({ version: a.version, recorded: a.name, expected: m.name }, 'schema migration recorded under another name');
    }
  }

  const done = new Set(applied.map((a) => a.version));
  const ran: number[] = [];
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (done.has(m.version)) continue;
    const started = Date.now();
    for (const [i, sql] of m.statements(ctx).entries()) {
      try {
        await client.command({ query: sql });
      } catch (err) {
        throw new StorageError(
          `schema migration ${m.version} (${m.name}) failed at statement ${i + 1}: ${errorMessage(err)}`,
          { retriable: false, cause: err },
        );
      }
    }
    await client.insert({
      table: versions,
      values: [{ version: m.version, name: m.name }],
      format: 'JSONEachRow',
      // chDB keeps settings per session: clear a token a previous insert left behind, or this
      // record could be taken for a duplicate of it.
      clickhouse_settings: { insert_deduplication_token: '', async_insert: 0 },
    });
    ran.push(m.version);
    log.info({ version: m.version, migration: m.name, ms: Date.now() - started }, 'schema migration applied');
  }
  return { from, to: Math.max(from, ...ran), applied: ran };
}

const CreateQuerySchema = z.object({ name: z.string(), create_table_query: z.string() });

/**
 * Makes each table's TTL match the configured retention. Migrations write the TTL once; this
 * follows later changes of `storage.retentionDays`. The ALTER does not rewrite existing parts
 * (materialize_ttl_after_modify = 0): the new TTL applies as parts merge, which keeps a start-up
 * on a large database fast.
 */
export async function reconcileRetention(client: ClickHouseClient, ctx: MigrationContext, log: Logger): Promise<string[]> {
  const tables = Object.keys(TTL_COLUMN);
  const rs = await client.query({
    query: 'SELECT name, create_table_query FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}',
    query_params: { db: ctx.db, names: tables },
    format: 'JSONEachRow',
  });
  const rows = z.array(CreateQuerySchema).parse(await rs.json());
  const changed: string[] = [];
  for (const row of rows) {
    const column = TTL_COLUMN[row.name as TableName];
    if (column === undefined) continue;
    const days = /TTL .*toIntervalDay\((\d+)\)/.exec(row.create_table_query)?.[1];
    if (days !== undefined && Number(days) === ctx.retentionDays) continue;
    await client.command({
      query: `ALTER TABLE ${tableRef(ctx.db, row.name)} MODIFY TTL ${ttlExpression(column, ctx.retentionDays)}`,
      clickhouse_settings: { materialize_ttl_after_modify: 0 },
    });
    changed.push(row.name);
    log.info({ table: row.name, from: days === undefined ? null : Number(days), to: ctx.retentionDays }, 'retention changed');
  }
  return changed;
}
