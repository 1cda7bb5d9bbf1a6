import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import type { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { Session } from 'chdb';
import { errorMessage } from '../../shared/errors.ts';
import { silentLogger, type Logger } from '../../shared/logger.ts';

/**
 * ClickHouse's HTTP interface (https://clickhouse.com/docs/interfaces/http) in front of the real
 * ClickHouse engine running in-process (chDB), for development and tests: several Runtrail
 * processes share one store through it, and the `CLICKHOUSE_URL` code path runs against the same
 * engine the embedded mode uses. Not for production: no TLS, optional single-user auth, no quotas.
 *
 * Supported: the subset `@clickhouse/client` 1.23 uses for `query`, `command`, `exec`, `insert`
 * and `ping`.
 * - `GET /ping`, `GET /` without a query, `GET /replicas_status`: `Ok.\n`.
 * - `POST /` with the SQL in the body; or the SQL in the `query` URL parameter and, for
 *   `INSERT ... FORMAT x` / `VALUES`, the data in the body (any format, binary ones included);
 *   `GET /?query=...` runs read-only (`readonly = 2`, as ClickHouse does).
 * - URL parameters: `database` (or `X-ClickHouse-Database`), `query_id`, `default_format` (or
 *   `X-ClickHouse-Format`), `param_<name>` (handed to the engine's own parameter binding in the
 *   escaped form the client sends; values never enter the SQL text), `session_id` /
 *   `session_timeout` / `session_check`, `wait_end_of_query`, `user` / `password`; every other
 *   parameter is a setting, applied with `SET` on a connection of the request's own, so the
 *   engine validates and enforces it (`readonly = 1` included: it is set last and cannot be
 *   lifted by the query).
 * - Credentials: basic auth, `X-ClickHouse-User` / `X-ClickHouse-Key`, or `user` / `password`;
 *   checked only when {@link ChdbHttpServerOptions.auth} is set.
 * - Request bodies in gzip, deflate or br (`Content-Encoding`); responses in gzip, deflate or br
 *   when `enable_http_compression = 1` and `Accept-Encoding` asks for it.
 * - Responses carry `X-ClickHouse-Query-Id`, `X-ClickHouse-Format`, `X-ClickHouse-Timezone` and
 *   `X-ClickHouse-Summary` (JSON of strings; `written_rows` / `written_bytes` are exact for
 *   inserts with data; `read_*` repeat the result counters, as chDB's own client connection does).
 * - Errors before the first byte of a result: HTTP status as ClickHouse maps the code (400, 403,
 *   404, 408, 500...), body `Code: N. DB::Exception: message (NAME)`, header
 *   `X-ClickHouse-Exception-Code: N`, so the client raises a ClickHouseError with `code` N.
 *   Errors after it (a SELECT streams): the in-band exception block of ClickHouse 25.11+,
 *   announced by `X-ClickHouse-Exception-Tag`, which the client turns into an error.
 * - SELECT / WITH results stream from the engine chunk by chunk with backpressure; other
 *   statements return what the engine materialised (DDL, SHOW, EXPLAIN: small).
 *
 * Not supported: multipart requests (external tables, `use_multipart_params`), `compress=1` /
 * `decompress=1` (ClickHouse's native block compression), `role`, progress headers, `KILL QUERY`
 * and cancelling a statement that does not stream (chDB's C API cannot interrupt one; the engine's
 * own `max_execution_time` still applies), multi-statement requests (refused with code 62, as
 * ClickHouse does). Settings sent with a `session_id` (a GET's `readonly = 2` included) stay in
 * force for that session's later requests (chDB keeps settings per connection); without one each
 * request starts clean. An INSERT carrying both inline data and `param_*` values is run as text
 * (the raw insert path binds no parameters), so its data must be UTF-8 there.
 *
 * How it drives chDB 3.4 (checked on 3.4.0 / ClickHouse 26.7):
 * - One anchor `Session` holds the data directory for the server's life (libchdb binds one data
 *   directory per process; sessions on the same directory are cheap, ~1 ms). Each request gets a
 *   connection of its own, so settings never leak between requests, and closes it afterwards.
 * - Statements go through the addon's connection-level entry points (the ones chDB's `Session`
 *   wraps), for three things the public wrappers cannot do: bind `param_*` values verbatim (the
 *   wrappers re-escape strings, which would corrupt the client's escaped `Array`/`Map` values),
 *   insert a request body as bytes with an arbitrary `INSERT` prefix, and report rows written.
 * - The engine runs statements on different connections in parallel, except parameter binding:
 *   its parameter state is shared, so parameterised statements start one at a time (the rule
 *   chDB's wrappers follow). A materialised one holds the turn until it finishes; a streamed one
 *   only while it starts, since a started stream keeps its values (checked: 10 M streamed rows
 *   against concurrent binds of other values). This server assumes it is the only user of chDB
 *   in its process.
 * - A connection never runs a second statement while a stream is open on it (that hangs), and a
 *   connection is closed only once nothing runs on it (closing under a running statement aborts
 *   the engine for the whole process).
 */

/** Options of {@link startChdbHttpServer}. */
export interface ChdbHttpServerOptions {
  /** chDB data directory, created if missing. libchdb binds one directory per process. */
  path: string;
  /** Interface to listen on. Default `127.0.0.1`: no TLS here, keep it on loopback. */
  host?: string;
  /** TCP port; 0 (the default) picks a free one, reported as `port` and in `url`. */
  port?: number;
  /** Parent logger; the server logs as `{ component: 'chdb-http' }`. Default: silent. */
  log?: Logger;
  /**
   * When set, every request except the health checks must carry exactly these credentials.
   * Default: all credentials (or none) are accepted, as the user `default`.
   */
  auth?: { username: string; password: string };
  /**
   * Statements running on the engine at once; later ones wait. Default 8. Each running statement
   * occupies a libuv thread (Node's pool has 4 unless `UV_THREADPOOL_SIZE` raises it), which
   * request-body decompression shares.
   */
  maxConcurrentQueries?: number;
  /** Largest request body accepted, in bytes after decompression. Default 512 MiB. */
  maxBodyBytes?: number;
  /** Largest result held back for `wait_end_of_query = 1`, in bytes. Default 256 MiB. */
  maxBufferedResultBytes?: number;
  /** HTTP sessions (`session_id`) alive at once. Default 64. */
  maxSessions?: number;
  /** How long {@link ChdbHttpServer.close} lets running requests finish before cutting their connections, in ms. Default 5000. */
  closeGraceMs?: number;
  /**
   * Holds every INSERT this long before running it, ms: a slow ClickHouse, for tests of what a
   * falling-behind consumer does (lag grows, memory stays bounded). Default 0.
   */
  insertDelayMs?: number;
}

/** A running server. */
export interface ChdbHttpServer {
  /** Base URL for `@clickhouse/client`'s `url` / Runtrail's `storage.clickhouseUrl`, e.g. `http://127.0.0.1:18123`. */
  readonly url: string;
  /** The port listened on. */
  readonly port: number;
  /** Stops accepting requests, lets running ones finish, and releases the engine. Idempotent. */
  close(): Promise<void>;
  /** Changes {@link ChdbHttpServerOptions.insertDelayMs} for INSERTs that start from now on. */
  setInsertDelayMs(ms: number): void;
}

const DEFAULTS = {
  host: '127.0.0.1',
  maxConcurrentQueries: 8,
  maxBodyBytes: 512 * 1024 * 1024,
  maxBufferedResultBytes: 256 * 1024 * 1024,
  maxSessions: 64,
  closeGraceMs: 5_000,
  /** ClickHouse's `default_session_timeout` and its upper bound (`max_session_timeout`), in seconds. */
  sessionTimeoutS: 60,
  maxSessionTimeoutS: 3_600,
} as const;

/** ClickHouse error codes this server raises itself (src/Common/ErrorCodes.cpp). */
const CODE = {
  BAD_ARGUMENTS: 36,
  NOT_IMPLEMENTED: 48,
  SYNTAX_ERROR: 62,
  UNKNOWN_COMPRESSION_METHOD: 89,
  UNKNOWN_SETTING: 115,
  QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING: 216,
  QUERY_IS_TOO_LARGE: 229,
  CANNOT_DECOMPRESS: 271,
  SESSION_NOT_FOUND: 372,
  SESSION_IS_LOCKED: 373,
  INVALID_SESSION_TIMEOUT: 374,
  TOO_MANY_ROWS_OR_BYTES: 396,
  AUTHENTICATION_FAILED: 516,
  STD_EXCEPTION: 1001,
} as const;

/**
 * Settings chDB changes from clickhouse-server's defaults that change what a statement means,
 * restored on every request connection: with `implicit_select` a misspelt `SELEC` is a column
 * reference (code 47) instead of a syntax error (62).
 */
const SERVER_DEFAULT_ARGS = ['--implicit_select=0'];

const CODE_NAME = new Map<number, string>(Object.entries(CODE).map(([name, code]) => [code, name]));

/** HTTP status per exception code, as ClickHouse's exceptionCodeToHTTPStatus maps them. */
const HTTP_STATUS_BY_CODE: ReadonlyMap<number, number> = new Map([
  ...[194].map((c) => [c, 401] as const), // REQUIRED_PASSWORD
  ...[192, 193, 497, 512, 516].map((c) => [c, 403] as const), // UNKNOWN_USER, WRONG_PASSWORD, ACCESS_DENIED, SET_NON_GRANTED_ROLE, AUTHENTICATION_FAILED
  // BAD_ARGUMENTS, CANNOT_PARSE_*, DUPLICATE_COLUMN, ILLEGAL_COLUMN, *_AST, SYNTAX_ERROR, INCORRECT_DATA, TYPE_MISMATCH, ...
  ...[36, 427, 6, 25, 26, 38, 41, 72, 441, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321].map((c) => [c, 400] as const),
  // UNKNOWN_TABLE, _FUNCTION, _IDENTIFIER, _TYPE, _STORAGE, _DATABASE, _SETTING, ...
  ...[60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511].map((c) => [c, 404] as const),
  [229, 413], // QUERY_IS_TOO_LARGE
  [48, 501], // NOT_IMPLEMENTED
  [209, 503], // SOCKET_TIMEOUT
  [76, 503], // CANNOT_OPEN_FILE
  [439, 503], // CANNOT_SCHEDULE_TASK
  [381, 411], // HTTP_LENGTH_REQUIRED
  [159, 408], // TIMEOUT_EXCEEDED
]);

/** An error with a ClickHouse code, raised by this server (the engine's own carry their text). */
class HttpQueryError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.name = 'HttpQueryError';
    this.code = code;
  }
}

