import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseClientConfigOptions, type Logger as ClientLogger } from '@clickhouse/client';
import { createChdbConnection } from 'chdb/connection';
import type { StorageConfig } from '../../shared/config.ts';
import { StorageError, errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';

/**
 * The ClickHouse connection: a server over HTTP when `storage.clickhouseUrl` is set, else the
 * embedded chDB engine, both behind `@clickhouse/client`'s `ClickHouseClient`.
 *
 * Two chDB behaviours shape this module (checked on chdb 3.4.0):
 * - The client's `database` option has no effect on chDB, so every statement Runtrail issues
 *   names its tables fully (`db.table`, see {@link tableRef}) on both backends. `USE db` is run
 *   on chDB sessions too, so unqualified names in analysts' SQL resolve the same way as over HTTP.
 * - `clickhouse_settings` become `SET` statements on the chDB session and stay in force for later
 *   queries on it (over HTTP they apply to one request). Callers that set a setting must set it on
 *   every call that depends on it (the batch writer sends its dedup token every time), and a
 *   setting that cannot be undone (`readonly`) needs its own session: {@link openSession}.
 *
 * libchdb binds one data directory per process: a second path fails while the first is open
 * (several sessions on the same path are fine), and no other process may open the directory
 * while this one holds it.
 */

type Cfg = Readonly<StorageConfig>;

/** Where the embedded engine keeps its data under the Runtrail data directory. */
export function chdbPath(dataDir: string): string {
  return join(resolve(dataDir), 'clickhouse');
}

/** `db`.`table`, for names that are validated identifiers (config regex, TABLE constants). */
export function tableRef(db: string, table: string): string {
  return `\`${db}\`.\`${table}\``;
}

/**
 * The ClickHouse error code of `err` (`'62'` for a syntax error), or undefined for anything else
 * (network errors, Runtrail's own). Duck-typed: chDB throws `@clickhouse/client-common`'s
 * ClickHouseError, a different class from the one `@clickhouse/client` exports, so `instanceof`
 * fails for one backend or the other.
 */
export function clickhouseErrorCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as Error & { code?: unknown }).code;
  return typeof code === 'string' && /^\d+$/.test(code) ? code : undefined;
}

/** True when the config selects the embedded engine. */
export function isEmbedded(cfg: Cfg): boolean {
  return cfg.clickhouseUrl === undefined;
}

/** HTTP requests may run as long as the longest analyst query allows (store QUERY_LIMITS: 300 s), plus slack. */
const HTTP_REQUEST_TIMEOUT_MS = 330_000;

/**
 * Routes the client's own log lines into the process's pino logger, at debug: every failure it
 * logs also reaches Runtrail as a thrown error, which the caller retries and logs (rate-limited),
 * so at the default level a storage outage is one warning per interval, not a console dump per
 * request. The client instantiates the class itself, without arguments, hence the closure.
 */
function clientLoggerClass(log: Logger): new () => ClientLogger {
  const child = log.child({ component: 'clickhouse-client' });
  return class implements ClientLogger {
    trace(p: { module: string; message: string }): void {
      child.trace({ module: p.module }, p.message);
    }
    debug(p: { module: string; message: string }): void {
      child.trace({ module: p.module }, p.message);
    }
    info(p: { module: string; message: string }): void {
      child.debug({ module: p.module }, p.message);
    }
    warn(p: { module: string; message: string; err?: Error }): void {
      child.debug({ module: p.module, err: p.err?.message }, p.message);
    }
    error(p: { module: string; message: string; err: Error }): void {
      child.debug({ module: p.module, err: p.err.message }, p.message);
    }
  };
}

function httpClient(cfg: Cfg, url: string, log: Logger, database?: string): ClickHouseClient {
  return createClient({
    log: { LoggerClass: clientLoggerClass(log), level: ClickHouseLogLevel.WARN },
    url,
    username: cfg.username,
    password: cfg.password,
    ...(database === undefined ? {} : { database }),
    application: 'runtrail',
    request_timeout: HTTP_REQUEST_TIMEOUT_MS,
    // Progress headers keep long analyst queries alive through load balancers' idle timeouts.
    clickhouse_settings: { send_progress_in_http_headers: 1, http_headers_progress_interval_ms: '110000' },
  });
}

