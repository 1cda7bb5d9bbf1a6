import { z } from 'zod';
import { CapabilitySchema } from '../catalog/tool-catalog.ts';
import { SeveritySchema } from '../../shared/finding.ts';

/**
 * Policy section `detectors.tool-chaining`. Every knob has a default, so `{}` is a valid section.
 *
 * ## How injection-to-action is scored
 *
 * 1. Every untrusted tool output (see the catalog's `untrusted_output`) is scanned for values
 *    (account numbers, e-mail addresses, URLs and domains, phone numbers, file paths, handles, UUIDs,
 *    long ids, code-like identifiers, quoted literals) and for instruction features: text addressed to
 *    the AI, overrides of earlier instructions, re-ordering of the agent's task, markup posing as
 *    system/role content, urgency, tool directives, concealment, hidden text.
 * 2. Each value gets an **instruction score** (points): 0 unless the sentence that carries the value is
 *    itself a directive (an imperative or a request); otherwise the directive's own weight plus the
 *    weights of every feature category present in the value's context (the tagged block it sits in,
 *    or `context_chars` around its sentence, never crossing a record of a list). Each category counts
 *    once. A value that merely sits next to an injected block (the landlord's own IBAN above a planted
 *    note) scores 0: it was not carried by the instructions.
 * 3. When an ACTION call (writes, sends_external, executes_code, admin, spends_money; and, with
 *    `network_destination_is_action`, any call whose URL argument names the host) has an argument
 *    holding a tracked value, the flow **weight** is `kind_weights[kind]` × (1 if the argument is a
 *    destination such as recipient/to/url/iban, else `non_destination_factor`) × (`relay_factor` when
 *    the argument copies the carrying sentence verbatim: the agent relayed the text rather than acted
 *    on the value).
 * 4. **score = instruction score × weight**. Severity: `critical` at `critical_score`, `high` at
 *    `high_score`, `medium` at `medium_score`, else `low` (only with a directive) or
 *    `plain_flow_severity` for flows without any instruction (default: not reported).
 * 5. A value that appears in the user's request or the system instructions is suppressed (the user
 *    asked for it). A value the agent wrote in its own arguments before any untrusted output carried
 *    it did not enter through untrusted output and is not tracked, unless that argument itself carried
 *    instruction text (the agent echoed an injection whose delivering output was not captured; the
 *    echo is then treated as an untrusted source, `echoed_instructions_are_sources`).
 */

/** Weights (points) of instruction features found in untrusted text. */
export const InstructionWeightsSchema = z.strictObject({
  /** The sentence carrying the value is an imperative or a request ("send X to Y", "can you ..."). Default 1. */
  directive: z.number().min(0).default(1),
  /** Text addressed to the AI: "to you, the assistant", "if you are an AI", model names. Default 1.5. */
  addressee: z.number().min(0).default(1.5),
  /** Overrides of earlier instructions: "ignore previous instructions", "new instructions". Default 2. */
  override: z.number().min(0).default(2),
  /** Re-ordering of the agent's own task: "before you solve the task ...", "after that, continue". Default 1.5. */
  task_hijack: z.number().min(0).default(1.5),
  /** Claims to speak for the user, owner, administrator or system. Default 1. */
  impersonation: z.number().min(0).default(1),
  /** Markup posing as a role or a block of instructions: `<SYSTEM>`, `[INST]`, `### Instruction`. Default 1. */
  markup: z.number().min(0).default(1),
  /** Urgency: "IMPORTANT!!!", "urgent", "immediately". Default 0.5. */
  urgency: z.number().min(0).default(0.5),
  /** Directions about tools: "use the tool `x` with the following arguments". Default 1.5. */
  tool_directive: z.number().min(0).default(1.5),
  /** Concealment or skipping confirmation: "without asking", "do not tell the user". Default 1. */
  concealment: z.number().min(0).default(1),
  /** Hidden text: zero-width characters, HTML comments, invisible styling. Default 1. */
  hidden: z.number().min(0).default(1),
  /** A task marker introducing the directive: "TODO:", "Action required:", "Reminder:". Default 0.5. */
  task_marker: z.number().min(0).default(0.5),
  /** A directive inside a data field of a structured record (a name, subject, title). Default 0.5. */
  embedded_in_field: z.number().min(0).default(0.5),
});
export type InstructionWeights = z.infer<typeof InstructionWeightsSchema>;

