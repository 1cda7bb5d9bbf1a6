import { z } from 'zod';
import { SEVERITIES, severityRank } from '../../shared/finding.ts';
import { RequestError } from '../../shared/errors.ts';
import { STORAGE_VIEW } from '../storage/migrations.ts';
import type { Incident as StoredIncident } from '../../shared/alert.ts';
import { BINDING_SELECT, FINDING_SELECT, INCIDENT_SELECT, decodeBinding, decodeFinding, decodeIncident, microsToMs, msToMicros } from '../storage/rows.ts';
import type { Store } from '../storage/store.ts';
import { TABLE } from '../../shared/names.ts';
import { decodeCursor, toPage } from './pagination.ts';
import type {
  FindingPage,
  FindingQuery,
  IdentityActivity,
  IdentityQuery,
  Incident,
  IncidentPage,
  IncidentQuery,
  TaskPage,
  TaskQuery,
  TaskSummary,
  TimelineResponse,
} from './schemas.ts';

/**
 * The analyst queries behind the API and the CLI, on {@link Store.querySql}: every statement runs
 * read-only, with a row and time limit, and takes user input only as `{name:Type}` parameters.
 * Events are read through `events_dedup` (= `events FINAL`), findings and bindings with FINAL.
 */

/** Limits the queries apply. */
export interface QueryLimits {
  /** Default page size. */
  defaultPageSize: number;
  /** Largest page size. */
  maxPageSize: number;
  /** Events a timeline returns at most. */
  maxTimelineEvents: number;
}

/** Defaults of {@link QueryLimits}. */
export const DEFAULT_QUERY_LIMITS: QueryLimits = { defaultPageSize: 50, maxPageSize: 500, maxTimelineEvents: 10_000 };

/** Cap on the tasks and resources listed in one identity's activity. */
const IDENTITY_LIST_LIMIT = 500;

const int64 = z.union([z.number(), z.string().regex(/^-?\d+$/)]).transform(Number);
const micros = z.union([z.number(), z.string().regex(/^-?\d+$/)]).transform((v) => microsToMs(v));
const SEVERITY_ARRAY = `[${SEVERITIES.map((s) => `'${s}'`).join(', ')}]`;

const TaskRowSchema = z.object({
  task_id: z.string(),
  first_us: micros,
  last_us: micros,
  events: int64,
  agents: z.array(z.string()),
  workloads: z.array(z.string()),
  credentials: z.array(z.string()),
  principals: z.array(z.string()),
  data_classes: z.array(z.string()),
  max_sensitivity: z.string(),
  ended: z.boolean(),
  findings: int64,
  severity_rank: int64,
});

function toTask(raw: unknown): TaskSummary {
  const r = TaskRowSchema.parse(raw);
  const sev = r.findings > 0 ? SEVERITIES[r.severity_rank - 1] : undefined;
  return {
    task_id: r.task_id,
    first_seen: r.first_us,
    last_seen: r.last_us,
    events: r.events,
    agents: r.agents,
    workloads: r.workloads,
    credentials: r.credentials,
    principals: r.principals,
    data_classes: r.data_classes,
    max_sensitivity: r.max_sensitivity,
    ended: r.ended,
    findings: r.findings,
    ...(sev ? { max_severity: sev } : {}),
  };
}

const TASK_SELECT = `SELECT s.task_id AS task_id, toUnixTimestamp64Micro(s.first_seen) AS first_us,
  toUnixTimestamp64Micro(s.last_seen) AS last_us, s.events AS events, s.agents AS agents, s.workloads AS workloads,
  s.credentials AS credentials, s.principals AS principals, s.data_classes AS data_classes,
  s.max_sensitivity AS max_sensitivity, s.ended AS ended, f.n AS findings, f.rank AS severity_rank
FROM ${STORAGE_VIEW.tasksSummary} AS s
LEFT JOIN (SELECT task_id, count() AS n, max(indexOf(${SEVERITY_ARRAY}, severity)) AS rank
           FROM ${TABLE.findings} FINAL GROUP BY task_id) AS f ON f.task_id = s.task_id`;

