import type { Capability } from '../catalog/tool-catalog.ts';
import type { EvidenceEvent, FindingInput } from '../finding-builder.ts';
import type { TimelineEvent } from '../../shared/event.ts';
import type { Severity } from '../../shared/finding.ts';
import { argumentLeaves, type ArgumentLeaf } from './arguments.ts';
import type { InjectionConfig } from './config.ts';
import { InstructionScanner, type TextAnalysis } from './instructions.ts';
import type { TaskState, TrackedValue } from './task-state.ts';
import { decodeEscapes, squash, squashInner, stripEdges } from './text.ts';
import { extractValues, valueKeys, type ExtractedValue } from './values.ts';

/**
 * Rule `injection-to-action`: a value that entered the task through untrusted content reaches the
 * arguments of a call that acts (changes state, sends, pays, administers, or contacts a host). The
 * scoring is documented on {@link InjectionConfig} (config.ts).
 */

export const INJECTION_RULE = 'injection-to-action';

/** Compiled form of the parts of the config that are patterns. */
interface Compiled {
  scanner: InstructionScanner;
  destination: RegExp[];
  ignore: Set<string>;
}

const compiledCache = new WeakMap<InjectionConfig, Compiled>();

function compiled(cfg: InjectionConfig): Compiled {
  let c = compiledCache.get(cfg);
  if (!c) {
    c = {
      scanner: new InstructionScanner(cfg.addressee_terms),
      destination: cfg.destination_arguments.map((s) => new RegExp(s, 'i')),
      ignore: new Set(cfg.ignore_values.map((v) => v.toLowerCase())),
    };
    compiledCache.set(cfg, c);
  }
  return c;
}

/** Analyses untrusted text once: decoded, truncated, scanned for instructions. */
export function analyzeUntrusted(text: string, cfg: InjectionConfig): TextAnalysis {
  return compiled(cfg).scanner.analyze(decodeEscapes(text.slice(0, cfg.max_scan_chars)));
}

/** Highest instruction score of a text (whether it carried instructions at all). */
export function instructionScore(a: TextAnalysis, cfg: InjectionConfig): number {
  return compiled(cfg).scanner.maxScore(a, cfg.weights, cfg.context_chars).score;
}

/** Records the user's request and system instructions of a task (values there are the user's own). */
export function observeTaskStart(state: TaskState, event: TimelineEvent, maxChars: number): void {
  const texts = [event.messages?.system, event.messages?.input].filter((t): t is string => typeof t === 'string' && t.length > 0);
  for (const raw of texts) {
    const t = decodeEscapes(raw);
    if (state.trustedText.length < maxChars) state.trustedText = `${state.trustedText} ${squash(t)}`.slice(0, maxChars);
    for (const v of extractValues(t.slice(0, maxChars), { minLength: 3, literals: true })) for (const k of valueKeys(v)) state.addTrustedKey(k);
  }
}

function severityFor(score: number, instr: number, cfg: InjectionConfig): Severity | 'off' {
  if (score >= cfg.critical_score) return 'critical';
  if (score >= cfg.high_score) return 'high';
  if (score >= cfg.medium_score) return 'medium';
  if (instr > 0) return 'low';
  return cfg.plain_flow_severity;
}

/** Longest common suffix of a and b. */
function commonSuffix(a: string, b: string): number {
  let n = 0;
  while (n < a.length && n < b.length && a[a.length - 1 - n] === b[b.length - 1 - n]) n++;
  return n;
}

function commonPrefix(a: string, b: string): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/** The argument repeats the untrusted text around the value (relay), rather than using the value. */
function isRelay(leaf: string, v: TrackedValue, cfg: InjectionConfig): boolean {
  const lv = squashInner(decodeEscapes(leaf));
  const rv = squash(v.raw);
  if (v.sentence.length >= rv.length + 12 && lv.includes(v.sentence)) return true;
  const at = lv.indexOf(rv);
  if (at < 0) return false;
  return commonSuffix(lv.slice(0, at), v.before) + commonPrefix(lv.slice(at + rv.length), v.after) >= cfg.relay_context_chars;
}

/** A candidate flow of one value into one argument. */
interface Flow {
  actFactor: number;
  value: TrackedValue;
  leaf: ArgumentLeaf;
  destination: boolean;
  relay: boolean;
  weight: number;
  score: number;
}

/** A redaction marker inside argument text (see {@link secretKey}). */
const REDACTED = /\[REDACTED:hmac:[0-9a-f]{16}\]/g;

/** Join key of a redacted secret: its marker, which an untrusted text's clear value maps to as well. */
function secretKey(marker: string): string {
  return `secret:${marker}`;
}

/** Values of an argument leaf, as join keys (redaction markers included). */
function leafKeys(leaf: ArgumentLeaf, minLength: number): Set<string> {
  const keys = new Set<string>();
  for (const v of extractValues(decodeEscapes(leaf.value), { minLength })) for (const k of valueKeys(v)) keys.add(k);
  for (const m of leaf.value.matchAll(REDACTED)) keys.add(secretKey(m[0]));
  return keys;
}

