import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LocalBus } from '../../shared/bus/local-bus.ts';
import { parseConfig, type Config, type ConfigInput } from '../../shared/config.ts';
import { FindingSchema, type Finding } from '../../shared/finding.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { TOPIC } from '../../shared/names.ts';
import { parsePolicy } from '../../detectors/policy.ts';
import { AlerterStage, effectiveChannels } from '../../services/alerter/index.ts';
import { ClickHouseStore, type Store } from '../../services/storage/store.ts';

/**
 * Test harness for the alerter: local HTTP receivers standing in for Slack, PagerDuty and webhook
 * receivers, and an alerter stage on the real chDB store with an in-process bus.
 */

/** A request a receiver got. */
export interface Received {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  /** Epoch ms of arrival. */
  at: number;
}

/** How a receiver answers its n-th request (0-based): a status, or `hang` (never answers). */
export type Answer = { status: number; headers?: Record<string, string>; body?: string } | 'hang';

/** A loopback HTTP server recording every request. */
export interface Receiver {
  url: string;
  requests: Received[];
  /** Requests whose answer was 2xx. */
  accepted(): Received[];
  close(): Promise<void>;
}

/** Starts a receiver on 127.0.0.1, port 0. `answer` decides each response. */
export async function startReceiver(answer: (req: Received, n: number) => Answer = () => ({ status: 200 })): Promise<Receiver> {
  const requests: Received[] = [];
  const statuses: number[] = [];
  const hanging = new Set<ServerResponse>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: Received = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() };
      const n = requests.length;
      requests.push(r);
      const a = answer(r, n);
      if (a === 'hang') {
        statuses.push(0);
        hanging.add(res);
        return;
      }
      statuses.push(a.status);
      res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers });
      res.end(a.body ?? '{"status":"success"}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    accepted: () => requests.filter((_, i) => (statuses[i] ?? 0) >= 200 && (statuses[i] ?? 0) < 300),
    close: async () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const T0 = Date.parse('2026-06-01T10:00:00Z');

/** A finding; `n` varies its id and time. */
export function finding(over: Partial<Finding> = {}, n = 0): Finding {
  return FindingSchema.parse({
    id: `f-${over.detector ?? 'lateral-movement'}-${over.task_id ?? 'task-1'}-${over.severity ?? 'high'}-${n}`,
    detector: 'lateral-movement',
    rule: 'credential-off-origin',
    severity: 'high',
    title: 'Credential used from another workload',
    summary: 'ASIA... issued to billing was used from 203.0.113.50',
    task_id: 'task-1',
    agent_id: 'billing-agent',
    workload_id: 'spiffe://example.org/ns/agents/sa/billing',
    time: T0 + n * 1000,
    evidence: [],
    join_keys: { credential_id: 'ASIAEXAMPLE0001' },
    tags: ['OWASP-AAI-T3', 'MITRE-T1550'],
    ...over,
  });
}

/** A running alerter on a store and bus of its own. */
export interface TestAlerter {
  cfg: Readonly<Config>;
  stage: AlerterStage;
  store: ClickHouseStore;
  bus: LocalBus;
  metrics: MetricsRegistry;
  /** Publishes findings (as the detector stage does) and waits until the alerter consumed them. */
  publish(findings: readonly Finding[]): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts an alerter. All alerters of a test file share the file's data directory (chDB binds one
 * per process); each test gives its own `database`.
 */
export async function startAlerter(opts: {
  dataDir: string;
  database: string;
  alerting: NonNullable<ConfigInput['alerting']>;
  policy?: unknown;
  /** What the stage gets as its store (e.g. one that fails some calls); default the real store. */
  storeFor?: (store: ClickHouseStore) => Store;
}): Promise<TestAlerter> {
  const cfg = parseConfig({ dataDir: opts.dataDir, storage: { database: opts.database, batchMaxDelayMs: 5 }, alerting: opts.alerting });
  const log = silentLogger();
  const metrics = new MetricsRegistry();
  const store = new ClickHouseStore(cfg.storage, cfg.dataDir, log, metrics);
  await store.start();
  const bus = new LocalBus({ dir: null, fsync: false, maxBatch: 1000, maxBacklog: 100_000, segmentBytes: 1 << 20, log, metrics });
  await bus.start();
  const stage = new AlerterStage({
    bus,
    store: opts.storeFor ? opts.storeFor(store) : store,
    cfg: cfg.alerting,
    channels: effectiveChannels(cfg.alerting, 'embedded'),
    suppressions: parsePolicy(opts.policy ?? {}).suppressions,
    dataDir: cfg.dataDir,
    log,
    metrics,
  });
  await stage.start();
  return {
    cfg,
    stage,
    store,
    bus,
    metrics,
    async publish(findings) {
      await store.insertFindings(findings);
      await bus.publish(TOPIC.findings, findings.map((f) => ({ key: f.task_id, value: f })));
      await waitFor(async () => (await stage.lag()) === 0, 5000);
    },
    async stop() {
      await stage.shutdown();
      await bus.shutdown();
      await store.shutdown();
    },
  };
}

/** Polls `cond` every 10 ms until true; throws after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Pauses for `ms` (to show that nothing more arrives). */
export function pause(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
