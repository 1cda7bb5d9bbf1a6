import { z } from 'zod';
import {
  ErrorSchema,
  FindingPageSchema,
  FindingQuerySchema,
  IncidentQuerySchema,
  IdentityActivitySchema,
  IdentityQuerySchema,
  IncidentPageSchema,
  SqlRequestSchema,
  SqlResponseSchema,
  TaskPageSchema,
  TaskQuerySchema,
  TimelineResponseSchema,
} from './schemas.ts';

/**
 * The OpenAPI 3.1 document of the analyst API, generated from the same zod schemas the handlers
 * validate with, so it cannot drift from the code. Served at `/v1/openapi.json`.
 */

type Json = Record<string, unknown>;

function schema(s: z.ZodType, io: 'input' | 'output' = 'output'): Json {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(s, { io, unrepresentable: 'any' }) as Json;
  return rest;
}

/** Query parameters of a strict object schema, one OpenAPI parameter per field. */
function queryParams(s: z.ZodObject): Json[] {
  const js = schema(s, 'input') as { properties?: Record<string, Json>; required?: string[] };
  return Object.entries(js.properties ?? {}).map(([name, p]) => ({
    name,
    in: 'query',
    required: (js.required ?? []).includes(name),
    schema: p,
  }));
}

const errors = (statuses: number[]): Json =>
  Object.fromEntries(
    statuses.map((s) => [
      String(s),
      {
        description: { 400: 'bad parameter', 401: 'missing, unknown, expired or revoked token', 403: 'role not allowed', 404: 'not found', 429: 'rate limited' }[s] ?? 'error',
        content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
      },
    ]),
  );

const ok = (ref: string): Json => ({ description: 'OK', content: { 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } } });

/** Builds the document. */
export function openApiDocument(): Json {
  const common = [400, 401, 403, 429];
  return {
    openapi: '3.1.0',
    info: {
      title: 'Runtrail analyst API',
      version: '1',
      description:
        'Read access to task timelines, findings, incidents and identities. Send `Authorization: Bearer <token>`; the `analyst` or `admin` role is needed when tokens are configured. Times are epoch milliseconds.',
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/tasks': {
        get: { summary: 'List and search tasks, most recently active first', parameters: queryParams(TaskQuerySchema), responses: { 200: ok('TaskPage'), ...errors(common) } },
      },
      '/v1/tasks/{taskId}/timeline': {
        get: {
          summary: "One task's events in time order, credential bindings and findings",
          parameters: [{ name: 'taskId', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { 200: ok('Timeline'), ...errors([...common, 404]) },
        },
      },
      '/v1/findings': {
        get: { summary: 'Findings, newest first', parameters: queryParams(FindingQuerySchema), responses: { 200: ok('FindingPage'), ...errors(common) } },
      },
      '/v1/incidents': {
        get: {
          summary: 'Incidents (findings grouped by fingerprint, with their lifecycle), most recently seen first',
          parameters: queryParams(IncidentQuerySchema),
          responses: { 200: ok('IncidentPage'), ...errors(common) },
        },
      },
      '/v1/identities/{id}': {
        get: {
          summary: "An identity's activity: credentials issued, tasks, resources reached, first/last seen",
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }, ...queryParams(IdentityQuerySchema)],
          responses: { 200: ok('IdentityActivity'), ...errors(common) },
        },
      },
      '/v1/sql': {
        post: {
          summary: 'One read-only SQL statement (ClickHouse readonly mode, row and time limit)',
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/SqlRequest' } } } },
          responses: { 200: ok('SqlResponse'), ...errors(common) },
        },
      },
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        TaskPage: schema(TaskPageSchema),
        Timeline: schema(TimelineResponseSchema),
        FindingPage: schema(FindingPageSchema),
        IncidentPage: schema(IncidentPageSchema),
        IdentityActivity: schema(IdentityActivitySchema),
        SqlRequest: schema(SqlRequestSchema, 'input'),
        SqlResponse: schema(SqlResponseSchema),
        Error: schema(ErrorSchema),
      },
    },
  };
}
