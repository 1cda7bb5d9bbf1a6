import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './errors.ts';
import { IngestFormatSchema } from './event.ts';
import { SeveritySchema } from './finding.ts';
import { DEFAULT_TOPIC_NAMES, TOPIC_IDS, type TopicId } from './names.ts';

/**
 * Runtrail configuration. The only module that reads `process.env`. Sources, lowest precedence
 * first: built-in defaults, a config file (`--config FILE` or `RUNTRAIL_CONFIG`, YAML or JSON),
 * environment variables (see {@link ENV_VARS}), then command-line overrides. The result is
 * validated once and deep-frozen; a bad value stops the process with a message naming the field.
 */

const port = z.number().int().min(0).max(65535);
const ms = z.number().int().nonnegative();

/** Collector (HTTP ingest) settings. */
export const CollectorConfigSchema = z.strictObject({
  /** Interface to bind. Default `127.0.0.1` (loopback only). */
  host: z.string().default('127.0.0.1'),
  /** OTLP/HTTP port. Default 4318, the OpenTelemetry convention. 0 picks a free port. */
  port: port.default(4318),
  /** Largest accepted request body on the wire, bytes. Default 16 MiB. */
  maxBodyBytes: z.number().int().positive().default(16 * 1024 * 1024),
  /** Largest body after decompression, bytes (decompression-bomb guard). Default 64 MiB. */
  maxDecompressedBytes: z.number().int().positive().default(64 * 1024 * 1024),
  /**
   * Largest event published, bytes of its JSON. An event over it keeps its ids, keys and fields but
   * has its longest texts cut (marked in the text and listed in `attributes["runtrail.truncated"]`),
   * so one huge tool result can neither exceed Kafka's message limit (1 MiB by default) nor fill
   * memory. Default 512 KiB; at least 64 KiB.
   */
  maxEventBytes: z.number().int().min(64 * 1024).default(512 * 1024),
  /**
   * Bytes of request bodies the collector holds at once (on the wire and decompressed), over all
   * requests in progress; over it, requests get 503 + Retry-After (the first is always taken).
   * Default 256 MiB.
   */
  maxInflightBytes: z.number().int().min(1024 * 1024).default(256 * 1024 * 1024),
  /** Seconds a shipper is asked to wait (Retry-After) when the pipeline is saturated. Default 2. */
  retryAfterS: z.number().int().positive().default(2),
  /** Per-request time limit for reading the body, ms. Default 30 000. */
  requestTimeoutMs: z.number().int().positive().default(30_000),
  /**
   * How adapter output is checked before it is published: `structural` (default) checks every
   * constraint of the canonical event schema with hand-written code, several times faster than
   * `full`, which runs the zod schema on every event (for development, when changing an adapter).
   */
  eventValidation: z.enum(['structural', 'full']).default('structural'),
  /**
   * Worker threads that convert request bodies (adapter parse plus write-ahead-log serialization)
   * in embedded mode, beside the thread running the bus, correlator and storage. Unset = one per
   * core beyond the first, at least 1, at most 4; 0 converts on the main thread.
   */
  parseWorkers: z.number().int().min(0).max(64).optional(),
});

