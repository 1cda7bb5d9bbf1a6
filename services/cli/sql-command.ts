import { createRootLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { ClickHouseStore } from '../storage/store.ts';
import { COMMON_HELP, UsageError, configFromArgs, int, quietLevel, str, type Command } from './command.ts';
import { formatTable } from './table.ts';

/** `runtrail sql`: read-only SQL for analysts. */
export const sqlCommand: Command = {
  name: 'sql',
  summary: 'run a read-only SQL query against the store',
  help: `Usage: runtrail sql "SELECT ..." [options]

Runs one read-only query (ClickHouse SQL) against the embedded data directory, or against the
ClickHouse server named by CLICKHOUSE_URL. Writes are refused. Tables live in the \`runtrail\`
database: events (and the view events_dedup = events FINAL), tasks_summary, bindings, findings,
alerts, dead_letters (use FINAL on events and bindings for exact de-duplicated counts). The
embedded data directory can be opened by one process at a time: stop \`runtrail start\` first.

Options:
      --format FMT      table | json (default table; json = one object per line)
      --max-rows N      return at most N rows (default 10000)
${COMMON_HELP}

Example:
  runtrail sql "SELECT task_id, count() FROM runtrail.events FINAL GROUP BY task_id ORDER BY 2 DESC LIMIT 10"`,
  options: { format: { type: 'string' }, 'max-rows': { type: 'string' } },
  allowPositionals: true,
  async run(args, io) {
    const query = args.positionals.join(' ').trim();
    if (!query) throw new UsageError('no query given');
    const format = str(args, 'format') ?? 'table';
    if (format !== 'table' && format !== 'json') throw new UsageError(`--format must be table or json, got "${format}"`);
    const cfg = configFromArgs(args);
    const log = createRootLogger(str(args, 'log-level') ?? quietLevel(cfg.logLevel));
    const store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, new MetricsRegistry());
    await store.start();
    try {
      const rows = await store.querySql(query, {}, { maxRows: int(args, 'max-rows') ?? 10_000, maxSeconds: 60 });
      if (format === 'json') for (const r of rows) io.out(`${JSON.stringify(r)}\n`);
      else io.out(`${formatTable(rows)}\n`);
      return 0;
    } finally {
      await store.shutdown();
    }
  },
};
