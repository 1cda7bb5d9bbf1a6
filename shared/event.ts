import { z } from 'zod';

/**
 * The canonical event model. Every collector adapter turns its source records into these, and
 * every later stage (correlator, storage, detectors) reads only these. Field names are snake_case
 * because they map one-to-one onto ClickHouse columns and Runtrail's own JSON event format.
 */

/** Where an event comes from: the agent itself, the workload it runs in, or a resource it touched. */
export const EVENT_SOURCES = ['agent', 'workload', 'resource'] as const;
export const EventSourceSchema = z.enum(EVENT_SOURCES);
export type EventSource = z.infer<typeof EventSourceSchema>;

/** Event types. Constants, so no stage spells them as string literals. */
export const EVENT_TYPE = {
  taskStarted: 'task.started',
  taskEnded: 'task.ended',
  modelCall: 'model.call',
  toolCall: 'tool.call',
  agentDelegation: 'agent.delegation',
  credentialIssued: 'credential.issued',
  credentialUsed: 'credential.used',
  credentialRevoked: 'credential.revoked',
  credentialExpired: 'credential.expired',
  processActivity: 'process.activity',
  networkActivity: 'network.activity',
  resourceAccess: 'resource.access',
} as const;
export const EVENT_TYPES = Object.values(EVENT_TYPE) as [EventType, ...EventType[]];
export type EventType = (typeof EVENT_TYPE)[keyof typeof EVENT_TYPE];
export const EventTypeSchema = z.enum(EVENT_TYPES);

/** Input formats the collectors understand; recorded on each event for provenance. */
export const INGEST_FORMATS = ['otlp-traces', 'otlp-logs', 'cloudtrail', 'vault', 'k8s-audit', 'falco', 'spire', 'runtrail'] as const;
export const IngestFormatSchema = z.enum(INGEST_FORMATS);
export type IngestFormat = z.infer<typeof IngestFormatSchema>;

/** Outcome of the action an event describes. */
export const OutcomeSchema = z.enum(['success', 'failure', 'unknown']);
export type Outcome = z.infer<typeof OutcomeSchema>;

/** Data sensitivity of what the action touched, lowest to highest. */
export const SENSITIVITY_LEVELS = ['unknown', 'public', 'internal', 'confidential', 'restricted'] as const;
export const SensitivitySchema = z.enum(SENSITIVITY_LEVELS);
export type Sensitivity = z.infer<typeof SensitivitySchema>;

/** Kinds of short-lived (or long-lived) credentials the correlator binds to tasks. */
export const CREDENTIAL_KINDS = [
  'aws-access-key',
  'vault-token',
  'vault-lease',
  'x509-svid',
  'jwt-svid',
  'jwt',
  'k8s-token',
  'api-key',
  'other',
] as const;
export const CredentialKindSchema = z.enum(CREDENTIAL_KINDS);
export type CredentialKind = z.infer<typeof CredentialKindSchema>;

const optStr = z.string().min(1).optional();

/**
 * Latest instant an event may carry, epoch ms: 2299-12-31 23:59:59.999999 UTC, the end of the
 * range of ClickHouse's DateTime64 columns. A later time could never be stored (the insert would
 * fail for its whole batch), so it is refused at the edge, with the record and field named.
 */
export const MAX_EVENT_TIME_MS = Date.UTC(2299, 11, 31, 23, 59, 59, 999) + 0.999;

/** Reason given for an epoch-ms time outside 0..{@link MAX_EVENT_TIME_MS}. */
export const EVENT_TIME_RANGE = `expected epoch milliseconds from 0 to ${MAX_EVENT_TIME_MS} (year 2299)`;

/** An instant the store can hold, epoch ms (fractional part carries sub-millisecond precision). */
const epochMs = z.number().finite().nonnegative().max(MAX_EVENT_TIME_MS, { error: EVENT_TIME_RANGE });

/** A resource an action touched (an ARN, a Vault path, a Kubernetes object, a URL, a file). */
export const ResourceRefSchema = z.object({
  /** Resource type, e.g. `AWS::S3::Object`, `k8s/secrets`, `vault/path`, `file`. */
  type: optStr,
  /** Stable identifier: ARN, Vault path, `namespace/kind/name`, URL, file path. */
  id: z.string().min(1),
  /** Owning account or namespace, when known. */
  account: optStr,
});
export type ResourceRef = z.infer<typeof ResourceRefSchema>;

