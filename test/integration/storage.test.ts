import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import type { AlertDelivery, DeadLetter } from '../../shared/bus/bus.ts';
import { parseConfig, type StorageConfig } from '../../shared/config.ts';
import { RecordError, StorageError } from '../../shared/errors.ts';
import {
  CredentialBindingSchema,
  TimelineEventSchema,
  type CredentialBinding,
  type TimelineEvent,
} from '../../shared/event.ts';
import { FindingSchema, type Finding } from '../../shared/finding.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { createClickHouse } from '../../services/storage/clickhouse.ts';
import { LATEST_VERSION, MIGRATIONS, applyMigrations, reconcileRetention } from '../../services/storage/migrations.ts';
import { QueryRejectedError } from '../../services/storage/read-only-sql.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';

/**
 * The storage layer against the real embedded engine (chDB), one data directory for this file.
 * chDB binds one data directory per process; vitest runs each test file in its own process
 * (pool `forks`, see vitest.config.ts), so files with different directories do not collide.
 */

type TimelineEventInput = z.input<typeof TimelineEventSchema>;

let dir: string;
let cfg: StorageConfig;
let store: ClickHouseStore;
let metrics: MetricsRegistry;
const log = silentLogger();

/** Whole microseconds an hour ago: every time below is `(BASE_US + n) / 1000`, a fractional ms. */
const BASE_US = (Math.floor(Date.now() / 1000) - 3600) * 1_000_000;
const at = (us: number): number => (BASE_US + us) / 1000;
const hex32 = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 32);

/** An event with every field set, as a correlator would emit for an agent's tool call. */
function fullEvent(task: string, i: number, over: Partial<TimelineEventInput> = {}): TimelineEvent {
  return TimelineEventSchema.parse({
    event_id: hex32(`${task}/${i}`),
    source: 'agent',
    type: 'tool.call',
    time: at(i * 1_000 + 123),
    end_time: at(i * 1_000 + 987),
    format: 'otlp-traces',
    task_id: task,
    agent_id: 'agent-7',
    agent_name: 'billing-assistant',
    workload_id: 'spiffe://prod.example/ns/agents/sa/billing',
    credential_id: 'ASIAEXAMPLE0001',
    trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
    span_id: `00f067aa0ba902b${i % 10}`,
    parent_span_id: '00f067aa0ba902a0',
    request_id: `req-${i}`,
    session_id: 'sess-1',
    principal: 'arn:aws:sts::111122223333:assumed-role/billing/task-1',
    action: 'tool:send_money',
    resources: [
      { type: 'AWS::S3::Object', id: `arn:aws:s3:::invoices/${i}.pdf`, account: '111122223333' },
      { id: 'https://api.example.com/pay' },
    ],
    outcome: 'success',
    sensitivity: 'confidential',
    data_classes: ['financial', 'pii'],
    src_ip: '10.0.3.7',
    host: 'node-a',
    user_agent: 'aws-sdk-js/3.600.0',
    tool: {
      name: 'send_money',
      call_id: `call_${i}`,
      // Separators, quotes, newlines and non-ASCII: nothing in a value may end a row or statement.
      arguments: JSON.stringify({ to: "O'Brien; DROP TABLE events;--", memo: 'line1\nline2\t"q"\\', amount: 12.5, note: 'café ✓' }),
      result: '',
      error: 'rate_limited',
      annotations: { readOnlyHint: false, destructiveHint: true },
      server: 'mcp://payments',
    },
    model: { name: 'gpt-4o', provider: 'openai', input_tokens: 1200, output_tokens: 87 },
    messages: { system: 'You are a billing assistant.', input: 'Pay invoice 7', output: 'Done.' },
    credential: {
      id: 'ASIACHILD0001',
      kind: 'aws-access-key',
      parent_id: 'ASIAEXAMPLE0001',
      subject: 'arn:aws:sts::111122223333:assumed-role/billing/task-1',
      session_name: 'task-1',
      tags: { 'runtrail.task.id': task },
      expires_at: at(3_600_000_000),
    },
    process: { pid: 4242, name: 'python', cmdline: 'python agent.py --x "y"', exe: '/usr/bin/python3', user: 'app', container_id: 'c0ffee' },
    network: { dst_ip: '203.0.113.9', dst_port: 443, src_port: 50123, protocol: 'tcp', direction: 'outbound' },
    delegation: { to_agent_id: 'agent-8', to_agent_name: 'payer', to_task_id: `${task}-sub` },
    attributes: { 'gen_ai.system': 'openai', nested: { list: [1, 'two', null, true], deep: { x: 1.25 } }, big: 12345678901234 },
    attribution: 'trace',
    join_key: '4bf92f3577b34da6a3ce929d0e0e4736',
    unattributed_reason: '',
    ingested_at: at(i * 1_000 + 5_000_456),
    late: i % 2 === 1,
    ...over,
  });
}

