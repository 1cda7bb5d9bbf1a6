import type { Capability } from '../catalog/tool-catalog.ts';
import type { TimelineEvent } from '../../shared/event.ts';
import { BoundedMap } from '../../shared/lru.ts';
import type { ArgumentLeaf } from './arguments.ts';
import type { Category } from './instructions.ts';
import type { ValueKind } from './values.ts';

/**
 * Bounded per-task state of the tool-chaining detector. The engine keeps each task's timeline; this is
 * what the rules derive from it incrementally (values that entered through untrusted output, the
 * steps of the chain, open absence windows), so that each event is evaluated in time proportional to
 * itself, not to the whole timeline.
 */

/**
 * A copy of an event small enough to keep as evidence: ids, times and identities, without the texts
 * (messages, tool arguments and results, attributes) that dominate an event's memory.
 */
export function evidenceRef(e: TimelineEvent): TimelineEvent {
  return { ...e, messages: undefined, attributes: {}, tool: e.tool ? { name: e.tool.name, call_id: e.tool.call_id } : undefined };
}

/** A value that entered the task through untrusted content. */
export interface TrackedValue {
  key: string;
  kind: ValueKind;
  raw: string;
  /** Normalised value (lowercase where case does not matter). */
  norm: string;
  /** The tool call whose output (or echoed argument) carried it. */
  source: TimelineEvent;
  /** Arrival order of the source within the task (ties on event time). */
  sourceSeq: number;
  /** `output`: the tool's result; `echo`: instruction text the agent repeated in its own arguments. */
  via: 'output' | 'echo';
  /** Instruction score (points) of the sentence that carried the value. */
  score: number;
  categories: Category[];
  /** Carrying sentence, comparison form (for relay detection). */
  sentence: string;
  /** Comparison-form text just before and after the value in its source. */
  before: string;
  after: string;
}

/** One tool call (or the task start) in the chain. */
export interface StepRecord {
  event: TimelineEvent;
  /** Arrival order in the task. */
  seq: number;
  /** Tool-call index in the task (1-based); 0 for the task start. */
  index: number;
  kind: 'task' | 'tool';
  tool: string;
  caps: ReadonlySet<Capability>;
  action: boolean;
  /** Highest instruction score in the call's untrusted output. */
  instructions: number;
  resultChars: number;
}

/** A call remembered so that a late-arriving source can still be joined to it. */
export interface ActionRecord {
  event: TimelineEvent;
  seq: number;
  caps: ReadonlySet<Capability>;
  leaves: ArgumentLeaf[];
  /** 1 for acting calls, less for tools of unknown capability, 0 for read-only ones. */
  actFactor: number;
}

/** A completed sequence whose absence condition waits for its window to close. */
export interface PendingAbsence {
  sequence: number;
  evidence: TimelineEvent[];
  /** Event time after which the window is closed (epoch ms). */
  deadline: number;
  /** Tool-call index after which the window is closed. */
  lastIndex: number;
  windowStart: number;
}

/** State of one task. */
export class TaskState {
  agentId = '';
  /** The user's request and system instructions, comparison form (bounded). */
  trustedText = '';
  readonly trustedKeys = new Set<string>();
  /** Values the agent wrote in its own arguments, with the earliest event time it wrote each (bounded). */
  readonly agentKeys: BoundedMap<string, number>;
  readonly values: BoundedMap<string, TrackedValue>;
  readonly steps: StepRecord[] = [];
  readonly actions: ActionRecord[] = [];
  readonly pending: PendingAbsence[] = [];
  /** Rule keys already reported (one finding per sequence / chain rule / transition per task). */
  readonly fired = new Set<string>();
  /** This task's own transition counts (subtracted when judging it against its agent's baseline). */
  readonly ownTransitions = new Map<string, number>();
  readonly ownFromTotals = new Map<string, number>();
  taskInput = '';
  seq = 0;
  toolCalls = 0;
  consecutiveActions = 0;
  prevTool: string | undefined;
  /** Steps, values and transitions dropped by the bounds. */
  dropped = 0;
  /** Redaction marker of a value (see DetectorContext.secretMarker); unset when nothing is redacted. */
  secretMarker: ((value: string) => string) | undefined;

  constructor(
    readonly taskId: string,
    private readonly maxSteps: number,
    maxValues: number,
  ) {
    this.values = new BoundedMap(maxValues, () => this.dropped++);
    this.agentKeys = new BoundedMap(maxValues * 4, () => this.dropped++);
  }

  pushStep(s: StepRecord): void {
    this.steps.push(s);
    if (this.steps.length > this.maxSteps) {
      this.steps.shift();
      this.dropped++;
    }
  }

  pushAction(a: ActionRecord): void {
    this.actions.push(a);
    if (this.actions.length > 50) this.actions.shift();
  }

  /** Counts a transition of this task; false (and counted as dropped) beyond the per-task bound. */
  recordTransition(from: string, to: string): boolean {
    const k = `${from}\u0000${to}`;
    if (!this.ownTransitions.has(k) && this.ownTransitions.size >= this.maxSteps) {
      this.dropped++;
      return false;
    }
    this.ownTransitions.set(k, (this.ownTransitions.get(k) ?? 0) + 1);
    this.ownFromTotals.set(from, (this.ownFromTotals.get(from) ?? 0) + 1);
    return true;
  }

  /** True when `key` (or `norm` as text) is in the user's request or the system instructions. */
  isTrusted(key: string, norm: string): boolean {
    return this.trustedKeys.has(key) || (norm.length >= 4 && this.trustedText.includes(norm.toLowerCase()));
  }
}
