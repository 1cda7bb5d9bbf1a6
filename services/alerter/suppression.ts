import { globToRegExp } from '../../shared/glob.ts';
import type { Finding } from '../../shared/finding.ts';
import type { Suppression } from '../../detectors/policy.ts';

/** Join keys whose values are identities a suppression's `identity` glob is matched against. */
const IDENTITY_KEYS = /credential|principal|workload|identity|subject|role/i;

interface CompiledSuppression {
  source: Suppression;
  detector?: RegExp;
  rule?: RegExp;
  agent?: RegExp;
  identity?: RegExp;
  resource?: RegExp;
}

/**
 * Decides whether a finding's notifications are muted by the policy's `suppressions`. Every
 * matcher a suppression gives must match; an expired suppression matches nothing. Pure: the
 * caller supplies the resources the finding's evidence touched.
 */
export class SuppressionMatcher {
  private readonly rules: CompiledSuppression[];

  constructor(suppressions: readonly Suppression[]) {
    const re = (g: string | undefined): RegExp | undefined => (g === undefined ? undefined : globToRegExp(g));
    this.rules = suppressions.map((s) => ({
      source: s,
      detector: re(s.detector),
      rule: re(s.rule),
      agent: re(s.agent),
      identity: re(s.identity),
      resource: re(s.resource),
    }));
  }

  /** True when no suppression is configured (the caller can skip resource lookups). */
  get empty(): boolean {
    return this.rules.length === 0;
  }

  /** True when some suppression has a resource pattern (needs the evidence's resources). */
  get needsResources(): boolean {
    return this.rules.some((r) => r.resource !== undefined);
  }

  /** The first live suppression matching the finding, or undefined. */
  match(f: Finding, resources: readonly string[], now: number): Suppression | undefined {
    for (const r of this.rules) {
      if (r.source.expires <= now) continue;
      if (r.detector && !r.detector.test(f.detector)) continue;
      if (r.rule && !r.rule.test(f.rule)) continue;
      if (r.agent && !r.agent.test(f.agent_id)) continue;
      if (r.identity && !identitiesOf(f).some((v) => r.identity?.test(v))) continue;
      if (r.resource && !resourcesOf(f, resources).some((v) => r.resource?.test(v))) continue;
      return r.source;
    }
    return undefined;
  }
}

function identitiesOf(f: Finding): string[] {
  const out = f.workload_id ? [f.workload_id] : [];
  for (const [k, v] of Object.entries(f.join_keys)) if (IDENTITY_KEYS.test(k)) out.push(v);
  return out;
}

function resourcesOf(f: Finding, resources: readonly string[]): string[] {
  const out = [...resources];
  for (const [k, v] of Object.entries(f.join_keys)) if (/resource/i.test(k)) out.push(v);
  return out;
}
