import type { TimelineEvent } from '../../shared/event.ts';
import { COMMON_HELP, UsageError, type Command, type Io, type ParsedArgs } from './command.ts';
import { SOURCE_HELP, SOURCE_OPTIONS, openSource, queryFrom, type AnalystSource } from './analyst-source.ts';
import { formatTable } from './table.ts';

/**
 * The analyst commands: `tasks`, `timeline TASK`, `findings`, `identity ID`. Tables by default,
 * `--json` for scripts; against the data directory or a running API (see analyst-source.ts).
 */

const iso = (ms: number | null | undefined): string => (ms === null || ms === undefined ? '' : new Date(ms).toISOString());
const list = (xs: readonly string[], max = 3): string => (xs.length > max ? `${xs.slice(0, max).join(', ')} +${xs.length - max}` : xs.join(', '));

async function withSource(args: ParsedArgs, fn: (s: AnalystSource) => Promise<number>): Promise<number> {
  const source = await openSource(args);
  try {
    return await fn(source);
  } finally {
    await source.close();
  }
}

function nextPage(io: Io, cursor: string | null): void {
  if (cursor) io.out(`next page: --cursor ${cursor}\n`);
}

const TIME_HELP = `      --from T          from this time (RFC 3339 or epoch ms)
      --to T            up to this time`;
const PAGE_HELP = `      --limit N         items per page (default 50)
      --cursor C        the page after the one that printed this cursor`;

/** `runtrail tasks`. */
export const tasksCommand: Command = {
  name: 'tasks',
  summary: 'list and search tasks, most recently active first',
  help: `Usage: runtrail tasks [filters] [options]

Filters:
${TIME_HELP}
      --agent ID        tasks of this agent
      --workload ID     tasks of this workload identity (SPIFFE ID, service account)
      --credential ID   tasks that were issued or used this credential
      --resource TEXT   tasks that touched a resource whose id contains TEXT
      --has-findings    only tasks with findings
${PAGE_HELP}
${SOURCE_HELP}
${COMMON_HELP}

Examples:
  runtrail tasks --has-findings --from 2026-05-01T00:00:00Z
  runtrail tasks --api http://127.0.0.1:8080 --token-file ~/.runtrail-token --agent billing-agent --json`,
  options: {
    ...SOURCE_OPTIONS,
    from: { type: 'string' },
    to: { type: 'string' },
    agent: { type: 'string' },
    workload: { type: 'string' },
    credential: { type: 'string' },
    resource: { type: 'string' },
    'has-findings': { type: 'boolean' },
    limit: { type: 'string' },
    cursor: { type: 'string' },
  },
  allowPositionals: false,
  run: (args, io) =>
    withSource(args, async (s) => {
      const page = await s.tasks(queryFrom(args, ['from', 'to', 'agent', 'workload', 'credential', 'resource', 'has-findings', 'limit', 'cursor']));
      if (args.values.json === true) {
        io.out(`${JSON.stringify(page)}\n`);
        return 0;
      }
      io.out(
        `${formatTable(
          page.items.map((t) => ({
            task: t.task_id,
            first_seen: iso(t.first_seen),
            last_seen: iso(t.last_seen),
            events: t.events,
            agents: list(t.agents),
            workloads: list(t.workloads, 1),
            findings: t.findings,
            severity: t.max_severity ?? '',
          })),
        )}\n`,
      );
      nextPage(io, page.next_cursor);
      return 0;
    }),
};

function eventWhat(e: TimelineEvent): string {
  if (e.tool) return `${e.tool.name}(${(e.tool.arguments ?? '').slice(0, 40)})`;
  return e.action ?? e.credential?.id ?? '';
}