/** Correlator settings. */
export const CorrelatorConfigSchema = z.strictObject({
  /** How long (event time) an unresolved event waits for its binding before it is stored unattributed, ms. Default 30 000. */
  graceMs: ms.default(30_000),
  /**
   * Wall-clock bound on the same wait, ms, so a quiet stream (event time not advancing) still
   * drains. Default 60 000.
   */
  graceWallMs: ms.default(60_000),
  /**
   * A source partition that delivered nothing for this long (wall clock) no longer holds the
   * event-time watermark back, ms. Default 5 000.
   */
  sourceIdleMs: ms.default(5_000),
  /** Allowed lateness of events behind the event-time watermark, ms. Default 5 000. */
  allowedLatenessMs: ms.default(5_000),
  /** A task closes this long (event time) after its end event, ms. Default 30 000. */
  taskLingerMs: ms.default(30_000),
  /** A task with no events for this long (event time) closes, ms. Default 30 min. */
  taskIdleMs: ms.default(30 * 60_000),
  /** Maximum unresolved events held; the oldest are stored unattributed beyond it. Default 100 000. */
  maxPending: z.number().int().positive().default(100_000),
  /** Maximum open tasks tracked; least recently active are closed beyond it. Default 1 000 000. */
  maxOpenTasks: z.number().int().positive().default(1_000_000),
  /** Maximum credential bindings held in memory (LRU). Default 1 000 000. */
  maxBindings: z.number().int().positive().default(1_000_000),
  /** Maximum request-id and trace-id join keys held (LRU). Default 1 000 000. */
  maxJoinKeys: z.number().int().positive().default(1_000_000),
  /** Treat an STS role session name as the task id when no task tag is present. Default true. */
  sessionNameIsTask: z.boolean().default(true),
  /**
   * Consumed batches whose output may be on its way to storage and downstream at once, while the
   * next batch is correlated. More hides more storage and broker round trips (each output waits
   * for its insert, its publish and its commit); memory grows with it by one batch each. Default 8.
   */
  maxInFlight: z.number().int().min(1).max(64).default(8),
  /** Session-tag / metadata keys that carry the task id, in order of preference. */
  taskTagKeys: z.array(z.string().min(1)).default(['runtrail.task.id', 'runtrail_task_id', 'task_id', 'task-id']),
});

/**
 * Detector engine settings: how much recent task history the engine keeps for detectors
 * (`TaskView.events`). Sized so the engine stays well under 1 KB per open task at 100 000 open
 * tasks (a kept event is ~1 KB of heap); detectors keep their own compact state for longer history.
 */
export const EngineConfigSchema = z.strictObject({
  /** Task windows kept (LRU by last event). Default 200 000. */
  maxTasks: z.number().int().positive().default(200_000),
  /** Most recent events kept per task; older ones drop off the window. Default 16. */
  maxEventsPerTask: z.number().int().positive().default(16),
  /**
   * Events kept across all task windows; beyond it the windows of the least recently active tasks
   * are dropped whole (counted). Default 65 536 (~64 MiB).
   */
  maxEvents: z.number().int().positive().default(65_536),
  /** Keep slim copies (without `messages`, `tool.result`, `attributes`) in the windows. Default true. */
  slimEvents: z.boolean().default(true),
  /** Recent event ids remembered to skip redelivered events. Default 50 000 (10 bus batches). */
  dedupWindow: z.number().int().positive().default(50_000),
  /**
   * After the detector starts on a store that already holds events, how long tasks it does not
   * hold are rebuilt from their stored timeline before their next event is evaluated (so a pattern
   * spanning a crash or a partition hand-over is still found), ms. Default 600 000; 0 disables.
   */
  recoveryWindowMs: ms.default(600_000),
  /** Stored events replayed per task when rebuilding. Default 200. */
  recoveryEventsPerTask: z.number().int().positive().default(200),
  /**
   * At start (`start` and the distributed `detector`, not `replay`), per-agent baselines (tool
   * transitions) are rebuilt from the tool calls stored in this many days of event time before
   * now, so a restart does not forget what each agent normally does. Days; default 7; 0 disables.
   */
  baselineHistoryDays: z.number().min(0).default(7),
  /** The most recent stored tool calls read for that rebuild, at most. Default 200 000. */
  baselineHistoryCalls: z.number().int().positive().default(200_000),
});

/** Storage (ClickHouse) settings. */
export const StorageConfigSchema = z.strictObject({
  /** ClickHouse server URL. Unset = the embedded chDB engine under `dataDir`. */
  clickhouseUrl: z.string().url().optional(),
  username: z.string().default('default'),
  password: z.string().default(''),
  /** Database name. Default `runtrail`. */
  database: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default('runtrail'),
  /** Rows per insert at most. Default 20 000. */
  batchMaxRows: z.number().int().positive().default(20_000),
  /** Longest a row waits in the writer before a flush, ms. Default 200. */
  batchMaxDelayMs: ms.default(200),
  /** Rows buffered before writers push back on their callers. Default 200 000. */
  maxPendingRows: z.number().int().positive().default(200_000),
  /** Retention of events, findings and alerts, days (ClickHouse TTL). Default 90. */
  retentionDays: z.number().int().positive().default(90),
  /** Insert attempts before an error is surfaced. Default 5. */
  insertAttempts: z.number().int().positive().default(5),
});