/** A failure as ClickHouse reports it: the code and the full `Code: N. DB::Exception: ...` text. */
interface Failure {
  code: number;
  text: string;
}

/** The client recognises an error by `Code: N ... Exception: message (NAME)`; see its parseError. */
const TYPE_SUFFIX = /\((?=[A-Z0-9_]*[A-Z]{3})[A-Z0-9_]+\)/;

function toFailure(err: unknown): Failure {
  if (err instanceof HttpQueryError) {
    return { code: err.code, text: `Code: ${err.code}. DB::Exception: ${err.message}. (${CODE_NAME.get(err.code) ?? 'UNKNOWN_EXCEPTION'})` };
  }
  const msg = errorMessage(err).trim();
  const m = /^Code:\s*(\d+)\./.exec(msg);
  if (m) {
    const code = Number(m[1]);
    return { code, text: TYPE_SUFFIX.test(msg) ? msg : `${msg} (${CODE_NAME.get(code) ?? 'UNKNOWN_EXCEPTION'})` };
  }
  // Not the engine's (a failed connection, a bug here): reported the way ClickHouse reports a std::exception.
  return { code: CODE.STD_EXCEPTION, text: `Code: ${CODE.STD_EXCEPTION}. DB::Exception: ${msg}. (STD_EXCEPTION)` };
}

// ---------------------------------------------------------------------------------------------
// The chDB addon's connection-level entry points (see module comment).

interface NativeResult {
  bytes: Uint8Array;
  elapsed: number;
  rowsRead: number;
  bytesRead: number;
}

interface NativeInsertResult {
  elapsed: number;
  rowsWritten: number;
  bytesWritten: number;
}

interface NativeChunk {
  bytes: Uint8Array;
  numRows: number;
  done: boolean;
}

/** What this server calls on chdb 3.4's native addon; checked at load time. */
interface ChdbNative {
  QueryAsyncConnection(conn: unknown, sql: string, format: string, params?: Record<string, string>): Promise<NativeResult>;
  InsertRawAsyncConnection(conn: unknown, prefix: string, data: Buffer, countLines: boolean): Promise<NativeInsertResult>;
  StreamQuery(conn: unknown, sql: string, format: string, params?: Record<string, string>): unknown;
  StreamFetch(handle: unknown): Promise<NativeChunk>;
  StreamCancel(handle: unknown): void;
}

const NATIVE_FUNCTIONS = ['QueryAsyncConnection', 'InsertRawAsyncConnection', 'StreamQuery', 'StreamFetch', 'StreamCancel'] as const;

function isNative(v: unknown): v is ChdbNative {
  return typeof v === 'object' && v !== null && NATIVE_FUNCTIONS.every((f) => typeof (v as Record<string, unknown>)[f] === 'function');
}

let nativeAddon: ChdbNative | undefined;

