import { defineConfig } from 'vitest/config';

/**
 * Pinned on purpose, not for speed: the embedded ClickHouse engine (chDB) binds one data
 * directory per process, and every integration test file opens its own temporary directory. Each
 * test file must therefore run in a process of its own: `forks` with `isolate` (vitest 4's
 * defaults today, pinned so a later default or a switch to `threads`, where files share one
 * process, cannot break storage tests with "only one active data directory per process").
 */
export default defineConfig({
  test: {
    pool: 'forks',
    isolate: true,
  },
});