/** In-process bus settings (embedded mode). */
export const BusConfigSchema = z.strictObject({
  /** Messages per consumer batch at most. Default 5 000. */
  maxBatch: z.number().int().positive().default(5_000),
  /** Unconsumed messages per topic before publishers get backpressure (HTTP 503). Default 500 000. */
  maxBacklog: z.number().int().positive().default(500_000),
  /** fsync the write-ahead log on every publish. Default true (acknowledged = on disk). */
  fsync: z.boolean().default(true),
  /** Keep a write-ahead log on disk so a restart resumes. Default true. */
  durable: z.boolean().default(true),
  /** Write-ahead log segment size, bytes. Default 64 MiB. */
  segmentBytes: z.number().int().positive().default(64 * 1024 * 1024),
  /**
   * Keep the timeline topic (correlator -> detector) in memory instead of the write-ahead log. Its
   * messages are derived from the ingest topics, and with this on the correlator commits its input
   * only after the detector has handled and committed what came of it, so a crash redelivers the
   * input instead of losing detector input. Saves serializing, writing and fsyncing every event a
   * second time. Default true; false logs the timeline like every other topic.
   */
  timelineInMemory: z.boolean().default(true),
});

/** Kafka settings (distributed mode). */
export const KafkaConfigSchema = z.strictObject({
  /** Bootstrap brokers, `host:port`. Empty = embedded in-process bus. */
  brokers: z.array(z.string().min(1)).default([]),
  clientId: z.string().default('runtrail'),
  /** Physical topic names by logical topic id. */
  topics: z
    .record(z.string(), z.string().min(1))
    .default({})
    .transform((t) => ({ ...DEFAULT_TOPIC_NAMES, ...t }) as Record<TopicId, string>),
  /** Prefix added to every consumer group id (to run several pipelines on one cluster). Default ''. */
  groupPrefix: z.string().default(''),
  /** Partitions for topics Runtrail creates. Default 6. */
  partitions: z.number().int().positive().default(6),
  /** Replication factor for topics Runtrail creates. Default 1. */
  replicationFactor: z.number().int().positive().default(1),
  /** Retention of non-compacted topics, ms. Default 7 days. */
  retentionMs: z.number().int().positive().default(7 * 24 * 3600_000),
  /**
   * Topics that shippers write their standard records to (Fluent Bit's `kafka` output, Vector's
   * `kafka` sink), by format: `{ cloudtrail: "shipper.cloudtrail", spire: "shipper.spire" }`. The
   * `collector` service converts them as the HTTP endpoints do (each message one body). Default
   * none.
   */
  rawTopics: z.partialRecord(IngestFormatSchema, z.string().min(1)).default({}),
});

/** HTTP settings for health/metrics of services without their own HTTP API. */
export const ServiceConfigSchema = z.strictObject({
  /** Health/metrics port for standalone correlator/detector/alerter processes. Default 9464. */
  healthPort: port.default(9464),
  /** Host for the health/metrics port. Default `127.0.0.1`. */
  healthHost: z.string().default('127.0.0.1'),
});


/** API roles: `ingest` for shippers, `analyst` for reading, `admin` for everything (policy, SQL, ingest). */
export const API_ROLES = ['ingest', 'analyst', 'admin'] as const;
export type ApiRole = (typeof API_ROLES)[number];

/** One API token. The token itself is never in config: only its SHA-256 (`runtrail token hash`). */
export const ApiTokenSchema = z.strictObject({
  /** Who holds it (logs, rate limit bucket). Unique. */
  name: z.string().min(1),
  role: z.enum(API_ROLES),
  /** Lowercase hex SHA-256 of the token. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex characters (runtrail token hash)'),
  /** Expiry, RFC 3339 (e.g. `2027-01-01T00:00:00Z`); unset = no expiry. */
  expiresAt: z.iso.datetime({ offset: true }).optional(),
  /** A revoked token is refused (401) but kept in config so its name stays reserved. Default false. */
  revoked: z.boolean().default(false),
});
export type ApiToken = z.infer<typeof ApiTokenSchema>;