/** The leaf is (almost) just a URL: the call goes to that address whatever its name. */
function isAddressLeaf(leaf: ArgumentLeaf, v: TrackedValue): boolean {
  const t = leaf.value.trim().toLowerCase().replace(/^[a-z]+:\/\//, '').replace(/^www\./, '');
  return t.length > 0 && t.length <= v.norm.length * 1.5 + 16 && t.includes(v.norm.split(/[/?#]/)[0] ?? v.norm);
}

/** Finds the strongest flow of tracked values into an action call. */
function bestFlow(state: TaskState, call: { event: EvidenceEvent; seq: number; caps: ReadonlySet<Capability>; leaves: ArgumentLeaf[] }, actFactor: number, cfg: InjectionConfig): Flow | undefined {
  const c = compiled(cfg);
  let best: Flow | undefined;
  // Literals and names are matched by containment (argument text is free-form).
  const literals = [...state.trackedValues()].filter((v) => v.kind === 'literal' || v.kind === 'name');
  for (const leaf of call.leaves) {
    if (leaf.value.length < cfg.min_value_length) continue;
    const keys = leafKeys(leaf, cfg.min_value_length);
    const candidates: TrackedValue[] = [];
    for (const k of keys) {
      const v = state.value(k);
      if (v) candidates.push(v);
    }
    if (literals.length > 0) {
      const lv = squash(decodeEscapes(leaf.value));
      for (const v of literals) if (lv.includes(v.norm)) candidates.push(v);
    }
    for (const v of candidates) {
      const earlier = v.source.time < call.event.time || (v.source.time === call.event.time && v.sourceSeq < call.seq);
      if (!earlier || v.source.event_id === call.event.event_id) continue;
      if (state.isTrusted(v.key, v.norm)) continue;
      const destination = c.destination.some((re) => re.test(leaf.name));
      const reachesHost = cfg.network_destination_is_action && v.kind === 'url' && (destination || isAddressLeaf(leaf, v));
      if (actFactor <= 0 && !reachesHost) continue;
      const relay = isRelay(leaf.value, v, cfg);
      const weight =
        cfg.kind_weights[v.kind] * (destination || reachesHost ? 1 : cfg.non_destination_factor) * (relay ? cfg.relay_factor : 1) * (reachesHost ? 1 : actFactor);
      const score = Math.round(v.score * weight * 100) / 100;
      if (!best || score > best.score || (score === best.score && v.score > best.value.score)) best = { actFactor: reachesHost ? 1 : actFactor, value: v, leaf, destination: destination || reachesHost, relay, weight, score };
    }
  }
  return best;
}

function flowFinding(call: EvidenceEvent, caps: ReadonlySet<Capability>, f: Flow, cfg: InjectionConfig, taskId: string): FindingInput | undefined {
  const sev = severityFor(f.score, f.value.score, cfg);
  if (sev === 'off') return undefined;
  const v = f.value;
  const tool = call.tool?.name ?? 'tool';
  const from = v.source.tool?.name ?? 'tool';
  const arg = f.leaf.path || '(arguments)';
  const carried = v.score > 0 ? `instructions aimed at the agent (${v.categories.join(', ')}; score ${v.score})` : 'no instructions';
  const tags: string[] = [];
  if (caps.has('sends_external') || f.destination) tags.push('mitre-attack:T1567');
  if (caps.has('spends_money')) tags.push('mitre-attack:T1657');
  if (caps.has('admin')) tags.push('owasp-agentic:T3', 'mitre-attack:T1098');
  return {
    rule: INJECTION_RULE,
    severity: sev,
    title: `${v.kind} from untrusted output of ${from} used in ${tool}.${arg}`,
    summary:
      `The ${v.kind} "${v.raw}" entered the task through the ${v.via === 'echo' ? 'instruction text the agent echoed in its arguments of' : 'output of'} ${from}, which carried ${carried}, ` +
      `and then appeared in argument \`${arg}\`${f.destination ? ' (a destination)' : ''} of ${tool} [${f.actFactor < 1 ? 'capabilities unknown' : [...caps].join(', ')}]` +
      `${f.relay ? '; the argument copies the untrusted text verbatim (relay)' : ''}. It is not in the user's request or the system instructions.`,
    taskId,
    evidence: [v.source, call],
    joinKeys: { value: v.norm, argument: arg, kind: v.kind, via: v.via },
    windowStart: v.source.time,
    windowEnd: call.time,
    metrics: {
      instruction_score: v.score,
      weight: Math.round(f.weight * 1000) / 1000,
      score: f.score,
      threshold: sev === 'critical' ? cfg.critical_score : sev === 'high' ? cfg.high_score : cfg.medium_score,
      destination: f.destination ? 1 : 0,
      relay: f.relay ? 1 : 0,
      act_factor: f.actFactor,
    },
    tags,
    dedupKey: `${v.key}|${call.event_id}`,
  };
}

/** Registers the values of an untrusted text (a tool output or an echoed argument). */
function track(state: TaskState, ref: EvidenceEvent, seq: number, a: TextAnalysis, via: TrackedValue['via'], cfg: InjectionConfig, skipAgentKeys: boolean): number {
  const c = compiled(cfg);
  const found: ExtractedValue[] = extractValues(a.text, { minLength: cfg.min_value_length, ignore: c.ignore });
  for (const s of a.sentences) {
    if (!s.directive) continue;
    for (const v of extractValues(a.text.slice(s.start, s.end), { minLength: cfg.min_value_length, ignore: c.ignore, literals: true })) {
      if (v.kind === 'literal' || v.kind === 'name') found.push({ ...v, start: v.start + s.start, end: v.end + s.start });
    }
  }
  let added = 0;
  const ctx = cfg.relay_context_chars;
  for (const v of found) {
    const keys = valueKeys(v);
    // Where the collector redacts secrets, the same value in a secret-named argument arrives as its marker.
    if (state.secretMarker) keys.push(secretKey(state.secretMarker(v.raw)));
    const primary = keys[0] as string;
    if (state.isTrusted(primary, v.norm)) continue;
    // Written by the agent before this output carried it: not entered through untrusted output.
    if (skipAgentKeys && keys.some((k) => (state.agentKeyTime(k) ?? Number.POSITIVE_INFINITY) < ref.time)) continue;
    const sc = c.scanner.scoreSpan(a, v.start, v.end, cfg.weights, cfg.context_chars);
    const sentence = sc.sentence ? stripEdges(squash(a.text.slice(sc.sentence[0], sc.sentence[1]))) : '';
    const tv: TrackedValue = {
      key: primary,
      kind: v.kind,
      raw: v.raw,
      norm: v.norm,
      source: ref,
      sourceSeq: seq,
      via,
      score: sc.score,
      categories: sc.categories,
      sentence,
      before: squashInner(a.text.slice(Math.max(0, v.start - ctx * 2), v.start)).slice(-ctx),
      after: squashInner(a.text.slice(v.end, v.end + ctx * 2)).slice(0, ctx),
    };
    for (const k of keys) {
      const prev = state.value(k);
      // The first source wins unless a later one carried the value with stronger instructions.
      if (!prev || tv.score > prev.score) {
        state.setValue(k, { ...tv, key: k });
        added++;
      }
    }
  }
  return added;
}

/** What the injection rule learned from one tool call. */
export interface ToolCallOutcome {
  findings: FindingInput[];
  /** Highest instruction score of the call's untrusted output (0 when trusted or empty). */
  instructions: number;
}

/**
 * Evaluates one tool call: first its arguments against values tracked so far (the call used them),
 * then its output as a new source. `actFactor` is 1 for calls that act (ACTION capabilities), between
 * 0 and 1 for tools of unknown capability, 0 for tools known to only read. Returns the findings this
 * call completes.
 */
export function onToolCall(
  state: TaskState,
  event: TimelineEvent,
  ref: EvidenceEvent,
  seq: number,
  caps: ReadonlySet<Capability>,
  actFactor: number,
  untrustedOutput: boolean,
  cfg: InjectionConfig,
): ToolCallOutcome {
  const findings: FindingInput[] = [];
  const tool = event.tool;
  if (!tool) return { findings, instructions: 0 };
  const leaves = argumentLeaves(tool.arguments);

  // 1. The call's arguments, against what untrusted content brought in earlier.
  const flow = bestFlow(state, { event: ref, seq, caps, leaves }, actFactor, cfg);
  if (flow) {
    const f = flowFinding(ref, caps, flow, cfg, state.taskId);
    if (f) findings.push(f);
  }
  state.pushAction({ event: ref, seq, caps, leaves, actFactor });

  // 2. The agent's own values, and instruction text it echoed (its source output was not captured).
  for (const leaf of leaves) {
    if (leaf.value.length >= 40 && cfg.echoed_instructions_are_sources && !state.trustedText.includes(squash(leaf.value).slice(0, 200))) {
      const a = analyzeUntrusted(leaf.value, cfg);
      if (instructionScore(a, cfg) >= cfg.high_score) {
        track(state, ref, seq, a, 'echo', cfg, false);
        continue;
      }
    }
    for (const k of leafKeys(leaf, cfg.min_value_length)) state.noteAgentKey(k, event.time);
  }

  // 3. The output, as a new source of values.
  let instructions = 0;
  if (untrustedOutput && tool.result && !tool.error) {
    const a = analyzeUntrusted(tool.result, cfg);
    instructions = instructionScore(a, cfg);
    const added = track(state, ref, seq, a, 'output', cfg, true);
    // A source that arrived after calls later in event time (out-of-order delivery) completes them now.
    if (added > 0) findings.push(...recheckLaterActions(state, ref, cfg));
  }
  return { findings, instructions };
}

function recheckLaterActions(state: TaskState, source: EvidenceEvent, cfg: InjectionConfig): FindingInput[] {
  const out: FindingInput[] = [];
  for (const a of state.actions) {
    if (a.event.time <= source.time) continue;
    const flow = bestFlow(state, a, a.actFactor, cfg);
    if (flow && flow.value.source.event_id === source.event_id) {
      const f = flowFinding(a.event, a.caps, flow, cfg, state.taskId);
      if (f) out.push(f);
    }
  }
  return out;
}
