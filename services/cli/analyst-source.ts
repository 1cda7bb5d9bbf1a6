import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { RuntrailError } from '../../shared/errors.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { createRootLogger } from '../../shared/logger.ts';
import { AnalystQueries } from '../api/queries.ts';
import {
  FindingPageSchema,
  FindingQuerySchema,
  IdentityActivitySchema,
  IdentityQuerySchema,
  TaskPageSchema,
  TaskQuerySchema,
  TimelineResponseSchema,
  type FindingPage,
  type IdentityActivity,
  type TaskPage,
  type TimelineResponse,
} from '../api/schemas.ts';
import { ClickHouseStore } from '../storage/store.ts';
import { UsageError, configFromArgs, quietLevel, str, type ParsedArgs } from './command.ts';

/**
 * Where the analyst commands read from: the embedded data directory (opened read-only through
 * the same queries the API runs) or a running API (`--api URL --token T`). Filters arrive as the
 * API's query-string parameters and are validated by the API's own schemas in both cases.
 */
export interface AnalystSource {
  tasks(query: Record<string, string>): Promise<TaskPage>;
  timeline(taskId: string): Promise<TimelineResponse | undefined>;
  findings(query: Record<string, string>): Promise<FindingPage>;
  identity(id: string, query: Record<string, string>): Promise<IdentityActivity>;
  close(): Promise<void>;
}

/** Options every analyst command takes. */
export const SOURCE_OPTIONS = {
  api: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  json: { type: 'boolean' },
} as const;

/** Help text of {@link SOURCE_OPTIONS}. */
export const SOURCE_HELP = `Source (default: the data directory; stop \`runtrail start\` first, or use --api):
      --api URL         read from a running API instead, e.g. http://127.0.0.1:8080
      --token T         API token (role analyst or admin); prefer --token-file
      --token-file F    file holding the API token
      --json            print JSON instead of tables`;

function parse<T extends z.ZodType>(schema: T, raw: Record<string, string>): z.infer<T> {
  const r = schema.safeParse(raw);
  if (!r.success) throw new UsageError(r.error.issues.map((i) => `--${String(i.path[0] ?? '').replace(/_/g, '-')}: ${i.message}`).join('; '));
  return r.data;
}

/** The data directory as a source. */
async function localSource(args: ParsedArgs): Promise<AnalystSource> {
  const cfg = configFromArgs(args);
  const log = createRootLogger(str(args, 'log-level') ?? quietLevel(cfg.logLevel));
  const store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, new MetricsRegistry());
  await store.start();
  const q = new AnalystQueries(
    store,
    { defaultPageSize: 50, maxPageSize: cfg.api.maxPageSize, maxTimelineEvents: cfg.api.maxTimelineEvents },
    { maxRows: cfg.api.sqlMaxRows, maxSeconds: cfg.api.sqlMaxSeconds },
  );
  return {
    tasks: (raw) => q.tasks(parse(TaskQuerySchema, raw)),
    timeline: (id) => q.timeline(id),
    findings: (raw) => q.findings(parse(FindingQuerySchema, raw)),
    identity: (id, raw) => q.identity(id, parse(IdentityQuerySchema, raw)),
    close: () => store.shutdown(),
  };
}

/** The API refused or failed a request (exit code 1, with the API's message). */
export class ApiRequestError extends RuntrailError {
  constructor(message: string) {
    super('api_request_failed', message);
  }
}

/** A running API as a source. */
function remoteSource(base: string, token: string | undefined): AnalystSource {
  async function get<T extends z.ZodType>(path: string, query: Record<string, string>, schema: T): Promise<z.infer<T> | undefined> {
    const qs = new URLSearchParams(query).toString();
    const res = await fetch(`${base.replace(/\/+$/, '')}${path}${qs ? `?${qs}` : ''}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    const text = await res.text();
    if (res.status === 404) return undefined;
    if (!res.ok) {
      let message = text.slice(0, 500);
      try {
        const body: unknown = JSON.parse(text);
        if (typeof body === 'object' && body !== null && 'message' in body) message = String(body.message);
      } catch {
        // Not JSON: the text itself is the message.
      }
      throw new ApiRequestError(`API answered ${res.status}: ${message}`);
    }
    return schema.parse(JSON.parse(text));
  }
  const must = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new ApiRequestError(`API answered 404 for ${what}`);
    return v;
  };
  return {
    tasks: async (raw) => must(await get('/v1/tasks', raw, TaskPageSchema), 'tasks'),
    timeline: (id) => get(`/v1/tasks/${encodeURIComponent(id)}/timeline`, {}, TimelineResponseSchema),
    findings: async (raw) => must(await get('/v1/findings', raw, FindingPageSchema), 'findings'),
    identity: async (id, raw) => must(await get(`/v1/identities/${encodeURIComponent(id)}`, raw, IdentityActivitySchema), `identity ${id}`),
    close: async () => {},
  };
}

/** Opens the source the arguments name. */
export async function openSource(args: ParsedArgs): Promise<AnalystSource> {
  const api = str(args, 'api');
  const file = str(args, 'token-file');
  const token = str(args, 'token') ?? (file ? readFileSync(file, 'utf8').trim() : undefined);
  if (api) return remoteSource(api, token);
  if (token) throw new UsageError('--token needs --api');
  return localSource(args);
}

/** The string options named in `names` (CLI spelling `has-findings`), as API query parameters. */
export function queryFrom(args: ParsedArgs, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = args.values[n];
    if (typeof v === 'string') out[n.replace(/-/g, '_')] = v;
    else if (v === true) out[n.replace(/-/g, '_')] = 'true';
  }
  return out;
}
