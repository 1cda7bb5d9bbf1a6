import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ClickHouseError, createClient, type ClickHouseClient, type ClickHouseSettings } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type StorageConfig } from '../../shared/config.ts';
import { RecordError } from '../../shared/errors.ts';
import { CredentialBindingSchema, TimelineEventSchema, type CredentialBinding, type TimelineEvent } from '../../shared/event.ts';
import { FindingSchema, type Finding } from '../../shared/finding.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { createClickHouse } from '../../services/storage/clickhouse.ts';
import { LATEST_VERSION, MIGRATIONS, applyMigrations } from '../../services/storage/migrations.ts';
import { QueryRejectedError } from '../../services/storage/read-only-sql.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';
import { inspectSql, startChdbHttpServer, type ChdbHttpServer } from '../../services/storage/chdb-http-server.ts';

/**
 * The ClickHouse HTTP interface in front of chDB, spoken to by `@clickhouse/client` over real
 * HTTP: the engine runs in this process (one data directory per process), every client below
 * talks to it through the socket only. Then Runtrail's store runs on the URL, as distributed
 * services do.
 */

let dir: string;
let server: ChdbHttpServer;
let client: ClickHouseClient;
const log = silentLogger();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-chdb-http-'));
  server = await startChdbHttpServer({ path: join(dir, 'clickhouse') });
  client = createClient({ url: server.url });
  await client.command({ query: 'CREATE DATABASE IF NOT EXISTS http_test' });
  await client.command({
    query: `CREATE TABLE http_test.t (id UInt32, s String, tags Array(String))
            ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 100`,
  });
}, 60_000);

afterAll(async () => {
  await client?.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The error a promise rejects with (fails the test when it resolves). */
async function failure(p: Promise<unknown>): Promise<ClickHouseError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClickHouseError);
  return err as ClickHouseError;
}

async function rows<T = Record<string, unknown>>(c: ClickHouseClient, query: string, query_params?: Record<string, unknown>): Promise<T[]> {
  const rs = await c.query({ query, format: 'JSONEachRow', ...(query_params ? { query_params } : {}) });
  return rs.json<T>();
}

describe('health', () => {
  it('answers /ping like ClickHouse, and the client ping both ways', async () => {
    const res = await fetch(`${server.url}/ping`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('Ok.\n');
    expect(await client.ping()).toEqual({ success: true });
    expect((await client.ping({ select: true })).success).toBe(true);
  });
});

describe('inserts', () => {
  it('stores a JSONEachRow insert once when its deduplication token is sent twice', async () => {
    const values = [
      { id: 1, s: 'one', tags: ['a'] },
      { id: 2, s: 'two', tags: [] },
    ];
    const settings = { insert_deduplication_token: 'batch-1', async_insert: 0 } as const;
    const first = await client.insert({ table: 'http_test.t', values, format: 'JSONEachRow', clickhouse_settings: settings });
    const again = await client.insert({ table: 'http_test.t', values, format: 'JSONEachRow', clickhouse_settings: settings });
    // chDB reports the rows it was handed, deduplicated or not; the table shows what was stored.
    expect(first.summary?.written_rows).toBe('2');
    expect(again.summary?.written_rows).toBe('2');
    expect(await rows(client, 'SELECT id, s FROM http_test.t ORDER BY id')).toEqual([
      { id: 1, s: 'one' },
      { id: 2, s: 'two' },
    ]);
    // Another token is another batch.
    await client.insert({ table: 'http_test.t', values: [{ id: 3, s: 'three', tags: ['x', 'y'] }], format: 'JSONEachRow', clickhouse_settings: { insert_deduplication_token: 'batch-2', async_insert: 0 } });
    expect(await rows(client, 'SELECT count() AS n FROM http_test.t')).toEqual([{ n: 3 }]);
  });

  it('takes the data of an INSERT in the body byte for byte (binary RowBinary) or inline after the statement', async () => {
    // RowBinary: UInt32 LE, then String and Array(String) with LEB128 lengths.
    const row = Buffer.concat([Buffer.from([10, 0, 0, 0]), Buffer.from([3]), Buffer.from('bin'), Buffer.from([1, 2]), Buffer.from('\xff\x00', 'latin1')]);
    const res = await fetch(`${server.url}/?query=${encodeURIComponent('INSERT INTO http_test.t FORMAT RowBinary')}`, { method: 'POST', body: row });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.headers.get('x-clickhouse-summary') ?? '{}')).toMatchObject({ written_rows: '1' });
    await client.command({ query: "INSERT INTO http_test.t VALUES (11, 'inline; not a statement', ['--'])" });
    await client.command({ query: 'INSERT INTO http_test.t FORMAT JSONEachRow\n{"id":12,"s":"body"}' });
    expect(await rows(client, 'SELECT id, s, hex(tags[1]) AS t FROM http_test.t WHERE id >= 10 ORDER BY id')).toEqual([
      { id: 10, s: 'bin', t: 'FF00' },
      { id: 11, s: 'inline; not a statement', t: '2D2D' },
      { id: 12, s: 'body', t: '' },
    ]);
    await client.command({ query: 'ALTER TABLE http_test.t DELETE WHERE id >= 10', clickhouse_settings: { mutations_sync: '1' } });
  });
});

