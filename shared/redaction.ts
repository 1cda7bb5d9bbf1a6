import { createHmac } from 'node:crypto';
import { z } from 'zod';
import type { CanonicalEvent } from './event.ts';

/**
 * Secret redaction before storage. Credential-looking values in tool arguments and results,
 * messages, process command lines and attributes (headers included) are replaced by
 * `[REDACTED:hmac:<hash>]`, where `<hash>` is the first 16 hex digits of HMAC-SHA256(key, secret):
 * the same secret gives the same marker, so it still correlates across events (and detectors that
 * follow values from one tool call to the next still see them match), but the clear value is never
 * published or stored. Credential ids (AWS access key ids, lease ids, token accessors) are
 * correlation keys, not secrets, and are kept.
 */

/** Names of fields whose whole (string) value is a secret, compared after normalising (see {@link normaliseKey}). */
export const DEFAULT_SECRET_FIELDS = [
  'password',
  'passwd',
  'passphrase',
  'secret',
  'client_secret',
  'secret_access_key',
  'secret_key',
  'token',
  'session_token',
  'access_token',
  'refresh_token',
  'id_token',
  'api_key',
  'apikey',
  'x_api_key',
  'private_key',
  'authorization',
  'proxy_authorization',
  'cookie',
  'set_cookie',
  'credentials',
  'connection_string',
] as const;

/** The policy file's `redaction` section. */
export const RedactionPolicySchema = z.strictObject({
  /** Redact at all. Default true. */
  enabled: z.boolean().default(true),
  /**
   * Field names (in JSON arguments/results and attributes) whose string value is redacted whole.
   * A key matches a name when, lower-cased with camelCase, `-` and `.` turned into `_`, it equals
   * the name or ends with `_<name>`. Default {@link DEFAULT_SECRET_FIELDS}; set to extend or replace.
   */
  field_names: z.array(z.string().min(1)).default([...DEFAULT_SECRET_FIELDS]),
  /** Extra patterns (JavaScript regular expressions); each whole match is redacted. */
  patterns: z
    .array(
      z.strictObject({
        /** Name of the format, e.g. `internal-token`. */
        name: z.string().regex(/^[a-z0-9-]+$/, 'lowercase letters, digits and dashes'),
        regex: z.string().min(1).refine((r) => {
          try {
            new RegExp(r, 'g');
            return true;
          } catch {
            return false;
          }
        }, 'not a valid regular expression'),
      }),
    )
    .default([]),
});
export type RedactionPolicy = z.infer<typeof RedactionPolicySchema>;

/** What a redactor needs; plain data, so it can be handed to parse workers. */
export interface RedactorOptions {
  /** HMAC key. */
  key: string;
  policy: RedactionPolicy;
}

/** A pattern: `kind` names the format (documentation, tests); `group` is the capture group holding the secret (0 = the whole match). */
interface Pattern {
  kind: string;
  re: RegExp;
  group: number;
}

/** Marker prefix; text already redacted is never redacted again. */
const MARK = '[REDACTED:';
const NOT_MARKED = '(?!\\[REDACTED:)';

