import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openApiDocument } from '../api/openapi.ts';
import { jsonSchemas } from '../../shared/json-schema.ts';
import { COMMON_HELP, str, type Command } from './command.ts';

/** `runtrail schema`: prints or writes the JSON Schemas of the event model. */
export const schemaCommand: Command = {
  name: 'schema',
  summary: 'print the JSON Schema of the canonical event model (or write them all to a folder)',
  help: `Usage: runtrail schema [--out DIR]

Prints the JSON Schema of Runtrail's canonical event (generated from the zod model), or writes
every schema (canonical event, timeline event) and the analyst API's OpenAPI document
(openapi.json, the one GET /v1/openapi.json serves) into DIR.

Options:
      --out DIR         write the schema files into DIR
${COMMON_HELP}`,
  options: { out: { type: 'string' } },
  allowPositionals: false,
  async run(args, io) {
    const schemas: Record<string, unknown> = { ...jsonSchemas() };
    const out = str(args, 'out');
    if (!out) {
      io.out(`${JSON.stringify(schemas['canonical-event.schema.json'], null, 2)}\n`);
      return 0;
    }
    schemas['openapi.json'] = openApiDocument();
    mkdirSync(out, { recursive: true });
    for (const [name, schema] of Object.entries(schemas)) {
      writeFileSync(join(out, name), `${JSON.stringify(schema, null, 2)}\n`);
      io.err(`wrote ${join(out, name)}\n`);
    }
    return 0;
  },
};
