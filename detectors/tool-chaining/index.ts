import { ACTION_CAPABILITIES, argumentNames, inferFromName, type Capability } from '../catalog/tool-catalog.ts';
import type { Detector, DetectorContext, DetectorInstance, DetectorMeta, TaskView } from '../detector.ts';
import { evidenceCopy, makeFinding, type FindingInput } from '../finding-builder.ts';
import { EVENT_TYPE, type TimelineEvent, type ToolCallRecord } from '../../shared/event.ts';
import type { Finding } from '../../shared/finding.ts';
import { ClosingMap } from '../../shared/lru.ts';
import { BaselineStore, TASK_START } from './baseline.ts';
import { ACTION_CHAIN_RULE, CHAIN_FAST_RULE, CHAIN_LONG_RULE, onChainStep } from './chains.ts';
import { ToolChainingConfigSchema, type ToolChainingConfig } from './config.ts';
import { fixtures } from './fixtures.ts';
import { INJECTION_RULE, observeTaskStart, onToolCall } from './injection.ts';
import { SEQUENCE_RULE, closeWindows, onStep } from './sequences.ts';
import { TaskState, type StepRecord, type TransitionCounts } from './task-state.ts';
import { TRANSITION_RULE, learnTransition, onTransition } from './transitions.ts';

export type { ToolChainingConfig } from './config.ts';

/** What the detector is, its rules and references. */
export const TOOL_CHAINING_META: DetectorMeta = {
  id: 'tool-chaining',
  title: 'Tool chaining',
  description:
    'Follows each task as a chain of tool calls: values that entered through untrusted tool output and reach the arguments of ' +
    'a state-changing or sending call (weighted by the instructions that output carried), ordered sequences from the policy, ' +
    'chains longer or faster than allowed, and transitions outside the agent’s baseline.',
  defaultSeverity: 'high',
  tags: [
    'owasp-agentic:T2',
    'owasp-agentic:T6',
    'maestro:L3',
    'nist-ai-rmf:MANAGE',
  ],
  falsePositives: [
    'The user delegated to a document whose imperative lines name values ("pay the invoice to ..."): reported as medium, high only when the text also addresses the AI, overrides, re-orders its task, poses as the system or hides itself.',
    'Security tooling that quotes prompt-injection samples and then acts on values inside them (e.g. a triage agent blocking a URL it read in a phishing report).',
    'Values the user gave in an earlier conversation turn that is not part of this task’s request are not recognised as the user’s own.',
    'Sequences and chains describe shapes, not intent: summarising tasks that legitimately administer, long batch jobs and new tools in an agent’s toolbox are reported at medium or lower.',
  ],
  rules: {
    [INJECTION_RULE]: 'A value from untrusted tool output reaches the arguments of an acting call; high when the output carried instructions aimed at the agent.',
    [SEQUENCE_RULE]: 'An ordered sequence of steps from the policy occurred within its time span and number of calls (absence steps evaluated when the window closes).',
    [CHAIN_LONG_RULE]: 'More tool calls in one task than the policy allows.',
    [ACTION_CHAIN_RULE]: 'More consecutive action calls than the policy allows.',
    [CHAIN_FAST_RULE]: 'Tool calls faster than the policy’s minimum mean interval.',
    [TRANSITION_RULE]: 'A tool-to-tool transition UNSEEN or RARE in the agent’s history (counts in the evidence).',
  },
};

/** Capabilities of the task-start step: none, shared by every task (a Set each was ~100 B per task). */
const NO_CAPABILITIES: ReadonlySet<Capability> = new Set();

class ToolChainingInstance implements DetectorInstance {
  /** Open tasks (`limits.max_tasks`) and, for late events, closed ones (`limits.max_closed_tasks`). */
  private readonly tasks: ClosingMap<string, TaskState>;
  private readonly baselines: BaselineStore;
  /**
   * What the stored-history rebuild learned of each recent task (`learnHistory`), handed to the
   * task's state if it comes back (see {@link TaskState.adoptHistory}). Bounded when filled
   * (`limits.max_tasks` entries) and only ever shrinks.
   */
  private historyCredits = new Map<string, Readonly<TransitionCounts>>();

  constructor(
    private readonly configFor: (agentId: string) => ToolChainingConfig,
    private readonly ctx: DetectorContext,
  ) {
    const defaults = configFor('');
    this.baselines = new BaselineStore(defaults.baseline.max_agents);
    this.tasks = new ClosingMap(defaults.limits.max_tasks, defaults.limits.max_closed_tasks);
  }