/**
 * The addon instance chDB's own `Session` uses (Node caches a native module by path, and chdb's
 * loader caches it too). Reached through the loader file because the package does not export it.
 */
function loadNative(): ChdbNative {
  if (nativeAddon) return nativeAddon;
  const require = createRequire(import.meta.url);
  const loaderPath = join(dirname(require.resolve('chdb/package.json')), 'dist', 'loader.js');
  const loader: unknown = require(loaderPath);
  const load = typeof loader === 'object' && loader !== null ? (loader as Record<string, unknown>).loadNative : undefined;
  const addon: unknown = typeof load === 'function' ? load() : undefined;
  if (!isNative(addon)) {
    throw new Error(`the chdb package's native addon does not offer ${NATIVE_FUNCTIONS.join(', ')}; this server needs chdb 3.4`);
  }
  nativeAddon = addon;
  return addon;
}

const toBuffer = (b: Uint8Array): Buffer => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));

// ---------------------------------------------------------------------------------------------
// Small concurrency helpers.

/** Counting semaphore with a FIFO queue. */
class Semaphore {
  private free: number;
  private readonly waiting: Array<() => void> = [];

  constructor(size: number) {
    this.free = size;
  }

  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((res) => this.waiting.push(res));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }

  async run<T>(fn: () => T | Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SQL inspection: just enough lexing to tell statements apart, find where an INSERT's inline data
// starts, name the output format, and refuse a second statement. The engine parses for real.

/** What {@link inspectSql} found. */
export interface SqlShape {
  /** First keyword, upper-cased; `(` for a parenthesised query; '' when there is no token. */
  readonly kind: string;
  /** For an INSERT with inline data: the offset just after `FORMAT name` or `VALUES`. */
  readonly dataStart: number | undefined;
  /** The format a trailing `FORMAT name` clause asks for (not for INSERT). */
  readonly format: string | undefined;
  /** Offset of a second statement (after a top-level `;`), when there is one. */
  readonly secondStatement: number | undefined;
}

const WORD_START = /[A-Za-z_]/;
const WORD_CHAR = /[A-Za-z0-9_$]/;
const SPACE = /\s/;
const HEREDOC = /^\$([A-Za-z0-9_]*)\$/;

/**
 * Scans ClickHouse SQL: quoted strings and identifiers (backslash escapes and doubled quotes),
 * heredocs (`$tag$...$tag$`), `--` and `#` line comments, nested block comments, brackets.
 */
export function inspectSql(text: string): SqlShape {
  const n = text.length;
  let i = 0;
  let depth = 0;
  let kind = '';
  let insertSelect = false;
  let ended = false;
  let expectName: 'output' | 'insert' | undefined;
  let pendingFormat: string | undefined;
  let format: string | undefined;
  const shape = (extra: Partial<SqlShape> = {}): SqlShape => ({ kind, dataStart: undefined, format, secondStatement: undefined, ...extra });

  while (i < n) {
    const c = text.charAt(i);
    if (SPACE.test(c)) {
      i++;
      continue;
    }
    if ((c === '-' && text.charAt(i + 1) === '-') || c === '#') {
      const eol = text.indexOf('\n', i);
      i = eol < 0 ? n : eol + 1;
      continue;
    }
    if (c === '/' && text.charAt(i + 1) === '*') {
      let level = 1;
      i += 2;
      while (i < n && level > 0) {
        if (text.startsWith('/*', i)) {
          level++;
          i += 2;
        } else if (text.startsWith('*/', i)) {
          level--;
          i += 2;
        } else i++;
      }
      continue;
    }
    // A token starts at i.
    if (ended) return shape({ secondStatement: i });
    if (c === ';') {
      if (depth === 0) {
        ended = true;
        if (pendingFormat !== undefined) format = pendingFormat;
        pendingFormat = undefined;
        expectName = undefined;
      }
      i++;
      continue;
    }
    let word: string | undefined;
    const start = i;
    const depthBefore = depth;
    if (c === "'" || c === '"' || c === '`') {
      i = skipQuoted(text, i, c);
    } else if (c === '$' && HEREDOC.test(text.slice(i, i + 256))) {
      const tag = (HEREDOC.exec(text.slice(i, i + 256)) as RegExpExecArray)[0];
      const close = text.indexOf(tag, i + tag.length);
      i = close < 0 ? n : close + tag.length;
    } else if (WORD_START.test(c)) {
      i++;
      while (i < n && WORD_CHAR.test(text.charAt(i))) i++;
      word = text.slice(start, i).toUpperCase();
    } else {
      if (c === '(' || c === '[' || c === '{') depth++;
      else if ((c === ')' || c === ']' || c === '}') && depth > 0) depth--;
      i++;
    }
    if (kind === '') kind = word ?? c;
    // Only top-level tokens matter below (a closing bracket belongs to what it closes).
    if (depthBefore > 0) continue;
    if (word === undefined) {
      // A trailing FORMAT clause is `FORMAT name` then nothing but SETTINGS: this was not one.
      expectName = undefined;
      pendingFormat = undefined;
      continue;
    }
    if (kind === 'INSERT' && !insertSelect) {
      if (expectName === 'insert') return shape({ dataStart: i });
      if (word === 'FORMAT') expectName = 'insert';
      else if (word === 'VALUES') return shape({ dataStart: i });
      else if (word === 'SELECT' || word === 'WITH') insertSelect = true;
      continue;
    }
    if (kind === 'INSERT') continue;
    if (expectName === 'output') {
      pendingFormat = text.slice(start, i);
      expectName = undefined;
      continue;
    }
    if (pendingFormat !== undefined) {
      if (word === 'SETTINGS') format = pendingFormat;
      pendingFormat = undefined;
    }
    if (word === 'FORMAT') expectName = 'output';
  }
  if (pendingFormat !== undefined) format = pendingFormat;
  return shape();
}

/** Index just after the quoted token opening at `from` (backslash escapes, doubled quotes). */
function skipQuoted(text: string, from: number, quote: string): number {
  let j = from + 1;
  while (j < text.length) {
    const ch = text.charAt(j);
    if (ch === '\\') {
      j += 2;
      continue;
    }
    if (ch === quote) {
      if (text.charAt(j + 1) === quote) {
        j += 2;
        continue;
      }
      return j + 1;
    }
    j++;
  }
  return text.length;
}

/** Statements whose results stream from the engine. */
const STREAMED_KINDS = new Set(['SELECT', 'WITH', '(']);

// ---------------------------------------------------------------------------------------------
// Request parsing.

/** URL parameters that are part of the HTTP protocol, not settings. */
const PROTOCOL_PARAMS = new Set([
  'query',
  'database',
  'default_format',
  'query_id',
  'session_id',
  'session_timeout',
  'session_check',
  'user',
  'password',
  'quota_key',
  'buffer_size',
  'wait_end_of_query',
  'stacktrace',
  'client_protocol_version',
]);

/**
 * Settings of ClickHouse's HTTP layer, handled here or meaningless without it; chDB rejects some
 * of them (`wait_end_of_query` is unknown to it), so they are not passed on.
 */
const HTTP_LAYER_SETTINGS = new Set([
  'enable_http_compression',
  'http_zlib_compression_level',
  'http_wait_end_of_query',
  'http_response_buffer_size',
  'send_progress_in_http_headers',
  'http_headers_progress_interval_ms',
  'http_send_progress_interval_ms',
  'http_native_compression_disable_checksumming_on_decompress',
  'add_http_cors_header',
  'cancel_http_readonly_queries_on_client_close',
  'http_write_exception_in_output_format',
]);

/** Parameters this server refuses rather than ignore silently. */
const UNSUPPORTED_PARAMS: Readonly<Record<string, string>> = {
  compress: 'compress=1 (ClickHouse native block compression) is not supported by this server; use enable_http_compression=1 with Accept-Encoding',
  decompress: 'decompress=1 (ClickHouse native block compression) is not supported by this server; use Content-Encoding: gzip',
  role: 'roles are not supported by this server (chDB has no access control)',
};

const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

type Codec = 'gzip' | 'deflate' | 'br';

/** Everything a query request asks for, read from the URL and headers. */
interface QueryRequest {
  queryId: string;
  urlQuery: string | undefined;
  database: string | undefined;
  defaultFormat: string;
  /** Settings in request order, `readonly` excluded. */
  settings: Array<[string, string]>;
  readonly: string | undefined;
  params: Record<string, string> | undefined;
  waitEndOfQuery: boolean;
  responseCodec: Codec | undefined;
  compressionLevel: number | undefined;
  sessionId: string | undefined;
  sessionTimeoutS: number;
  sessionCheck: boolean;
}

const truthy = (v: string | undefined): boolean => v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';

function lastParam(url: URL, name: string): string | undefined {
  const all = url.searchParams.getAll(name);
  return all.length === 0 ? undefined : all[all.length - 1];
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[v.length - 1] : v;
}

function parseQueryRequest(req: IncomingMessage, url: URL): QueryRequest {
  const settings = new Map<string, string>();
  const params: Record<string, string> = {};
  let hasParams = false;
  for (const [name, value] of url.searchParams) {
    const unsupported = UNSUPPORTED_PARAMS[name];
    if (unsupported !== undefined && (name === 'role' || truthy(value))) throw new HttpQueryError(CODE.NOT_IMPLEMENTED, unsupported);
    if (name.startsWith('param_')) {
      params[name.slice('param_'.length)] = value;
      hasParams = true;
      continue;
    }
    if (PROTOCOL_PARAMS.has(name) || HTTP_LAYER_SETTINGS.has(name) || unsupported !== undefined) continue;
    if (!SETTING_NAME.test(name)) throw new HttpQueryError(CODE.UNKNOWN_SETTING, `Unknown setting '${name}'`);
    settings.delete(name);
    settings.set(name, value);
  }
  const readonly = settings.get('readonly');
  settings.delete('readonly');

  const wantsCompression = truthy(lastParam(url, 'enable_http_compression'));
  const levelText = lastParam(url, 'http_zlib_compression_level');
  const level = levelText === undefined ? undefined : Number(levelText);
  const timeoutText = lastParam(url, 'session_timeout');
  const sessionTimeoutS = timeoutText === undefined ? DEFAULTS.sessionTimeoutS : Number(timeoutText);
  if (!Number.isFinite(sessionTimeoutS) || sessionTimeoutS < 0 || sessionTimeoutS > DEFAULTS.maxSessionTimeoutS) {
    throw new HttpQueryError(CODE.INVALID_SESSION_TIMEOUT, `Invalid session timeout: '${timeoutText ?? ''}' (expected 0 to ${DEFAULTS.maxSessionTimeoutS} seconds)`);
  }
  return {
    queryId: lastParam(url, 'query_id') || randomUUID(),
    urlQuery: lastParam(url, 'query'),
    database: lastParam(url, 'database') || header(req, 'x-clickhouse-database') || undefined,
    defaultFormat: lastParam(url, 'default_format') || header(req, 'x-clickhouse-format') || 'TabSeparated',
    settings: [...settings],
    readonly,
    params: hasParams ? params : undefined,
    waitEndOfQuery: truthy(lastParam(url, 'wait_end_of_query')) || truthy(lastParam(url, 'http_wait_end_of_query')),
    responseCodec: wantsCompression ? acceptedCodec(header(req, 'accept-encoding')) : undefined,
    compressionLevel: level !== undefined && Number.isInteger(level) && level >= 1 && level <= 9 ? level : undefined,
    sessionId: lastParam(url, 'session_id') || undefined,
    sessionTimeoutS,
    sessionCheck: truthy(lastParam(url, 'session_check')),
  };
}

/** The first codec of `Accept-Encoding` this server can produce. */
function acceptedCodec(accept: string | undefined): Codec | undefined {
  if (!accept) return undefined;
  for (const part of accept.split(',')) {
    const name = part.split(';')[0]?.trim().toLowerCase();
    if (name === 'gzip' || name === 'deflate' || name === 'br') return name;
  }
  return undefined;
}

function decompressor(encoding: string | undefined): Transform | undefined {
  const e = (encoding ?? '').trim().toLowerCase();
  if (e === '' || e === 'identity' || e === 'none') return undefined;
  if (e === 'gzip' || e === 'x-gzip') return zlib.createGunzip();
  if (e === 'deflate') return zlib.createInflate();
  if (e === 'br') return zlib.createBrotliDecompress();
  throw new HttpQueryError(CODE.UNKNOWN_COMPRESSION_METHOD, `Unknown HTTP content encoding '${e}': this server reads gzip, deflate and br`);
}

/** The request body, decompressed, at most `cap` bytes. */
async function readBody(req: IncomingMessage, cap: number): Promise<Buffer> {
  const decoder = decompressor(header(req, 'content-encoding'));
  const chunks: Buffer[] = [];
  let size = 0;
  const collect = async (source: AsyncIterable<Buffer>): Promise<void> => {
    for await (const chunk of source) {
      size += chunk.length;
      if (size > cap) {
        throw new HttpQueryError(CODE.QUERY_IS_TOO_LARGE, `Request body exceeds this server's limit of ${cap} bytes (maxBodyBytes); send smaller batches`);
      }
      chunks.push(chunk);
    }
  };
  try {
    if (decoder) await pipeline(req, decoder, collect);
    else await pipeline(req, collect);
  } catch (err) {
    if (err instanceof HttpQueryError || !decoder) throw err;
    throw new HttpQueryError(CODE.CANNOT_DECOMPRESS, `Cannot decompress the request body: ${errorMessage(err)}`);
  }
  return Buffer.concat(chunks, size);
}

interface Credentials {
  user: string;
  password: string;
}

function credentials(req: IncomingMessage, url: URL): Credentials {
  const basic = /^Basic\s+(.+)$/i.exec(header(req, 'authorization') ?? '');
  if (basic) {
    const decoded = Buffer.from(basic[1] ?? '', 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon < 0 ? { user: decoded, password: '' } : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  const user = header(req, 'x-clickhouse-user') ?? lastParam(url, 'user');
  const password = header(req, 'x-clickhouse-key') ?? lastParam(url, 'password');
  return { user: user || 'default', password: password ?? '' };
}

function sameSecret(a: string, b: string): boolean {
  const h = (s: string): Buffer => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(a), h(b));
}

/** `'value'` as a ClickHouse string literal. */
function sqlString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function sqlIdentifier(name: string): string {
  return `\`${name.replace(/\\/g, '\\\\').replace(/`/g, '\\`')}\``;
}

