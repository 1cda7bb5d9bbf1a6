import { z } from 'zod';
import { DEFAULT_IDENTITY_REWRITES, IdentityRewriteSchema } from '../identity-rewrites.ts';
import { CapabilitySchema } from '../catalog/tool-catalog.ts';
import { EventSourceSchema } from '../../shared/event.ts';

/**
 * Policy section `detectors.blast-radius`: weights of what a task or identity has reached, the
 * thresholds that escalate notify (medium) -> approval_required (high) -> contain (critical), and
 * how read vs state-changing actions are told apart.
 *
 * ```yaml
 * detectors:
 *   blast-radius:
 *     weights: { resource: 1, data_classes: { pii: 8 } }
 *     task: { notify: 60, approval: 150, contain: 300 }
 * agents:
 *   "etl-*":
 *     detectors:
 *       blast-radius: { identity: { notify: 400, approval: 800, contain: 1600 } }
 * ```
 *
 * Defaults are set so that a benign agent task (a few records read, a message sent) stays below
 * `notify`, and `approval` needs either broad reach (dozens of resources), several sensitive data
 * classes with writes, or privileged (admin / IAM) changes.
 */

/** Score weights. Each distinct item counts once per window. */
export const WeightsSchema = z.strictObject({
  /** Per distinct resource touched (successfully or with unknown outcome). Default 2. */
  resource: z.number().nonnegative().default(2),
  /** Per distinct sensitive data class, by class. Default secret 10, credential 10, pii 5, phi 5, financial 5. */
  data_classes: z.record(z.string().min(1), z.number().nonnegative()).default({ secret: 10, credential: 10, pii: 5, phi: 5, financial: 5 }),
  /** Per distinct data class not listed in `data_classes`. Default 1. */
  other_data_class: z.number().nonnegative().default(1),
  /** Per distinct state-changing operation (action + target). Default 3. */
  state_change: z.number().nonnegative().default(3),
  /** Per distinct privileged (admin / IAM) state-changing action. Default 10. */
  privileged: z.number().nonnegative().default(10),
  /**
   * Extra weight per distinct state-changing operation with a tool capability (tool catalog).
   * Default spends_money 10, executes_code 5, sends_external 2.
   */
  capabilities: z.partialRecord(CapabilitySchema, z.number().nonnegative()).default({ spends_money: 10, executes_code: 5, sends_external: 2 }),
});

/** Thresholds must escalate. */
const ascending = (l: { notify: number; approval: number; contain: number }) => l.notify < l.approval && l.approval < l.contain;
const ASCENDING_MESSAGE = { message: 'thresholds must increase: notify < approval < contain' };

/** Per-task scoring thresholds. */
export const TaskScopeSchema = z
  .strictObject({
    /** Score tasks. Default true. */
    enabled: z.boolean().default(true),
    /** Score at which a `medium` finding asks someone to look (notify). Default 50. */
    notify: z.number().positive().default(50),
    /**
     * Score at which a `high` finding asks for approval before more is done (approval_required).
     * Default 100: benign AgentDojo banking/slack tasks peak near 75 (a dozen messages, a few
     * membership changes).
     */
    approval: z.number().positive().default(100),
    /** Score at which a `critical` finding asks to stop the task (contain). Default 200. */
    contain: z.number().positive().default(200),
  })
  .refine(ascending, ASCENDING_MESSAGE);

/** Per-identity scoring (workload id, else principal), across tasks. */
export const IdentityScopeSchema = z
  .strictObject({
    /** Score identities. Default true. */
    enabled: z.boolean().default(true),
    /**
     * Score for `notify` (medium). Default 200: an identity spans many tasks, and a batch role
     * reading a hundred objects an hour is routine.
     */
    notify: z.number().positive().default(200),
    /** Score for `approval_required` (high). Default 400. */
    approval: z.number().positive().default(400),
    /** Score for `contain` (critical). Default 800. */
    contain: z.number().positive().default(800),
    /**
     * Sources whose events count toward an identity. Default resource and workload: agent spans
     * share one agent id across every task that agent runs, which is the task scope's business.
     */
    sources: z.array(EventSourceSchema).default(['resource', 'workload']),
    /** Rewrites applied to the identity (regex pattern, replacement): STS session names differ per task, the role does not. */
    identity_rewrites: z
      .array(IdentityRewriteSchema)
      .default(DEFAULT_IDENTITY_REWRITES),
  })
  .refine(ascending, ASCENDING_MESSAGE);

