/**
 * Every topic and table name lives here. Stages refer to logical topic ids; the physical Kafka
 * topic names come from config (`kafka.topics`), defaulting to the values below.
 */

/** Logical topic ids. */
export const TOPIC = {
  eventsAgent: 'events.agent',
  eventsWorkload: 'events.workload',
  eventsResource: 'events.resource',
  bindings: 'bindings',
  timeline: 'timeline',
  findings: 'findings',
  alerts: 'alerts',
  deadLetter: 'dead-letter',
} as const;
export type TopicId = (typeof TOPIC)[keyof typeof TOPIC];
export const TOPIC_IDS = Object.values(TOPIC) as TopicId[];

/** Ingest topics, one per event source. */
export const SOURCE_TOPIC = {
  agent: TOPIC.eventsAgent,
  workload: TOPIC.eventsWorkload,
  resource: TOPIC.eventsResource,
} as const;

/** Default physical topic names (prefixed so a shared cluster stays tidy). */
export const DEFAULT_TOPIC_NAMES: Readonly<Record<TopicId, string>> = Object.freeze({
  'events.agent': 'runtrail.events.agent',
  'events.workload': 'runtrail.events.workload',
  'events.resource': 'runtrail.events.resource',
  bindings: 'runtrail.bindings',
  timeline: 'runtrail.timeline',
  findings: 'runtrail.findings',
  alerts: 'runtrail.alerts',
  'dead-letter': 'runtrail.dead-letter',
});

/** ClickHouse tables. */
export const TABLE = {
  events: 'events',
  tasks: 'tasks',
  tasksMv: 'tasks_mv',
  bindings: 'bindings',
  findings: 'findings',
  alerts: 'alerts',
  deadLetters: 'dead_letters',
  migrations: 'schema_migrations',
  /** Alerter: one row per incident version (ReplacingMergeTree). */
  incidents: 'incidents',
  /** Alerter: the durable delivery outbox, one row per delivery version (ReplacingMergeTree). */
  alertOutbox: 'alert_outbox',
} as const;
export type TableName = (typeof TABLE)[keyof typeof TABLE];

/** Consumer group ids. */
export const GROUP = {
  correlator: 'runtrail-correlator',
  detector: 'runtrail-detector',
  alerter: 'runtrail-alerter',
} as const;