// ---------------------------------------------------------------------------------------------
// Responses.

function contentType(format: string): string {
  const f = format.toLowerCase();
  if (f.startsWith('tabseparated') || f.startsWith('tsv')) return 'text/tab-separated-values; charset=UTF-8';
  if (f.startsWith('csv')) return 'text/csv; charset=UTF-8';
  if (f.includes('eachrow') || f === 'jsonlines' || f === 'ndjson') return 'application/x-ndjson; charset=UTF-8';
  if (f.startsWith('json')) return 'application/json; charset=UTF-8';
  if (['rowbinary', 'native', 'parquet', 'arrow', 'arrowstream', 'orc', 'avro', 'protobuf', 'msgpack', 'capnproto', 'npy'].some((b) => f.startsWith(b))) {
    return 'application/octet-stream';
  }
  return 'text/plain; charset=UTF-8';
}

/** `X-ClickHouse-Summary`: counters as strings, as ClickHouse sends them. */
interface Summary {
  read_rows: string;
  read_bytes: string;
  written_rows: string;
  written_bytes: string;
  total_rows_to_read: string;
  result_rows: string;
  result_bytes: string;
  elapsed_ns: string;
}

function summary(c: { resultRows?: number; resultBytes?: number; writtenRows?: number; writtenBytes?: number; startedNs: bigint }): Summary {
  const s = (v: number | undefined): string => String(Math.max(0, Math.trunc(v ?? 0)));
  return {
    read_rows: s(c.resultRows),
    read_bytes: s(c.resultBytes),
    written_rows: s(c.writtenRows),
    written_bytes: s(c.writtenBytes),
    total_rows_to_read: '0',
    result_rows: s(c.resultRows),
    result_bytes: s(c.resultBytes),
    elapsed_ns: String(process.hrtime.bigint() - c.startedNs),
  };
}