/** Analyst API and access control (also guards the collector's ingest endpoints). */
export const ApiConfigSchema = z.strictObject({
  /** Interface the API (and the `/ui` page) binds. Default `127.0.0.1`. */
  host: z.string().default('127.0.0.1'),
  /** API port. Default 8080. 0 picks a free port. */
  port: port.default(8080),
  /**
   * Tokens. Empty = no authentication, allowed only while every server listens on loopback;
   * servers bound beyond loopback refuse to start without tokens.
   */
  tokens: z
    .array(ApiTokenSchema)
    .default([])
    .refine((ts) => new Set(ts.map((t) => t.name)).size === ts.length, 'token names must be unique'),
  /** Per-token rate limit: sustained requests per second. Default 20. */
  rateLimitPerSecond: z.number().positive().default(20),
  /** Per-token rate limit: burst size, requests. Default 100. */
  rateLimitBurst: z.number().int().positive().default(100),
  /** Origins allowed by CORS (exact match, or `*`). Default none: CORS off. */
  corsOrigins: z.array(z.string().min(1)).default([]),
  /** PEM certificate file; with `tlsKeyFile`, the API and collector serve HTTPS. */
  tlsCertFile: z.string().min(1).optional(),
  /** PEM private key file for `tlsCertFile`. */
  tlsKeyFile: z.string().min(1).optional(),
  /** Rows a `POST /v1/sql` query returns at most. Default 10 000. */
  sqlMaxRows: z.number().int().positive().max(1_000_000).default(10_000),
  /** Time limit of a `POST /v1/sql` query, seconds. Default 30. */
  sqlMaxSeconds: z.number().int().positive().max(300).default(30),
  /** Largest page a list endpoint returns, items. Default 500 (default page 50). */
  maxPageSize: z.number().int().positive().default(500),
  /** Events a timeline response carries at most. Default 10 000. */
  maxTimelineEvents: z.number().int().positive().default(10_000),
}).refine((a) => (a.tlsCertFile === undefined) === (a.tlsKeyFile === undefined), 'set both tlsCertFile and tlsKeyFile, or neither');

/** Secret redaction (what is redacted is in the policy's `redaction` section). */
export const RedactionConfigSchema = z.strictObject({
  /**
   * HMAC key for redacted values (at least 16 characters). Unset = a random key generated once and
   * kept in `<dataDir>/redaction.key`. Set the same key on every collector so equal secrets hash equal.
   */
  key: z.string().min(16).optional(),
});

/** Which findings a channel receives; each list empty = no restriction, else one entry must match. */
export const ChannelRouteSchema = z.strictObject({
  /** Globs on the detector id (`tool-*`). */
  detectors: z.array(z.string().min(1)).default([]),
  /** Framework tags, exact (`OWASP-AAI-T2`) or globs (`MITRE-*`); any one tag of the incident. */
  tags: z.array(z.string().min(1)).default([]),
  /** Globs on the agent id. */
  agents: z.array(z.string().min(1)).default([]),
});

const channelCommon = {
  /** Unique channel name (kebab-case); labels metrics and outbox rows. Defaults to the type. */
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'lower-case letters, digits, - and _').optional(),
  /** Lowest incident severity sent to this channel. Default `low`. */
  minSeverity: SeveritySchema.default('low'),
  /** Routing by detector, tag or agent. Default: everything. */
  route: ChannelRouteSchema.default(ChannelRouteSchema.parse({})),
  /**
   * Sustained deliveries per minute; beyond it deliveries wait in the queue (never dropped).
   * Default 60 for the remote APIs (slack, pagerduty, webhook); unlimited for the local sinks
   * (jsonl, kafka), which have no rate limit to respect.
   */
  ratePerMinute: z.number().positive().optional(),
  /** Deliveries allowed at once before the rate applies. Default 10. */
  burst: z.number().int().positive().default(10),
};