/** An event with only the required fields: optional ones must come back absent. */
function minimalEvent(task: string, i: number, over: Partial<TimelineEventInput> = {}): TimelineEvent {
  return TimelineEventSchema.parse({
    event_id: hex32(`min/${task}/${i}`),
    source: 'resource',
    type: 'resource.access',
    time: at(i * 1_000),
    format: 'cloudtrail',
    task_id: task,
    attribution: task === '' ? 'unattributed' : 'credential',
    unattributed_reason: task === '' ? 'no binding for credential' : '',
    ingested_at: at(i * 1_000 + 1),
    ...over,
  });
}

function binding(id: string, over: Partial<CredentialBinding> = {}): CredentialBinding {
  return CredentialBindingSchema.parse({
    credential_id: id,
    kind: 'aws-access-key',
    task_id: 'task-b',
    agent_id: 'agent-7',
    workload_id: 'spiffe://prod.example/ns/agents/sa/billing',
    principal: 'arn:aws:iam::111122223333:role/billing',
    subject: 'arn:aws:sts::111122223333:assumed-role/billing/task-b',
    session_name: 'task-b',
    issued_at: at(100),
    expires_at: at(3_600_000_100),
    event_id: hex32(`issue/${id}`),
    bound_by: 'session_name',
    ...over,
  });
}

function finding(task: string, i: number): Finding {
  return FindingSchema.parse({
    id: `tool-chaining/injection-to-action/${task}/${i}`,
    detector: 'tool-chaining',
    rule: 'injection-to-action',
    severity: 'high',
    title: 'Untrusted tool output flowed into a payment',
    summary: 'fetch_url -> send_money within 4 s',
    task_id: task,
    agent_id: 'agent-7',
    time: at(10_000 + i),
    evidence: [hex32(`${task}/0`), hex32(`${task}/1`)],
    join_keys: { credential_id: 'ASIAEXAMPLE0001', trace_id: '4bf9' },
    window_start: at(0),
    window_end: at(10_001),
    metrics: { score: 42.5, threshold: 30 },
    tags: ['owasp-agentic:T2', 'mitre:T1567'],
    emitted_at: at(11_000),
  });
}

/** The engine behind the store, for checks the Store interface does not offer (physical rows). */
let raw: ClickHouseClient;

async function scalar(sql: string): Promise<number> {
  const rs = await raw.query({ query: sql, format: 'JSONEachRow' });
  const rows = (await rs.json()) as Array<Record<string, unknown>>;
  return Number(Object.values(rows[0] ?? {})[0]);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-storage-'));
  cfg = parseConfig({ dataDir: dir, storage: { batchMaxDelayMs: 20 } }).storage;
  metrics = new MetricsRegistry();
  store = new ClickHouseStore(cfg, dir, log, metrics);
  await store.start();
  // A second session on the same directory: allowed within one process.
  raw = await createClickHouse(cfg, dir, log);
}, 60_000);

