import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';

describe('config', () => {
  it('has working defaults: loopback, port 4318, ./data, embedded mode', () => {
    const cfg = loadConfig({ env: {} });
    expect(cfg.collector).toMatchObject({ host: '127.0.0.1', port: 4318 });
    expect(cfg.dataDir).toBe('./data');
    expect(cfg.kafka.brokers).toEqual([]);
    expect(cfg.kafka.topics['events.agent']).toBe('runtrail.events.agent');
    expect(Object.isFrozen(cfg) && Object.isFrozen(cfg.collector)).toBe(true);
  });

  it('layers file < environment < overrides', () => {
    const dir = mkdtempSync(join(tmpdir(), 'runtrail-cfg-'));
    try {
      const file = join(dir, 'runtrail.yaml');
      writeFileSync(file, 'collector:\n  port: 5000\n  host: 0.0.0.0\ncorrelator:\n  graceMs: 1000\n');
      const cfg = loadConfig({ file, env: { RUNTRAIL_PORT: '6000', KAFKA_BROKERS: 'a:9092, b:9092' }, overrides: { correlator: { graceMs: 42 } } });
      expect(cfg.collector).toMatchObject({ host: '0.0.0.0', port: 6000 });
      expect(cfg.correlator.graceMs).toBe(42);
      expect(cfg.kafka.brokers).toEqual(['a:9092', 'b:9092']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stops on a bad value with a message naming the field', () => {
    expect(() => loadConfig({ env: { RUNTRAIL_PORT: '99999' } })).toThrow(ConfigError);
    expect(() => loadConfig({ env: { RUNTRAIL_PORT: '99999' } })).toThrow(/config field `collector.port`/);
    expect(() => loadConfig({ env: {}, overrides: { kafka: { topics: { nonsense: 'x' } } } })).toThrow(/kafka.topics.nonsense/);
    expect(() => loadConfig({ env: { CLICKHOUSE_URL: 'not a url' } })).toThrow(/storage.clickhouseUrl/);
    // Raw shipper topics are read from a broker: without one they would be silently ignored.
    expect(() => loadConfig({ env: {}, overrides: { kafka: { rawTopics: { cloudtrail: 'shipper.ct' } } } })).toThrow(/config field `kafka.rawTopics`: needs `kafka.brokers`/);
    expect(loadConfig({ env: {}, overrides: { kafka: { brokers: ['k:9092'], rawTopics: { cloudtrail: 'shipper.ct' } } } }).kafka.rawTopics).toEqual({ cloudtrail: 'shipper.ct' });
    expect(() => loadConfig({ file: '/nonexistent/runtrail.yaml', env: {} })).toThrow(/cannot read config file/);
  });
});

describe('config strictness', () => {
  it('refuses a misspelled key instead of silently using the default', () => {
    expect(() => loadConfig({ env: {}, overrides: { corelator: { graceMs: 5 } } })).toThrow(/corelator/);
    expect(() => loadConfig({ env: {}, overrides: { collector: { prot: 1 } } })).toThrow(/collector/);
  });
});