  onEvent(event: TimelineEvent, task: TaskView): Finding[] {
    if (!task.taskId) return [];
    if (event.type !== EVENT_TYPE.taskStarted && event.type !== EVENT_TYPE.toolCall) {
      // Any later event of the task moves its event time on, which may close absence windows.
      const st = this.tasks.peekOpen(task.taskId);
      if (!st || st.pending.length === 0) return [];
      return this.build(closeWindows(st, this.configFor(st.agentId).sequences, this.configFor(st.agentId).injection.high_score, { time: event.time }));
    }
    if (event.source !== 'agent') return [];
    const state = this.stateOf(task.taskId, event);
    const cfg = this.configFor(state.agentId);
    const seq = ++state.seq;
    const out: FindingInput[] = [];
    // One evidence copy per event, shared by everything the state keeps of it.
    const ref = evidenceCopy(event);

    if (event.type === EVENT_TYPE.taskStarted) {
      observeTaskStart(state, event, cfg.limits.max_trusted_chars);
      state.taskInput = event.messages?.input ?? '';
      const step: StepRecord = { event: ref, seq, index: 0, kind: 'task', tool: '', caps: NO_CAPABILITIES, action: false, instructions: 0, resultChars: 0 };
      state.pushStep(step);
      out.push(...onStep(state, cfg.sequences, step, cfg.injection.high_score));
      return this.build(out);
    }

    const tool = event.tool;
    if (!tool) return [];
    const cls = this.ctx.catalog.classify(tool);
    const action = [...cls.capabilities].some((c) => ACTION_CAPABILITIES.has(c));
    let instructions = 0;
    if (cfg.injection.enabled) {
      // A tool the catalog could only guess about (nothing in its name or arguments) is not known to be read-only.
      const unknown = cls.source === 'inferred' && inferFromName(tool.name, argumentNames(tool.arguments)).caps.size === 0;
      const actFactor = action ? 1 : unknown && cfg.injection.unknown_tools_act ? cfg.injection.unknown_tool_factor : 0;
      const r = onToolCall(state, event, ref, seq, cls.capabilities, actFactor, cls.untrustedOutput, cfg.injection);
      out.push(...r.findings);
      instructions = r.instructions;
    }
    const previous = [...state.steps].reverse().find((s) => s.kind === 'tool');
    const step: StepRecord = {
      event: ref,
      seq,
      index: state.toolCalls + 1,
      kind: 'tool',
      tool: tool.name,
      caps: cls.capabilities,
      action,
      instructions,
      resultChars: tool.result?.length ?? 0,
    };
    state.pushStep(step);
    out.push(...onChainStep(state, step, cfg.chains));
    out.push(...onStep(state, cfg.sequences, step, cfg.injection.high_score));
    out.push(...onTransition(state, this.baselines, step, previous, cfg.baseline));
    return this.build(out);
  }

  stateEvictions(): Readonly<Record<string, number>> {
    return { 'limits.max_tasks': this.tasks.evicted, 'baseline.max_agents': this.baselines.evictedAgents };
  }

  learnHistory(calls: readonly ToolCallRecord[]): void {
    // Replays each stored task's tool calls through the live learning path, on a state of its own.
    // The agent is the first one the task's calls name (live, the task's agent).
    const learned: Array<{ taskId: string; lastTime: number; transitions: Readonly<TransitionCounts> }> = [];
    for (let i = 0; i < calls.length; ) {
      const taskId = (calls[i] as ToolCallRecord).task_id;
      let end = i;
      let agent = '';
      let lastTime = 0;
      for (; end < calls.length && (calls[end] as ToolCallRecord).task_id === taskId; end++) {
        const c = calls[end] as ToolCallRecord;
        agent ||= c.agent_id;
        lastTime = Math.max(lastTime, c.time);
      }
      const cfg = this.configFor(agent);
      if (cfg.baseline.enabled) {
        const state = new TaskState(taskId, cfg.limits.max_steps_per_task, cfg.limits.max_values_per_task);
        state.agentId = agent;
        let from = TASK_START;
        for (const c of calls.slice(i, end)) {
          learnTransition(state, this.baselines, from, c.tool, cfg.baseline);
          from = c.tool;
        }
        learned.push({ taskId, lastTime, transitions: state.ownTransitions() });
      }
      i = end;
    }
    // A task still running at the restart is replayed by the engine's recovery (and its
    // redelivered events): its stored transitions must then be its own, not counted twice. Kept
    // for the most recent tasks only, as many as may be open at once (`limits.max_tasks`).
    learned.sort((a, b) => b.lastTime - a.lastTime);
    this.historyCredits = new Map(learned.slice(0, this.configFor('').limits.max_tasks).map((t) => [t.taskId, t.transitions]));
  }

  onTaskClosed(task: TaskView): Finding[] {
    // Closed now: late events of the task still join what it saw (see ClosingMap).
    const state = this.tasks.close(task.taskId);
    if (!state) return [];
    const cfg = this.configFor(state.agentId);
    const lastTime = task.events[task.events.length - 1]?.time ?? 0;
    return this.build(closeWindows(state, cfg.sequences, cfg.injection.high_score, { closing: true, time: lastTime }));
  }

  private stateOf(taskId: string, event: TimelineEvent): TaskState {
    let st = this.tasks.get(taskId);
    if (!st) {
      const agentId = event.agent_id ?? '';
      const cfg = this.configFor(agentId);
      st = new TaskState(taskId, cfg.limits.max_steps_per_task, cfg.limits.max_values_per_task);
      st.agentId = agentId;
      st.secretMarker = this.ctx.secretMarker;
      const learned = this.historyCredits.get(taskId);
      if (learned) {
        this.historyCredits.delete(taskId);
        st.adoptHistory(learned);
      }
      this.tasks.set(taskId, st);
    } else if (!st.agentId && event.agent_id) st.agentId = event.agent_id;
    return st;
  }

  private build(inputs: readonly FindingInput[]): Finding[] {
    return inputs.map((f) => makeFinding(TOOL_CHAINING_META, f));
  }
}

/** The tool-chaining detector. */
export const toolChaining: Detector<ToolChainingConfig> = {
  meta: TOOL_CHAINING_META,
  configSchema: ToolChainingConfigSchema,
  create: (configFor, ctx) => new ToolChainingInstance(configFor, ctx),
  fixtures,
};