/** The response body: plain or compressed, with backpressure, tolerant of a client that left. */
class BodyWriter {
  private readonly out: Writable;
  private readonly piped: Promise<void> | undefined;

  constructor(
    private readonly res: ServerResponse,
    codec: Codec | undefined,
    level: number | undefined,
  ) {
    if (codec === undefined) {
      this.out = res;
      return;
    }
    const opts = level === undefined ? {} : { level };
    const enc = codec === 'gzip' ? zlib.createGzip(opts) : codec === 'deflate' ? zlib.createDeflate(opts) : zlib.createBrotliCompress();
    this.out = enc;
    // A client that leaves ends the pipeline with an error; the request's close handler copes.
    this.piped = pipeline(enc, res).catch(() => undefined);
  }

  /** True once the client is gone. */
  get closed(): boolean {
    return this.res.destroyed || this.out.destroyed;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.closed || chunk.length === 0) return;
    if (this.out.write(chunk)) return;
    await new Promise<void>((done) => {
      const finish = (): void => {
        this.out.off('drain', finish);
        this.out.off('close', finish);
        this.res.off('close', finish);
        done();
      };
      this.out.on('drain', finish);
      this.out.on('close', finish);
      this.res.on('close', finish);
    });
  }

  async end(chunk?: Buffer): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((done) => {
      this.out.end(chunk ?? Buffer.alloc(0), () => done());
      this.out.once('close', () => done());
    });
    await this.piped;
  }
}

/**
 * The in-band exception block ClickHouse 25.11+ appends when a query fails after its response
 * started: `\r\n__exception__\r\nTAG\nmessage\nLENGTH TAG\r\n__exception__\r\n`, LENGTH counting
 * the message and its newline. `@clickhouse/client` looks for it when the response carried
 * `X-ClickHouse-Exception-Tag: TAG`.
 */
function exceptionBlock(tag: string, message: string): Buffer {
  const len = Buffer.byteLength(message) + 1;
  return Buffer.from(`\r\n__exception__\r\n${tag}\n${message}\n${len} ${tag}\r\n__exception__\r\n`);
}

const gzip = promisify(zlib.gzip);
const deflate = promisify(zlib.deflate);
const brotli = promisify(zlib.brotliCompress);

/** A whole response body compressed off the event loop. */
function compress(codec: Codec, bytes: Buffer, level: number | undefined): Promise<Buffer> {
  const opts = level === undefined ? {} : { level };
  return codec === 'gzip' ? gzip(bytes, opts) : codec === 'deflate' ? deflate(bytes, opts) : brotli(bytes);
}

function exceptionTag(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return [...randomBytes(16)].map((b) => alphabet[b % alphabet.length]).join('');
}

// ---------------------------------------------------------------------------------------------
// The server.

/** An HTTP session (`session_id`): one connection kept between requests. */
interface NamedSession {
  readonly id: string;
  readonly session: Session;
  busy: boolean;
  timer: NodeJS.Timeout | undefined;
}

/** How one statement runs, decided from its text. */
type Plan =
  | { type: 'insert'; prefix: string; data: Buffer }
  | { type: 'stream'; sql: string }
  | { type: 'buffer'; sql: string };

/** What a statement produced, for the response headers. */
interface Outcome {
  status: number;
  format: string;
}

class ChdbHttpServerImpl {
  private readonly log: Logger;
  private readonly native: ChdbNative;
  private readonly anchor: Session;
  private readonly timezone: string;
  private readonly engineSlots: Semaphore;
  /** Parameterised statements, one at a time (see module comment). */
  private readonly paramGate = new Semaphore(1);
  private readonly sessions = new Map<string, NamedSession>();
  private readonly runningQueryIds = new Set<string>();
  private readonly inFlight = new Set<Promise<void>>();
  private stopping = false;
  private insertDelayMs: number;