/** Default `ratePerMinute` by channel type (see `channelCommon`). */
export const DEFAULT_CHANNEL_RATE_PER_MINUTE: Readonly<Record<'slack' | 'pagerduty' | 'webhook' | 'kafka' | 'jsonl', number>> = Object.freeze({
  slack: 60,
  pagerduty: 60,
  webhook: 60,
  kafka: Number.POSITIVE_INFINITY,
  jsonl: Number.POSITIVE_INFINITY,
});

/** Slack: an incoming webhook, or a bot token (chat.postMessage, then chat.update in place). */
export const SlackChannelSchema = z
  .strictObject({
    type: z.literal('slack'),
    ...channelCommon,
    /** Incoming-webhook URL. Each notification is a new message. */
    webhookUrl: z.string().url().optional(),
    /** Bot token (`xoxb-...`); with `channel`, the incident's message is updated in place. */
    botToken: z.string().min(1).optional(),
    /** Channel id for the bot token. */
    channel: z.string().min(1).optional(),
    /** Slack Web API base URL. Default `https://slack.com/api`. */
    apiUrl: z.string().url().default('https://slack.com/api'),
  })
  .refine((c) => c.webhookUrl !== undefined || (c.botToken !== undefined && c.channel !== undefined), {
    message: 'set webhookUrl, or botToken and channel',
  });

/** PagerDuty Events API v2: trigger and resolve, `dedup_key` = incident fingerprint. */
export const PagerDutyChannelSchema = z.strictObject({
  type: z.literal('pagerduty'),
  ...channelCommon,
  /** Integration (routing) key of the PagerDuty service. */
  routingKey: z.string().min(1),
  /** Events API URL. Default `https://events.pagerduty.com/v2/enqueue`. */
  url: z.string().url().default('https://events.pagerduty.com/v2/enqueue'),
});

/** Generic webhook: the alert message as JSON, signed with HMAC-SHA256 when `secret` is set. */
export const WebhookChannelSchema = z.strictObject({
  type: z.literal('webhook'),
  ...channelCommon,
  url: z.string().url(),
  /** HMAC-SHA256 key; signature = hex(HMAC(secret, `<timestamp>.<body>`)). Unset = unsigned. */
  secret: z.string().min(16).optional(),
  /** Extra request headers (e.g. an API key for the receiver). */
  headers: z.record(z.string(), z.string()).default({}),
  /** Header carrying `sha256=<hex signature>`. Default `x-runtrail-signature`. */
  signatureHeader: z.string().min(1).default('x-runtrail-signature'),
  /** Header carrying the signing time, epoch seconds. Default `x-runtrail-timestamp`. */
  timestampHeader: z.string().min(1).default('x-runtrail-timestamp'),
});

/** The alerts topic (`TOPIC.alerts`): meant for distributed mode, where it is a Kafka topic. */
export const KafkaChannelSchema = z.strictObject({ type: z.literal('kafka'), ...channelCommon });

/** JSON lines: one alert message per line, to a file or stdout (`path: "-"`). */
export const JsonlChannelSchema = z.strictObject({
  type: z.literal('jsonl'),
  ...channelCommon,
  /** File to append to; `-` = stdout. Default `-`. */
  path: z.string().min(1).default('-'),
});

/** One configured channel. */
export const ChannelConfigSchema = z.union([SlackChannelSchema, PagerDutyChannelSchema, WebhookChannelSchema, KafkaChannelSchema, JsonlChannelSchema]);

/** Incident grouping and lifecycle. */
export const IncidentsConfigSchema = z.strictObject({
  /**
   * Finding fields that make an incident's fingerprint. `identity` = the finding's credential,
   * principal or workload join key. Default detector, rule, task.
   */
  groupBy: z.array(z.enum(['detector', 'rule', 'task', 'agent', 'workload', 'identity'])).min(1).default(['detector', 'rule', 'task']),
  /** An incident with no new finding for this long (wall clock) resolves, ms. Default 1 h. */
  resolveAfterMs: z.number().int().positive().default(3_600_000),
  /** Least gap between two update notifications of one incident on one channel, ms (coalesced meanwhile). Default 60 000. */
  updateIntervalMs: ms.default(60_000),
  /** Open incidents held in memory (LRU; evicted ones are reloaded from storage). Default 10 000. */
  maxInMemory: z.number().int().positive().default(10_000),
  /** Evidence events shown per message; also how many the detectors summarise on each finding (`evidence_events`). Default 5. */
  evidenceLimit: z.number().int().min(0).max(50).default(5),
});