/** Relative weight of each value kind (dimensionless, 0..1). */
export const KindWeightsSchema = z.strictObject({
  /** IBAN-like account numbers. Default 1. */
  account: z.number().min(0).max(1).default(1),
  /** E-mail addresses. Default 1. */
  email: z.number().min(0).max(1).default(1),
  /** URLs and domains. Default 1. */
  url: z.number().min(0).max(1).default(1),
  /** Phone numbers. Default 0.9. */
  phone: z.number().min(0).max(1).default(0.9),
  /** `@handles`. Default 0.9. */
  handle: z.number().min(0).max(1).default(0.9),
  /** File paths and file names. Default 0.8. */
  path: z.number().min(0).max(1).default(0.8),
  /** UUIDs. Default 0.7. */
  uuid: z.number().min(0).max(1).default(0.7),
  /** Long digit ids (8+ digits). Default 0.7. */
  digits: z.number().min(0).max(1).default(0.7),
  /** Code-like identifiers (`snake_case`, mixed letters and digits, 8+ chars). Default 0.8. */
  identifier: z.number().min(0).max(1).default(0.8),
  /** Quoted literals inside a directive ('...', "...", `...`), 6+ chars with a non-letter. Default 0.8. */
  literal: z.number().min(0).max(1).default(0.8),
  /** Capitalised multi-word names inside a directive (a hotel, a company), 8+ chars. Default 0.8. */
  name: z.number().min(0).max(1).default(0.8),
});
export type KindWeights = z.infer<typeof KindWeightsSchema>;

