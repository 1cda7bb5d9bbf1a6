import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openApiDocument } from '../../services/api/openapi.ts';
import type { Io } from '../../services/cli/command.ts';
import { main } from '../../services/cli/main.ts';

/** `runtrail schema --out DIR` writes every published schema, and docs/schema holds the current ones. */
describe('runtrail schema', () => {
  it('writes the event schemas and the OpenAPI document, and docs/schema is up to date with them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'runtrail-schema-'));
    try {
      const io: Io = { out: () => undefined, err: () => undefined, isTty: false };
      expect(await main(['schema', '--out', dir], io)).toBe(0);
      const written = readdirSync(dir).sort();
      expect(written).toEqual(['canonical-event.schema.json', 'openapi.json', 'timeline-event.schema.json']);
      expect(JSON.parse(readFileSync(join(dir, 'openapi.json'), 'utf8'))).toEqual(JSON.parse(JSON.stringify(openApiDocument())));
      const docs = new URL('../../docs/schema/', import.meta.url);
      for (const name of written) {
        // Regenerate with `npm run schema -- --out docs/schema` when this fails.
        expect(readFileSync(new URL(name, docs), 'utf8'), name).toBe(readFileSync(join(dir, name), 'utf8'));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
