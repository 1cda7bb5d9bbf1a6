import { z } from 'zod';
import type { ToolInfo } from '../../shared/event.ts';
import { globToRegExp } from '../../shared/glob.ts';

/**
 * The tool catalog: what a tool can do (capabilities) and whether its output is untrusted content
 * (text written by someone other than the user: web pages, e-mail, messages, files, search results).
 * Policy patterns come first; tools no pattern names are classified from their name, their argument
 * names and MCP annotations (`readOnlyHint`, `destructiveHint`, `openWorldHint`), so unknown tools
 * are still classified. Nothing here names a particular product's tools.
 */

/** Tool capabilities. */
export const CAPABILITIES = ['reads_data', 'reads_secrets', 'writes', 'sends_external', 'executes_code', 'admin', 'spends_money'] as const;
export const CapabilitySchema = z.enum(CAPABILITIES);
export type Capability = z.infer<typeof CapabilitySchema>;

/** Capabilities that change state or move data/money out: the "action" end of a chain. */
export const ACTION_CAPABILITIES: ReadonlySet<Capability> = new Set(['writes', 'sends_external', 'executes_code', 'admin', 'spends_money']);

/** One catalog rule in the policy. */
export const ToolRuleSchema = z.strictObject({
  /** Glob on the tool name (`*` any run, `?` one char), case-insensitive; e.g. `send_*`, `*_email`. */
  match: z.string().min(1),
  /** Capabilities of matching tools (replaces inferred ones). */
  capabilities: z.array(CapabilitySchema).optional(),
  /** Whether the output is untrusted content (overrides inference). */
  untrusted_output: z.boolean().optional(),
});
export type ToolRule = z.infer<typeof ToolRuleSchema>;

/** Catalog section of the policy. */
export const CatalogConfigSchema = z.strictObject({
  /** Explicit rules, first match wins. */
  tools: z.array(ToolRuleSchema).default([]),
  /** Infer capabilities of unlisted tools from names, arguments and annotations. Default true. */
  infer: z.boolean().default(true),
  /**
   * Treat the output of every tool as untrusted unless a rule says otherwise. Default true: a tool
   * result is data from outside the agent, and whether it carried instructions is weighed separately.
   */
  untrusted_by_default: z.boolean().default(true),
});
export type CatalogConfig = z.infer<typeof CatalogConfigSchema>;

/** Classification of one tool. */
export interface ToolClass {
  capabilities: ReadonlySet<Capability>;
  untrustedOutput: boolean;
  /** Where the classification came from: `policy`, `annotations`, `inferred`. */
  source: 'policy' | 'annotations' | 'inferred';
}

/** Words (tokens of a tool name) that signal each capability. Generic verbs and nouns. */
const TOKEN_CAPABILITIES: ReadonlyArray<[Capability, readonly string[]]> = [
  ['spends_money', ['pay', 'payment', 'payments', 'transfer', 'purchase', 'buy', 'charge', 'refund', 'money', 'order', 'checkout', 'wire', 'withdraw', 'tip', 'donate']],
  ['sends_external', ['send', 'post', 'publish', 'email', 'mail', 'notify', 'share', 'upload', 'tweet', 'reply', 'forward', 'webhook', 'message', 'dm', 'invite', 'submit', 'broadcast', 'export']],
  ['reads_secrets', ['secret', 'secrets', 'password', 'passwords', 'credential', 'credentials', 'token', 'tokens', 'apikey', 'vault', 'keychain', 'private', 'ssh', 'otp', '2fa', 'mfa']],
  ['executes_code', ['exec', 'execute', 'run', 'shell', 'bash', 'python', 'eval', 'script', 'command', 'cmd', 'terminal', 'sandbox', 'code']],
  ['admin', ['admin', 'iam', 'role', 'roles', 'policy', 'permission', 'permissions', 'grant', 'revoke', 'member', 'members', 'acl', 'group', 'groups', 'sudo', 'user', 'users', 'account', 'accounts', 'configure', 'config', 'settings', 'deploy', 'cluster', 'firewall']],
  ['writes', ['create', 'update', 'delete', 'remove', 'write', 'set', 'add', 'edit', 'modify', 'put', 'insert', 'schedule', 'book', 'cancel', 'rename', 'move', 'append', 'change', 'reset', 'save', 'store', 'drop', 'kick', 'ban', 'approve', 'reschedule', 'patch']],
  ['reads_data', ['get', 'read', 'list', 'search', 'find', 'fetch', 'query', 'download', 'view', 'show', 'lookup', 'browse', 'retrieve', 'open', 'describe', 'check', 'history', 'scan', 'load']],
];