/** The injection-to-action rule. */
export const InjectionConfigSchema = z.strictObject({
  /** Run the rule. Default true. */
  enabled: z.boolean().default(true),
  /** Score (points × weight) at or above which a flow is `medium`. Default 1. */
  medium_score: z.number().min(0).default(1),
  /** Score at or above which a flow is `high`. Default 2. */
  high_score: z.number().min(0).default(2),
  /** Score at or above which a flow is `critical`. Default 4. */
  critical_score: z.number().min(0).default(4),
  /** Feature weights (points). */
  weights: InstructionWeightsSchema.prefault({}),
  /** Value-kind weights. */
  kind_weights: KindWeightsSchema.prefault({}),
  /** Characters of context on each side of a value's sentence that count as its context. Default 600. */
  context_chars: z.number().int().min(0).max(10_000).default(600),
  /**
   * Regular expressions (case-insensitive) on an argument's name (its last path segment) marking a
   * destination: where money, data or an invitation goes. Default: recipient, to, cc, bcc, email,
   * address, url, uri, link, endpoint, webhook, host, domain, iban, account, destination, target.
   */
  destination_arguments: z
    .array(z.string().min(1))
    .default([
      '^(recipients?|to|cc|bcc|reply_?to)$',
      'e_?mail',
      '^(address|addr)$',
      '(^|_)(url|uri|link|endpoint|webhook|host|hostname|domain)s?$',
      '(^|_)(iban|account|account_?number|acct)$',
      '(^|_)(destination|dest|target)(_|$)',
      '(^|_)(phone|number)$',
    ]),
  /** Multiplier for a value found in a non-destination argument (a subject, a body). Default 0.75. */
  non_destination_factor: z.number().min(0).max(1).default(0.75),
  /**
   * Multiplier when the argument copies the value's whole carrying sentence (or `relay_context_chars`
   * of its surroundings) verbatim: the agent relayed the untrusted text, it did not act on the value.
   * Default 0.25.
   */
  relay_factor: z.number().min(0).max(1).default(0.25),
  /** Characters of verbatim surrounding text that make an argument a relay. Default 48. */
  relay_context_chars: z.number().int().min(8).default(48),
  /**
   * Treat any call whose argument holds a URL or domain from untrusted instructions as acting (it makes
   * a request to a host the instructions chose: a beacon or exfiltration channel), whatever its
   * catalog capabilities. Default true.
   */
  network_destination_is_action: z.boolean().default(true),
  /**
   * Treat calls of tools whose capabilities the catalog could only guess (no policy rule, no
   * annotation, and neither the name nor the arguments reveal a capability: `reserve_table`,
   * `confirm_slot`) as acting, with their flow weight multiplied by `unknown_tool_factor`. Tools known
   * to only read stay non-acting. Default true.
   */
  unknown_tools_act: z.boolean().default(true),
  /** Weight multiplier for flows into tools of unknown capability. Default 0.75. */
  unknown_tool_factor: z.number().min(0).max(1).default(0.75),
  /**
   * Treat an argument of the agent's own call that carries instruction text (score at or above
   * `high_score`) and is not from the user's request as an untrusted source: the agent echoed an
   * injection whose delivering output was not captured. Default true.
   */
  echoed_instructions_are_sources: z.boolean().default(true),
  /** Severity of flows whose source carried no directive at all, or `off` to not report them. Default `off`. */
  plain_flow_severity: z.union([SeveritySchema, z.literal('off')]).default('off'),
  /** Minimum length (characters, after normalisation) of a tracked value. Default 6. */
  min_value_length: z.number().int().min(1).default(6),
  /** Normalised values never tracked (e.g. your own domains). Case-insensitive exact match. Default none. */
  ignore_values: z.array(z.string().min(1)).default([]),
  /**
   * Words and names that, when the text addresses them ("to you, X", "dear X", "X, please"), make the
   * text addressed to the AI. Case-insensitive, whole words.
   */
  addressee_terms: z
    .array(z.string().min(1))
    .default([
      'ai',
      'a\\.i\\.',
      'assistant',
      'ai assistant',
      'language model',
      'ai language model',
      'large language model',
      'llm',
      'ai model',
      'model',
      'agent',
      'ai agent',
      'chatbot',
      'bot',
      'copilot',
      'gpt(-?\\d[\\w.-]*)?',
      'chatgpt',
      'claude',
      'gemini',
      'llama',
      'mistral',
      'mixtral',
      'command[ -]?r\\+?',
      'qwen',
      'deepseek',
    ]),
  /** Characters of each untrusted output scanned (the rest is ignored). Default 65536. */
  max_scan_chars: z.number().int().min(256).default(65_536),
});
export type InjectionConfig = z.infer<typeof InjectionConfigSchema>;

/** One step of a sequence. A step with `task_intent` matches the task's start; any other matches tool calls. */
export const SequenceStepSchema = z.strictObject({
  /** Tool-name globs (`*`, `?`), any of. */
  tools: z.array(z.string().min(1)).optional(),
  /** Capabilities, any of. With `tools` too, both must match. */
  capabilities: z.array(CapabilitySchema).optional(),
  /** Capabilities the tool must not have. */
  not_capabilities: z.array(CapabilitySchema).optional(),
  /** Only calls whose untrusted output carried instructions scoring at least `injection.high_score`. */
  instructions: z.boolean().optional(),
  /** Only calls whose result is at least this long (characters): a bulk read. */
  min_result_chars: z.number().int().positive().optional(),
  /** Matches the task start when the user's request matches one of these regular expressions (case-insensitive). */
  task_intent: z.array(z.string().min(1)).optional(),
});
export type SequenceStep = z.infer<typeof SequenceStepSchema>;

