import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { z } from 'zod';
import { ENV_VARS, isDistributed, loadConfig } from '../../shared/config.ts';
import { COMMANDS } from '../../services/cli/main.ts';
import { SERVICE_NAMES } from '../../services/services.ts';

/**
 * No Docker engine runs here, so the compose file is checked statically: it parses, it runs every
 * Runtrail service, and every service's environment is valid Runtrail configuration.
 */
const ComposeSchema = z.object({
  services: z.record(
    z.string(),
    z.object({
      image: z.string().optional(),
      command: z.array(z.string()).optional(),
      environment: z.record(z.string(), z.string()).optional(),
      healthcheck: z.object({ test: z.array(z.string()) }).optional(),
      depends_on: z.record(z.string(), z.object({ condition: z.string() })).optional(),
      volumes: z.array(z.string()).optional(),
    }),
  ),
  volumes: z.record(z.string(), z.unknown()),
});

const compose = ComposeSchema.parse(parse(readFileSync(new URL('../../docker-compose.yml', import.meta.url), 'utf8'), { merge: true }));

describe('docker-compose.yml', () => {
  it('has Kafka, ClickHouse and every Runtrail service, each with a health check', () => {
    expect(compose.services.kafka?.image).toMatch(/kafka/);
    expect(compose.services.clickhouse?.image).toMatch(/clickhouse/);
    for (const name of SERVICE_NAMES) {
      const svc = compose.services[name];
      expect(svc, name).toBeDefined();
      expect(svc?.command).toEqual([name]);
      expect(COMMANDS.some((c) => c.name === name)).toBe(true);
      expect(svc?.healthcheck?.test.join(' ')).toMatch(/readyz/);
      expect(Object.keys(svc?.depends_on ?? {}).sort()).toEqual(['clickhouse', 'kafka']);
    }
    expect(compose.services.kafka?.volumes?.length).toBeGreaterThan(0);
    expect(compose.services.clickhouse?.volumes?.length).toBeGreaterThan(0);
  });

  it("gives every service an environment that Runtrail's config schema accepts, in distributed mode", () => {
    for (const name of SERVICE_NAMES) {
      const env = compose.services[name]?.environment ?? {};
      for (const key of Object.keys(env)) expect(Object.keys(ENV_VARS), `${name}: ${key}`).toContain(key);
      const cfg = loadConfig({ env });
      expect(isDistributed(cfg), name).toBe(true);
      expect(cfg.storage.clickhouseUrl).toBe('http://clickhouse:8123');
      expect(cfg.kafka.brokers).toEqual(['kafka:9092']);
    }
  });
});