/** `runtrail timeline TASK`. */
export const timelineCommand: Command = {
  name: 'timeline',
  summary: "one task's events in time order, its credentials and findings",
  help: `Usage: runtrail timeline TASK [options]

Prints the task's events in event-time order across agent, workload and resource sources (events
that are evidence of a finding are marked *), the credentials bound to the task, and its findings
with their evidence.

Options:
${SOURCE_HELP}
${COMMON_HELP}

Example:
  runtrail timeline task-8f2c --api http://127.0.0.1:8080 --token-file ~/.runtrail-token`,
  options: { ...SOURCE_OPTIONS },
  allowPositionals: true,
  run: (args, io) =>
    withSource(args, async (s) => {
      const id = args.positionals[0];
      if (!id || args.positionals.length > 1) throw new UsageError('give exactly one task id');
      const t = await s.timeline(id);
      if (!t) {
        io.err(`runtrail: no events or findings for task ${id}\n`);
        return 1;
      }
      if (args.values.json === true) {
        io.out(`${JSON.stringify(t)}\n`);
        return 0;
      }
      const evidence = new Set(t.findings.flatMap((f) => f.evidence));
      io.out(`task ${id}: ${t.events.length} events${t.truncated ? ' (truncated)' : ''}, ${t.bindings.length} credentials, ${t.findings.length} findings\n\n`);
      io.out(
        `${formatTable(
          t.events.map((e) => ({
            '': evidence.has(e.event_id) ? '*' : '',
            time: iso(e.time),
            source: e.source,
            type: e.type,
            what: eventWhat(e),
            resource: e.resources[0]?.id ?? '',
            credential: e.credential_id ?? e.credential?.id ?? '',
            event_id: e.event_id,
          })),
        )}\n`,
      );
      if (t.bindings.length > 0) {
        io.out(`\ncredentials\n${formatTable(t.bindings.map((b) => ({ credential: b.credential_id, kind: b.kind, workload: b.workload_id, issued: iso(b.issued_at), revoked: b.revoked_at ? iso(b.revoked_at) : '' })))}\n`);
      }
      if (t.findings.length > 0) {
        io.out(`\nfindings\n${formatTable(t.findings.map((f) => ({ time: iso(f.time), severity: f.severity, detector: f.detector, rule: f.rule, title: f.title, evidence: f.evidence.join(' ') })))}\n`);
      }
      return 0;
    }),
};

/** `runtrail findings`. */
export const findingsCommand: Command = {
  name: 'findings',
  summary: 'list findings, newest first',
  help: `Usage: runtrail findings [filters] [options]

Filters:
${TIME_HELP}
      --severity S      at least this severity: info|low|medium|high|critical
      --detector ID     e.g. lateral-movement
      --rule ID         rule within the detector
      --task ID / --agent ID / --workload ID
${PAGE_HELP}
${SOURCE_HELP}
${COMMON_HELP}

Example:
  runtrail findings --severity high --json`,
  options: {
    ...SOURCE_OPTIONS,
    from: { type: 'string' },
    to: { type: 'string' },
    severity: { type: 'string' },
    detector: { type: 'string' },
    rule: { type: 'string' },
    task: { type: 'string' },
    agent: { type: 'string' },
    workload: { type: 'string' },
    limit: { type: 'string' },
    cursor: { type: 'string' },
  },
  allowPositionals: false,
  run: (args, io) =>
    withSource(args, async (s) => {
      const page = await s.findings(queryFrom(args, ['from', 'to', 'severity', 'detector', 'rule', 'task', 'agent', 'workload', 'limit', 'cursor']));
      if (args.values.json === true) {
        io.out(`${JSON.stringify(page)}\n`);
        return 0;
      }
      io.out(`${formatTable(page.items.map((f) => ({ time: iso(f.time), severity: f.severity, detector: f.detector, rule: f.rule, task: f.task_id, title: f.title })))}\n`);
      nextPage(io, page.next_cursor);
      return 0;
    }),
};

/** `runtrail identity ID`. */
export const identityCommand: Command = {
  name: 'identity',
  summary: "an identity's activity: credentials, tasks, resources, first/last seen",
  help: `Usage: runtrail identity ID [options]

ID is an agent id, a workload identity, a principal (ARN) or a credential id. Prints the
credentials issued to it, the tasks it took part in and the resources it reached.

Options:
${TIME_HELP}
${SOURCE_HELP}
${COMMON_HELP}

Example:
  runtrail identity spiffe://example.org/ns/agents/sa/billing --from 2026-05-01T00:00:00Z`,
  options: { ...SOURCE_OPTIONS, from: { type: 'string' }, to: { type: 'string' } },
  allowPositionals: true,
  run: (args, io) =>
    withSource(args, async (s) => {
      const id = args.positionals[0];
      if (!id || args.positionals.length > 1) throw new UsageError('give exactly one identity');
      const a = await s.identity(id, queryFrom(args, ['from', 'to']));
      if (args.values.json === true) {
        io.out(`${JSON.stringify(a)}\n`);
        return 0;
      }
      io.out(`identity ${a.identity}: ${a.events} events, first seen ${iso(a.first_seen) || '-'}, last seen ${iso(a.last_seen) || '-'}\n`);
      io.out(`\ncredentials\n${formatTable(a.credentials.map((b) => ({ credential: b.credential_id, kind: b.kind, task: b.task_id, issued: iso(b.issued_at) })))}\n`);
      io.out(`\ntasks\n${formatTable(a.tasks.map((t) => ({ task: t.task_id, events: t.events, first_seen: iso(t.first_seen), last_seen: iso(t.last_seen) })))}\n`);
      io.out(`\nresources\n${formatTable(a.resources.map((r) => ({ resource: r.id, type: r.type, events: r.events, last_seen: iso(r.last_seen) })))}\n`);
      return 0;
    }),
};

/** The analyst commands, in help order. */
export const ANALYST_COMMANDS: readonly Command[] = [tasksCommand, timelineCommand, findingsCommand, identityCommand];