describe('query parameters', () => {
  it('bind every value through the engine, never as SQL', async () => {
    const hostile = ["x' OR 1=1 --", "O'Brien; DROP TABLE http_test.t;--", 'back\\slash\ttab\nnewline "dq" é ✓', '\\N', "'; SELECT 1; --"];
    for (const s of hostile) {
      expect(await rows(client, 'SELECT {s:String} AS v, count() AS n FROM http_test.t WHERE s = {s:String}', { s })).toEqual([{ v: s, n: 0 }]);
    }
    expect(await rows(client, 'SELECT id FROM http_test.t WHERE s = {s:String}', { s: 'two' })).toEqual([{ id: 2 }]);
    expect(
      await rows(client, 'SELECT {a:Array(String)} AS a, {m:Map(String, UInt8)} AS m, {n:Nullable(String)} AS n, {i:UInt64} + 1 AS i', {
        a: ["it's", 'b\\c', "'); DROP TABLE x; --"],
        m: { "k'": 1 },
        n: null,
        i: 41,
      }),
    ).toEqual([{ a: ["it's", 'b\\c', "'); DROP TABLE x; --"], m: { "k'": 1 }, n: null, i: 42 }]);
    expect(await rows(client, 'SELECT count() AS n FROM http_test.t')).toEqual([{ n: 3 }]);
  });

  it('stay correct under concurrency (the engine binds one statement at a time)', async () => {
    const got = await Promise.all(
      Array.from({ length: 24 }, (_, i) => rows<{ v: string; n: number }>(client, 'SELECT {v:String} AS v, count() AS n FROM numbers({k:UInt32})', { v: `value-${i}`, k: 1000 + i })),
    );
    expect(got).toEqual(Array.from({ length: 24 }, (_, i) => [{ v: `value-${i}`, n: 1000 + i }]));
  });
});

