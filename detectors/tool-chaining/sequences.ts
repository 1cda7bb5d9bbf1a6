import type { EvidenceEvent, FindingInput } from '../finding-builder.ts';
import type { Sequence, SequenceStep } from './config.ts';
import type { StepRecord, TaskState } from './task-state.ts';
import { globToRegExp } from './text.ts';

/**
 * Rule `sequence`: ordered steps from the policy within a time span and a number of tool calls.
 * Positive sequences are reported by the call that completes them. A sequence with an `absent` step
 * waits until its window closes (a later event of the task past the window, or the task closing) and
 * is reported only if the absent step never occurred in the window.
 */

export const SEQUENCE_RULE = 'sequence';

interface CompiledStep {
  step: SequenceStep;
  tools: RegExp[];
  intent: RegExp[];
}

const cache = new WeakMap<SequenceStep, CompiledStep>();

function compileStep(step: SequenceStep): CompiledStep {
  let c = cache.get(step);
  if (!c) {
    c = { step, tools: (step.tools ?? []).map(globToRegExp), intent: (step.task_intent ?? []).map((s) => new RegExp(s, 'i')) };
    cache.set(step, c);
  }
  return c;
}

/** Whether a step record matches a step of a sequence. */
export function stepMatches(step: SequenceStep, r: StepRecord, taskInput: string, instructionThreshold: number): boolean {
  const c = compileStep(step);
  if (c.intent.length > 0) return r.kind === 'task' && c.intent.some((re) => re.test(taskInput));
  if (r.kind !== 'tool') return false;
  if (c.tools.length > 0 && !c.tools.some((re) => re.test(r.tool))) return false;
  if (step.capabilities && !step.capabilities.some((cap) => r.caps.has(cap))) return false;
  if (step.not_capabilities && step.not_capabilities.some((cap) => r.caps.has(cap))) return false;
  if (step.instructions === true && r.instructions < instructionThreshold) return false;
  if (step.instructions === false && r.instructions >= instructionThreshold) return false;
  if (step.min_result_chars !== undefined && r.resultChars < step.min_result_chars) return false;
  return true;
}

/**
 * Finds the latest occurrence of the sequence ending at `last` (greedy from the end, which is optimal
 * for a window anchored at the last step), or undefined.
 */
function matchEndingAt(seq: Sequence, steps: readonly StepRecord[], last: StepRecord, taskInput: string, thr: number): StepRecord[] | undefined {
  const n = seq.steps.length;
  if (!stepMatches(seq.steps[n - 1] as SequenceStep, last, taskInput, thr)) return undefined;
  const chain: StepRecord[] = [last];
  let pos = steps.indexOf(last);
  for (let j = n - 2; j >= 0; j--) {
    const step = seq.steps[j] as SequenceStep;
    let found: StepRecord | undefined;
    for (let i = pos - 1; i >= 0; i--) {
      const r = steps[i] as StepRecord;
      if (last.event.time - r.event.time > seq.within_ms) break;
      if (r.kind === 'tool' && last.index - r.index + 1 > seq.within_steps) break;
      if (stepMatches(step, r, taskInput, thr)) {
        found = r;
        pos = i;
        break;
      }
    }
    if (!found) return undefined;
    chain.unshift(found);
  }
  return chain;
}

function finding(seq: Sequence, evidence: readonly EvidenceEvent[], taskId: string, extra: Record<string, number>, absentNote: string): FindingInput {
  const first = evidence[0] as EvidenceEvent;
  const last = evidence[evidence.length - 1] as EvidenceEvent;
  const names = evidence.map((e) => e.tool?.name ?? e.type).join(' -> ');
  return {
    rule: SEQUENCE_RULE,
    severity: seq.severity,
    title: `${seq.title} (${seq.id})`,
    summary: `Sequence ${seq.id} matched: ${names}, ${Math.round((last.time - first.time) / 1000)} s apart (policy: within ${seq.within_ms / 1000} s and ${seq.within_steps} calls)${absentNote}.`,
    taskId,
    evidence,
    joinKeys: { sequence: seq.id, task_id: taskId },
    windowStart: first.time,
    windowEnd: Math.max(last.time, extra.window_end ?? 0),
    metrics: { span_ms: last.time - first.time, within_ms: seq.within_ms, within_steps: seq.within_steps, ...extra },
    tags: seq.tags,
    dedupKey: `seq:${seq.id}`,
  };
}

/** Evaluates the sequences the new step may complete, and closes absence windows it passes. */
export function onStep(state: TaskState, sequences: readonly Sequence[], step: StepRecord, thr: number): FindingInput[] {
  const out: FindingInput[] = [];
  // Absence windows: the new event either shows the absent step (cancel) or is past the window (report).
  out.push(...closeWindows(state, sequences, thr, { step }));
  sequences.forEach((seq, i) => {
    const key = `seq:${i}`;
    if (state.hasFired(key)) return;
    const chain = matchEndingAt(seq, state.steps, step, state.taskInput, thr);
    if (!chain) return;
    state.markFired(key);
    const evidence = chain.map((r) => r.event);
    const stepsSpan = (chain[chain.length - 1] as StepRecord).index - Math.max(1, (chain[0] as StepRecord).index) + 1;
    const instr = Math.max(...chain.map((r) => r.instructions));
    const extra: Record<string, number> = instr > 0 ? { steps: stepsSpan, instruction_score: instr, instruction_threshold: thr } : { steps: stepsSpan };
    if (!seq.absent) {
      out.push(finding(seq, evidence, state.taskId, extra, ''));
      return;
    }
    const first = chain[0] as StepRecord;
    state.pending.push({ sequence: i, evidence, deadline: first.event.time + seq.within_ms, lastIndex: Math.max(1, first.index) + seq.within_steps - 1, windowStart: first.event.time });
  });
  return out;
}

/** What closes (or may close) absence windows: a step of the task, any later event time, or the task closing. */
export interface WindowTrigger {
  step?: StepRecord;
  /** Event time of a non-step event of the task. */
  time?: number;
  /** The task closed: every open window closes; `time` is the task's last event time. */
  closing?: boolean;
}

/** Closes absence windows: cancels those whose absent step occurred, reports those that expired. */
export function closeWindows(state: TaskState, sequences: readonly Sequence[], thr: number, t: WindowTrigger): FindingInput[] {
  const out: FindingInput[] = [];
  for (let k = state.pending.length - 1; k >= 0; k--) {
    const p = state.pending[k];
    if (!p) continue;
    const seq = sequences[p.sequence];
    if (!seq || !seq.absent) {
      state.pending.splice(k, 1);
      continue;
    }
    const time = t.step ? t.step.event.time : (t.time ?? p.windowStart);
    if (!t.closing) {
      const pastTime = time > p.deadline;
      const pastSteps = t.step !== undefined && t.step.kind === 'tool' && t.step.index > p.lastIndex;
      if (!pastTime && !pastSteps) {
        if (t.step && time >= p.windowStart && stepMatches(seq.absent, t.step, state.taskInput, thr)) {
          // The absent step occurred: no finding, and the sequence may match again later in the task.
          state.pending.splice(k, 1);
          state.unmarkFired(`seq:${p.sequence}`);
        }
        continue;
      }
    }
    // The window closed without the absent step.
    state.pending.splice(k, 1);
    const end = Math.min(Math.max(time, p.windowStart), p.deadline);
    out.push(finding(seq, p.evidence, state.taskId, { window_end: end }, ', and no call matching the absent step followed before the window closed'));
  }
  return out;
}