/** An ordered sequence of steps within one task. */
export const SequenceSchema = z.strictObject({
  /** Id, reported as `sequence` in the finding's join keys. */
  id: z.string().min(1),
  /** One-line description (the finding's title). */
  title: z.string().min(1),
  /** Steps in order (events in between are allowed). */
  steps: z.array(SequenceStepSchema).min(1),
  /** Time span from the first to the last step (milliseconds). */
  within_ms: z.number().int().positive(),
  /** Tool calls from the first to the last step, inclusive. */
  within_steps: z.number().int().positive(),
  /**
   * A step that must NOT occur between the first step and the end of the window. Evaluated only when
   * the window closes: an event of the task later than `within_ms` after the first step, more than
   * `within_steps` tool calls, or the task closing.
   */
  absent: SequenceStepSchema.optional(),
  /** Severity of the finding. */
  severity: SeveritySchema,
  /** Extra tags (framework references) for this sequence's findings. */
  tags: z.array(z.string()).default([]),
});
export type Sequence = z.infer<typeof SequenceSchema>;

const MIN = 60_000;

/** Sequences shipped as defaults (a policy's `sequences` list replaces them). */
export const DEFAULT_SEQUENCES: readonly z.input<typeof SequenceSchema>[] = [
  {
    id: 'secret-read-then-external-send',
    title: 'Secret read followed by an external send',
    steps: [{ capabilities: ['reads_secrets'], not_capabilities: ['writes', 'sends_external', 'spends_money', 'admin', 'executes_code'] }, { capabilities: ['sends_external'] }],
    within_ms: 15 * MIN,
    within_steps: 20,
    severity: 'medium',
    tags: ['mitre-attack:T1552', 'mitre-attack:T1567'],
  },
  {
    id: 'bulk-read-then-external-send',
    title: 'Bulk read followed by an external send',
    steps: [{ capabilities: ['reads_data'], not_capabilities: ['writes', 'sends_external', 'spends_money', 'admin', 'executes_code'], min_result_chars: 8000 }, { capabilities: ['sends_external'] }],
    within_ms: 15 * MIN,
    within_steps: 20,
    severity: 'medium',
    tags: ['mitre-attack:T1567'],
  },
  {
    id: 'summarising-task-then-admin',
    title: 'Summarising task followed by an administrative call',
    steps: [{ task_intent: ['\\bsummar(y|ies|i[sz]e|i[sz]ing)\\b', '\\btl;?dr\\b', '\\boverview\\b', '\\brecap\\b'] }, { capabilities: ['admin'] }],
    within_ms: 60 * MIN,
    within_steps: 50,
    severity: 'medium',
    tags: ['owasp-agentic:T3'],
  },
  {
    id: 'instructions-then-action',
    title: 'Untrusted output carrying instructions followed by an action',
    steps: [{ instructions: true }, { capabilities: ['writes', 'sends_external', 'spends_money', 'admin', 'executes_code'] }],
    within_ms: 10 * MIN,
    within_steps: 15,
    severity: 'medium',
    tags: [],
  },
  {
    id: 'access-granted-not-revoked',
    title: 'Access granted during the task and not revoked',
    steps: [{ capabilities: ['admin'], tools: ['*invite*', '*grant*', '*add*', '*share*', '*attach*polic*'] }],
    absent: { tools: ['*remove*', '*revoke*', '*unshare*', '*kick*', '*delete*', '*detach*'] },
    within_ms: 60 * MIN,
    within_steps: 200,
    severity: 'low',
    tags: ['owasp-agentic:T3', 'mitre-attack:T1098'],
  },
];

/** Chains longer or faster than the policy allows. */
export const ChainsConfigSchema = z.strictObject({
  /** Run the rules. Default true. */
  enabled: z.boolean().default(true),
  /** Tool calls in one task above which the chain is too long. Default 100. */
  max_tool_calls: z.number().int().positive().default(100),
  /** Consecutive action calls (no read in between) above which the chain is too long. Default 12. */
  max_consecutive_actions: z.number().int().positive().default(12),
  /**
   * Minimum mean interval between tool calls (milliseconds) over the last `rate_window_steps` calls;
   * faster is flagged (100 ms = more than 600 calls per minute sustained: machine-speed looping, not
   * a model reasoning between calls). 0 disables. Default 100.
   */
  min_step_interval_ms: z.number().int().min(0).default(100),
  /** Tool calls the mean interval is computed over. Default 10. */
  rate_window_steps: z.number().int().min(2).default(10),
  /** Severity of a too-long chain. Default `medium`. */
  length_severity: SeveritySchema.default('medium'),
  /** Severity of a too-fast chain. Default `low`. */
  rate_severity: SeveritySchema.default('low'),
});
export type ChainsConfig = z.infer<typeof ChainsConfigSchema>;

