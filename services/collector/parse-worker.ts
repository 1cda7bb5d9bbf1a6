import { parentPort, workerData } from 'node:worker_threads';
import { errorMessage, RecordError, RuntrailError } from '../../shared/errors.ts';
import type { IngestFormat } from '../../shared/event.ts';
import { createRedactor, type RedactorOptions } from '../../shared/redaction.ts';
import { setEventValidation, type EventValidation } from './adapters/adapter.ts';
import { ADAPTERS } from './adapters/index.ts';
import { serializeForBus } from './ingest.ts';
import type { ParseReply, ParseRequest } from './parse-pool.ts';

/**
 * Body of a parse-pool worker: runs the adapter on a request body, stamps arrival time, and
 * serializes the events per source topic as write-ahead-log lines, so the main thread neither
 * parses the source format nor serializes for the log.
 */
const data = workerData as { validation: EventValidation; redaction: RedactorOptions | undefined; maxEventBytes: number };
setEventValidation(data.validation);
const redactor = createRedactor(data.redaction);

const port = parentPort;
if (!port) throw new Error('parse-worker.ts must run in a worker thread');

port.on('message', (req: ParseRequest) => {
  let reply: ParseReply;
  try {
    const t0 = performance.now();
    const parsed = ADAPTERS[req.format as IngestFormat].parse(Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength), req.contentType);
    if (redactor) for (const e of parsed.events) redactor.redactEvent(e);
    const serialized = serializeForBus(parsed.events, Date.now(), data.maxEventBytes);
    reply = {
      id: req.id,
      ok: true,
      topics: serialized,
      accepted: parsed.events.length,
      rejected: parsed.rejected,
      rejectedCount: parsed.rejectedCount,
      records: parsed.records,
      skipped: parsed.skipped,
      parseMs: performance.now() - t0,
    };
  } catch (err) {
    reply = {
      id: req.id,
      ok: false,
      code: err instanceof RuntrailError ? err.code : 'internal',
      field: err instanceof RecordError ? err.field : undefined,
      message: err instanceof RecordError ? err.reason : errorMessage(err),
    };
  }
  port.postMessage(reply);
});