/** Tool invocation details (OpenTelemetry GenAI `execute_tool`, MCP `tools/call`). */
export const ToolInfoSchema = z.object({
  name: z.string().min(1),
  call_id: optStr,
  /** Raw arguments as the agent sent them (usually a JSON string). */
  arguments: z.string().optional(),
  /** Raw result text returned to the agent. */
  result: z.string().optional(),
  /** Error type or message when the tool failed. */
  error: optStr,
  /** MCP tool annotations when present (`readOnlyHint`, `destructiveHint`, `openWorldHint`, ...). */
  annotations: z.record(z.string(), z.boolean()).optional(),
  /** MCP server or tool provider, when known. */
  server: optStr,
});
export type ToolInfo = z.infer<typeof ToolInfoSchema>;

/** Model call / prompt details. Message fields are the serialized message arrays as received. */
export const ModelInfoSchema = z.object({
  name: optStr,
  provider: optStr,
  input_tokens: z.number().int().nonnegative().optional(),
  output_tokens: z.number().int().nonnegative().optional(),
});
export type ModelInfo = z.infer<typeof ModelInfoSchema>;

/** Texts carried by agent events: system instructions, the user's request, model output. */
export const MessagesSchema = z.object({
  system: z.string().optional(),
  input: z.string().optional(),
  output: z.string().optional(),
});
export type Messages = z.infer<typeof MessagesSchema>;

/** A credential being issued, revoked or expiring (on `credential.*` events). */
export const CredentialInfoSchema = z.object({
  /** The credential's stable id: access key id, lease id, token accessor, SVID serial, JWT id. */
  id: z.string().min(1),
  kind: CredentialKindSchema,
  /** Credential that was used to obtain this one (role chaining, child tokens). */
  parent_id: optStr,
  /** Issued-to subject: role session ARN, SPIFFE ID, Vault entity. */
  subject: optStr,
  /** STS role session name. */
  session_name: optStr,
  /** Session tags / token metadata attached at issuance. */
  tags: z.record(z.string(), z.string()).optional(),
  /** Epoch ms when the credential expires, when known (0..{@link MAX_EVENT_TIME_MS}). */
  expires_at: epochMs.optional(),
});
export type CredentialInfo = z.infer<typeof CredentialInfoSchema>;

/** Process activity (Falco and similar runtime sensors). */
export const ProcessInfoSchema = z.object({
  pid: z.number().int().optional(),
  name: optStr,
  cmdline: z.string().optional(),
  exe: optStr,
  parent: optStr,
  user: optStr,
  container_id: optStr,
});

/** Network activity. */
export const NetworkInfoSchema = z.object({
  dst_ip: optStr,
  dst_port: z.number().int().min(0).max(65535).optional(),
  src_port: z.number().int().min(0).max(65535).optional(),
  protocol: optStr,
  direction: z.enum(['inbound', 'outbound', 'unknown']).optional(),
});

/** Agent-to-agent delegation. */
export const DelegationInfoSchema = z.object({
  to_agent_id: optStr,
  to_agent_name: optStr,
  to_task_id: optStr,
});

/** Original attribute values are kept verbatim (strings, numbers, booleans, nested JSON). */
export const AttributesSchema = z.record(z.string(), z.unknown());

/**
 * A canonical event, as produced by a collector adapter (not yet resolved to a task unless the
 * source record states its task).
 */
export const CanonicalEventSchema = z.object({
  /** Deterministic id derived from the source record (32 hex chars): a replay maps to the same id. */
  event_id: z.string().regex(/^[0-9a-f]{32}$/, 'expected 32 lowercase hex characters'),
  source: EventSourceSchema,
  type: EventTypeSchema,
  /** Event time, epoch milliseconds (fractional part carries micro/nanosecond precision). */
  time: epochMs,
  /** End of the action for spans, epoch ms. */
  end_time: epochMs.optional(),
  /** Adapter that produced the event. */
  format: IngestFormatSchema,

  // Correlation keys.
  /** Task id when the source record states it (agent events; session tags). */
  task_id: optStr,
  agent_id: optStr,
  agent_name: optStr,
  /** Workload identity: a SPIFFE ID where available, else a Kubernetes service account / pod. */
  workload_id: optStr,
  /** Credential used to perform this action (access key id, token accessor, lease id, JWT id). */
  credential_id: optStr,
  trace_id: optStr,
  span_id: optStr,
  parent_span_id: optStr,
  /** Request id shared between a tool span and the resource's own log (e.g. CloudTrail requestID). */
  request_id: optStr,
  session_id: optStr,

  // What happened.
  /** Who acted: ARN, user name, service account, SPIFFE ID. */
  principal: optStr,
  /** The action, e.g. `s3:GetObject`, `tool:send_money`, `vault:read`, `k8s:get`. */
  action: optStr,
  /** Resources touched; the first is the primary one. */
  resources: z.array(ResourceRefSchema).default([]),
  outcome: OutcomeSchema.default('unknown'),
  sensitivity: SensitivitySchema.default('unknown'),
  /** Sensitive data classes involved (e.g. `secret`, `pii`, `financial`). */
  data_classes: z.array(z.string().min(1)).default([]),
  src_ip: optStr,
  host: optStr,
  user_agent: optStr,

  // Type-specific details.
  tool: ToolInfoSchema.optional(),
  model: ModelInfoSchema.optional(),
  messages: MessagesSchema.optional(),
  credential: CredentialInfoSchema.optional(),
  process: ProcessInfoSchema.optional(),
  network: NetworkInfoSchema.optional(),
  delegation: DelegationInfoSchema.optional(),

  /** Original attributes of the source record, kept for analysts and detectors. */
  attributes: AttributesSchema.default({}),
  /** Epoch ms when the collector accepted the record (set by the collector, not by adapters). */
  ingested_at: epochMs.optional(),
});
/** A canonical event after validation (defaults applied). */
export type CanonicalEvent = z.infer<typeof CanonicalEventSchema>;
/** A canonical event as an adapter may build it (defaulted fields optional). */
export type CanonicalEventInput = z.input<typeof CanonicalEventSchema>;

