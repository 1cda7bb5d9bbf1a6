import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

/**
 * Provides the real Kafka broker the `kafka` test project needs: the one named by KAFKA_BROKERS,
 * or the project's local broker (started here if it is not running, and stopped afterwards only if
 * this setup started it). Failing to get a broker fails the suite.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = fileURLToPath(new URL('../../scripts/kafka/kafka.sh', import.meta.url));
export const LOCAL_BROKER = '127.0.0.1:19092';

function running(): boolean {
  try {
    execFileSync('bash', [SCRIPT, 'status'], { cwd: ROOT, stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string;
  }
}

export default function setup(project: TestProject): () => void {
  if (process.env.KAFKA_BROKERS) {
    project.provide('kafkaBrokers', process.env.KAFKA_BROKERS);
    return () => undefined;
  }
  const wasRunning = running();
  if (!wasRunning) {
    execFileSync('bash', [SCRIPT, 'start'], { cwd: ROOT, stdio: 'inherit', timeout: 600_000 });
  }
  project.provide('kafkaBrokers', LOCAL_BROKER);
  return () => {
    if (!wasRunning) execFileSync('bash', [SCRIPT, 'stop'], { cwd: ROOT, stdio: 'inherit', timeout: 120_000 });
  };
}
