import { AlertMessageSchema, type Incident, type OutboxEntry } from '../../shared/alert.ts';
import { createRootLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { ClickHouseStore } from '../storage/store.ts';
import { COMMON_HELP, UsageError, configFromArgs, int, quietLevel, str, type Command } from './command.ts';
import { formatTable } from './table.ts';

const iso = (ms: number): string => (ms > 0 ? new Date(ms).toISOString() : '');

function incidentRow(i: Incident): Record<string, unknown> {
  return {
    id: i.id,
    status: i.status,
    severity: i.severity,
    title: i.title,
    detector: i.detector,
    rule: i.rule,
    task_id: i.task_id,
    agent_id: i.agent_id,
    findings: i.finding_count,
    first_seen: iso(i.first_seen),
    last_seen: iso(i.last_seen),
    suppressed: i.suppressed,
    notified: Object.keys(i.notified).join(','),
  };
}

function deliveryRow(e: OutboxEntry): Record<string, unknown> {
  const m = AlertMessageSchema.safeParse(safeJson(e.payload));
  return {
    id: e.id,
    incident_id: e.incident_id,
    channel: e.channel,
    kind: e.kind,
    status: e.status,
    attempts: e.attempts,
    severity: m.success ? m.data.incident.severity : '',
    title: m.success ? m.data.incident.title : '',
    task_id: m.success ? m.data.task_id : '',
    created_at: iso(e.created_at),
    next_attempt_at: e.status === 'pending' ? iso(e.next_attempt_at) : '',
    reason: e.last_error,
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** `runtrail alerts`: incidents and deliveries from the store. */
export const alertsCommand: Command = {
  name: 'alerts',
  summary: 'list incidents, alert deliveries and failed deliveries (dead letters)',
  help: `Usage: runtrail alerts [options]

Lists what the alerter recorded in the store (the embedded data directory, or the ClickHouse
server named by CLICKHOUSE_URL): incidents by default, most recently changed first; with
--deliveries every delivery of the outbox (pending, delivered, dead); with --failed the
deliveries that were given up, with the reason. The embedded data directory can be opened by one
process at a time: stop \`runtrail start\` first.

Options:
      --failed          failed deliveries (dead letters) with their reason
      --deliveries      all deliveries (outbox entries), oldest first
      --pending         deliveries still waiting (to be sent or retried)
      --open            only open incidents
      --json            one JSON object per line instead of a table
      --limit N         at most N rows (default 100)
${COMMON_HELP}

Examples:
  runtrail alerts --open
  runtrail alerts --failed --json`,
  options: {
    failed: { type: 'boolean' },
    deliveries: { type: 'boolean' },
    pending: { type: 'boolean' },
    open: { type: 'boolean' },
    json: { type: 'boolean' },
    limit: { type: 'string' },
  },
  allowPositionals: false,
  async run(args, io) {
    const flags = ['failed', 'deliveries', 'pending'].filter((f) => args.values[f] === true);
    if (flags.length > 1) throw new UsageError(`give at most one of --failed, --deliveries, --pending (got ${flags.map((f) => `--${f}`).join(', ')})`);
    const limit = int(args, 'limit') ?? 100;
    if (limit < 1) throw new UsageError('--limit must be at least 1');
    const cfg = configFromArgs(args);
    const log = createRootLogger(str(args, 'log-level') ?? quietLevel(cfg.logLevel));
    const store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, new MetricsRegistry());
    await store.start();
    try {
      let rows: Record<string, unknown>[];
      if (flags.length === 0) {
        rows = (await store.listIncidents({ status: args.values.open === true ? 'open' : undefined, limit })).map(incidentRow);
      } else {
        const status = flags[0] === 'failed' ? 'dead' : flags[0] === 'pending' ? 'pending' : undefined;
        rows = (await store.listOutbox({ status, limit })).map(deliveryRow);
      }
      if (args.values.json === true) for (const r of rows) io.out(`${JSON.stringify(r)}\n`);
      else io.out(`${formatTable(rows)}\n`);
      return 0;
    } finally {
      await store.shutdown();
    }
  },
};
