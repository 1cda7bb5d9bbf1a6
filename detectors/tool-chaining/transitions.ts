import type { FindingInput } from '../finding-builder.ts';
import type { Severity } from '../../shared/finding.ts';
import { TASK_START, type BaselineStore } from './baseline.ts';
import type { BaselineConfig } from './config.ts';
import type { StepRecord, TaskState } from './task-state.ts';

/**
 * Rule `baseline-transition`: a tool-to-tool transition never (UNSEEN) or rarely (RARE) seen in the
 * agent's history. Informational by default: a new path is worth knowing, not an alarm by itself.
 */

export const TRANSITION_RULE = 'baseline-transition';

/**
 * Counts a transition of the task and adds it to its agent's baseline: the task counts once, and
 * only its first `max_steps_per_task` distinct transitions are recorded. The live path and the
 * rebuild from stored history (`learnHistory`) both learn through here; a transition the rebuild
 * already counted for the task is not counted again when a restart's recovery replays it.
 */
export function learnTransition(state: TaskState, store: BaselineStore, from: string, to: string, cfg: BaselineConfig): void {
  // Replayed after a restart: the rebuild already counted it, in the baseline and as the task's own.
  if (state.useHistoryCredit(from, to)) return;
  const first = !state.contributed;
  if (state.recordTransition(from, to)) store.learn(state.agentId, from, to, first, cfg);
}

/** Judges the transition into `step` and records it for the agent's baseline. */
export function onTransition(state: TaskState, store: BaselineStore, step: StepRecord, previous: StepRecord | undefined, cfg: BaselineConfig): FindingInput[] {
  const from = state.prevTool ?? TASK_START;
  const to = step.tool;
  state.prevTool = to;
  if (!cfg.enabled) return [];
  const own = state.ownCounts(from, to);
  const judged = !cfg.only_into_actions || step.action;
  const key = `tr:${from}>${to}`;
  const j = judged && !state.hasFired(key) ? store.judge(state.agentId, from, to, own, cfg) : undefined;
  // Learn after judging: the task's own transition must not make itself look familiar.
  learnTransition(state, store, from, to, cfg);
  if (!j) return [];
  let severity: Severity | 'off' = 'off';
  if (j.verdict === 'UNSEEN') severity = cfg.unseen_severity;
  else if (j.verdict === 'RARE') severity = cfg.rare_severity;
  if (severity === 'off') return [];
  state.markFired(key);
  const pct = (j.probability * 100).toFixed(2);
  return [
    {
      rule: TRANSITION_RULE,
      severity,
      title: `${j.verdict} transition ${from} -> ${to} for agent ${state.agentId || '(unknown)'}`,
      summary:
        `${j.verdict}: ${from} -> ${to} was seen ${j.count} times out of ${j.fromTotal} transitions from ${from} ` +
        `(${pct}%) in ${j.tasks} earlier tasks of this agent; RARE at or below ${(j.rareThreshold * 100).toFixed(2)}%.`,
      taskId: state.taskId,
      evidence: previous ? [previous.event, step.event] : [step.event],
      joinKeys: { agent_id: state.agentId, from, to, verdict: j.verdict },
      metrics: { count: j.count, from_total: j.fromTotal, probability: Math.round(j.probability * 1e4) / 1e4, rare_threshold: Math.round(j.rareThreshold * 1e4) / 1e4, history_tasks: j.tasks },
      tags: ['nist-ai-rmf:MEASURE', 'owasp-agentic:T7'],
      dedupKey: key,
    },
  ];
}