/** Built-in formats, most specific first. */
export const BUILTIN_PATTERNS: readonly Pattern[] = [
  { kind: 'private-key', re: /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----/g, group: 0 },
  { kind: 'jwt', re: /\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g, group: 0 },
  { kind: 'github-token', re: /\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b/g, group: 0 },
  { kind: 'slack-token', re: /\bxox[abposre]-[A-Za-z0-9-]{10,}/g, group: 0 },
  { kind: 'slack-webhook', re: /https:\/\/hooks\.slack\.com\/services\/[A-Za-z0-9/_-]{20,}/g, group: 0 },
  { kind: 'stripe-key', re: /\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b/g, group: 0 },
  { kind: 'openai-key', re: /\bsk-(?:proj-|svcacct-|admin-|ant-(?:api\d+-)?)?[A-Za-z0-9_-]{20,}/g, group: 0 },
  { kind: 'google-api-key', re: /\bAIza[0-9A-Za-z_-]{35}\b/g, group: 0 },
  { kind: 'vault-token', re: /\bhv[sbr]\.[A-Za-z0-9_-]{20,}/g, group: 0 },
  { kind: 'npm-token', re: /\bnpm_[A-Za-z0-9]{36}\b/g, group: 0 },
  {
    kind: 'aws-secret-key',
    re: /(?:aws_?secret_?access_?key|secret_?access_?key|aws_?secret_?key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])/gi,
    group: 1,
  },
  { kind: 'aws-session-token', re: /(?:aws_?session_?token|session_?token|x-amz-security-token)["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{100,})/gi, group: 1 },
  { kind: 'bearer', re: new RegExp(`\\bBearer\\s+${NOT_MARKED}(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])([A-Za-z0-9._~+/=-]{8,})`, 'gi'), group: 1 },
  { kind: 'basic-auth', re: new RegExp(`authorization["']?\\s*[:=]\\s*["']?Basic\\s+${NOT_MARKED}([A-Za-z0-9+/=]{8,})`, 'gi'), group: 1 },
  { kind: 'url-password', re: new RegExp(`\\b[a-z][a-z0-9+.-]*://[^\\s:@/'"]+:${NOT_MARKED}([^\\s@/'"]+)@`, 'gi'), group: 1 },
  {
    kind: 'password',
    re: new RegExp(`\\b\\w*?(?:password|passwd|pwd|passphrase|secret|api[_-]?key|token)["']?\\s*[:=]\\s*["']?${NOT_MARKED}([^\\s"'&;,]{3,})`, 'gi'),
    group: 1,
  },
  { kind: 'password', re: new RegExp(`--password[= ]${NOT_MARKED}(\\S{3,})`, 'g'), group: 1 },
];

/**
 * Literal anchors: every built-in pattern's match contains one of these (case-insensitively), so
 * text with none of them is skipped after one scan instead of one scan per pattern (redaction runs
 * on every string of every event). Keep in step with {@link BUILTIN_PATTERNS}; the secret corpus
 * tests fail if a format's anchor is missing here.
 */
const BUILTIN_ANCHORS =
  /-----BEGIN|eyJ|gh[pousr]_|github_pat_|xox[abposre]-|hooks\.slack\.com|_(?:live|test)_|sk-|AIza|hv[sbr]\.|npm_|secret|token|bearer|basic|:\/\/|pass|pwd|api[_-]?key/i;

/** Distinct keys whose secret-field verdict is cached (keys repeat across events; the cache is cleared when full). */
const FIELD_CACHE_LIMIT = 10_000;

/** True when position `at` of `text` lies inside a `[REDACTED:kind:hash]` marker (whose kind and hash must not be re-read as `key: value`). */
function insideMarker(text: string, at: number): boolean {
  const open = text.lastIndexOf(MARK, at);
  if (open < 0) return false;
  const close = text.indexOf(']', open);
  return close >= at;
}

/** Lower-case snake form of a key: `SecretAccessKey` -> `secret_access_key`, `x-api-key` -> `x_api_key`. */
export function normaliseKey(key: string): string {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[-.\s]+/g, '_');
}

/** Redacts secrets in events. Stateless apart from its compiled rules; safe to share. */
export class Redactor {
  private readonly key: string;
  private readonly fields: readonly string[];
  private readonly patterns: readonly Pattern[];
  /** The policy's own patterns: no anchors known, so they always run. */
  private readonly custom: readonly Pattern[];
  /** Matches any text that could hold a key {@link isSecretField} accepts (each name, separators optional). */
  private readonly fieldAnchors: RegExp;
  private readonly fieldVerdicts = new Map<string, boolean>();
  /** Strings replaced so far; compared before and after a walk to tell whether it changed anything. */
  private edits = 0;

  constructor(opts: RedactorOptions) {
    this.key = opts.key;
    this.fields = opts.policy.field_names.map(normaliseKey);
    this.custom = opts.policy.patterns.map((p) => ({ kind: p.name, re: new RegExp(p.regex, 'g'), group: 0 }));
    this.patterns = [...BUILTIN_PATTERNS, ...this.custom];
    const escape = (t: string): string => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    this.fieldAnchors = new RegExp(this.fields.map((f) => f.split('_').map(escape).join('[-_.\\s]?')).join('|') || '(?!)', 'i');
  }

  /**
   * The marker for a secret: `[REDACTED:hmac:<16 hex>]`. It does not name the format that found
   * the secret, so a password redacted as a JSON field in one event and as `password: ...` text in
   * another gives the same marker and still correlates.
   */
  marker(secret: string): string {
    return `${MARK}hmac:${createHmac('sha256', this.key).update(secret, 'utf8').digest().toString('hex', 0, 8)}]`;
  }

  /** True when a field of this name holds a secret as a whole. */
  isSecretField(key: string): boolean {
    let verdict = this.fieldVerdicts.get(key);
    if (verdict === undefined) {
      const k = normaliseKey(key);
      verdict = this.fields.some((f) => k === f || k.endsWith(`_${f}`));
      if (this.fieldVerdicts.size >= FIELD_CACHE_LIMIT) this.fieldVerdicts.clear();
      this.fieldVerdicts.set(key, verdict);
    }
    return verdict;
  }

