import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { deepMerge } from '../shared/config.ts';
import { RuntrailError } from '../shared/errors.ts';
import { globToRegExp } from '../shared/glob.ts';
import { RedactionPolicySchema } from '../shared/redaction.ts';
import { CatalogConfigSchema, ToolCatalog } from './catalog/tool-catalog.ts';
import type { Detector, DetectorInstance } from './detector.ts';
import { DetectorEngine, type EngineOptions } from './engine.ts';
import { DETECTORS } from './registry.ts';

/**
 * Policy as code: one YAML file holding every threshold, the tool catalog, sequences, allow-lists
 * and per-agent overrides. Every section has defaults, so an empty file (or none) is a valid policy.
 *
 * ```yaml
 * catalog:
 *   tools:
 *     - { match: "wire_*", capabilities: [spends_money, sends_external] }
 * detectors:
 *   blast-radius: { notify_score: 40 }
 * agents:
 *   "billing-*":                 # glob on the agent id (gen_ai.agent.id, else the agent name)
 *     detectors:
 *       blast-radius: { notify_score: 80 }
 * suppressions:                  # mute alerts (findings are still stored)
 *   - { detector: blast-radius, agent: "load-test-*", expires: "2026-12-31T00:00:00Z", reason: "load test" }
 * ```
 */

/** The policy file is invalid. */
export class PolicyError extends RuntrailError {
  constructor(message: string) {
    super('policy_invalid', message);
  }
}

type Obj = Record<string, unknown>;

function detectorSections(): z.ZodType<Record<string, unknown>> {
  const shape: Record<string, z.ZodType> = {};
  for (const d of DETECTORS) shape[d.meta.id] = (d.configSchema as z.ZodType).default((d.configSchema as z.ZodType).parse({}));
  return z.strictObject(shape) as unknown as z.ZodType<Record<string, unknown>>;
}

const epochOrIso = z.union([
  z.number().nonnegative(),
  z.string().datetime({ offset: true }).transform((v) => Date.parse(v)),
]);

/**
 * A suppression: mutes alert notifications for matching findings until `expires`. The findings are
 * still stored and still feed correlation and detectors; only the alerter reads this list. Every
 * matcher given must match (globs, case-insensitive); at least one is required.
 */
export const SuppressionSchema = z
  .strictObject({
    /** Glob on the detector id. */
    detector: z.string().min(1).optional(),
    /** Glob on the rule id. */
    rule: z.string().min(1).optional(),
    /** Glob on the agent id. */
    agent: z.string().min(1).optional(),
    /** Glob on an identity of the finding: workload id, or a credential / principal / workload join key. */
    identity: z.string().min(1).optional(),
    /** Glob on a resource the evidence touched (ARN, Vault path, URL, ...) or a `resource*` join key. */
    resource: z.string().min(1).optional(),
    /** When the suppression ends: RFC 3339 date-time or epoch ms. Required, so none is forgotten. */
    expires: epochOrIso,
    /** Why (shown in the CLI and logs). */
    reason: z.string().min(1),
  })
  .refine((s) => [s.detector, s.rule, s.agent, s.identity, s.resource].some((m) => m !== undefined), {
    message: 'give at least one of detector, rule, agent, identity, resource',
  });
export type Suppression = z.infer<typeof SuppressionSchema>;

/** Schema of the policy file (built from the detector registry). */
export function policySchema() {
  return z.strictObject({
    /** Policy format version. */
    version: z.literal(1).default(1),
    catalog: CatalogConfigSchema.default(CatalogConfigSchema.parse({})),
    detectors: detectorSections().default(detectorSections().parse({})),
    /** Per-agent overrides keyed by a glob on the agent id; merged over `detectors`. */
    agents: z
      .record(z.string().min(1), z.strictObject({ detectors: z.record(z.string(), z.record(z.string(), z.unknown())).default({}) }))
      .default({}),
    /** Secret redaction before storage (applied by the collectors, not by detectors). */
    redaction: RedactionPolicySchema.default(RedactionPolicySchema.parse({})),
    /** Alert suppressions (see {@link SuppressionSchema}); read by the alerter only. */
    suppressions: z.array(SuppressionSchema).default([]),
  });
}

/** A validated policy. */
export type Policy = z.infer<ReturnType<typeof policySchema>>;

function issuesToMessage(error: z.ZodError, where: string): string {
  return error.issues.map((i) => `${where}: field \`${i.path.join('.') || '(root)'}\`: ${i.message}`).join('; ');
}

/** Validates a policy object; per-agent overrides are checked against each detector's schema too. */
export function parsePolicy(raw: unknown, where = 'policy'): Policy {
  const res = policySchema().safeParse(raw ?? {});
  if (!res.success) throw new PolicyError(issuesToMessage(res.error, where));
  const policy = res.data;
  for (const [pattern, o] of Object.entries(policy.agents)) {
    for (const [id, over] of Object.entries(o.detectors)) {
      const d = DETECTORS.find((x) => x.meta.id === id);
      if (!d) throw new PolicyError(`${where}: field \`agents.${pattern}.detectors.${id}\`: unknown detector (known: ${DETECTORS.map((x) => x.meta.id).join(', ')})`);
      const merged = deepMerge((policy.detectors[id] ?? {}) as Obj, over);
      const r = (d.configSchema as z.ZodType).safeParse(merged);
      if (!r.success) throw new PolicyError(issuesToMessage(r.error, `${where}: agents.${pattern}.detectors.${id}`));
    }
  }
  return policy;
}

/** Reads a YAML (or JSON) policy file; no file = the defaults. */
export function loadPolicy(file?: string): Policy {
  if (!file) return parsePolicy({});
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new PolicyError(`cannot read policy file ${file}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new PolicyError(`policy file ${file} is not valid YAML: ${(err as Error).message}`);
  }
  return parsePolicy(raw ?? {}, file);
}

/**
 * Effective config of one detector for one agent: the policy's section with every matching
 * per-agent override merged over it (in file order). Results are cached per agent.
 */
export function configResolver<C>(policy: Policy, detector: Detector<C>): (agentId: string) => C {
  const base = detector.configSchema.parse(policy.detectors[detector.meta.id] ?? {});
  const overrides = Object.entries(policy.agents)
    .filter(([, o]) => o.detectors[detector.meta.id])
    .map(([pattern, o]) => ({ re: globToRegExp(pattern), over: o.detectors[detector.meta.id] as Obj }));
  if (overrides.length === 0) return () => base;
  const cache = new Map<string, C>();
  return (agentId: string) => {
    const hit = cache.get(agentId);
    if (hit) return hit;
    let merged = policy.detectors[detector.meta.id] as Obj;
    for (const o of overrides) if (o.re.test(agentId)) merged = deepMerge(merged, o.over);
    const c = detector.configSchema.parse(merged);
    if (cache.size < 10_000) cache.set(agentId, c);
    return c;
  };
}

/**
 * Builds the detector engine for a policy: every registered detector, configured by it.
 * @param secretMarker The collector's redaction marker function, when secrets are redacted.
 */
export function createDetectorEngine(policy: Policy, opts: EngineOptions, secretMarker?: (value: string) => string): DetectorEngine {
  const catalog = new ToolCatalog(policy.catalog);
  const ctx = { catalog, ...(secretMarker ? { secretMarker } : {}) };
  const instances: DetectorInstance[] = DETECTORS.map((d) => (d as Detector<unknown>).create(configResolver(policy, d as Detector<unknown>), ctx));
  return new DetectorEngine(instances, opts, DETECTORS.map((d) => d.meta.id));
}