describe('errors and read-only mode', () => {
  it('enforces readonly = 1 in the engine and surfaces its code through the client', async () => {
    const err = await failure(client.command({ query: "INSERT INTO http_test.t VALUES (99, 'ro', [])", clickhouse_settings: { readonly: '1' } }));
    expect(err.code).toBe('164');
    expect(err.type).toBe('READONLY');
    // The query cannot lift it either.
    expect((await failure(client.query({ query: 'SELECT 1 SETTINGS readonly = 0', clickhouse_settings: { readonly: '1' } }))).code).toBe('164');
    // GET requests are read-only, as on ClickHouse.
    const res = await fetch(`${server.url}/?query=${encodeURIComponent("INSERT INTO http_test.t VALUES (98, 'get', [])")}`);
    expect(res.headers.get('x-clickhouse-exception-code')).toBe('164');
    expect(await res.text()).toMatch(/^Code: 164\. DB::Exception: .*readonly/);
    // The next request starts clean.
    await client.command({ query: "INSERT INTO http_test.t VALUES (99, 'rw', [])" });
    expect(await rows(client, 'SELECT s FROM http_test.t WHERE id = 99')).toEqual([{ s: 'rw' }]);
    await client.command({ query: 'ALTER TABLE http_test.t DELETE WHERE id = 99', clickhouse_settings: { mutations_sync: '1' } });
  });

  it('reports a syntax error as code 62 with ClickHouse status and headers', async () => {
    const err = await failure(client.command({ query: 'SELECT 1 +' }));
    expect(err.code).toBe('62');
    expect(err.type).toBe('SYNTAX_ERROR');
    const res = await fetch(server.url, { method: 'POST', body: 'SELECT * FROM http_test.no_such_table' });
    expect(res.status).toBe(404);
    expect(res.headers.get('x-clickhouse-exception-code')).toBe('60');
    expect(await res.text()).toMatch(/^Code: 60\. DB::Exception: .*no_such_table.*\(UNKNOWN_TABLE\)/);
  });

  it('refuses a second statement in one request, as ClickHouse does', async () => {
    const err = await failure(client.command({ query: 'SELECT 1; DROP TABLE http_test.t' }));
    expect(err.code).toBe('62');
    expect(err.message).toMatch(/Multi-statements are not allowed/);
    expect(await rows(client, 'SELECT count() AS n FROM http_test.t')).toEqual([{ n: 3 }]);
    // A trailing semicolon, and semicolons inside strings and comments, are one statement.
    expect(await rows(client, "SELECT ';' AS a /* ; */ -- ;\n;")).toEqual([{ a: ';' }]);
  });

  it('applies settings in the engine and rejects unknown ones', async () => {
    const rs = await client.query({ query: 'SELECT number FROM system.numbers', format: 'JSONEachRow', clickhouse_settings: { max_result_rows: '5', result_overflow_mode: 'break' } });
    // system.numbers never ends: only the setting stops it (after the block that crossed the limit).
    const cut = (await rs.json()).length;
    expect(cut).toBeGreaterThanOrEqual(5);
    expect(cut).toBeLessThan(1_000_000);
    expect((await failure(client.query({ query: 'SELECT 1', clickhouse_settings: { no_such_setting: 1 } as ClickHouseSettings }))).code).toBe('115');
    const timeout = await failure(client.query({ query: 'SELECT sum(cityHash64(number)) FROM numbers(100000000000)', clickhouse_settings: { max_execution_time: 1 } }));
    expect(timeout.code).toBe('159');
  }, 30_000);
});

describe('results', () => {
  it('streams a large result and reports an error that happens mid-stream', async () => {
    const rs = await client.query({ query: 'SELECT number AS n, toString(number) AS s FROM numbers(300000)', format: 'JSONCompactEachRow' });
    let count = 0;
    let sum = 0;
    for await (const batch of rs.stream()) {
      for (const row of batch) {
        const [n] = row.json<[string, string]>();
        count++;
        sum += Number(n);
      }
    }
    expect(count).toBe(300_000);
    expect(sum).toBe((299_999 * 300_000) / 2);

    const failing = await client.query({
      query: 'SELECT number, throwIf(number = 150000) AS boom FROM numbers(200000) SETTINGS max_block_size = 10000',
      format: 'JSONEachRow',
    });
    expect(failing.response_headers['x-clickhouse-exception-tag']).toMatch(/^[a-z0-9]{16}$/);
    const err = await failure(failing.json());
    expect(err.code).toBe('395');
  });

  it('names the format in X-ClickHouse-Format and honours default_format and wait_end_of_query', async () => {
    const res = await fetch(`${server.url}/?default_format=JSONCompact&wait_end_of_query=1`, { method: 'POST', body: 'SELECT 1 AS x' });
    expect(res.headers.get('x-clickhouse-format')).toBe('JSONCompact');
    expect(JSON.parse(res.headers.get('x-clickhouse-summary') ?? '{}')).toMatchObject({ result_rows: '1' });
    expect(JSON.parse(await res.text())).toMatchObject({ data: [[1]] });
    const tsv = await fetch(server.url, { method: 'POST', body: 'SELECT 1 AS x FORMAT TSVWithNames' });
    expect(tsv.headers.get('x-clickhouse-format')).toBe('TSVWithNames');
    expect(await tsv.text()).toBe('x\n1\n');
  });
});

describe('compression', () => {
  it('reads gzip request bodies and sends gzip responses when asked', async () => {
    const gz = createClient({ url: server.url, compression: { request: true, response: true } });
    try {
      await gz.insert({
        table: 'http_test.t',
        values: Array.from({ length: 1000 }, (_, i) => ({ id: 1000 + i, s: `gz-${i}`, tags: ['z'] })),
        format: 'JSONEachRow',
        clickhouse_settings: { async_insert: 0 },
      });
      const rs = await gz.query({ query: "SELECT count() AS n, any(s LIKE 'gz-%') AS ok FROM http_test.t WHERE id >= 1000", format: 'JSONEachRow' });
      expect(rs.response_headers['content-encoding']).toBe('gzip');
      expect(await rs.json()).toEqual([{ n: 1000, ok: 1 }]);
      await gz.command({ query: 'ALTER TABLE http_test.t DELETE WHERE id >= 1000', clickhouse_settings: { mutations_sync: '1' } });
    } finally {
      await gz.close();
    }
    const res = await fetch(server.url, { method: 'POST', headers: { 'Content-Encoding': 'gzip' }, body: gzipSync('SELECT 40 + 2') });
    expect(await res.text()).toBe('42\n');
  });
});