/** The detector's whole policy section. */
export const BlastRadiusConfigSchema = z.strictObject({
  /** Rolling window (event time) over which items count, ms. Default 3 600 000 (1 h). */
  window_ms: z.number().int().positive().default(3_600_000),
  weights: WeightsSchema.prefault({}),
  task: TaskScopeSchema.prefault({}),
  identity: IdentityScopeSchema.prefault({}),
  /**
   * Event attribute that states whether an action was read-only (CloudTrail `readOnly`); it decides
   * when present. Default `readOnly`.
   */
  read_only_attribute: z.string().min(1).default('readOnly'),
  /** First words of read actions (`s3:GetObject` -> `get`). */
  read_verbs: z
    .array(z.string().min(1))
    .default(['get', 'list', 'describe', 'head', 'read', 'search', 'query', 'scan', 'lookup', 'select', 'view', 'watch', 'check', 'filter', 'fetch', 'find', 'show', 'estimate', 'validate', 'preview', 'decrypt', 'verify', 'assume', 'generate', 'options', 'login']),
  /** First words of state-changing actions. */
  write_verbs: z
    .array(z.string().min(1))
    .default([
      'create', 'put', 'update', 'delete', 'remove', 'patch', 'post', 'insert', 'upsert', 'write', 'set', 'add', 'attach', 'detach', 'modify',
      'start', 'stop', 'terminate', 'run', 'send', 'invoke', 'publish', 'enable', 'disable', 'associate', 'disassociate', 'authorize', 'revoke',
      'reboot', 'restore', 'copy', 'import', 'export', 'tag', 'untag', 'upload', 'reset', 'register', 'deregister', 'change', 'replace', 'rotate',
      'schedule', 'cancel', 'grant', 'bind', 'escalate', 'impersonate', 'approve', 'deletecollection', 'share', 'transfer', 'drop', 'truncate', 'merge',
    ]),
  /** Whether actions whose verb is in neither list change state. Default false (they count as reads). */
  unknown_verbs_change_state: z.boolean().default(false),
  /** Privileged actions (globs on `service:Action`, case-insensitive), when they change state. */
  privileged_actions: z
    .array(z.string().min(1))
    .default([
      'iam:*', 'organizations:*', 'sso:*', 'sso-admin:*', 'identitystore:*', 'cloudtrail:*', 'kms:PutKeyPolicy', 'kms:CreateGrant',
      's3:PutBucketPolicy', 's3:PutBucketAcl', 's3:DeleteBucketPolicy', 'lambda:AddPermission', 'ec2:ModifyInstanceAttribute',
      'k8s:bind', 'k8s:escalate', 'k8s:impersonate',
    ]),
  /** Privileged targets (globs on resource type or id), when a state-changing action touches them. */
  privileged_resources: z
    .array(z.string().min(1))
    .default(['k8s/roles', 'k8s/rolebindings', 'k8s/clusterroles', 'k8s/clusterrolebindings', 'k8s/serviceaccounts/token', 'sys/policies/*', 'sys/policy/*', 'sys/auth/*', 'sys/mounts/*', 'auth/*/role/*', 'identity/*']),
  /** Count actions whose outcome is unknown (agent spans without status). Default true. */
  count_unknown_outcome: z.boolean().default(true),
  /** Evidence events listed per finding (the heaviest contributions first). Default 25. */
  max_evidence: z.number().int().positive().default(25),
  /** Distinct items remembered per task or identity and kind (LRU, counted); read from the base policy. Default 1 000. */
  max_items_per_scope: z.number().int().positive().default(1_000),
  /**
   * Open tasks + identities scored at once (LRU, counted); read from the base policy. A closed task's
   * scope moves to the `max_closed_tasks` buffer. Default 20 000.
   */
  max_scopes: z.number().int().positive().default(20_000),
  /**
   * Closed tasks whose scope is still kept, for events delivered after the task closed (late
   * events); the oldest closed go first, which is not reported as lost state. Read from the base
   * policy. Default 2 000.
   */
  max_closed_tasks: z.number().int().positive().default(2_000),
});

/** Effective config of the blast-radius detector. */
export type BlastRadiusConfig = z.infer<typeof BlastRadiusConfigSchema>;