/**
 * chdb declares its connection against `@clickhouse/client-common`, while `@clickhouse/client`
 * 1.23 ships its own copy of those declarations: identical at run time, distinct to the compiler.
 */
type ClientConnection = NonNullable<ClickHouseClientConfigOptions['connection']>;

function chdbClient(path: string): ClickHouseClient {
  try {
    return createClient({ connection: createChdbConnection({ path }) as unknown as ClientConnection });
  } catch (err) {
    const msg = errorMessage(err);
    if (/one active data directory per process/i.test(msg)) {
      throw new StorageError(
        `cannot open the embedded ClickHouse engine at ${path}: ${msg}. chDB binds one data directory per ` +
          'process; share one Store per process (or run tests with one process per test file)',
        { retriable: false, cause: err },
      );
    }
    throw new StorageError(`cannot open the embedded ClickHouse engine at ${path}: ${msg}`, { retriable: false, cause: err });
  }
}

/**
 * Connects to ClickHouse, creates the configured database if it does not exist and makes it the
 * session's current database. Tables are still referenced as `db.table` everywhere (see module
 * comment). Throws StorageError when the backend cannot be reached or opened.
 */
export async function createClickHouse(cfg: Cfg, dataDir: string, log: Logger): Promise<ClickHouseClient> {
  const create = `CREATE DATABASE IF NOT EXISTS \`${cfg.database}\``;
  if (cfg.clickhouseUrl !== undefined) {
    const url = cfg.clickhouseUrl;
    // A client bound to a database that does not exist yet fails every request, so the database
    // is created through a client on the default one first.
    const boot = httpClient(cfg, url, log);
    try {
      await boot.command({ query: create });
    } catch (err) {
      throw new StorageError(`cannot reach ClickHouse at ${redact(url)}: ${errorMessage(err)}`, { cause: err });
    } finally {
      await boot.close();
    }
    const client = httpClient(cfg, url, log, cfg.database);
    log.info({ backend: 'http', url: redact(url), database: cfg.database }, 'clickhouse connected');
    return client;
  }

  const path = chdbPath(dataDir);
  mkdirSync(path, { recursive: true });
  const client = chdbClient(path);
  try {
    await client.command({ query: create });
    await client.command({ query: `USE \`${cfg.database}\`` });
  } catch (err) {
    await client.close();
    throw new StorageError(`cannot initialise the embedded ClickHouse engine at ${path}: ${errorMessage(err)}`, {
      retriable: false,
      cause: err,
    });
  }
  log.info({ backend: 'chdb', path, database: cfg.database }, 'clickhouse connected');
  return client;
}

/** A client whose session settings are its own. */
export interface ClickHouseSession {
  readonly client: ClickHouseClient;
  /** Releases the session (closes it on chDB; no-op over HTTP, where the client is shared). */
  close(): Promise<void>;
}

/**
 * A session of its own on the same database. Over HTTP every request is already its own session,
 * so the shared client is returned. On chDB settings stick to a session (and `readonly` cannot be
 * lifted once set), so this opens another session on the same data directory (about 1-2 ms).
 * The store gives each table writer one, so their per-insert settings never meet, and each
 * analyst query one.
 */
export async function openSession(cfg: Cfg, dataDir: string, shared: ClickHouseClient): Promise<ClickHouseSession> {
  if (!isEmbedded(cfg)) return { client: shared, close: async () => {} };
  const client = chdbClient(chdbPath(dataDir));
  try {
    await client.command({ query: `USE \`${cfg.database}\`` });
  } catch (err) {
    await client.close();
    throw new StorageError(`cannot open a ClickHouse session: ${errorMessage(err)}`, { cause: err });
  }
  return { client, close: () => client.close() };
}

/** URL without credentials, for logs and messages. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return '(invalid url)';
  }
}