/** Delivery: retries, breaker, rate and queue limits (per channel). */
export const DeliveryConfigSchema = z.strictObject({
  /** Attempts per delivery before it becomes a dead letter. Default 8. */
  maxAttempts: z.number().int().positive().default(8),
  /** Backoff before the first retry, ms; doubles (`backoffMultiplier`) per attempt. Default 1 000. */
  backoffInitialMs: ms.default(1_000),
  /** Longest backoff, ms. Default 300 000. */
  backoffMaxMs: ms.default(300_000),
  /** Backoff growth per attempt. Default 2. */
  backoffMultiplier: z.number().min(1).default(2),
  /** Random spread of each backoff, as a fraction (0.2 = ±20 %). Default 0.2. */
  jitter: z.number().min(0).max(1).default(0.2),
  /** Longest Retry-After honoured, ms (a longer one is capped). Default 600 000. */
  maxRetryAfterMs: ms.default(600_000),
  /** Per-request time limit, ms. Default 10 000. */
  requestTimeoutMs: z.number().int().positive().default(10_000),
  /** Consecutive failures that open a channel's circuit breaker. Default 5. */
  breakerThreshold: z.number().int().positive().default(5),
  /** How long an open breaker holds deliveries back before one trial, ms. Default 30 000. */
  breakerOpenMs: z.number().int().positive().default(30_000),
  /** Deliveries held in memory per channel; the rest wait in the stored outbox. Default 10 000. */
  maxQueued: z.number().int().positive().default(10_000),
  /** On shutdown, how long deliveries already due may still go out, ms. Default 5 000. */
  shutdownGraceMs: ms.default(5_000),
});

/** Alerting: incidents, channels and delivery. */
export const AlertingConfigSchema = z.strictObject({
  /** Run the alerter. Default true (`runtrail replay` runs it only when `channels` is set). */
  enabled: z.boolean().default(true),
  /** Base URL of the API in message links (`<base>/v1/tasks/<id>/timeline`, `<base>/ui#/task/<id>`). Default `http://127.0.0.1:8080` (`api.port`'s default). */
  apiBaseUrl: z.string().url().default('http://127.0.0.1:8080'),
  /**
   * Channels. Unset = the mode's default: embedded `start` appends JSON lines to
   * `<dataDir>/alerts.jsonl`; `replay` sends nothing; the distributed alerter writes JSON lines to
   * stdout and publishes to the alerts topic. `[]` = no channels (incidents are still recorded).
   */
  channels: z.array(ChannelConfigSchema).optional(),
  incidents: IncidentsConfigSchema.default(IncidentsConfigSchema.parse({})),
  delivery: DeliveryConfigSchema.default(DeliveryConfigSchema.parse({})),
}).superRefine((a, ctx) => {
  const seen = new Set<string>();
  for (const [i, c] of (a.channels ?? []).entries()) {
    const name = c.name ?? c.type;
    if (seen.has(name)) ctx.addIssue({ code: 'custom', path: ['channels', i, 'name'], message: `duplicate channel name "${name}" (give each channel a distinct name)` });
    seen.add(name);
  }
});

