// Worker-thread entry of the collector's parse pool (see parse-pool.ts). Workers do not inherit
// the main thread's tsx registration, so this plain-JS file registers it before loading the
// TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./parse-worker.ts');
