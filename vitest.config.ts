import { defineConfig } from 'vitest/config';

/**
 * Two projects:
 * - `default`: unit and integration tests (real chDB engine, real HTTP on loopback).
 * - `kafka`: integration tests against a real Apache Kafka broker. Its global setup starts the
 *   local broker (`scripts/kafka/kafka.sh`) unless `KAFKA_BROKERS` names one; if no broker can be
 *   had, the suite fails (it never skips). Files run one at a time because one test stops and
 *   restarts the broker.
 *
 * `pool: 'forks'` with `isolate` is pinned on purpose: the embedded ClickHouse engine (chDB) binds
 * one data directory per process, and every integration test file opens its own temporary
 * directory, so each test file needs a process of its own.
 */
export default defineConfig({
  test: {
    pool: 'forks',
    isolate: true,
    projects: [
      {
        extends: true,
        // Integration tests wait on a real engine and real servers on a shared 2-core machine;
        // vitest's 5 s default failed them in CI while their own waits (with precise messages)
        // were still within budget. Each wait keeps its own, tighter bound.
        test: { name: 'default', include: ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 60_000 },
      },
      {
        extends: true,
        test: {
          name: 'kafka',
          include: ['test/kafka/**/*.test.ts'],
          globalSetup: ['test/kafka/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
