import { z } from 'zod';

/**
 * Identity rewrites, shared by the detectors that key state on an identity (blast radius per
 * identity, lateral movement's service baselines): an identity is rewritten before it is used as a
 * key, so per-task names collapse into the identity they belong to.
 */

/** A rewrite applied to an identity before it is used as a key. */
export const IdentityRewriteSchema = z.strictObject({
  /** JavaScript regular expression matched against the identity. */
  pattern: z
    .string()
    .min(1)
    .refine((s) => {
      try {
        new RegExp(s);
        return true;
      } catch {
        return false;
      }
    }, { message: 'expected a valid regular expression' }),
  /** Replacement (`$1` etc. refer to groups). */
  replacement: z.string(),
});
export type IdentityRewrite = z.infer<typeof IdentityRewriteSchema>;

/**
 * Default identity rewrites: an STS assumed-role ARN names its session
 * (`arn:aws:sts::111122223333:assumed-role/reader/task-42`); the session name differs per task,
 * so state is kept per role.
 */
export const DEFAULT_IDENTITY_REWRITES: IdentityRewrite[] = [{ pattern: '^(arn:[^:]+:sts::[^:]*:assumed-role/[^/]+)/.*$', replacement: '$1' }];

/** Compiled rewrites per (frozen, long-lived) config list, so each event does not recompile them. */
const compiledCache = new WeakMap<readonly IdentityRewrite[], Array<{ re: RegExp; replacement: string }>>();

/** Applies the rewrites to an identity, in order. */
export function rewriteIdentity(id: string, rewrites: readonly IdentityRewrite[]): string {
  let compiled = compiledCache.get(rewrites);
  if (!compiled) compiledCache.set(rewrites, (compiled = rewrites.map((r) => ({ re: new RegExp(r.pattern), replacement: r.replacement }))));
  let out = id;
  for (const r of compiled) out = out.replace(r.re, r.replacement);
  return out;
}