  constructor(
    private readonly path: string,
    private readonly opts: Required<Omit<ChdbHttpServerOptions, 'path' | 'log' | 'auth' | 'host' | 'port'>> & Pick<ChdbHttpServerOptions, 'auth'>,
    log: Logger,
    native: ChdbNative,
    anchor: Session,
    timezone: string,
  ) {
    this.log = log;
    this.native = native;
    this.anchor = anchor;
    this.timezone = timezone;
    this.insertDelayMs = opts.insertDelayMs;
    this.engineSlots = new Semaphore(opts.maxConcurrentQueries);
  }

  /** Entry point for every request; never rejects. */
  handle(req: IncomingMessage, res: ServerResponse): void {
    const done = this.dispatch(req, res).catch((err: unknown) => {
      this.log.error({ err }, 'request handler failed');
      if (!res.headersSent) this.sendError(res, toFailure(err), undefined);
      else res.destroy();
    });
    this.inFlight.add(done);
    void done.finally(() => this.inFlight.delete(done));
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    res.setHeader('X-ClickHouse-Server-Display-Name', 'chdb-http');
    if (this.stopping) {
      res.writeHead(503, { 'Content-Type': 'text/plain; charset=UTF-8', Connection: 'close' }).end('Server is shutting down\n');
      return;
    }
    const path = url.pathname;
    const isQuery = path === '/' && (method === 'POST' || url.searchParams.has('query'));
    if ((path === '/ping' || path === '/replicas_status' || (path === '/' && !isQuery)) && (method === 'GET' || method === 'HEAD')) {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=UTF-8', 'Content-Length': '4' }).end(method === 'HEAD' ? undefined : 'Ok.\n');
      return;
    }
    if (path !== '/') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=UTF-8' }).end(`There is no handle ${path}\n\nUse / or /ping for health checks.\n`);
      return;
    }
    if (method !== 'GET' && method !== 'POST') {
      res.writeHead(405, { 'Content-Type': 'text/plain; charset=UTF-8', Allow: 'GET, POST' }).end(`Method ${method} is not allowed: use GET for read-only queries, POST for others\n`);
      return;
    }
    await this.query(req, res, url, method === 'GET');
  }

  private async query(req: IncomingMessage, res: ServerResponse, url: URL, isGet: boolean): Promise<void> {
    const startedNs = process.hrtime.bigint();
    let r: QueryRequest | undefined;
    try {
      r = parseQueryRequest(req, url);
      res.setHeader('X-ClickHouse-Query-Id', r.queryId);
      res.setHeader('X-ClickHouse-Timezone', this.timezone);
      this.authenticate(req, url);
      if ((header(req, 'content-type') ?? '').toLowerCase().startsWith('multipart/')) {
        throw new HttpQueryError(CODE.NOT_IMPLEMENTED, 'multipart requests (external tables, use_multipart_params) are not supported by this server');
      }
      const body = isGet ? Buffer.alloc(0) : await readBody(req, this.opts.maxBodyBytes);
      const plan = planStatement(r, body);
      if (this.runningQueryIds.has(r.queryId)) {
        throw new HttpQueryError(CODE.QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING, `Query with id = ${r.queryId} is already running`);
      }
      this.runningQueryIds.add(r.queryId);
      try {
        const outcome = await this.engineSlots.run(() => this.execute(r as QueryRequest, plan, isGet, res, startedNs));
        this.log.debug({ queryId: r.queryId, status: outcome.status, ms: Number(process.hrtime.bigint() - startedNs) / 1e6 }, 'query served');
      } finally {
        this.runningQueryIds.delete(r.queryId);
      }
    } catch (err) {
      const failure = toFailure(err);
      // The engine's errors are the client's business; anything else is this server's.
      if (failure.code === CODE.STD_EXCEPTION) this.log.warn({ queryId: r?.queryId, err }, 'query failed in the server');
      else this.log.debug({ queryId: r?.queryId, code: failure.code, err: failure.text }, 'query failed');
      if (!res.headersSent) this.sendError(res, failure, r?.queryId);
      else res.destroy();
    }
  }

  private authenticate(req: IncomingMessage, url: URL): void {
    const want = this.opts.auth;
    if (!want) return;
    const got = credentials(req, url);
    if (!sameSecret(got.user, want.username) || !sameSecret(got.password, want.password)) {
      throw new HttpQueryError(CODE.AUTHENTICATION_FAILED, `${got.user}: Authentication failed: password is incorrect, or there is no user with such name`);
    }
  }

  /** Runs one planned statement on a connection of its own (or the request's HTTP session). */
  private async execute(r: QueryRequest, plan: Plan, isGet: boolean, res: ServerResponse, startedNs: bigint): Promise<Outcome> {
    const named = r.sessionId === undefined ? undefined : this.checkoutSession(r);
    let session: Session | undefined = named?.session;
    try {
      session ??= new Session(this.path, { connectionArgs: SERVER_DEFAULT_ARGS });
      const conn = session.connection;
      await this.prepare(conn, r, isGet);
      if (plan.type === 'insert') return await this.insert(conn, r, plan, res, startedNs);
      if (plan.type === 'stream') {
        const streamed = await this.stream(conn, r, plan.sql, res, startedNs);
        if (streamed) return streamed;
      }
      return await this.buffered(conn, r, plan.sql, res, startedNs);
    } finally {
      // Every statement on `conn` has finished here (streams included), so closing is safe.
      if (named) this.checkinSession(named, r.sessionTimeoutS);
      else session?.close();
    }
  }

  /** `USE database` and the request's settings, `readonly` last so nothing after it can lift it. */
  private async prepare(conn: unknown, r: QueryRequest, isGet: boolean): Promise<void> {
    const statements: string[] = [];
    if (r.database !== undefined) statements.push(`USE ${sqlIdentifier(r.database)}`);
    const settings = r.settings.map(([k, v]) => `${k} = ${sqlString(v)}`);
    // GET requests are read-only (readonly = 2 still lets them change settings), unless asked stricter.
    const readonly = isGet ? (r.readonly === '1' ? '1' : '2') : r.readonly;
    if (readonly !== undefined) settings.push(`readonly = ${sqlString(readonly)}`);
    if (settings.length > 0) statements.push(`SET ${settings.join(', ')}`);
    if (statements.length > 0) await this.native.QueryAsyncConnection(conn, statements.join('; '), 'TabSeparated');
  }

  private async insert(conn: unknown, r: QueryRequest, plan: Extract<Plan, { type: 'insert' }>, res: ServerResponse, startedNs: bigint): Promise<Outcome> {
    let written = { rows: 0, bytes: 0 };
    if (this.insertDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.insertDelayMs));
    if (plan.data.length > 0) {
      if (r.params) {
        // The raw entry point binds no parameters: run the statement with its data as text.
        const sql = `${plan.prefix}\n${plan.data.toString('utf8')}`;
        await this.paramGate.run(() => this.native.QueryAsyncConnection(conn, sql, 'TabSeparated', r.params));
      } else {
        const out = await this.native.InsertRawAsyncConnection(conn, plan.prefix, plan.data, false);
        written = { rows: out.rowsWritten, bytes: out.bytesWritten };
      }
    }
    await this.sendBuffered(res, r, r.defaultFormat, Buffer.alloc(0), summary({ writtenRows: written.rows, writtenBytes: written.bytes, startedNs }));
    return { status: 200, format: r.defaultFormat };
  }

  /** Statements that are not streamed: the engine materialises the result. */
  private async buffered(conn: unknown, r: QueryRequest, sql: string, res: ServerResponse, startedNs: bigint): Promise<Outcome> {
    const format = inspectSql(sql).format ?? r.defaultFormat;
    const out = r.params
      ? await this.paramGate.run(() => this.native.QueryAsyncConnection(conn, sql, r.defaultFormat, r.params))
      : await this.native.QueryAsyncConnection(conn, sql, r.defaultFormat);
    const bytes = toBuffer(out.bytes);
    await this.sendBuffered(res, r, format, bytes, summary({ resultRows: out.rowsRead, resultBytes: out.bytesRead, startedNs }));
    return { status: 200, format };
  }

  /**
   * A SELECT, streamed: errors before the first chunk become an error response; after it, the
   * in-band exception block. Returns undefined when the engine cannot stream the statement.
   */
  private async stream(conn: unknown, r: QueryRequest, sql: string, res: ServerResponse, startedNs: bigint): Promise<Outcome | undefined> {
    const format = inspectSql(sql).format ?? r.defaultFormat;
    let handle: unknown;
    try {
      // StreamQuery parses and binds synchronously; fetching does the work off the event loop.
      handle = r.params
        ? await this.paramGate.run(() => this.native.StreamQuery(conn, sql, r.defaultFormat, r.params))
        : this.native.StreamQuery(conn, sql, r.defaultFormat);
    } catch (err) {
      if (/Streaming query is not supported/i.test(errorMessage(err))) return undefined;
      throw err;
    }
    // Invariant: `open` is true while the engine holds the stream; a fetch that returned done or
    // threw has released it, anything else must be cancelled (never during a fetch).
    let open = true;
    try {
      const first = await this.fetch(handle, () => (open = false));
      if (r.waitEndOfQuery) {
        const chunks: Buffer[] = [];
        let size = 0;
        let rows = 0;
        for (let chunk = first; chunk; chunk = await this.fetch(handle, () => (open = false))) {
          size += chunk.bytes.length;
          rows += chunk.numRows;
          if (size > this.opts.maxBufferedResultBytes) {
            throw new HttpQueryError(
              CODE.TOO_MANY_ROWS_OR_BYTES,
              `Result exceeds this server's buffer of ${this.opts.maxBufferedResultBytes} bytes for wait_end_of_query=1 (maxBufferedResultBytes); read it without wait_end_of_query`,
            );
          }
          chunks.push(toBuffer(chunk.bytes));
        }
        await this.sendBuffered(res, r, format, Buffer.concat(chunks, size), summary({ resultRows: rows, resultBytes: size, startedNs }));
        return { status: 200, format };
      }

      const tag = exceptionTag();
      res.writeHead(200, {
        ...this.baseHeaders(r, format, summary({ startedNs })),
        'X-ClickHouse-Exception-Tag': tag,
        ...(r.responseCodec ? { 'Content-Encoding': r.responseCodec } : {}),
      });
      const body = new BodyWriter(res, r.responseCodec, r.compressionLevel);
      try {
        for (let chunk = first; chunk && !body.closed; chunk = await this.fetch(handle, () => (open = false))) {
          await body.write(toBuffer(chunk.bytes));
        }
      } catch (err) {
        const failure = toFailure(err);
        this.log.debug({ queryId: r.queryId, code: failure.code }, 'query failed while streaming');
        await body.end(exceptionBlock(tag, failure.text));
        return { status: 200, format };
      }
      await body.end();
      return { status: 200, format };
    } finally {
      if (open) {
        try {
          this.native.StreamCancel(handle);
        } catch (err) {
          this.log.warn({ err, queryId: r.queryId }, 'cancelling a result stream failed');
        }
      }
    }
  }

  /** The next chunk, or undefined at the end. `released` is called once the engine let go of the stream. */
  private async fetch(handle: unknown, released: () => void): Promise<NativeChunk | undefined> {
    try {
      const chunk = await this.native.StreamFetch(handle);
      if (chunk.done) {
        released();
        return undefined;
      }
      return chunk;
    } catch (err) {
      released();
      throw err;
    }
  }

  private baseHeaders(r: QueryRequest, format: string, s: Summary): Record<string, string> {
    return {
      'Content-Type': contentType(format),
      'X-ClickHouse-Query-Id': r.queryId,
      'X-ClickHouse-Format': format,
      'X-ClickHouse-Timezone': this.timezone,
      'X-ClickHouse-Summary': JSON.stringify(s),
    };
  }

  private async sendBuffered(res: ServerResponse, r: QueryRequest, format: string, bytes: Buffer, s: Summary): Promise<void> {
    const headers = this.baseHeaders(r, format, s);
    if (r.responseCodec && bytes.length > 0) {
      const packed = await compress(r.responseCodec, bytes, r.compressionLevel);
      res.writeHead(200, { ...headers, 'Content-Encoding': r.responseCodec, 'Content-Length': String(packed.length) }).end(packed);
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Length': String(bytes.length) }).end(bytes);
  }

  private sendError(res: ServerResponse, f: Failure, queryId: string | undefined): void {
    const body = `${f.text}\n`;
    res.writeHead(HTTP_STATUS_BY_CODE.get(f.code) ?? 500, {
      'Content-Type': 'text/plain; charset=UTF-8',
      'Content-Length': String(Buffer.byteLength(body)),
      'X-ClickHouse-Exception-Code': String(f.code),
      ...(queryId === undefined ? {} : { 'X-ClickHouse-Query-Id': queryId }),
    });
    res.end(body);
  }

  private checkoutSession(r: QueryRequest): NamedSession {
    const id = r.sessionId as string;
    let s = this.sessions.get(id);
    if (!s) {
      if (r.sessionCheck) throw new HttpQueryError(CODE.SESSION_NOT_FOUND, `Session ${id} not found`);
      if (this.sessions.size >= this.opts.maxSessions) {
        throw new HttpQueryError(CODE.BAD_ARGUMENTS, `Too many HTTP sessions (${this.opts.maxSessions}, maxSessions): let idle ones expire (session_timeout) or reuse a session_id`);
      }
      s = { id, session: new Session(this.path, { connectionArgs: SERVER_DEFAULT_ARGS }), busy: false, timer: undefined };
      this.sessions.set(id, s);
    }
    if (s.busy) throw new HttpQueryError(CODE.SESSION_IS_LOCKED, `Session ${id} is locked by a concurrent client`);
    s.busy = true;
    clearTimeout(s.timer);
    return s;
  }

  private checkinSession(s: NamedSession, timeoutS: number): void {
    s.busy = false;
    s.timer = setTimeout(() => {
      if (s.busy || this.sessions.get(s.id) !== s) return;
      this.sessions.delete(s.id);
      s.session.close();
      this.log.debug({ sessionId: s.id }, 'http session expired');
    }, timeoutS * 1000);
    s.timer.unref();
  }

  setInsertDelayMs(ms: number): void {
    if (!Number.isInteger(ms) || ms < 0) throw new Error(`setInsertDelayMs: expected a non-negative integer, got ${ms}`);
    this.insertDelayMs = ms;
  }

  /** Waits for running requests (at most `graceMs` before cutting connections), then releases the engine. */
  async close(server: ReturnType<typeof createServer>): Promise<void> {
    this.stopping = true;
    const closed = new Promise<void>((done) => server.close(() => done()));
    server.closeIdleConnections();
    const grace = setTimeout(() => server.closeAllConnections(), this.opts.closeGraceMs);
    grace.unref();
    // A request whose client is cut loose still waits for its statement: chDB cannot interrupt it.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    clearTimeout(grace);
    server.closeAllConnections();
    await closed;
    for (const s of this.sessions.values()) {
      clearTimeout(s.timer);
      s.session.close();
    }
    this.sessions.clear();
    this.anchor.close();
  }
}