/** Argument names that reveal what a call does. */
const ARG_CAPABILITIES: ReadonlyArray<[Capability, RegExp]> = [
  ['spends_money', /^(amount|price|iban|account_?number|payment|currency|recipient_?iban)$/i],
  ['sends_external', /^(recipients?|to|cc|bcc|email|emails|address|url|webhook|channel|destination|target_?url)$/i],
  ['reads_secrets', /(password|secret|token|api_?key|credential)/i],
  ['executes_code', /^(code|command|cmd|script|shell)$/i],
];

/** Name tokens of tools whose output is content from outside (messages, pages, files, search). */
const UNTRUSTED_TOKENS = new Set(['email', 'emails', 'inbox', 'mail', 'message', 'messages', 'channel', 'channels', 'web', 'webpage', 'page', 'url', 'browse', 'fetch', 'search', 'file', 'files', 'document', 'documents', 'doc', 'docs', 'review', 'reviews', 'comment', 'comments', 'feed', 'news', 'tweet', 'tweets', 'post', 'posts', 'transactions', 'notes', 'issue', 'issues', 'ticket', 'tickets', 'chat', 'dm', 'download']);

/** Splits `sendMoney`, `send_money`, `send-money`, `mcp.send.money` into lowercase tokens. */
export function nameTokens(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
}

/** Parses tool arguments (usually a JSON string) into top-level argument names, best effort. */
export function argumentNames(args: string | undefined): string[] {
  if (!args) return [];
  try {
    const v: unknown = JSON.parse(args);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? Object.keys(v) : [];
  } catch {
    return [];
  }
}

/** The catalog, compiled from its policy section. Classifications are cached per tool name. */
export class ToolCatalog {
  private readonly rules: Array<{ re: RegExp; rule: ToolRule }>;
  private readonly cache = new Map<string, ToolClass>();

  constructor(private readonly cfg: CatalogConfig) {
    this.rules = cfg.tools.map((rule) => ({ re: globToRegExp(rule.match), rule }));
  }

  /** Classifies a tool call (name, arguments and annotations). */
  classify(tool: Pick<ToolInfo, 'name' | 'arguments' | 'annotations'>): ToolClass {
    const cacheable = !tool.annotations;
    const key = `${tool.name}\u0000${argumentNames(tool.arguments).sort().join(',')}`;
    if (cacheable) {
      const hit = this.cache.get(key);
      if (hit) return hit;
    }
    const c = this.compute(tool);
    if (cacheable && this.cache.size < 10_000) this.cache.set(key, c);
    return c;
  }

  private compute(tool: Pick<ToolInfo, 'name' | 'arguments' | 'annotations'>): ToolClass {
    const rule = this.rules.find((r) => r.re.test(tool.name))?.rule;
    const inferred = this.cfg.infer ? inferFromName(tool.name, argumentNames(tool.arguments)) : { caps: new Set<Capability>(), untrusted: false };
    let caps = new Set<Capability>(inferred.caps);
    let source: ToolClass['source'] = 'inferred';
    const a = tool.annotations;
    if (a) {
      source = 'annotations';
      if (a.readOnlyHint === true) {
        // Read-only tools cannot act, whatever their name suggests.
        caps = new Set([...caps].filter((c) => c === 'reads_data' || c === 'reads_secrets'));
        if (caps.size === 0) caps.add('reads_data');
      }
      if (a.destructiveHint === true) caps.add('writes');
      if (a.openWorldHint === true && a.readOnlyHint !== true) caps.add('sends_external');
    }
    let untrusted = this.cfg.untrusted_by_default || inferred.untrusted || a?.openWorldHint === true;
    if (rule) {
      source = 'policy';
      if (rule.capabilities) caps = new Set(rule.capabilities);
      if (rule.untrusted_output !== undefined) untrusted = rule.untrusted_output;
    }
    if (caps.size === 0) caps.add('reads_data');
    return { capabilities: caps, untrustedOutput: untrusted, source };
  }
}

/** Infers capabilities from name tokens and argument names. */
export function inferFromName(name: string, args: readonly string[]): { caps: Set<Capability>; untrusted: boolean } {
  const tokens = nameTokens(name);
  const caps = new Set<Capability>();
  for (const [cap, words] of TOKEN_CAPABILITIES) if (tokens.some((t) => words.includes(t))) caps.add(cap);
  // A verb decides when present: `get_user` reads, it does not administer users.
  const first = tokens[0] ?? '';
  const readVerb = (TOKEN_CAPABILITIES.find(([c]) => c === 'reads_data')?.[1] ?? []).includes(first);
  if (readVerb) {
    for (const c of ['admin', 'writes', 'sends_external', 'spends_money', 'executes_code'] as const) {
      if (!(TOKEN_CAPABILITIES.find(([k]) => k === c)?.[1] ?? []).includes(first)) caps.delete(c);
    }
  }
  if (!readVerb) for (const [cap, re] of ARG_CAPABILITIES) if (args.some((a) => re.test(a))) caps.add(cap);
  const untrusted = tokens.some((t) => UNTRUSTED_TOKENS.has(t));
  return { caps, untrusted };
}
