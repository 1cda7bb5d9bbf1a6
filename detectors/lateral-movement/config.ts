import { z } from 'zod';
import { DEFAULT_IDENTITY_REWRITES, IdentityRewriteSchema } from '../identity-rewrites.ts';
import { CapabilitySchema } from '../catalog/tool-catalog.ts';
import { EventSourceSchema } from '../../shared/event.ts';
import { SeveritySchema } from '../../shared/finding.ts';
import { parseCidr } from './network.ts';

/**
 * Policy section `detectors.lateral-movement`. Every threshold, allow-list and severity of the
 * detector lives here; each rule has its own sub-section keyed by the rule id, so a policy reads
 * like the findings it tunes:
 *
 * ```yaml
 * detectors:
 *   lateral-movement:
 *     credential-off-origin: { ipv4_prefix: 16, same_origin_cidrs: ["10.20.0.0/16"] }
 *     identity-new-service: { min_samples: 200 }
 * ```
 */

const cidr = z.string().refine((s) => parseCidr(s) !== undefined, { message: 'expected a CIDR block such as 10.0.0.0/16 or 2001:db8::/32' });

/** `credential-off-origin`: a credential used from somewhere other than where it was issued. */
export const OffOriginConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity of the finding. Default `high`: a session key replayed elsewhere is the classic stolen-credential signal. */
  severity: SeveritySchema.default('high'),
  /** Compare workload identities (SPIFFE ID / service account). Default true. */
  compare_workload: z.boolean().default(true),
  /** Compare host names. Default true. */
  compare_host: z.boolean().default(true),
  /** Compare source addresses by network. Default true. */
  compare_network: z.boolean().default(true),
  /** IPv4 addresses in the same network of this prefix length count as the same origin. Default 24 (a /24). */
  ipv4_prefix: z.number().int().min(0).max(32).default(24),
  /** IPv6 addresses in the same network of this prefix length count as the same origin. Default 64. */
  ipv6_prefix: z.number().int().min(0).max(128).default(64),
  /**
   * Blocks whose members all count as one origin (a VPC, a NAT pool, a node subnet), in addition
   * to the prefix grouping. Default none.
   */
  same_origin_cidrs: z.array(cidr).default([]),
  /** Use from an address inside these blocks is never off-origin (proxies, VPC endpoints). Default none. */
  allowed_source_cidrs: z.array(cidr).default([]),
  /**
   * Host names (globs, case-insensitive) that are not a client's origin: CloudTrail's `host` is the
   * AWS endpoint the client called. Default AWS endpoint domains.
   */
  ignore_hosts: z.array(z.string().min(1)).default(['*.amazonaws.com', '*.amazonaws.com.cn', '*.api.aws']),
  /**
   * Actors (globs) acting on a caller's behalf: an AWS service principal or `AWS Internal` as the
   * source means the call came from AWS's own network, not the caller's. Matched against
   * `principal` and the attributes named in `actor_attributes`. Default AWS service principals.
   */
  allowed_actors: z.array(z.string().min(1)).default(['*.amazonaws.com', 'AWS Internal']),
  /** Event attributes that name the acting service. Default CloudTrail's `userIdentity.invokedBy` and non-IP `sourceIPAddress`. */
  actor_attributes: z.array(z.string().min(1)).default(['userIdentity.invokedBy', 'sourceIPAddress']),
  /** At most this many findings per credential (one per mismatched origin value). Default 3. */
  max_findings_per_credential: z.number().int().positive().default(3),
});

/** `credential-outside-task`: a task's credential used by an event that states another task. */
export const OutsideTaskConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity. Default `high`: per-task credentials exist so one task cannot act as another. */
  severity: SeveritySchema.default('high'),
  /** Do not report use by a task the credential's task delegated to. Default true. */
  allow_delegated_tasks: z.boolean().default(true),
});