/** Decides how a request's statement runs: the text, where its INSERT data is, whether it streams. */
function planStatement(r: QueryRequest, body: Buffer): Plan {
  // The query parameter and the body together make the statement, a line feed between them
  // (ClickHouse's rule); when the parameter ends where an INSERT's data starts, the body is the
  // data, byte for byte (binary formats included).
  if (r.urlQuery !== undefined) {
    const head = inspectSql(r.urlQuery);
    if (head.kind === 'INSERT' && head.dataStart !== undefined && r.urlQuery.slice(head.dataStart).trim() === '') {
      return { type: 'insert', prefix: r.urlQuery.slice(0, head.dataStart), data: body };
    }
  }
  const text = r.urlQuery === undefined ? body.toString('utf8') : body.length > 0 ? `${r.urlQuery}\n${body.toString('utf8')}` : r.urlQuery;
  const shape = inspectSql(text);
  if (shape.kind === '') throw new HttpQueryError(CODE.SYNTAX_ERROR, 'Empty query');
  if (shape.secondStatement !== undefined) {
    const at = shape.secondStatement;
    throw new HttpQueryError(
      CODE.SYNTAX_ERROR,
      `Syntax error (Multi-statements are not allowed): failed at position ${at + 1} (${JSON.stringify(text.slice(at, at + 40))}): send one statement per request`,
    );
  }
  if (shape.kind === 'INSERT' && shape.dataStart !== undefined) {
    // Inline data starts after the clause, past blanks and one line break.
    const rest = text.slice(shape.dataStart);
    const data = /^[ \t]*\r?\n/.test(rest) ? rest.replace(/^[ \t]*\r?\n/, '') : rest;
    return { type: 'insert', prefix: text.slice(0, shape.dataStart), data: Buffer.from(data, 'utf8') };
  }
  return { type: STREAMED_KINDS.has(shape.kind) ? 'stream' : 'buffer', sql: text };
}