afterAll(async () => {
  await raw?.close();
  await store?.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('migrations', () => {
  it('apply once, are recorded, and re-apply as a no-op', async () => {
    expect(store.migration).toEqual({ from: 0, to: LATEST_VERSION, applied: MIGRATIONS.map((m) => m.version) });
    const again = await applyMigrations(raw, { db: cfg.database, retentionDays: cfg.retentionDays }, log);
    expect(again).toEqual({ from: LATEST_VERSION, to: LATEST_VERSION, applied: [] });
    const recorded = await store.querySql('SELECT version, name FROM schema_migrations FINAL ORDER BY version');
    expect(recorded).toEqual(MIGRATIONS.map((m) => ({ version: m.version, name: m.name })));
    // A second store on the same database starts without applying anything.
    const second = new ClickHouseStore(cfg, dir, log);
    await second.start();
    expect(second.migration?.applied).toEqual([]);
    await second.shutdown();
  });

  it('refuse a database newer than the code', async () => {
    const older = MIGRATIONS.slice(0, 0);
    const err = await applyMigrations(raw, { db: cfg.database, retentionDays: 90 }, log, older).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).retriable).toBe(false);
    expect((err as Error).message).toMatch(new RegExp(`at schema version ${LATEST_VERSION}, newer than this build of Runtrail knows \\(0\\)`));
  });

  it('follow a retention change with ALTER ... MODIFY TTL', async () => {
    const ctx = { db: cfg.database, retentionDays: 30 };
    expect((await reconcileRetention(raw, ctx, log)).sort()).toEqual(['alert_outbox', 'alerts', 'dead_letters', 'events', 'findings', 'incidents', 'tasks']);
    const [ddl] = await store.querySql("SELECT create_table_query AS q FROM system.tables WHERE database = {db:String} AND name = 'events'", {
      db: cfg.database,
    });
    expect(String(ddl?.q)).toMatch(/TTL toDateTime\(stored_at\) \+ toIntervalDay\(30\)/);
    expect(await reconcileRetention(raw, ctx, log)).toEqual([]);
    await reconcileRetention(raw, { ...ctx, retentionDays: cfg.retentionDays }, log);
  });
});