/** Transitions never or rarely seen in the agent's baseline. */
export const BaselineConfigSchema = z.strictObject({
  /** Run the rule. Default true. */
  enabled: z.boolean().default(true),
  /** Tasks of history an agent needs before its transitions are judged. Default 20. */
  min_tasks: z.number().int().min(1).default(20),
  /** Times the source tool must have been seen before an unseen transition from it counts. Default 5. */
  min_source_count: z.number().int().min(1).default(5),
  /**
   * A seen transition is RARE when its probability p(next | previous) is at or below this quantile of
   * the agent's transition probabilities (computed with simple-statistics) and at or below
   * `rare_max_probability`. Default 0.05.
   */
  rare_quantile: z.number().min(0).max(1).default(0.05),
  /** Upper bound on a RARE transition's probability. Default 0.02. */
  rare_max_probability: z.number().min(0).max(1).default(0.02),
  /** Only judge transitions into action calls. Default true. */
  only_into_actions: z.boolean().default(true),
  /** Severity of an UNSEEN transition. Default `low`. */
  unseen_severity: SeveritySchema.default('low'),
  /** Severity of a RARE transition, or `off`. Default `info`. */
  rare_severity: z.union([SeveritySchema, z.literal('off')]).default('info'),
  /** Agents whose baselines are kept (LRU). Default 1000. */
  max_agents: z.number().int().positive().default(1000),
  /** Distinct transitions kept per agent (further ones are counted as evicted). Default 5000. */
  max_transitions_per_agent: z.number().int().positive().default(5000),
});
export type BaselineConfig = z.infer<typeof BaselineConfigSchema>;

/** Bounds on state. */
export const LimitsConfigSchema = z.strictObject({
  /**
   * Open tasks whose state is kept (LRU; the engine keeps its own timelines). Size it to the tasks
   * running at once: a closed task's state moves to the `max_closed_tasks` buffer. Default 20000.
   */
  max_tasks: z.number().int().positive().default(20_000),
  /**
   * Closed tasks whose state is still kept, for events the correlator delivers after closing the
   * task (late events); the oldest closed go first. Their eviction is the normal end of a task and is
   * not reported as lost state. Default 2000.
   */
  max_closed_tasks: z.number().int().positive().default(2_000),
  /** Untrusted values tracked per task (least recently introduced are evicted). Default 500. */
  max_values_per_task: z.number().int().positive().default(500),
  /** Tool calls remembered per task for sequences and late sources. Default 200. */
  max_steps_per_task: z.number().int().positive().default(200),
  /** Characters of the user's request and system instructions kept per task for suppression. Default 65536. */
  max_trusted_chars: z.number().int().positive().default(65_536),
});
export type LimitsConfig = z.infer<typeof LimitsConfigSchema>;

/** The whole `tool-chaining` section. */
export const ToolChainingConfigSchema = z.strictObject({
  injection: InjectionConfigSchema.prefault({}),
  /** Ordered sequences; a policy list replaces the defaults ({@link DEFAULT_SEQUENCES}). */
  sequences: z.array(SequenceSchema).prefault(() => DEFAULT_SEQUENCES.map((s) => ({ ...s }))),
  chains: ChainsConfigSchema.prefault({}),
  baseline: BaselineConfigSchema.prefault({}),
  limits: LimitsConfigSchema.prefault({}),
});
/** Effective config of the tool-chaining detector. */
export type ToolChainingConfig = z.infer<typeof ToolChainingConfigSchema>;
