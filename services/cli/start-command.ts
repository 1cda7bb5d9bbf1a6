import { createRootLogger } from '../../shared/logger.ts';
import { startEmbedded } from '../embedded.ts';
import { COMMON_HELP, configFromArgs, int, str, type Command } from './command.ts';

/** `runtrail start`: the whole pipeline in one process (embedded mode). */
export const startCommand: Command = {
  name: 'start',
  summary: 'run the whole pipeline in one process (collectors, correlator, detectors, store, API and /ui)',
  help: `Usage: runtrail start [options]

Runs Runtrail embedded: the HTTP collectors (OTLP/HTTP and the other ingest endpoints), the
correlator, the detectors, the ClickHouse engine (chDB) and the analyst API with its timeline page
(/ui) in one process, with an in-process bus whose write-ahead log lives under the data directory. Stops gracefully on SIGINT/SIGTERM,
flushing everything that was acknowledged.

Options:
      --host HOST       interface to bind (default 127.0.0.1); also RUNTRAIL_HOST
  -p, --port PORT       collector port (default 4318); also RUNTRAIL_PORT
      --api-port PORT   analyst API and /ui port (default 8080); also RUNTRAIL_API_PORT
${COMMON_HELP}

Endpoints: collector POST /v1/traces /v1/logs /v1/ingest/{cloudtrail,vault,k8s-audit,falco,spire}
/v1/events; API GET /v1/tasks /v1/findings /v1/incidents /v1/identities/ID /v1/openapi.json, POST
/v1/sql, the page at /ui; both GET /healthz /readyz /metrics. Binding beyond loopback needs
api.tokens (see \`runtrail token\`).

Example:
  runtrail start --data ./data --port 4318`,
  options: { host: { type: 'string' }, port: { type: 'string', short: 'p' }, 'api-port': { type: 'string' } },
  allowPositionals: false,
  async run(args, io) {
    const collector: Record<string, unknown> = {};
    const host = str(args, 'host');
    const port = int(args, 'port');
    if (host) collector.host = host;
    if (port !== undefined) collector.port = port;
    const apiPort = int(args, 'api-port');
    const cfg = configFromArgs(args, { ...(Object.keys(collector).length ? { collector } : {}), ...(apiPort !== undefined ? { api: { port: apiPort } } : {}) });
    const log = createRootLogger(cfg.logLevel);
    // Listening before the start is announced (see service-commands.ts): a supervisor may signal
    // as soon as it reads the line, and a signal with no listener would kill the process.
    const stopRequested = new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info({ signal }, 'shutting down');
        resolve();
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    const server = await startEmbedded(cfg, log);
    const { http } = server;
    log.info({ url: http.url, dataDir: cfg.dataDir }, 'runtrail embedded pipeline listening');
    io.err(`runtrail listening on ${http.url}, analyst API and page on ${server.api.url}/ui (data in ${cfg.dataDir}); Ctrl-C to stop\n`);
    await stopRequested;
    await server.shutdown();
    log.info('stopped');
    log.flush();
    return 0;
  },
};