describe('events', () => {
  const TASK = 'task-roundtrip';

  it('round-trip every field and come back in event-time order', async () => {
    const events = [
      ...Array.from({ length: 6 }, (_, i) => fullEvent(TASK, i)),
      minimalEvent(TASK, 3), // same millisecond range as event 3: ordered by time then id
    ];
    // Two events at the very same instant: ties are broken by event id.
    events.push(fullEvent(TASK, 100, { time: at(2_000 + 123), event_id: '0'.repeat(32) }));
    const shuffled = [...events].reverse();
    await store.insertEvents(shuffled);

    const expected = [...events].sort((a, b) => a.time - b.time || (a.event_id < b.event_id ? -1 : 1));
    const timeline = await store.timeline(TASK);
    expect(timeline).toEqual(expected);
    // Structural equality above ignores undefined keys; check absent optionals are really absent.
    const min = timeline.find((e) => e.format === 'cloudtrail');
    expect(Object.keys(min ?? {}).sort()).toEqual(
      ['attributes', 'attribution', 'data_classes', 'event_id', 'format', 'ingested_at', 'join_key', 'late', 'outcome', 'resources', 'sensitivity', 'source', 'task_id', 'time', 'type', 'unattributed_reason'].sort(),
    );
    expect(timeline[0]?.time).toBe(at(123));
    expect(timeline.find((e) => e.event_id === hex32(`${TASK}/1`))?.tool?.arguments).toContain("O'Brien; DROP TABLE events;--");
  });

  it('round-trip hostile text in every string field, arrays and JSON columns included', async () => {
    const nasty = (tag: string): string => `${tag}: it's a \\ back\\slash\ttab\nnew\rline\0nul \\N "dq" é ✓ 🚀 ['x'] {'k':1} ;`;
    const e = fullEvent('task-nasty', 1, {
      task_id: nasty('task'),
      agent_id: nasty('agent'),
      agent_name: nasty('name'),
      workload_id: nasty('wl'),
      credential_id: nasty('cred'),
      principal: nasty('principal'),
      action: nasty('action'),
      resources: [{ type: nasty('rt'), id: nasty('rid'), account: nasty('acct') }],
      data_classes: [nasty('dc1'), "o'k"],
      user_agent: nasty('ua'),
      tool: { name: nasty('tool'), arguments: nasty('args'), result: nasty('result'), annotations: { [nasty('ann')]: true } },
      model: { name: nasty('model') },
      messages: { system: nasty('sys'), input: nasty('in'), output: '' },
      attributes: { [nasty('key')]: nasty('value'), list: [nasty('item')] },
      join_key: nasty('jk'),
      unattributed_reason: nasty('why'),
    });
    await store.insertEvents([e]);
    expect(await store.timeline(nasty('task'))).toEqual([e]);
  });

  it('keep microseconds and round finer fractions', async () => {
    const e = minimalEvent('task-precision', 1, { time: 1_700_000_000_123.4567, end_time: 1_700_000_000_123.456 });
    await store.insertEvents([e]);
    const [back] = await store.timeline('task-precision');
    expect(back?.time).toBe(1_700_000_000_123.457);
    expect(back?.end_time).toBe(1_700_000_000_123.456);
  });

  it('count replays once, whatever the batching', async () => {
    const TASK2 = 'task-replay';
    const events = Array.from({ length: 50 }, (_, i) => fullEvent(TASK2, i));
    // Background merges would collapse duplicates too; stop them so physical counts show what
    // the token (not a merge) did.
    await raw.command({ query: `SYSTEM STOP MERGES ${cfg.database}.events` });
    try {
      await replayChecks(TASK2, events);
    } finally {
      await raw.command({ query: `SYSTEM START MERGES ${cfg.database}.events` });
    }
    expect(await store.timeline(TASK2)).toHaveLength(50);
  });

  async function replayChecks(TASK2: string, events: TimelineEvent[]): Promise<void> {
    await store.insertEvents(events);
    const count = await store.countEvents();
    const physical = await scalar(`SELECT count() FROM ${cfg.database}.events WHERE task_id = '${TASK2}'`);
    expect(physical).toBe(50);

    // The identical batch again (a retry after a lost acknowledgement): dropped at insert by its token.
    await store.insertEvents(events);
    expect(await scalar(`SELECT count() FROM ${cfg.database}.events WHERE task_id = '${TASK2}'`)).toBe(50);

    // A replay cut differently (each call its own batch): stored again, collapsed by FINAL.
    for (const [from, to] of [[0, 17], [17, 33], [33, 50]] as const) await store.insertEvents(events.slice(from, to));
    expect(await scalar(`SELECT count() FROM ${cfg.database}.events WHERE task_id = '${TASK2}'`)).toBeGreaterThan(50);
    expect(await store.countEvents()).toBe(count);
    expect(await store.querySql('SELECT count() AS n FROM events_dedup WHERE task_id = {t:String}', { t: TASK2 })).toEqual([{ n: '50' }]);
  }

  it('summarise tasks without double counting replays and without the unattributed bucket', async () => {
    const T = 'task-summary';
    const events = [
      minimalEvent(T, 0, { type: 'task.started', source: 'agent', agent_id: 'agent-1' }),
      fullEvent(T, 1, { sensitivity: 'restricted', agent_id: 'agent-1', credential_id: 'ASIA1' }),
      fullEvent(T, 2, { agent_id: 'agent-2', credential_id: 'ASIA2', workload_id: 'wl-2' }),
      minimalEvent(T, 3, { type: 'task.ended', source: 'agent' }),
    ];
    await store.insertEvents(events);
    await store.insertEvents(events.slice(1, 3)); // a replay
    await store.insertEvents([minimalEvent('', 9), minimalEvent('', 10)]);

    const [summary] = await store.querySql(
      `SELECT task_id, events, toUnixTimestamp64Micro(first_seen) AS first_us, toUnixTimestamp64Micro(last_seen) AS last_us,
              arraySort(agents) AS agents, arraySort(credentials) AS credentials, arraySort(workloads) AS workloads,
              arraySort(data_classes) AS data_classes, max_sensitivity, ended
       FROM tasks_summary WHERE task_id = {t:String}`,
      { t: T },
    );
    expect(summary).toMatchObject({
      task_id: T,
      events: '4',
      agents: ['agent-1', 'agent-2'],
      credentials: ['ASIA1', 'ASIA2'],
      workloads: ['spiffe://prod.example/ns/agents/sa/billing', 'wl-2'],
      data_classes: ['financial', 'pii'],
      max_sensitivity: 'restricted',
      ended: true,
    });
    expect(Number(summary?.first_us)).toBe(BASE_US);
    expect(Number(summary?.last_us)).toBe(BASE_US + 3_000);
    expect(await store.querySql("SELECT count() AS n FROM tasks_summary WHERE task_id = ''")).toEqual([{ n: '0' }]);
    expect(await store.timeline('')).toHaveLength(2);
  });

  it('refuse an event time outside DateTime64 with the row and field named', async () => {
    // The canonical schema refuses such a time at the edge; the store must still refuse it on its own.
    const bad: TimelineEvent = { ...minimalEvent('task-bad', 1), time: 1.7e18 };
    const err = await store.insertEvents([minimalEvent('task-bad', 0), bad]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RecordError);
    expect((err as RecordError).field).toBe('[1].time');
    expect(await store.timeline('task-bad')).toEqual([]);
  });

  it('read long timelines in pages without losing or repeating an event', async () => {
    const T = 'task-long';
    // More than one read page (20 000), with runs of equal times so ties cross page boundaries.
    const events = Array.from({ length: 25_003 }, (_, i) => minimalEvent(T, Math.floor(i / 3), { event_id: hex32(`long/${i}`) }));
    await store.insertEvents(events);
    const timeline = await store.timeline(T);
    expect(timeline).toHaveLength(25_003);
    const expected = [...events].sort((a, b) => a.time - b.time || (a.event_id < b.event_id ? -1 : 1)).map((e) => e.event_id);
    expect(timeline.map((e) => e.event_id)).toEqual(expected);
    expect((await store.timeline(T, { limit: 20_001 })).map((e) => e.event_id)).toEqual(expected.slice(0, 20_001));
  }, 60_000);

  it('resolve every concurrent insert once its rows are stored', async () => {
    const T = 'task-concurrent';
    const calls = Array.from({ length: 40 }, (_, c) =>
      store.insertEvents(Array.from({ length: 25 }, (_, i) => minimalEvent(T, c * 25 + i))),
    );
    await Promise.all(calls);
    expect(await store.querySql('SELECT count() AS n FROM events_dedup WHERE task_id = {t:String}', { t: T })).toEqual([{ n: '1000' }]);
    expect(metrics.render()).toMatch(/runtrail_storage_rows_written_total\{table="events"\} \d+/);
  });
});

