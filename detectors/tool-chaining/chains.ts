import type { EvidenceEvent, FindingInput } from '../finding-builder.ts';
import type { ChainsConfig } from './config.ts';
import type { StepRecord, TaskState } from './task-state.ts';

/**
 * Rules `chain-too-long`, `action-chain-too-long` and `chain-too-fast`: chains longer or faster than
 * the policy allows. Each is reported once per task, by the call that crosses the limit.
 */

export const CHAIN_LONG_RULE = 'chain-too-long';
export const ACTION_CHAIN_RULE = 'action-chain-too-long';
export const CHAIN_FAST_RULE = 'chain-too-fast';

/** Evidence kept for a chain finding (first and latest calls). */
const MAX_EVIDENCE = 12;

function evidenceOf(steps: readonly StepRecord[]): EvidenceEvent[] {
  if (steps.length <= MAX_EVIDENCE) return steps.map((s) => s.event);
  return [steps[0] as StepRecord, ...steps.slice(-(MAX_EVIDENCE - 1))].map((s) => s.event);
}

/** Updates the chain counters with a new tool call and reports crossed limits. */
export function onChainStep(state: TaskState, step: StepRecord, cfg: ChainsConfig): FindingInput[] {
  const out: FindingInput[] = [];
  state.toolCalls++;
  state.consecutiveActions = step.action ? state.consecutiveActions + 1 : 0;
  if (!cfg.enabled) return out;
  const tools = state.steps.filter((s) => s.kind === 'tool');

  if (state.toolCalls > cfg.max_tool_calls && !state.hasFired(CHAIN_LONG_RULE)) {
    state.markFired(CHAIN_LONG_RULE);
    const first = tools[0];
    out.push({
      rule: CHAIN_LONG_RULE,
      severity: cfg.length_severity,
      title: `Tool chain longer than the policy allows (${state.toolCalls} calls > ${cfg.max_tool_calls})`,
      summary: `The task made ${state.toolCalls} tool calls; the policy allows ${cfg.max_tool_calls} per task.`,
      taskId: state.taskId,
      evidence: evidenceOf(tools),
      joinKeys: { task_id: state.taskId },
      windowStart: first?.event.time,
      windowEnd: step.event.time,
      metrics: { tool_calls: state.toolCalls, threshold: cfg.max_tool_calls },
      dedupKey: CHAIN_LONG_RULE,
    });
  }

  if (state.consecutiveActions > cfg.max_consecutive_actions && !state.hasFired(ACTION_CHAIN_RULE)) {
    state.markFired(ACTION_CHAIN_RULE);
    const run = tools.slice(-state.consecutiveActions);
    out.push({
      rule: ACTION_CHAIN_RULE,
      severity: cfg.length_severity,
      title: `${state.consecutiveActions} consecutive action calls (policy allows ${cfg.max_consecutive_actions})`,
      summary: `The agent made ${state.consecutiveActions} state-changing or sending calls in a row without reading anything in between (${[...new Set(run.map((s) => s.tool))].join(', ')}).`,
      taskId: state.taskId,
      evidence: evidenceOf(run),
      joinKeys: { task_id: state.taskId },
      windowStart: run[0]?.event.time,
      windowEnd: step.event.time,
      metrics: { consecutive_actions: state.consecutiveActions, threshold: cfg.max_consecutive_actions },
      dedupKey: ACTION_CHAIN_RULE,
    });
  }

  if (cfg.min_step_interval_ms > 0 && tools.length >= cfg.rate_window_steps && !state.hasFired(CHAIN_FAST_RULE)) {
    const win = tools.slice(-cfg.rate_window_steps);
    const span = (win[win.length - 1] as StepRecord).event.time - (win[0] as StepRecord).event.time;
    const mean = span / (win.length - 1);
    if (mean < cfg.min_step_interval_ms) {
      state.markFired(CHAIN_FAST_RULE);
      out.push({
        rule: CHAIN_FAST_RULE,
        severity: cfg.rate_severity,
        title: `Tool calls faster than the policy allows (mean ${Math.round(mean)} ms < ${cfg.min_step_interval_ms} ms)`,
        summary: `The last ${win.length} tool calls came ${Math.round(mean)} ms apart on average; the policy's minimum mean interval is ${cfg.min_step_interval_ms} ms.`,
        taskId: state.taskId,
        evidence: evidenceOf(win),
        joinKeys: { task_id: state.taskId },
        windowStart: win[0]?.event.time,
        windowEnd: step.event.time,
        metrics: { mean_interval_ms: Math.round(mean), threshold: cfg.min_step_interval_ms, calls: win.length },
        dedupKey: CHAIN_FAST_RULE,
      });
    }
  }
  return out;
}
