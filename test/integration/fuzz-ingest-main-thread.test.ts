import { describeIngestFuzz } from '../fuzz/ingest-properties.ts';

/**
 * Hostile input (issue 7): the same properties as fuzz-ingest.test.ts with `parseWorkers: 0`,
 * adapters running on the thread that also runs the bus, correlator and storage, where a thrown
 * error or a stack overflow would take a different path. A different stretch of the input space.
 */
describeIngestFuzz('adapters on the main thread', { parseWorkers: 0, seedOffset: 100 });