/** The whole configuration. */
export const ConfigSchema = z.strictObject({
  /** Data directory for the embedded store and write-ahead log. Default `./data`. */
  dataDir: z.string().min(1).default('./data'),
  /** pino log level. Default `info`. */
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Detection policy file (YAML). Unset = built-in defaults. */
  policyFile: z.string().optional(),
  collector: CollectorConfigSchema.default(CollectorConfigSchema.parse({})),
  correlator: CorrelatorConfigSchema.default(CorrelatorConfigSchema.parse({})),
  engine: EngineConfigSchema.default(EngineConfigSchema.parse({})),
  storage: StorageConfigSchema.default(StorageConfigSchema.parse({})),
  bus: BusConfigSchema.default(BusConfigSchema.parse({})),
  kafka: KafkaConfigSchema.default(KafkaConfigSchema.parse({})),
  service: ServiceConfigSchema.default(ServiceConfigSchema.parse({})),
  api: ApiConfigSchema.default(ApiConfigSchema.parse({})),
  redaction: RedactionConfigSchema.default(RedactionConfigSchema.parse({})),
  /** Alerting (incidents, channels, delivery). */
  alerting: AlertingConfigSchema.default(AlertingConfigSchema.parse({})),
});
export type Config = z.infer<typeof ConfigSchema>;
/** Partial configuration as written in a file or passed as overrides. */
export type ConfigInput = z.input<typeof ConfigSchema>;

/**
 * Environment variables Runtrail reads, each mapped to a config path and a parser. Documented in
 * the README; the docker-compose test checks every service's environment against this table.
 */
export const ENV_VARS: Readonly<Record<string, { path: string; parse: (v: string) => unknown }>> = Object.freeze({
  RUNTRAIL_DATA_DIR: { path: 'dataDir', parse: String },
  RUNTRAIL_LOG_LEVEL: { path: 'logLevel', parse: String },
  RUNTRAIL_POLICY: { path: 'policyFile', parse: String },
  RUNTRAIL_HOST: { path: 'collector.host', parse: String },
  RUNTRAIL_PORT: { path: 'collector.port', parse: Number },
  RUNTRAIL_MAX_BODY_BYTES: { path: 'collector.maxBodyBytes', parse: Number },
  RUNTRAIL_GRACE_MS: { path: 'correlator.graceMs', parse: Number },
  RUNTRAIL_HEALTH_PORT: { path: 'service.healthPort', parse: Number },
  RUNTRAIL_HEALTH_HOST: { path: 'service.healthHost', parse: String },
  CLICKHOUSE_URL: { path: 'storage.clickhouseUrl', parse: String },
  CLICKHOUSE_USER: { path: 'storage.username', parse: String },
  CLICKHOUSE_PASSWORD: { path: 'storage.password', parse: String },
  CLICKHOUSE_DATABASE: { path: 'storage.database', parse: String },
  KAFKA_BROKERS: { path: 'kafka.brokers', parse: (v) => v.split(',').map((s) => s.trim()).filter(Boolean) },
  KAFKA_CLIENT_ID: { path: 'kafka.clientId', parse: String },
  KAFKA_GROUP_PREFIX: { path: 'kafka.groupPrefix', parse: String },
  KAFKA_PARTITIONS: { path: 'kafka.partitions', parse: Number },
  KAFKA_REPLICATION_FACTOR: { path: 'kafka.replicationFactor', parse: Number },
  RUNTRAIL_API_HOST: { path: 'api.host', parse: String },
  RUNTRAIL_API_PORT: { path: 'api.port', parse: Number },
  RUNTRAIL_API_TOKENS: { path: 'api.tokens', parse: parseJsonEnv },
  RUNTRAIL_CORS_ORIGINS: { path: 'api.corsOrigins', parse: (v) => v.split(',').map((s) => s.trim()).filter(Boolean) },
  RUNTRAIL_TLS_CERT_FILE: { path: 'api.tlsCertFile', parse: String },
  RUNTRAIL_TLS_KEY_FILE: { path: 'api.tlsKeyFile', parse: String },
  RUNTRAIL_REDACTION_KEY: { path: 'redaction.key', parse: String },
});

/** A JSON-valued environment variable; text that is not JSON is passed on for the schema to reject. */
function parseJsonEnv(v: string): unknown {
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function setPath(target: Obj, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = target;
  for (const p of parts.slice(0, -1)) {
    const next = cur[p];
    if (!isObj(next)) cur[p] = {};
    cur = cur[p] as Obj;
  }
  cur[parts[parts.length - 1] as string] = value;
}

/** Deep merge of plain objects; arrays and scalars from `over` replace those in `base`. */
export function deepMerge(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    const b = out[k];
    out[k] = isObj(b) && isObj(v) ? deepMerge(b, v) : v;
  }
  return out;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const child of Object.values(v as Obj)) deepFreeze(child);
  }
  return v;
}