describe('writer timing against chDB', () => {
  it('flushes on size long before the delay, and on time when the size is not reached', async () => {
    const slow = new ClickHouseStore({ ...cfg, batchMaxRows: 100, batchMaxDelayMs: 600_000 }, dir, log);
    await slow.start();
    try {
      // With a 10 min delay, a writer that waited for it would run into the test's timeout.
      await slow.insertEvents(Array.from({ length: 200 }, (_, i) => minimalEvent('task-size', i)));
      expect(await slow.timeline('task-size')).toHaveLength(200);
    } finally {
      await slow.shutdown();
    }
    const timed = new ClickHouseStore({ ...cfg, batchMaxRows: 10_000, batchMaxDelayMs: 300 }, dir, log);
    await timed.start();
    try {
      const t0 = Date.now();
      await timed.insertEvents([minimalEvent('task-time', 1)]);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      expect(await timed.timeline('task-time')).toHaveLength(1);
    } finally {
      await timed.shutdown();
    }
  });
});

describe('bindings', () => {
  it('upsert: a revocation replaces the row, and a replayed issuance does not undo it', async () => {
    const issued = binding('ASIAUPSERT');
    await store.insertBindings([issued, binding('ASIAOTHER', { issued_at: at(50) })]);
    const revoked = { ...issued, revoked_at: at(200_001), event_id: hex32('revoke') };
    await store.insertBindings([revoked]);
    await store.insertBindings([issued]);

    const loaded = await store.loadBindings(10);
    const mine = loaded.filter((b) => b.credential_id === 'ASIAUPSERT');
    expect(mine).toEqual([revoked]);
    expect(loaded.map((b) => b.credential_id)).toEqual(['ASIAUPSERT', 'ASIAOTHER']);
    expect(await store.loadBindings(1)).toEqual([revoked]);
  });
});

