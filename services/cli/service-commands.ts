import { isDistributed } from '../../shared/config.ts';
import { createRootLogger } from '../../shared/logger.ts';
import { startService, type ServiceName } from '../services.ts';
import { COMMON_HELP, UsageError, configFromArgs, int, str, type Command } from './command.ts';

const DESCRIPTIONS: Record<ServiceName, { summary: string; body: string; http: string }> = {
  collector: {
    summary: 'distributed mode: HTTP collectors publishing to Kafka',
    body: 'Accepts OTLP/HTTP and the other ingest formats and answers a shipper only once Kafka (all in-sync\nreplicas) has the records; with Kafka unreachable it answers 503 with Retry-After.',
    http: 'listens on collector.host:collector.port (default 127.0.0.1:4318): ingest endpoints, /healthz, /readyz, /metrics',
  },
  correlator: {
    summary: 'distributed mode: joins events into task timelines (Kafka -> ClickHouse)',
    body: 'Consumes the per-source event topics in the consumer group runtrail-correlator, resolves events to\ntasks, stores timelines and bindings, publishes them, and commits only what is stored.',
    http: 'health and metrics on service.healthHost:service.healthPort (default 127.0.0.1:9464)',
  },
  detector: {
    summary: 'distributed mode: runs the detectors on task timelines',
    body: 'Consumes the timeline topic in the consumer group runtrail-detector, evaluates every detector as\nevents arrive, stores and publishes findings.',
    http: 'health and metrics on service.healthHost:service.healthPort (default 127.0.0.1:9464)',
  },
  alerter: {
    summary: 'distributed mode: delivers findings to incident channels',
    body: 'Consumes the findings topic in the consumer group runtrail-alerter and delivers each finding\n(currently as one JSON line on stdout), recording every delivery.',
    http: 'health and metrics on service.healthHost:service.healthPort (default 127.0.0.1:9464)',
  },
  api: {
    summary: 'distributed mode: analyst API and the /ui timeline page over the store',
    body: 'Serves /v1/tasks, /v1/tasks/{task_id}/timeline, /v1/findings, /v1/incidents, /v1/identities/{id},\nPOST /v1/sql, /v1/openapi.json and the /ui page from ClickHouse. Beyond loopback it needs api.tokens.',
    http: 'listens on api.host:api.port (default 127.0.0.1:8080): API, /ui, /healthz, /readyz, /metrics',
  },
};

function serviceCommand(name: ServiceName): Command {
  const d = DESCRIPTIONS[name];
  return {
    name,
    summary: d.summary,
    help: `Usage: runtrail ${name} [options]

${d.body}
${name === 'api' ? 'Reads storage only (no Kafka needed).' : 'Requires KAFKA_BROKERS (kafka.brokers).'}${name === 'collector' ? ' Opens no storage: acknowledged = in Kafka.' : ' Storage: CLICKHOUSE_URL, else the embedded engine\nunder the data directory (one process per data directory).'}
HTTP: ${d.http}.
Stops gracefully on SIGINT/SIGTERM (stops taking work, commits, flushes storage).

Options:
      --port PORT       port for this service's HTTP endpoint
${COMMON_HELP}

Example:
  ${name === 'api' ? '' : 'KAFKA_BROKERS=127.0.0.1:19092 '}${name === 'collector' ? '' : 'CLICKHOUSE_URL=http://127.0.0.1:8123 '}runtrail ${name}`,
    options: { port: { type: 'string', short: 'p' } },
    allowPositionals: false,
    async run(args, io) {
      const port = int(args, 'port');
      const extra: Record<string, unknown> = {};
      if (port !== undefined) {
        if (name === 'collector') extra.collector = { port };
        else if (name === 'api') extra.api = { port };
        else extra.service = { healthPort: port };
      }
      const cfg = configFromArgs(args, extra);
      // The API only reads storage; every other service lives on Kafka.
      if (name !== 'api' && !isDistributed(cfg)) throw new UsageError(`runtrail ${name} runs in distributed mode and needs Kafka: set KAFKA_BROKERS (or kafka.brokers in the config file), or use \`runtrail start\` for the embedded mode`);
      const log = createRootLogger(str(args, 'log-level') ?? cfg.logLevel);
      // Listening before "ready" is announced: whoever reads that line may signal at once, and a
      // signal with no listener yet would kill the process instead of shutting it down. A signal
      // during start-up waits for the start to finish, then shuts down.
      const stopRequested = new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      const svc = await startService(name, cfg, log);
      io.err(`runtrail ${name} ready on ${svc.http.url}\n`);
      await stopRequested;
      await svc.shutdown();
      log.flush();
      return 0;
    },
  };
}

/** The distributed-mode service commands. */
export const SERVICE_COMMANDS: readonly Command[] = (['collector', 'correlator', 'detector', 'alerter', 'api'] as const).map(serviceCommand);
