import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConfigInput } from '../../shared/config.ts';

/**
 * Runtrail services as real child processes (`runtrail SERVICE --config FILE`), for the Kafka
 * benchmark and the process tests: started, waited on until ready, read through their /metrics,
 * stopped with SIGTERM or killed with SIGKILL.
 */

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

/**
 * The parent's profiling and heap-size flags, which the children inherit (so `node --cpu-prof
 * --cpu-prof-dir=DIR bin/runtrail.mjs bench --kafka` profiles the correlators too). Only these:
 * other flags can change how a child behaves (a parent run with `--import tsx`, as tests are,
 * would load tsx's preflight into a child that registers tsx itself).
 */
function inheritedNodeFlags(): string[] {
  return process.execArgv.filter((f) => /^--(?:cpu-prof|heap-prof|max-old-space-size|max-semi-space-size)/.test(f));
}

/** Writes a JSON config file for a child process; returns its path. */
export function writeConfig(dir: string, name: string, cfg: ConfigInput): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(cfg, null, 2));
  return file;
}

/**
 * Starts `runtrail SERVICE --config FILE` and waits until it reports ready (60 s at most).
 * KAFKA_BROKERS is cleared so the config file alone names the broker.
 */
export async function startService(service: string, configFile: string, env: Record<string, string> = {}): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [...inheritedNodeFlags(), BIN, service, '--config', configFile], {
    env: { ...process.env, ...env, KAFKA_BROKERS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${service} did not become ready in 60 s:\n${stderr.join('')}`)), 60_000);
    child.stderr?.on('data', (d: Buffer) => {
      const text = d.toString();
      // Bounded: a long run's warnings must not grow the parent's memory without limit.
      if (stderr.length < 1000) stderr.push(text);
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

/** Reads a metric's total (summed over label sets, optionally only lines containing `labelFilter`) from a service's /metrics. */
export async function metricTotal(url: string, name: string, labelFilter = ''): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    // `name` must be the whole metric name, not a prefix of a longer one.
    const rest = line.charAt(name.length);
    if (rest !== ' ' && rest !== '{') continue;
    if (labelFilter && !line.includes(labelFilter)) continue;
    const v = Number(line.split(' ').pop());
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}
