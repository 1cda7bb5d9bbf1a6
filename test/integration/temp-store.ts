import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type StorageConfig } from '../../shared/config.ts';
import { silentLogger, type Logger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';

/** A store class constructed like {@link ClickHouseStore} (the store itself, or a test subclass of it). */
type StoreClass<S extends ClickHouseStore> = new (cfg: StorageConfig, dataDir: string, log: Logger, metrics: MetricsRegistry) => S;

/** A started store on the real chDB engine in a fresh temporary data directory. */
export interface TempStore<S extends ClickHouseStore> {
  store: S;
  dir: string;
  /** Shuts the store down and removes the directory. */
  close(): Promise<void>;
}

/**
 * Opens a store in a new temporary directory named by `prefix`, with a 10 ms insert delay so
 * tests see their rows soon. `StoreClass` lets a test use a subclass (e.g. one that refuses rows).
 */
export async function openTempStore<S extends ClickHouseStore = ClickHouseStore>(prefix: string, StoreClass?: StoreClass<S>): Promise<TempStore<S>> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const cfg = parseConfig({ dataDir: dir, storage: { batchMaxDelayMs: 10 } });
  const Cls = (StoreClass ?? ClickHouseStore) as StoreClass<S>;
  const store = new Cls(cfg.storage, cfg.dataDir, silentLogger(), new MetricsRegistry());
  await store.start();
  return {
    store,
    dir,
    async close() {
      await store.shutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