describe('bindings at scale', () => {
  it('load in pages, newest first, each credential once', async () => {
    const many = Array.from({ length: 20_010 }, (_, i) =>
      binding(`ASIAPAGE${String(i).padStart(6, '0')}`, { issued_at: at(1_000_000 + Math.floor(i / 4)) }),
    );
    await store.insertBindings(many);
    const loaded = await store.loadBindings(30_000);
    const paged = loaded.filter((b) => b.credential_id.startsWith('ASIAPAGE'));
    expect(paged).toHaveLength(20_010);
    expect(new Set(loaded.map((b) => b.credential_id)).size).toBe(loaded.length);
    const expected = [...many].sort((a, b) => b.issued_at - a.issued_at || (a.credential_id < b.credential_id ? -1 : 1));
    expect(paged.map((b) => b.credential_id)).toEqual(expected.map((b) => b.credential_id));
  }, 60_000);
});

describe('findings, alerts and dead letters', () => {
  it('findings round-trip and a re-emitted finding is stored once', async () => {
    const f = [finding('task-f', 1), finding('task-f', 2)];
    await store.insertFindings(f);
    await store.insertFindings([f[0] as Finding]);
    expect(await store.findings('task-f')).toEqual(f);
  });

  it('alerts and dead letters are stored', async () => {
    const alert: AlertDelivery = { id: 'a1', incident_id: 'inc-1', channel: 'slack', status: 'delivered', time: at(5), payload: '{"text":"x"}' };
    const dead: DeadLetter = {
      stage: 'correlator',
      topic: 'events.agent',
      partition: 3,
      offset: '18446744073709551615',
      key: null,
      code: 'payload_invalid',
      reason: 'field `time`: expected number',
      payload: '{"time":"x"}',
      time: at(6),
    };
    await Promise.all([store.insertAlerts([alert]), store.insertDeadLetters([dead])]);
    expect(await store.querySql('SELECT id, incident_id, channel, status, payload FROM alerts')).toEqual([
      { id: 'a1', incident_id: 'inc-1', channel: 'slack', status: 'delivered', payload: '{"text":"x"}' },
    ]);
    expect(await store.querySql('SELECT stage, topic, partition, offset, key, code, reason FROM dead_letters')).toEqual([
      { stage: 'correlator', topic: 'events.agent', partition: 3, offset: '18446744073709551615', key: null, code: 'payload_invalid', reason: 'field `time`: expected number' },
    ]);
  });
});