describe('sessions and auth', () => {
  it('keeps temporary tables and settings per session_id', async () => {
    const session_id = `s-${Date.now()}`;
    await client.command({ query: 'CREATE TEMPORARY TABLE tmp (x UInt8)', session_id });
    await client.command({ query: 'INSERT INTO tmp VALUES (7)', session_id });
    expect(await (await client.query({ query: 'SELECT x FROM tmp', format: 'JSONEachRow', session_id })).json()).toEqual([{ x: 7 }]);
    expect((await failure(client.query({ query: 'SELECT x FROM tmp' }))).code).toBe('60');
    const missing = await fetch(`${server.url}/?session_id=nope&session_check=1`, { method: 'POST', body: 'SELECT 1' });
    expect(missing.headers.get('x-clickhouse-exception-code')).toBe('372');
  });

  it('checks credentials when configured (basic auth and X-ClickHouse headers)', async () => {
    // A second server on the same data directory: allowed in one process.
    const guarded = await startChdbHttpServer({ path: join(dir, 'clickhouse'), auth: { username: 'runtrail', password: 's3cret' } });
    const good = createClient({ url: guarded.url, username: 'runtrail', password: 's3cret' });
    const bad = createClient({ url: guarded.url, username: 'runtrail', password: 'wrong' });
    try {
      expect(await rows(good, 'SELECT count() AS n FROM http_test.t')).toEqual([{ n: 3 }]);
      const err = await failure(bad.query({ query: 'SELECT 1' }));
      expect(err.code).toBe('516');
      const headers = await fetch(guarded.url, { method: 'POST', body: 'SELECT 1', headers: { 'X-ClickHouse-User': 'runtrail', 'X-ClickHouse-Key': 's3cret' } });
      expect(await headers.text()).toBe('1\n');
      expect((await fetch(`${guarded.url}/ping`)).status).toBe(200);
    } finally {
      await good.close();
      await bad.close();
      await guarded.close();
    }
  });
});

describe('inspectSql', () => {
  it('finds the statement kind, inline INSERT data, a trailing FORMAT and a second statement', () => {
    expect(inspectSql('INSERT INTO t (a, b) FORMAT JSONEachRow\n{"a":1}')).toMatchObject({ kind: 'INSERT', dataStart: 39 });
    expect(inspectSql("INSERT INTO t VALUES (1, ';')")).toMatchObject({ kind: 'INSERT', dataStart: 20 });
    expect(inspectSql('INSERT INTO t SELECT * FROM s FORMAT JSON')).toMatchObject({ kind: 'INSERT', dataStart: undefined });
    expect(inspectSql('SELECT format FROM t')).toMatchObject({ kind: 'SELECT', format: undefined });
    expect(inspectSql('SELECT 1 FORMAT JSON SETTINGS max_threads = 1')).toMatchObject({ format: 'JSON' });
    expect(inspectSql("SELECT 'FORMAT x' FORMAT CSV;")).toMatchObject({ format: 'CSV', secondStatement: undefined });
    expect(inspectSql("SELECT $$a;b$$, `c;d`, \"e;f\" # ;\n /* ; /* ; */ */")).toMatchObject({ secondStatement: undefined });
    expect(inspectSql('(SELECT 1); DROP TABLE t')).toMatchObject({ kind: '(', secondStatement: 12 });
  });
});

// -------------------------------------------------------------------------------------------------
// Runtrail's store on the URL: cases of test/integration/storage.test.ts, over HTTP.