/**
 * Starts the server on `opts.path`, which this process then holds (libchdb binds one data
 * directory per process: open other sessions on the same path only). Resolves once listening.
 */
export async function startChdbHttpServer(opts: ChdbHttpServerOptions): Promise<ChdbHttpServer> {
  const path = resolve(opts.path);
  const log = (opts.log ?? silentLogger()).child({ component: 'chdb-http' });
  const settings = {
    maxConcurrentQueries: positiveInt(opts.maxConcurrentQueries, DEFAULTS.maxConcurrentQueries, 'maxConcurrentQueries'),
    maxBodyBytes: positiveInt(opts.maxBodyBytes, DEFAULTS.maxBodyBytes, 'maxBodyBytes'),
    maxBufferedResultBytes: positiveInt(opts.maxBufferedResultBytes, DEFAULTS.maxBufferedResultBytes, 'maxBufferedResultBytes'),
    maxSessions: positiveInt(opts.maxSessions, DEFAULTS.maxSessions, 'maxSessions'),
    closeGraceMs: positiveInt(opts.closeGraceMs, DEFAULTS.closeGraceMs, 'closeGraceMs'),
    insertDelayMs: opts.insertDelayMs === undefined || opts.insertDelayMs === 0 ? 0 : positiveInt(opts.insertDelayMs, 0, 'insertDelayMs'),
    auth: opts.auth,
  };
  const native = loadNative();
  mkdirSync(path, { recursive: true });
  let anchor: Session;
  try {
    anchor = new Session(path);
  } catch (err) {
    throw new Error(
      `cannot open the ClickHouse engine (chDB) at ${path}: ${errorMessage(err)}. libchdb binds one data directory per process: ` +
        'run the server in a process that opens no other chDB directory',
      { cause: err },
    );
  }
  let impl: ChdbHttpServerImpl;
  try {
    const tz = toBuffer((await native.QueryAsyncConnection(anchor.connection, 'SELECT timezone()', 'TabSeparated')).bytes).toString('utf8').trim();
    impl = new ChdbHttpServerImpl(path, settings, log, native, anchor, tz || 'UTC');
  } catch (err) {
    anchor.close();
    throw err;
  }

  const server = createServer((req, res) => impl.handle(req, res));
  // Longer than the client's idle socket TTL (2.5 s by default), so the client retires sockets first.
  server.keepAliveTimeout = 10_000;
  try {
    await new Promise<void>((done, fail) => {
      server.once('error', fail);
      server.listen(opts.port ?? 0, opts.host ?? DEFAULTS.host, () => {
        server.off('error', fail);
        done();
      });
    });
  } catch (err) {
    await impl.close(server).catch(() => undefined);
    throw err;
  }
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  log.info({ url, path }, 'clickhouse http interface listening');
  let closing: Promise<void> | undefined;
  return {
    url,
    port: address.port,
    setInsertDelayMs: (ms: number) => impl.setInsertDelayMs(ms),
    close: () => {
      closing ??= impl.close(server).then(() => log.info({ url }, 'clickhouse http interface stopped'));
      return closing;
    },
  };
}

function positiveInt(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || v < 1) throw new Error(`startChdbHttpServer: ${name} must be a positive integer, got ${v}`);
  return v;
}
