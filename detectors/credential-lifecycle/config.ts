import { z } from 'zod';
import { SeveritySchema } from '../../shared/finding.ts';

/**
 * Policy section `detectors.credential-lifecycle`: one sub-section per rule (keyed by the rule
 * id) plus the shared clock-skew allowance and state sizes.
 *
 * ```yaml
 * detectors:
 *   credential-lifecycle:
 *     clock_skew_ms: 60000
 *     long-lived-credential: { max_lifetime_ms: 3600000 }
 *     shared-credential: { ignore_credentials: ["AKIACIBUILD*"] }
 * ```
 */

const regex = z.string().refine((s) => {
  try {
    new RegExp(s);
    return true;
  } catch {
    return false;
  }
}, { message: 'expected a valid regular expression' });

/** `use-after-task-end`: a task's credential used after the task ended. */
export const UseAfterTaskEndConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity when the use succeeded. Default `high`: a per-task credential has no business outliving its task. */
  severity: SeveritySchema.default('high'),
  /** Severity when the use was refused (the credential still circulates, but did not work). Default `medium`. */
  failed_use_severity: SeveritySchema.default('medium'),
  /**
   * Time after the task's end (event time) during which use is still normal: in-flight requests,
   * SDK retries, buffered uploads, ms. Default 120 000 (2 min).
   */
  grace_ms: z.number().int().nonnegative().default(120_000),
  /**
   * For tasks that closed without an end event (idle): a late event (arrived after the task closed)
   * this long after the task's last event counts as use after the end, ms. Default 1 800 000 (30 min,
   * the correlator's idle close).
   */
  idle_end_ms: z.number().int().nonnegative().default(1_800_000),
  /** Severity of the idle-closed case (the end is inferred, not stated). Default `medium`. */
  idle_severity: SeveritySchema.default('medium'),
});

/** `use-after-revoke`: a credential used after its revocation. */
export const UseAfterRevokeConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity when the use succeeded. Default `high`: revocation did not take, or the log lies. */
  severity: SeveritySchema.default('high'),
  /** Severity when the use was refused. Default `medium`: someone still holds a revoked credential. */
  failed_use_severity: SeveritySchema.default('medium'),
});

/** `use-after-expiry`: a credential used after it expired. */
export const UseAfterExpiryConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity when the use succeeded. Default `high`: an expired credential that still works is not the one issued. */
  severity: SeveritySchema.default('high'),
  /**
   * Severity when the use was refused. Default `low`: SDKs routinely send one request with a
   * just-expired session before refreshing it.
   */
  failed_use_severity: SeveritySchema.default('low'),
});

/** `long-lived-credential`: credentials with no issuance seen, or issued for longer than allowed. */
export const LongLivedConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity of an agent or workload using a credential with no issuance seen. Default `medium`. */
  severity: SeveritySchema.default('medium'),
  /**
   * Credential ids that are long-term by construction (regular expressions). Default AWS IAM user
   * access keys (`AKIA` + 16 characters); STS session keys start with `ASIA`.
   */
  long_term_id_patterns: z.array(regex).default(['^AKIA[A-Z0-9]{16}$']),
  /** Longest acceptable lifetime at issuance (expiry - issue time), ms. Default 43 200 000 (12 h, the STS maximum). */
  max_lifetime_ms: z.number().int().positive().default(43_200_000),
  /** Severity of an issuance over `max_lifetime_ms`. Default `low`: hygiene, not an attack. */
  lifetime_severity: SeveritySchema.default('low'),
  /** Credential ids (globs) never reported by this rule. Default none. */
  ignore_credentials: z.array(z.string().min(1)).default([]),
});

/** `shared-credential`: one credential used by several agents or tasks. */
export const SharedCredentialConfigSchema = z.strictObject({
  /** Rule on/off. Default true. */
  enabled: z.boolean().default(true),
  /** Severity. Default `medium`: shared service keys exist; per-task credentials shared across agents are the risk. */
  severity: SeveritySchema.default('medium'),
  /** Distinct agents allowed per credential; one more is reported. Default 1. */
  max_agents: z.number().int().positive().default(1),
  /** Distinct tasks allowed per credential (synthetic session tasks excluded); one more is reported. Default 1. */
  max_tasks: z.number().int().positive().default(1),
  /**
   * Count minting a child credential (STS AssumeRole with this key) as use. Default false: a
   * runtime's own session assumes a role per task by design.
   */
  count_minting: z.boolean().default(false),
  /**
   * Count a task that another task delegated to (`agent.delegation` with `to_task_id`) as its
   * delegating task: handing work and its credential to a sub-task is one unit of work. Default true.
   */
  follow_delegations: z.boolean().default(true),
  /** Credential ids (globs) never reported by this rule. Default none. */
  ignore_credentials: z.array(z.string().min(1)).default([]),
});

/** The detector's whole policy section. */
export const CredentialLifecycleConfigSchema = z.strictObject({
  /** Allowance for clock differences between log sources, ms (added to expiry and revocation times). Default 30 000. */
  clock_skew_ms: z.number().int().nonnegative().default(30_000),
  'use-after-task-end': UseAfterTaskEndConfigSchema.prefault({}),
  'use-after-revoke': UseAfterRevokeConfigSchema.prefault({}),
  'use-after-expiry': UseAfterExpiryConfigSchema.prefault({}),
  'long-lived-credential': LongLivedConfigSchema.prefault({}),
  'shared-credential': SharedCredentialConfigSchema.prefault({}),
  /** Credentials tracked (LRU, counted on eviction); read from the base policy. Default 100 000. */
  max_credentials: z.number().int().positive().default(100_000),
  /** Tasks tracked (end times, credentials, last activity; LRU); read from the base policy. Default 100 000. */
  max_tasks: z.number().int().positive().default(100_000),
});

/** Effective config of the credential-lifecycle detector. */
export type CredentialLifecycleConfig = z.infer<typeof CredentialLifecycleConfigSchema>;