const TaskCursorSchema = z.tuple([z.string().regex(/^\d+$/), z.string()]);
const FindingCursorSchema = z.tuple([z.string().regex(/^\d+$/), z.string()]);
const IncidentCursorSchema = z.tuple([z.string().regex(/^\d+$/), z.string()]);

/** Read access for analysts. */
export class AnalystQueries {
  constructor(
    private readonly store: Store,
    private readonly limits: QueryLimits = DEFAULT_QUERY_LIMITS,
    private readonly sqlLimits: { maxRows: number; maxSeconds: number } = { maxRows: 100_000, maxSeconds: 30 },
  ) {}

  private pageSize(limit: number | undefined): number {
    const n = limit ?? this.limits.defaultPageSize;
    if (n > this.limits.maxPageSize) throw new RequestError(`limit: at most ${this.limits.maxPageSize}`);
    return n;
  }

  private run(sql: string, params: Record<string, unknown>, maxRows: number): Promise<Record<string, unknown>[]> {
    return this.store.querySql(sql, params, { maxRows, maxSeconds: this.sqlLimits.maxSeconds });
  }

  /** Tasks, most recently active first, with filters and a keyset cursor on (last_seen, task_id). */
  async tasks(q: TaskQuery): Promise<TaskPage> {
    const limit = this.pageSize(q.limit);
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: limit + 1 };
    if (q.from !== undefined) {
      where.push(`s.last_seen >= fromUnixTimestamp64Micro({from:Int64}, 'UTC')`);
      params.from = msToMicros(q.from);
    }
    if (q.to !== undefined) {
      where.push(`s.first_seen <= fromUnixTimestamp64Micro({to:Int64}, 'UTC')`);
      params.to = msToMicros(q.to);
    }
    if (q.agent !== undefined) {
      where.push(`has(s.agents, {agent:String})`);
      params.agent = q.agent;
    }
    if (q.workload !== undefined) {
      where.push(`has(s.workloads, {workload:String})`);
      params.workload = q.workload;
    }
    if (q.credential !== undefined) {
      where.push(`(has(s.credentials, {credential:String}) OR s.task_id IN (SELECT task_id FROM ${TABLE.bindings} FINAL WHERE credential_id = {credential:String}))`);
      params.credential = q.credential;
    }
    if (q.resource !== undefined) {
      where.push(`s.task_id IN (SELECT task_id FROM ${STORAGE_VIEW.eventsDedup} WHERE arrayExists(r -> position(r.id, {resource:String}) > 0, resources))`);
      params.resource = q.resource;
    }
    if (q.has_findings !== undefined) where.push(q.has_findings === 'true' ? 'f.n > 0' : 'f.n = 0');
    if (q.cursor !== undefined) {
      const [us, id] = decodeCursor(q.cursor, TaskCursorSchema);
      where.push(`(toUnixTimestamp64Micro(s.last_seen), s.task_id) < ({cu:Int64}, {cid:String})`);
      params.cu = us;
      params.cid = id;
    }
    const rows = await this.run(
      `${TASK_SELECT}
${where.length > 0 ? `WHERE ${where.join('\n  AND ')}` : ''}
ORDER BY last_us DESC, task_id DESC
LIMIT {limit:UInt64}`,
      params,
      limit + 1,
    );
    return toPage(rows, limit, toTask, (t) => [String(msToMicros(t.last_seen)), t.task_id]);
  }

  /** One task: summary, events in time order (capped), credential bindings, findings. */
  async timeline(taskId: string): Promise<TimelineResponse | undefined> {
    const max = this.limits.maxTimelineEvents;
    const [summary, events, bindings, findings] = await Promise.all([
      this.run(`${TASK_SELECT} WHERE s.task_id = {task:String}`, { task: taskId }, 1),
      this.store.timeline(taskId, { limit: max + 1 }),
      this.run(`SELECT ${BINDING_SELECT} FROM ${TABLE.bindings} FINAL WHERE task_id = {task:String} ORDER BY issued_at, credential_id`, { task: taskId }, 10_000),
      this.store.findings(taskId),
    ]);
    if (summary.length === 0 && events.length === 0 && findings.length === 0) return undefined;
    return {
      task: summary[0] === undefined ? null : toTask(summary[0]),
      events: events.slice(0, max),
      truncated: events.length > max,
      bindings: bindings.map(decodeBinding),
      findings,
    };
  }

  /**
   * Filters shared by findings and incidents. `times` names the columns the range applies to: a
   * finding's `time`; an incident overlaps the range when it was last seen after `from` and first
   * seen before `to`.
   */
  private findingFilters(q: FindingQuery, where: string[], params: Record<string, unknown>, times = { from: 'time', to: 'time' }): void {
    if (q.from !== undefined) {
      where.push(`${times.from} >= fromUnixTimestamp64Micro({from:Int64}, 'UTC')`);
      params.from = msToMicros(q.from);
    }
    if (q.to !== undefined) {
      where.push(`${times.to} <= fromUnixTimestamp64Micro({to:Int64}, 'UTC')`);
      params.to = msToMicros(q.to);
    }
    for (const k of ['detector', 'rule', 'agent', 'workload', 'task'] as const) {
      const v = q[k];
      if (v === undefined) continue;
      const column = k === 'agent' ? 'agent_id' : k === 'workload' ? 'workload_id' : k === 'task' ? 'task_id' : k;
      where.push(`${column} = {${k}:String}`);
      params[k] = v;
    }
    if (q.severity !== undefined) {
      where.push(`indexOf(${SEVERITY_ARRAY}, severity) >= {rank:UInt8}`);
      params.rank = severityRank(q.severity) + 1;
    }
  }

  /** Findings, newest first, with filters and a keyset cursor on (time, id). */
  async findings(q: FindingQuery): Promise<FindingPage> {
    const limit = this.pageSize(q.limit);
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: limit + 1 };
    this.findingFilters(q, where, params);
    if (q.cursor !== undefined) {
      const [us, id] = decodeCursor(q.cursor, FindingCursorSchema);
      where.push(`(toUnixTimestamp64Micro(time), id) < ({cu:Int64}, {cid:String})`);
      params.cu = us;
      params.cid = id;
    }
    const rows = await this.run(
      `SELECT ${FINDING_SELECT} FROM ${TABLE.findings} FINAL
${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
ORDER BY time DESC, id DESC
LIMIT {limit:UInt64}`,
      params,
      limit + 1,
    );
    return toPage(rows, limit, decodeFinding, (f) => [String(msToMicros(f.time)), f.id]);
  }

  /**
   * Incidents as the alerter keeps them (`incidents`, latest version of each): findings grouped by
   * fingerprint with their lifecycle, most recently seen first, keyset cursor on (last seen, id).
   */
  async incidents(q: IncidentQuery): Promise<IncidentPage> {
    const limit = this.pageSize(q.limit);
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: limit + 1 };
    this.findingFilters(q, where, params, { from: 'last_seen', to: 'first_seen' });
    if (q.status !== undefined) {
      where.push('status = {status:String}');
      params.status = q.status;
    }
    if (q.cursor !== undefined) {
      const [ms, id] = decodeCursor(q.cursor, IncidentCursorSchema);
      where.push('(toUnixTimestamp64Milli(last_seen), id) < ({cl:Int64}, {cid:String})');
      Object.assign(params, { cl: ms, cid: id });
    }
    const rows = await this.run(
      `SELECT ${INCIDENT_SELECT} FROM ${TABLE.incidents} FINAL
${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
ORDER BY last_seen DESC, id DESC
LIMIT {limit:UInt64}`,
      params,
      limit + 1,
    );
    return toPage(rows, limit, (r) => toApiIncident(decodeIncident(r)), (i) => [String(Math.round(i.last_time)), i.id]);
  }

  /**
   * What one identity did: an agent id, workload id, principal or credential id, and the
   * credentials issued to it.
   */
  async identity(id: string, q: IdentityQuery): Promise<IdentityActivity> {
    const params: Record<string, unknown> = { id, n: IDENTITY_LIST_LIMIT };
    const range: string[] = [];
    if (q.from !== undefined) {
      range.push(`event_time >= fromUnixTimestamp64Micro({from:Int64}, 'UTC')`);
      params.from = msToMicros(q.from);
    }
    if (q.to !== undefined) {
      range.push(`event_time <= fromUnixTimestamp64Micro({to:Int64}, 'UTC')`);
      params.to = msToMicros(q.to);
    }
    const issued = `SELECT credential_id FROM ${TABLE.bindings} FINAL
  WHERE credential_id = {id:String} OR workload_id = {id:String} OR agent_id = {id:String} OR principal = {id:String} OR subject = {id:String}`;
    const mine = `(agent_id = {id:String} OR workload_id = {id:String} OR principal = {id:String} OR credential_id = {id:String}
  OR credential_id IN (${issued}))${range.map((r) => ` AND ${r}`).join('')}`;
    const [credentials, totals, tasks, resources] = await Promise.all([
      this.run(`SELECT ${BINDING_SELECT} FROM ${TABLE.bindings} FINAL WHERE credential_id IN (${issued}) ORDER BY issued_at LIMIT {n:UInt64}`, params, IDENTITY_LIST_LIMIT),
      this.run(
        `SELECT count() AS n, toUnixTimestamp64Micro(min(event_time)) AS first_us, toUnixTimestamp64Micro(max(event_time)) AS last_us
FROM ${STORAGE_VIEW.eventsDedup} WHERE ${mine}`,
        params,
        1,
      ),
      this.run(
        `SELECT task_id, count() AS n, toUnixTimestamp64Micro(min(event_time)) AS first_us, toUnixTimestamp64Micro(max(event_time)) AS last_us
FROM ${STORAGE_VIEW.eventsDedup} WHERE ${mine} AND task_id != ''
GROUP BY task_id ORDER BY last_us DESC LIMIT {n:UInt64}`,
        params,
        IDENTITY_LIST_LIMIT,
      ),
      this.run(
        `SELECT r.type AS type, r.id AS id, r.account AS account, count() AS n,
  toUnixTimestamp64Micro(min(event_time)) AS first_us, toUnixTimestamp64Micro(max(event_time)) AS last_us
FROM ${STORAGE_VIEW.eventsDedup} ARRAY JOIN resources AS r WHERE ${mine}
GROUP BY type, id, account ORDER BY n DESC, id LIMIT {n:UInt64}`,
        params,
        IDENTITY_LIST_LIMIT,
      ),
    ]);
    const Span = z.object({ n: int64, first_us: int64, last_us: int64 });
    const total = Span.parse(totals[0] ?? { n: 0, first_us: 0, last_us: 0 });
    return {
      identity: id,
      first_seen: total.n > 0 ? microsToMs(total.first_us) : null,
      last_seen: total.n > 0 ? microsToMs(total.last_us) : null,
      events: total.n,
      credentials: credentials.map(decodeBinding),
      tasks: tasks.map((raw) => {
        const r = Span.extend({ task_id: z.string() }).parse(raw);
        return { task_id: r.task_id, events: r.n, first_seen: microsToMs(r.first_us), last_seen: microsToMs(r.last_us) };
      }),
      resources: resources.map((raw) => {
        const r = Span.extend({ type: z.string(), id: z.string(), account: z.string() }).parse(raw);
        return { type: r.type, id: r.id, account: r.account, events: r.n, first_seen: microsToMs(r.first_us), last_seen: microsToMs(r.last_us) };
      }),
    };
  }

  /** Power users' read-only SQL, with the configured row and time limits. */
  sql(sql: string, params: Record<string, unknown>, maxRows?: number): Promise<Record<string, unknown>[]> {
    const rows = Math.min(maxRows ?? this.sqlLimits.maxRows, this.sqlLimits.maxRows);
    return this.run(sql, params, rows);
  }
}

/** A stored incident in the API's shape. */
function toApiIncident(i: StoredIncident): Incident {
  return {
    id: i.id,
    fingerprint: i.fingerprint,
    status: i.status,
    detector: i.detector,
    rule: i.rule,
    task_id: i.task_id,
    agent_id: i.agent_id,
    workload_id: i.workload_id,
    severity: i.severity,
    title: i.title,
    summary: i.summary,
    findings: i.finding_count,
    finding_ids: i.recent_findings,
    evidence: i.evidence,
    tags: i.tags,
    suppressed: i.suppressed,
    first_time: i.first_seen,
    last_time: i.last_seen,
    opened_at: i.opened_at,
    resolved_at: i.resolved_at === 0 ? null : i.resolved_at,
  };
}
