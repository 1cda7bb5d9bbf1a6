import { parseArgs } from 'node:util';
import { errorMessage } from '../../shared/errors.ts';
import { createRootLogger } from '../../shared/logger.ts';
import { startChdbHttpServer } from './chdb-http-server.ts';

/**
 * Development ClickHouse: the embedded engine (chDB) behind ClickHouse's HTTP interface, so
 * several Runtrail processes (collector, correlator, detector, api) share one store through
 * `CLICKHOUSE_URL`. Prints `listening <url>` on stdout once it accepts requests; logs go to
 * stderr; stops cleanly on SIGINT / SIGTERM (running statements finish first).
 */

const USAGE = `Usage: node --import tsx services/storage/chdb-http-main.ts --path DIR [options]

Serves the ClickHouse engine (chDB) over ClickHouse's HTTP interface, for development and tests.
The data directory belongs to this process while it runs: point every Runtrail service at the
printed URL (CLICKHOUSE_URL) instead of opening the directory itself.

Options:
      --path DIR                   data directory (created if missing; required)
      --host HOST                  interface to listen on (default 127.0.0.1; there is no TLS)
      --port N                     port (default 8123; 0 picks a free one)
      --user NAME                  require this user (default: accept any credentials)
      --password SECRET            password of --user (default empty)
      --max-concurrent-queries N   statements running at once (default 8)
      --log-level LVL              fatal|error|warn|info|debug|trace|silent (default info)
  -h, --help                       show this help

Example:
  node --import tsx services/storage/chdb-http-main.ts --path ./data/clickhouse --port 18123
  CLICKHOUSE_URL=http://127.0.0.1:18123 runtrail correlator`;

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

/** A bad command line: message for stderr, exit code 2. */
class UsageError extends Error {}

function intOption(values: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
  const v = values[name];
  if (typeof v !== 'string') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name}: expected an integer from ${min} to ${max}, got "${v}"`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: {
        path: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        'max-concurrent-queries': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const path = values.path;
  if (typeof path !== 'string' || path === '') throw new UsageError('--path DIR is required');
  const level = typeof values['log-level'] === 'string' ? values['log-level'] : 'info';
  if (!LOG_LEVELS.has(level)) throw new UsageError(`--log-level: expected one of ${[...LOG_LEVELS].join('|')}, got "${level}"`);
  if (values.password !== undefined && values.user === undefined) throw new UsageError('--password needs --user');
  const port = intOption(values, 'port', 0, 65_535) ?? 8123;
  const maxConcurrentQueries = intOption(values, 'max-concurrent-queries', 1, 1024);

  const log = createRootLogger(level, 'chdb-http');
  const server = await startChdbHttpServer({
    path,
    port,
    log,
    ...(typeof values.host === 'string' ? { host: values.host } : {}),
    ...(typeof values.user === 'string' ? { auth: { username: values.user, password: typeof values.password === 'string' ? values.password : '' } } : {}),
    ...(maxConcurrentQueries === undefined ? {} : { maxConcurrentQueries }),
  });
  process.stdout.write(`listening ${server.url}\n`);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  log.info({ signal }, 'stopping');
  await server.close();
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`chdb-http: ${errorMessage(err)}\n${err instanceof UsageError ? `\n${USAGE}\n` : ''}`);
  process.exitCode = err instanceof UsageError ? 2 : 1;
}
