import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig, type ConfigInput } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { startChdbHttpServer, type ChdbHttpServer } from '../../services/storage/chdb-http-server.ts';
import { ClickHouseStore } from '../../services/storage/store.ts';

/** Helpers to run Runtrail services as real child processes in Kafka tests. */

const BIN = fileURLToPath(new URL('../../bin/runtrail.mjs', import.meta.url));

/** A service child process. */
export interface ServiceProcess {
  child: ChildProcess;
  /** Base URL of its HTTP endpoint (health, metrics). */
  url: string;
  stderr: string[];
  /** SIGTERM and wait for a clean exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL (a crash) and wait for the process to be gone. */
  kill(): Promise<void>;
}

/** Writes a JSON config file for a child process. */
export function writeConfig(dir: string, name: string, cfg: ConfigInput): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(cfg, null, 2));
  return file;
}

/** Starts `runtrail SERVICE --config FILE` and waits until it reports ready. */
export async function startService(service: string, configFile: string, env: Record<string, string> = {}): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [BIN, service, '--config', configFile], {
    env: { ...process.env, ...env, KAFKA_BROKERS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${service} did not become ready in 60 s:\n${stderr.join('')}`)), 60_000);
    child.stderr?.on('data', (d: Buffer) => {
      const text = d.toString();
      stderr.push(text);
      const m = /ready on (http:\/\/\S+)/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve(m[1] as string);
      }
    });
    child.stdout?.resume();
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${service} exited with ${code} before it was ready:\n${stderr.join('')}`));
    });
  });
  return {
    child,
    url,
    stderr,
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Reads a counter's total (summed over label sets) from a service's /metrics. */
export async function metricTotal(url: string, name: string, labelFilter = ''): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    if (labelFilter && !line.includes(labelFilter)) continue;
    const v = Number(line.split(' ').pop());
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

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

/** Opens a {@link ProcessHarness}; `prefix` names its temporary directory. */
export async function openProcessHarness(prefix: string): Promise<ProcessHarness> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const chdb = await startChdbHttpServer({ path: join(dir, 'clickhouse') });
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