describe('Runtrail store over HTTP', () => {
  let cfg: StorageConfig;
  let store: ClickHouseStore;
  let raw: ClickHouseClient;
  const BASE_US = (Math.floor(Date.now() / 1000) - 3600) * 1_000_000;
  const at = (us: number): number => (BASE_US + us) / 1000;
  const hex32 = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 32);

  function event(task: string, i: number, over: Record<string, unknown> = {}): TimelineEvent {
    return TimelineEventSchema.parse({
      event_id: hex32(`${task}/${i}`),
      source: 'agent',
      type: 'tool.call',
      time: at(i * 1_000 + 123),
      format: 'otlp-traces',
      task_id: task,
      agent_id: 'agent-7',
      credential_id: 'ASIAEXAMPLE0001',
      resources: [{ type: 'AWS::S3::Object', id: `arn:aws:s3:::invoices/${i}.pdf` }],
      data_classes: ['financial'],
      tool: { name: 'send_money', arguments: JSON.stringify({ to: "O'Brien; DROP TABLE events;--", memo: 'line1\nline2\t"q"\\' }) },
      attributes: { nested: { list: [1, 'two', null, true] }, big: 12345678901234 },
      attribution: 'trace',
      join_key: 'k',
      unattributed_reason: '',
      ingested_at: at(i * 1_000 + 5_000_456),
      late: i % 2 === 1,
      ...over,
    });
  }

  function binding(id: string, over: Partial<CredentialBinding> = {}): CredentialBinding {
    return CredentialBindingSchema.parse({
      credential_id: id,
      kind: 'aws-access-key',
      task_id: 'task-b',
      principal: 'arn:aws:iam::111122223333:role/billing',
      issued_at: at(100),
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
      time: at(10_000 + i),
      evidence: [hex32(`${task}/0`)],
      join_keys: { credential_id: 'ASIAEXAMPLE0001' },
      window_start: at(0),
      window_end: at(10_001),
      metrics: { score: 42.5 },
      tags: ['owasp-agentic:T2'],
      emitted_at: at(11_000),
    });
  }

  async function physical(task: string): Promise<number> {
    const rs = await raw.query({ query: `SELECT count() AS n FROM ${cfg.database}.events WHERE task_id = {t:String}`, query_params: { t: task }, format: 'JSONEachRow' });
    const [row] = await rs.json<{ n: string }>();
    return Number(row?.n);
  }

  beforeAll(async () => {
    cfg = parseConfig({ dataDir: dir, storage: { clickhouseUrl: server.url, database: 'runtrail_http', batchMaxDelayMs: 20 } }).storage;
    store = new ClickHouseStore(cfg, dir, log, new MetricsRegistry());
    await store.start();
    raw = await createClickHouse(cfg, dir, log);
  }, 60_000);

  afterAll(async () => {
    await raw?.close();
    await store?.shutdown();
  });

  it('migrates once; a second store (another service) applies nothing', async () => {
    expect(store.migration).toEqual({ from: 0, to: LATEST_VERSION, applied: MIGRATIONS.map((m) => m.version) });
    expect(await applyMigrations(raw, { db: cfg.database, retentionDays: cfg.retentionDays }, log)).toEqual({ from: LATEST_VERSION, to: LATEST_VERSION, applied: [] });
    const second = new ClickHouseStore(cfg, dir, log);
    await second.start();
    expect(second.migration?.applied).toEqual([]);
    expect(await second.ping()).toBe(true);
    await second.shutdown();
  });

  it('round-trips events through insertEvents, timeline and countEvents', async () => {
    const events = Array.from({ length: 6 }, (_, i) => event('task-http', i)).reverse();
    await store.insertEvents(events);
    const timeline = await store.timeline('task-http');
    expect(timeline).toEqual([...events].sort((a, b) => a.time - b.time));
    expect(timeline[1]?.tool?.arguments).toContain("O'Brien; DROP TABLE events;--");
    expect(await store.countEvents()).toBe(6);
  });

  it('stores a retried batch once (dedup token over HTTP) and collapses a re-cut replay with FINAL', async () => {
    const T = 'task-http-replay';
    const events = Array.from({ length: 50 }, (_, i) => event(T, i));
    await raw.command({ query: `SYSTEM STOP MERGES ${cfg.database}.events` });
    try {
      await store.insertEvents(events);
      expect(await physical(T)).toBe(50);
      await store.insertEvents(events);
      expect(await physical(T)).toBe(50);
      for (const [from, to] of [[0, 17], [17, 50]] as const) await store.insertEvents(events.slice(from, to));
      expect(await physical(T)).toBeGreaterThan(50);
      expect(await store.querySql('SELECT count() AS n FROM events_dedup WHERE task_id = {t:String}', { t: T })).toEqual([{ n: '50' }]);
    } finally {
      await raw.command({ query: `SYSTEM START MERGES ${cfg.database}.events` });
    }
    expect(await store.timeline(T)).toHaveLength(50);
  });

  it('reads long timelines in pages (streamed, parameterised) without losing an event', async () => {
    const T = 'task-http-long';
    const events = Array.from({ length: 25_003 }, (_, i) => event(T, Math.floor(i / 3), { event_id: hex32(`long/${i}`) }));
    await store.insertEvents(events);
    const ids = (await store.timeline(T)).map((e) => e.event_id);
    expect(ids).toEqual([...events].sort((a, b) => a.time - b.time || (a.event_id < b.event_id ? -1 : 1)).map((e) => e.event_id));
  }, 60_000);

  it('refuses an event time outside DateTime64 with the row and field named', async () => {
    // The canonical schema refuses such a time at the edge; the store must still refuse it on its own.
    const bad: TimelineEvent = { ...event('task-http-bad', 1), time: 1.7e18 };
    const err = await store.insertEvents([event('task-http-bad', 0), bad]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RecordError);
    expect((err as RecordError).field).toBe('[1].time');
  });

  it('upserts bindings and stores findings, alerts and dead letters', async () => {
    const issued = binding('ASIAHTTP');
    await store.insertBindings([issued]);
    const revoked = { ...issued, revoked_at: at(200_001), event_id: hex32('revoke') };
    await store.insertBindings([revoked]);
    await store.insertBindings([issued]);
    expect((await store.loadBindings(10)).filter((b) => b.credential_id === 'ASIAHTTP')).toEqual([revoked]);

    const f = [finding('task-http-f', 1), finding('task-http-f', 2)];
    await store.insertFindings(f);
    await store.insertFindings([f[0] as Finding]);
    expect(await store.findings('task-http-f')).toEqual(f);

    await store.insertAlerts([{ id: 'a1', incident_id: 'inc-1', channel: 'slack', status: 'delivered', time: at(5), payload: '{"text":"x"}' }]);
    await store.insertDeadLetters([{ stage: 'correlator', topic: 'events.agent', partition: 3, offset: '18446744073709551615', key: null, code: 'payload_invalid', reason: 'bad', payload: '{}', time: at(6) }]);
    expect(await store.querySql('SELECT id, status FROM alerts')).toEqual([{ id: 'a1', status: 'delivered' }]);
    expect(await store.querySql('SELECT offset, key FROM dead_letters')).toEqual([{ offset: '18446744073709551615', key: null }]);
  });

  it('querySql: the engine enforces read-only, limits apply, parameters stay values', async () => {
    const rejected = async (sql: string): Promise<string> => {
      const err = await store.querySql(sql).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QueryRejectedError);
      return (err as Error).message;
    };
    expect(await rejected("SELECT * FROM file('/etc/hostname', 'LineAsString')")).toMatch(/readonly/i);
    expect(await rejected('SELECT 1 SETTINGS max_result_rows = 0')).toMatch(/readonly/i);
    expect(await rejected('SELECT nope FROM events')).toMatch(/nope/);
    expect(await store.querySql('SELECT number FROM system.numbers', {}, { maxRows: 7 })).toEqual(Array.from({ length: 7 }, (_, i) => ({ number: String(i) })));
    const slow = await store.querySql('SELECT sum(cityHash64(number)) FROM numbers(100000000000)', {}, { maxSeconds: 1 }).catch((e: unknown) => e);
    expect(slow).toBeInstanceOf(QueryRejectedError);
    expect((slow as Error).message).toMatch(/time limit of 1 s/);
    expect(await store.querySql('SELECT count() AS n FROM events_dedup WHERE task_id = {t:String}', { t: "task-http' OR 1=1 --" })).toEqual([{ n: '0' }]);
    expect(await store.querySql('SELECT {s:String} AS s, {a:Array(String)} AS a', { s: "it's", a: ["x'y", 'z'] })).toEqual([{ s: "it's", a: ["x'y", 'z'] }]);
    // The analyst's readonly never reaches the writers.
    await store.insertEvents([event('task-http-after-ro', 1)]);
    expect(await store.timeline('task-http-after-ro')).toHaveLength(1);
  }, 30_000);
});
