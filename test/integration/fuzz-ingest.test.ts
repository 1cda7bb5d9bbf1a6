import { describeIngestFuzz } from '../fuzz/ingest-properties.ts';

/**
 * Hostile input (issue 7): every ingest endpoint fuzzed against the real embedded server as it
 * runs by default, request bodies converted on parse worker threads. See
 * test/fuzz/ingest-properties.ts for the properties; FUZZ_SEED / FUZZ_RUNS vary the run.
 */
describeIngestFuzz('parse workers', { parseWorkers: 1, seedOffset: 0 });
