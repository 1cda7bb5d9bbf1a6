import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import { RequestError, TooLargeError } from '../../shared/errors.ts';
import { sendJson, type Route, type RouteHandler } from '../../shared/http.ts';
import { readBody } from '../collector/collector-routes.ts';
import { QueryRejectedError } from '../storage/read-only-sql.ts';
import type { AnalystQueries } from './queries.ts';
import { FindingQuerySchema, IdentityQuerySchema, IncidentQuerySchema, SqlRequestSchema, TaskQuerySchema } from './schemas.ts';

/** Largest `POST /v1/sql` body, bytes. */
const MAX_SQL_BODY_BYTES = 256 * 1024;

/** Parses a request's query string with a schema; a bad parameter is a 400 naming it. */
export function parseQuery<T extends z.ZodType>(req: IncomingMessage, schema: T): z.infer<T> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const raw: Record<string, string> = {};
  for (const [k, v] of url.searchParams) raw[k] = v;
  const r = schema.safeParse(raw);
  if (!r.success) throw new RequestError(issues(r.error));
  return r.data;
}

function issues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(query)'}: ${i.message}`).join('; ');
}

/**
 * Answers the query's own faults (refused SQL, a time limit hit, a body too large) with 400/413
 * and their message; anything else is the server's fault (500, logged, no detail in the answer).
 */
function answering(handler: RouteHandler): RouteHandler {
  return async (req, res, params) => {
    try {
      await handler(req, res, params);
    } catch (err) {
      if (res.headersSent) throw err;
      if (err instanceof QueryRejectedError) return sendJson(res, 400, { error: err.code, message: err.message });
      if (err instanceof TooLargeError) return sendJson(res, 413, { error: err.code, message: err.message });
      throw err;
    }
  };
}

/** The analyst API's routes (`/v1/...`); every one needs the `analyst` role when tokens are configured. */
export function apiRoutes(queries: AnalystQueries): Route[] {
  const routes: Route[] = [
    {
      method: 'GET',
      path: '/v1/tasks',
      role: 'analyst',
      handler: async (req, res) => sendJson(res, 200, await queries.tasks(parseQuery(req, TaskQuerySchema))),
    },
    {
      method: 'GET',
      path: '/v1/tasks/:taskId/timeline',
      role: 'analyst',
      handler: async (_req, res, params) => {
        const taskId = params.taskId ?? '';
        const t = await queries.timeline(taskId);
        if (!t) return sendJson(res, 404, { error: 'not_found', message: `no events or findings for task ${taskId}` });
        sendJson(res, 200, t);
      },
    },
    {
      method: 'GET',
      path: '/v1/findings',
      role: 'analyst',
      handler: async (req, res) => sendJson(res, 200, await queries.findings(parseQuery(req, FindingQuerySchema))),
    },
    {
      method: 'GET',
      path: '/v1/incidents',
      role: 'analyst',
      handler: async (req, res) => sendJson(res, 200, await queries.incidents(parseQuery(req, IncidentQuerySchema))),
    },
    {
      method: 'GET',
      path: '/v1/identities/:id',
      role: 'analyst',
      handler: async (req, res, params) => sendJson(res, 200, await queries.identity(params.id ?? '', parseQuery(req, IdentityQuerySchema))),
    },
    {
      method: 'POST',
      path: '/v1/sql',
      role: 'analyst',
      handler: async (req, res) => {
        const text = (await readBody(req, MAX_SQL_BODY_BYTES)).toString('utf8');
        let raw: unknown;
        try {
          raw = JSON.parse(text);
        } catch {
          throw new RequestError('body: expected JSON {"sql": "SELECT ...", "params": {...}}');
        }
        const body = SqlRequestSchema.safeParse(raw);
        if (!body.success) throw new RequestError(issues(body.error));
        const rows = await queries.sql(body.data.sql, body.data.params, body.data.max_rows);
        sendJson(res, 200, { rows, row_count: rows.length });
      },
    },
  ];
  return routes.map((r) => ({ ...r, handler: answering(r.handler) }));
}
