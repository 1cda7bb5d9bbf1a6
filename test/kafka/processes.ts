import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../shared/config.ts';
import { startService, type ServiceProcess } from '../../services/bench/service-process.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { startChdbHttpServer, type ChdbHttpServer, type ChdbHttpServerOptions } from '../../services/storage/chdb-http-server.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';

/** Helpers to run Runtrail services as real child processes in Kafka tests. */

export { metricTotal, startService, writeConfig, type ServiceProcess } from '../../services/bench/service-process.ts';

/**
 * What the process tests share: a temporary directory, one ClickHouse engine over HTTP that every
 * child process writes to (chDB binds a directory to one process), and the children to kill.
 */
export interface ProcessHarness {
  dir: string;
  chdb: ChdbHttpServer;
  /** Starts a service process (see {@link startService}) and remembers it for {@link close}. */
  start(service: string, configFile: string): Promise<ServiceProcess>;
  /** A store on the shared engine, on its own database (not started). */
  store(database: string): ClickHouseStore;
  /** Kills the children still running, stops the engine, removes the directory. */
  close(): Promise<void>;
}

/** Opens a {@link ProcessHarness}; `prefix` names its temporary directory, `engine` tunes the shared engine (e.g. a slow one). */
export async function openProcessHarness(prefix: string, engine: Omit<ChdbHttpServerOptions, 'path'> = {}): Promise<ProcessHarness> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const chdb = await startChdbHttpServer({ ...engine, path: join(dir, 'clickhouse') });
  const children: ServiceProcess[] = [];
  return {
    dir,
    chdb,
    async start(service, configFile) {
      const p = await startService(service, configFile);
      children.push(p);
      return p;
    },
    store(database) {
      const cfg = parseConfig({ dataDir: dir, storage: { clickhouseUrl: chdb.url, database } });
      return new ClickHouseStore(cfg.storage, cfg.dataDir, silentLogger(), new MetricsRegistry());
    },
    async close() {
      for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) await c.kill();
      await chdb.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
