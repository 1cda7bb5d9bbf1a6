import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from './config.ts';
import { ConfigError } from './errors.ts';
import type { RedactionPolicy, RedactorOptions } from './redaction.ts';

/** File under the data directory holding the generated redaction key. */
export const REDACTION_KEY_FILE = 'redaction.key';

/**
 * The redaction HMAC key: `redaction.key` from config (RUNTRAIL_REDACTION_KEY) when set, else the
 * key in `<dataDir>/redaction.key`, generated (32 random bytes, hex, mode 0600) on first use.
 */
export function redactionKey(cfg: Readonly<Config>): string {
  if (cfg.redaction.key !== undefined) return cfg.redaction.key;
  const file = join(cfg.dataDir, REDACTION_KEY_FILE);
  try {
    const existing = readFileSync(file, 'utf8').trim();
    if (existing.length >= 16) return existing;
    throw new ConfigError(`${file} holds no usable redaction key (at least 16 characters); delete it to generate a new one`);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
  }
  mkdirSync(cfg.dataDir, { recursive: true });
  const key = randomBytes(32).toString('hex');
  try {
    // `wx`: if another process created it first, use that one.
    writeFileSync(file, `${key}\n`, { mode: 0o600, flag: 'wx' });
    return key;
  } catch (err) {
    if ((err as { code?: string }).code === 'EEXIST') return readFileSync(file, 'utf8').trim();
    throw err;
  }
}

/** Redaction options for the ingest path, or undefined when the policy turns redaction off. */
export function redactionOptions(cfg: Readonly<Config>, policy: RedactionPolicy): RedactorOptions | undefined {
  return policy.enabled ? { key: redactionKey(cfg), policy } : undefined;
}