/** How the correlator attributed an event to its task. */
export const ATTRIBUTIONS = ['direct', 'trace', 'credential', 'request', 'workload', 'session', 'unattributed'] as const;
export const AttributionSchema = z.enum(ATTRIBUTIONS);
export type Attribution = z.infer<typeof AttributionSchema>;

/** A canonical event resolved to its task: what the timeline topic and `events` table hold. */
export const TimelineEventSchema = CanonicalEventSchema.extend({
  /** Resolved task id; `''` when unattributed. */
  task_id: z.string(),
  attribution: AttributionSchema,
  /** The key value that joined this event to its task (credential id, request id, ...). */
  join_key: z.string().default(''),
  /** Why the event could not be attributed (only when `attribution` is `unattributed`). */
  unattributed_reason: z.string().default(''),
  /** Epoch ms when the collector accepted the event (for arrival-to-stored latency). */
  ingested_at: z.number().nonnegative(),
  /** True when the event arrived after its task had closed (still stored, still evaluated). */
  late: z.boolean().default(false),
});
export type TimelineEvent = z.infer<typeof TimelineEventSchema>;

/**
 * A control record on the timeline topic: the correlator closed this task (its end plus the
 * linger, or its idle timeout). In distributed mode the correlator publishes it after the task's
 * events, keyed by the task id, so it follows them on the task's partition; the detector service
 * then runs close-time rules (absence windows) and releases the task's state. The embedded
 * pipeline on its in-process bus calls the detector stage directly and publishes none.
 */
export const TaskClosedMarkerSchema = z.strictObject({
  control: z.literal('task_closed'),
  task_id: z.string().min(1),
});
export type TaskClosedMarker = z.infer<typeof TaskClosedMarkerSchema>;

/** What the timeline topic carries: resolved events, and task-closed markers. */
export const TimelineMessageSchema = z.union([TimelineEventSchema, TaskClosedMarkerSchema]);
export type TimelineMessage = z.infer<typeof TimelineMessageSchema>;

/** True for a task-closed marker, false for an event. */
export function isTaskClosedMarker(m: TimelineMessage): m is TaskClosedMarker {
  return 'control' in m;
}

/** A credential bound to a task and workload (the `bindings` table and compacted topic). */
export const CredentialBindingSchema = z.object({
  credential_id: z.string().min(1),
  kind: CredentialKindSchema,
  task_id: z.string(),
  agent_id: z.string().default(''),
  workload_id: z.string().default(''),
  principal: z.string().default(''),
  subject: z.string().default(''),
  session_name: z.string().default(''),
  parent_credential_id: z.string().default(''),
  /** Epoch ms. */
  issued_at: z.number().nonnegative(),
  /** Epoch ms, 0 when unknown. */
  expires_at: z.number().nonnegative().default(0),
  /** Epoch ms, 0 while not revoked. */
  revoked_at: z.number().nonnegative().default(0),
  src_ip: z.string().default(''),
  host: z.string().default(''),
  /** Event that issued (or last changed) the credential. */
  event_id: z.string(),
  /** How the task was determined: `tag`, `session_name`, `parent`, `request`, `caller`, `session`. */
  bound_by: z.string().default(''),
});
export type CredentialBinding = z.infer<typeof CredentialBindingSchema>;

/** A stored tool call of an earlier task: what detectors rebuild per-agent baselines from at start. */
export interface ToolCallRecord {
  task_id: string;
  agent_id: string;
  /** Epoch ms. */
  time: number;
  tool: string;
}