  /** Replaces every secret-looking substring of free text. */
  redactText(text: string): string {
    let out = text;
    for (const p of BUILTIN_ANCHORS.test(text) ? this.patterns : this.custom) {
      p.re.lastIndex = 0;
      if (!p.re.test(out)) continue;
      p.re.lastIndex = 0;
      out = out.replace(p.re, (match: string, ...rest: unknown[]) => {
        const secret = p.group === 0 ? match : rest[p.group - 1];
        // replace() passes the groups (strings or undefined), the offset, the whole string, and
        // for patterns with named groups an object: the offset is the only number.
        const at = rest.findIndex((x) => typeof x === 'number');
        const offset = rest[at];
        const whole = rest[at + 1];
        if (typeof secret !== 'string' || secret.length === 0 || secret.startsWith(MARK)) return match;
        if (typeof offset === 'number' && typeof whole === 'string' && insideMarker(whole, offset)) return match;
        return p.group === 0 ? this.marker(secret) : match.replace(secret, this.marker(secret));
      });
    }
    return out;
  }

  /**
   * Redacts a JSON value: secret-named fields whole, every other string by pattern. Objects and
   * arrays are changed in place (they are fresh parser or adapter output, and copying every
   * attribute object of every event was most of redaction's cost); frozen ones are copied.
   */
  redactValue(v: unknown, key?: string): unknown {
    if (typeof v === 'string') {
      if (v === '' || v.startsWith(MARK)) return v;
      const out = key !== undefined && this.isSecretField(key) ? this.marker(v) : this.redactMaybeJson(v);
      if (out !== v) this.edits++;
      return out;
    }
    if (typeof v !== 'object' || v === null) return v;
    if (Object.isFrozen(v)) {
      if (Array.isArray(v)) return v.map((x: unknown) => this.redactValue(x, key));
      const copy: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) copy[k] = this.redactValue(x, k);
      return copy;
    }
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const x: unknown = v[i];
        const y = this.redactValue(x, key);
        if (y !== x) v[i] = y;
      }
      return v;
    }
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      const x = o[k];
      const y = this.redactValue(x, k);
      if (y !== x) o[k] = y;
    }
    return o;
  }

  /** Redacts text that may be JSON (tool arguments and results): structure-aware when it parses. */
  redactMaybeJson(text: string): string {
    // Nothing a pattern or a secret field name could match: skip the parse and the scans.
    if (this.custom.length === 0 && !BUILTIN_ANCHORS.test(text) && !this.fieldAnchors.test(text)) return text;
    const t = text.trimStart();
    if (t.startsWith('{') || t.startsWith('[')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        return this.redactText(text);
      }
      const before = this.edits;
      const red = this.redactValue(parsed);
      // Unchanged values keep their original text (formatting included).
      return this.edits === before ? text : JSON.stringify(red);
    }
    return this.redactText(text);
  }

  /**
   * Redacts an event: in place (adapters' fresh output belongs to the ingest path), or in a copy
   * when the event is frozen (a fixture). Returns the redacted event.
   */
  redactEvent(event: CanonicalEvent): CanonicalEvent {
    const e = Object.isFrozen(event) || Object.isFrozen(event.tool ?? {}) ? structuredClone(event) : event;
    const tool = e.tool;
    if (tool) {
      if (tool.arguments !== undefined) tool.arguments = this.redactMaybeJson(tool.arguments);
      if (tool.result !== undefined) tool.result = this.redactMaybeJson(tool.result);
      if (tool.error !== undefined) tool.error = this.redactText(tool.error);
    }
    const m = e.messages;
    if (m) {
      if (m.system !== undefined) m.system = this.redactMaybeJson(m.system);
      if (m.input !== undefined) m.input = this.redactMaybeJson(m.input);
      if (m.output !== undefined) m.output = this.redactMaybeJson(m.output);
    }
    if (e.process?.cmdline !== undefined) e.process.cmdline = this.redactText(e.process.cmdline);
    if (e.attributes && Object.keys(e.attributes).length > 0) e.attributes = this.redactValue(e.attributes) as Record<string, unknown>;
    if (e.credential?.tags) e.credential.tags = this.redactValue(e.credential.tags) as Record<string, string>;
    return e;
  }
}

/** A redactor for the options, or undefined when redaction is off. */
export function createRedactor(opts: RedactorOptions | undefined): Redactor | undefined {
  return opts && opts.policy.enabled ? new Redactor(opts) : undefined;
}