/** Reads and parses a YAML or JSON config file. */
function readConfigFile(file: string): Obj {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} does not parse: ${(err as Error).message}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (!isObj(parsed)) throw new ConfigError(`config file ${file}: expected a mapping at the top level`);
  return parsed;
}

/** Options for {@link loadConfig}. */
export interface LoadConfigOptions {
  /** Config file path; falls back to `RUNTRAIL_CONFIG`. */
  file?: string;
  /** Highest-precedence overrides (from CLI flags). */
  overrides?: Obj;
  /** Environment to read; defaults to `process.env`. Tests pass their own. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Builds the validated, frozen configuration. Throws {@link ConfigError} naming the bad field. */
export function loadConfig(opts: LoadConfigOptions = {}): Readonly<Config> {
  const env = opts.env ?? process.env;
  let merged: Obj = {};
  const file = opts.file ?? env.RUNTRAIL_CONFIG;
  if (file) merged = deepMerge(merged, readConfigFile(file));
  const fromEnv: Obj = {};
  for (const [name, spec] of Object.entries(ENV_VARS)) {
    const raw = env[name];
    if (raw !== undefined && raw !== '') setPath(fromEnv, spec.path, spec.parse(raw));
  }
  merged = deepMerge(merged, fromEnv);
  if (opts.overrides) merged = deepMerge(merged, opts.overrides);
  return parseConfig(merged);
}

/** Validates a raw config object (already merged). */
export function parseConfig(raw: unknown): Readonly<Config> {
  const res = ConfigSchema.safeParse(raw);
  if (!res.success) {
    const msgs = res.error.issues.map((i) => `config field \`${i.path.join('.') || '(root)'}\`: ${i.message}`);
    throw new ConfigError(msgs.join('; '));
  }
  // Raw topics live on a broker; without one they would be silently ignored.
  if (Object.keys(res.data.kafka.rawTopics).length > 0 && res.data.kafka.brokers.length === 0) {
    throw new ConfigError('config field `kafka.rawTopics`: needs `kafka.brokers` (raw shipper topics are read from Kafka)');
  }
  const topics = res.data.kafka.topics;
  for (const id of Object.keys(topics)) {
    if (!TOPIC_IDS.includes(id as TopicId)) {
      throw new ConfigError(`config field \`kafka.topics.${id}\`: unknown topic id (known: ${TOPIC_IDS.join(', ')})`);
    }
  }
  return deepFreeze(res.data);
}

/** True when the process should use Kafka rather than the in-process bus. */
export function isDistributed(cfg: Config): boolean {
  return cfg.kafka.brokers.length > 0;
}

/** Section types, for components that take only their part of the config. */
export type CollectorConfig = z.infer<typeof CollectorConfigSchema>;
export type EngineConfig = z.infer<typeof EngineConfigSchema>;
export type StorageConfig = z.infer<typeof StorageConfigSchema>;
export type BusConfig = z.infer<typeof BusConfigSchema>;
export type KafkaConfig = z.infer<typeof KafkaConfigSchema>;
export type ServiceConfig = z.infer<typeof ServiceConfigSchema>;
export type ApiConfig = z.infer<typeof ApiConfigSchema>;
export type AlertingConfig = z.infer<typeof AlertingConfigSchema>;
export type IncidentsConfig = z.infer<typeof IncidentsConfigSchema>;
export type DeliveryConfig = z.infer<typeof DeliveryConfigSchema>;
export type ChannelConfig = z.infer<typeof ChannelConfigSchema>;

/**
 * Flags Node took from `NODE_OPTIONS` (they are not in `process.execArgv`); for reports such as the
 * benchmark's, where V8 flags move the figures. Kept here because only this module reads the
 * environment.
 */
export function nodeOptionsFlags(): string[] {
  return (process.env.NODE_OPTIONS ?? '').split(/\s+/).filter((f) => f.length > 0);
}