/** `identity-new-service`: an identity reaching a service or account outside its learned baseline. */
export const NewServiceConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity. Default `medium`: an anomaly, not proof of compromise (deployments add services). */
  severity: SeveritySchema.default('medium'),
  /** Events of the identity seen before its baseline is trusted. Default 50. */
  min_samples: z.number().int().positive().default(50),
  /** Event-time span the baseline must cover before it is trusted, ms. Default 3 600 000 (1 h). */
  min_baseline_ms: z.number().int().nonnegative().default(3_600_000),
  /** Compare the service (action prefix before `:`). Default true. */
  compare_services: z.boolean().default(true),
  /** Compare the resource account / namespace. Default true. */
  compare_accounts: z.boolean().default(true),
  /** Event sources whose actions are learned (agent tool calls all share the `tool` prefix). Default resource and workload. */
  sources: z.array(EventSourceSchema).default(['resource', 'workload']),
  /** Actions (globs) that never count: identity probes every SDK makes. Default `sts:GetCallerIdentity`. */
  ignore_actions: z.array(z.string().min(1)).default(['sts:GetCallerIdentity']),
  /** Rewrites applied to the identity before baselining. Default: strip STS session names. */
  identity_rewrites: z.array(IdentityRewriteSchema).default(DEFAULT_IDENTITY_REWRITES),
  /** Services + accounts remembered per identity (oldest forgotten beyond it). Default 256. */
  max_services_per_identity: z.number().int().positive().default(256),
});

/** `role-chaining`: a session credential used to obtain another, deeper than the policy allows. */
export const RoleChainingConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity. Default `medium`. */
  severity: SeveritySchema.default('medium'),
  /**
   * Allowed hops from a credential not itself issued in view (a long-term key, a workload's own
   * identity) through issued session credentials. Default 1: runtime role -> task role is the
   * usual pattern; a session obtained from a session obtained from a session is not.
   */
  max_depth: z.number().int().nonnegative().default(1),
  /** Severity when the chain crosses accounts (subject ARN account changes). Default `high`. */
  cross_account_severity: SeveritySchema.default('high'),
});

/** `delegation-widening`: a delegate reaching what the delegating task had not. */
export const DelegationWideningConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity. Default `medium`: delegating to do something the delegator cannot is sometimes the design. */
  severity: SeveritySchema.default('medium'),
  /** Severity when the delegate gains one of these capabilities. Default none (all `severity`). */
  high_capabilities: z.array(CapabilitySchema).default([]),
  /** How long after the delegation the delegate's events are compared, ms. Default 3 600 000 (1 h). */
  window_ms: z.number().int().positive().default(3_600_000),
  /** Capabilities (tool catalog) whose first appearance with the delegate counts as widening. Default all but plain reads. */
  capabilities: z.array(CapabilitySchema).default(['reads_secrets', 'writes', 'sends_external', 'executes_code', 'admin', 'spends_money']),
  /** Sensitive data classes whose first appearance counts. Default secret, credential, pii, financial. */
  data_classes: z.array(z.string().min(1)).default(['secret', 'credential', 'pii', 'financial']),
  /** Services (action prefix) and resource accounts not reached by the delegator count. Default true. */
  compare_services: z.boolean().default(true),
  /** Distinct resources the delegator never touched before this counts (0 = off). Default 10. */
  new_resources_threshold: z.number().int().nonnegative().default(10),
});

/** The detector's whole policy section. */
export const LateralMovementConfigSchema = z.strictObject({
  'credential-off-origin': OffOriginConfigSchema.prefault({}),
  'credential-outside-task': OutsideTaskConfigSchema.prefault({}),
  'identity-new-service': NewServiceConfigSchema.prefault({}),
  'role-chaining': RoleChainingConfigSchema.prefault({}),
  'delegation-widening': DelegationWideningConfigSchema.prefault({}),
  /** Issued credentials remembered (LRU, counted on eviction); read from the base policy. Default 100 000. */
  max_credentials: z.number().int().positive().default(100_000),
  /** Identity baselines kept (LRU); read from the base policy. Default 50 000. */
  max_identities: z.number().int().positive().default(50_000),
  /** Open delegations tracked (LRU); read from the base policy. Default 10 000. */
  max_delegations: z.number().int().positive().default(10_000),
});

/** Effective config of the lateral-movement detector. */
export type LateralMovementConfig = z.infer<typeof LateralMovementConfigSchema>;