describe('querySql', () => {
  async function rejected(sql: string): Promise<string> {
    const err = await store.querySql(sql).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueryRejectedError);
    return (err as Error).message;
  }

  it('refuses writes with a message saying what is allowed', async () => {
    expect(await rejected("INSERT INTO events (task_id) VALUES ('x')")).toMatch(/read-only: `INSERT` statements are not allowed/);
    expect(await rejected('DROP TABLE events')).toMatch(/`DROP` statements are not allowed/);
    expect(await rejected('ALTER TABLE events DELETE WHERE 1')).toMatch(/`ALTER` statements are not allowed/);
    expect(await rejected('SELECT 1; DROP TABLE events')).toMatch(/one statement/);
    const out = join(dir, 'out.csv');
    expect(await rejected(`SELECT 1 INTO OUTFILE '${out}'`)).toMatch(/INTO OUTFILE/);
    expect(existsSync(out)).toBe(false);
    expect(await store.countEvents()).toBeGreaterThan(0);
  });

  it('leaves enforcement to the engine too: readonly = 1 blocks table functions and settings changes', async () => {
    expect(await rejected("SELECT * FROM file('/etc/hostname', 'LineAsString')")).toMatch(/readonly/i);
    expect(await rejected('SELECT 1 SETTINGS max_result_rows = 0')).toMatch(/readonly/i);
    // The analyst session's readonly does not leak into the writers' sessions.
    await store.insertEvents([minimalEvent('task-after-readonly', 1)]);
    expect(await store.timeline('task-after-readonly')).toHaveLength(1);
  });

  it('enforces the row limit and the time limit', async () => {
    expect(await store.querySql('SELECT number FROM system.numbers', {}, { maxRows: 7 })).toEqual(
      Array.from({ length: 7 }, (_, i) => ({ number: String(i) })),
    );
    expect(await store.querySql('SELECT number FROM numbers(1000000)', {}, { maxRows: 100_000 })).toHaveLength(100_000);
    const err = await store
      .querySql('SELECT sum(cityHash64(number)) FROM numbers(100000000000)', {}, { maxSeconds: 1 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueryRejectedError);
    expect((err as Error).message).toMatch(/time limit of 1 s/);
  }, 30_000);

  it('binds parameters as values, never as SQL', async () => {
    const rows = await store.querySql('SELECT count() AS n FROM events_dedup WHERE task_id = {task:String}', {
      task: "task-roundtrip' OR 1=1 --",
    });
    expect(rows).toEqual([{ n: '0' }]);
    expect(await store.querySql('SELECT count() AS n FROM events_dedup WHERE task_id = {task:String}', { task: 'task-roundtrip' })).toEqual([
      { n: '8' },
    ]);
    expect(await store.querySql('SELECT {s:String} AS s, {n:UInt32} + 1 AS n, {a:Array(String)} AS a', { s: "it's", n: 41, a: ['x', 'y'] })).toEqual([
      { s: "it's", n: '42', a: ['x', 'y'] },
    ]);
  });

  it('reports a bad query as a rejection with the engine message', async () => {
    expect(await rejected('SELECT nope FROM events')).toMatch(/nope/);
    expect(await rejected('SELECT * FROM no_such_table')).toMatch(/no_such_table/);
  });
});

describe('one data directory per process', () => {
  it('refuses a second directory in the same process with a message that says why', async () => {
    const other = mkdtempSync(join(tmpdir(), 'runtrail-storage-other-'));
    try {
      const s = new ClickHouseStore(cfg, other, log);
      const err = await s.start().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StorageError);
      expect((err as Error).message).toMatch(/chDB binds one data directory per process/);
      await s.shutdown();
      expect(await store.countEvents()).toBeGreaterThan(0);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});

describe('shutdown', () => {
  it('is idempotent and refuses writes afterwards', async () => {
    const s = new ClickHouseStore(cfg, dir, log);
    await s.start();
    const p = s.insertEvents([minimalEvent('task-shutdown', 1)]);
    await Promise.all([s.shutdown(), s.shutdown()]);
    await p;
    await expect(s.insertEvents([minimalEvent('task-shutdown', 2)])).rejects.toThrow(/shut down/);
    expect(await s.ping()).toBe(false);
    expect(await store.timeline('task-shutdown')).toHaveLength(1);
  });
});
