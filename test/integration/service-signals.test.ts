import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startService, writeConfig } from '../../services/bench/service-process.ts';

/**
 * A service process stops cleanly on SIGTERM the moment it says it is ready: a supervisor may
 * signal as soon as it reads that line, and a process whose listener was installed only after
 * printing it died of the signal in about 2 of 5 tries. Uses `runtrail api` (the one service
 * that needs no broker) on the embedded engine.
 */

let dir: string;
let cfgFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'runtrail-signals-'));
  cfgFile = writeConfig(dir, 'api', { dataDir: join(dir, 'data'), logLevel: 'warn', api: { port: 0 } });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('service signals', () => {
  it('exits 0 when SIGTERM arrives the moment it reports ready', async () => {
    for (let i = 0; i < 4; i++) {
      const p = await startService('api', cfgFile);
      const code = await p.stop();
      expect({ code, signal: p.child.signalCode }, p.stderr.join('')).toEqual({ code: 0, signal: null });
    }
  }, 120_000);
});
