import type { Capability } from '../catalog/tool-catalog.ts';
import type { EvidenceEvent } from '../finding-builder.ts';
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

/** A value that entered the task through untrusted content. */
export interface TrackedValue {
  key: string;
  kind: ValueKind;
  raw: string;
  /** Normalised value (lowercase where case does not matter). */
  norm: string;
  /** The tool call whose output (or echoed argument) carried it. */
  source: EvidenceEvent;
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
  event: EvidenceEvent;
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
  event: EvidenceEvent;
  seq: number;
  caps: ReadonlySet<Capability>;
  leaves: ArgumentLeaf[];
  /** 1 for acting calls, less for tools of unknown capability, 0 for read-only ones. */
  actFactor: number;
}

/** A completed sequence whose absence condition waits for its window to close. */
export interface PendingAbsence {
  sequence: number;
  evidence: EvidenceEvent[];
  /** Event time after which the window is closed (epoch ms). */
  deadline: number;
  /** Tool-call index after which the window is closed. */
  lastIndex: number;
  windowStart: number;
}

/** Acting calls remembered per task, so a source that arrives late can still complete them. */
const MAX_ACTIONS = 50;

/** A task's transitions, flat: `from, to, count` per distinct transition, in first-seen order. */
export type TransitionCounts = Array<string | number>;

/** Shared empty transition list: never written (see {@link TaskState.recordTransition}). */
const NO_TRANSITIONS: TransitionCounts = [];

/** Index of a transition in a {@link TransitionCounts}, or -1. Scanned, not hashed: a task has few. */
function transitionIndex(list: TransitionCounts, from: string, to: string): number {
  for (let i = 0; i < list.length; i += 3) if (list[i] === from && list[i + 1] === to) return i;
  return -1;
}

/** Below this length an append copies the array to its exact size. */
const SMALL_ARRAY = 8;

/**
 * Appends to a per-task array. V8 gives an array 17 slots at its first push (~190 B where an exact
 * two-element array is ~75 B); most tasks are short, so short arrays are copied at their exact size
 * and only longer ones grow in place.
 */
function append<T>(arr: T[], item: T): T[] {
  if (arr.length >= SMALL_ARRAY) {
    arr.push(item);
    return arr;
  }
  return arr.concat([item]);
}

/**
 * State of one task. A detector sized for many concurrent tasks holds one per task, so collections
 * most tasks never fill (trusted keys, fired rules, the task's own transition counts) are created on
 * first write: an empty Set or Map is ~100 B, and short tasks left four of them empty.
 */
export class TaskState {
  agentId = '';
  /** The user's request and system instructions, comparison form (bounded). */
  trustedText = '';
  /** Join keys of values in the user's request and system instructions. */
  private trustedKeys: Set<string> | undefined;
  /** Values the agent wrote in its own arguments, with the earliest event time it wrote each (bounded); created at the first. */
  private agentKeyMap: BoundedMap<string, number> | undefined;
  /** Values that entered through untrusted content, by join key (bounded); created at the first. */
  private valueMap: BoundedMap<string, TrackedValue> | undefined;
  steps: StepRecord[] = [];
  actions: ActionRecord[] = [];
  readonly pending: PendingAbsence[] = [];
  /** Rule keys already reported (one finding per sequence / chain rule / transition per task). */
  private fired: Set<string> | undefined;
  /**
   * This task's own transitions (subtracted when judging it against its agent's baseline). One
   * flat list: two Maps (with the totals by source tool) were ~460 B for a task's first one.
   */
  private own: TransitionCounts = NO_TRANSITIONS;
  /**
   * Transitions of this task that the agent's baseline already holds from the stored-history
   * rebuild (see {@link adoptHistory}); replaying them live (a restart's recovery) uses them up
   * instead of counting them again.
   */
  private historyCredit: TransitionCounts | undefined;
  taskInput = '';
  seq = 0;
  toolCalls = 0;
  consecutiveActions = 0;
  prevTool: string | undefined;
  /** Steps and transitions dropped by the bounds (values: their maps' eviction counters). */
  private droppedOwn = 0;
  /** Redaction marker of a value (see DetectorContext.secretMarker); unset when nothing is redacted. */
  secretMarker: ((value: string) => string) | undefined;

  constructor(
    readonly taskId: string,
    private readonly maxSteps: number,
    private readonly maxValues: number,
  ) {}

  /** Steps, values and transitions dropped by the bounds. */
  get dropped(): number {
    return this.droppedOwn + (this.valueMap?.evicted ?? 0) + (this.agentKeyMap?.evicted ?? 0);
  }

  /** The tracked value under a join key. */
  value(key: string): TrackedValue | undefined {
    return this.valueMap?.peek(key);
  }

  /** Every tracked value (one entry per join key). */
  trackedValues(): Iterable<TrackedValue> {
    return this.valueMap?.values() ?? [];
  }

  setValue(key: string, v: TrackedValue): void {
    (this.valueMap ??= new BoundedMap(this.maxValues)).set(key, v);
  }

  /** Earliest event time the agent wrote a value with this key in its own arguments. */
  agentKeyTime(key: string): number | undefined {
    return this.agentKeyMap?.peek(key);
  }

  /** Notes that the agent wrote a value with this key at `time` (the earliest time is kept). */
  noteAgentKey(key: string, time: number): void {
    const m = (this.agentKeyMap ??= new BoundedMap(this.maxValues * 4));
    m.set(key, Math.min(m.peek(key) ?? Number.POSITIVE_INFINITY, time));
  }

  pushStep(s: StepRecord): void {
    this.steps = append(this.steps, s);
    if (this.steps.length > this.maxSteps) {
      this.steps.shift();
      this.droppedOwn++;
    }
  }

  /** Remembers an acting call; its argument leaves are kept in an exact-size copy (see {@link append}). */
  pushAction(a: ActionRecord): void {
    // The leaves were gathered by push: even one leaf left 17 slots (~150 B) per remembered call.
    const kept = a.leaves.length === 0 ? a : { ...a, leaves: a.leaves.slice() };
    this.actions = append(this.actions, kept);
    if (this.actions.length > MAX_ACTIONS) this.actions.shift();
  }

  /** Counts a transition of this task; false (and counted as dropped) beyond the per-task bound. */
  recordTransition(from: string, to: string): boolean {
    const i = transitionIndex(this.own, from, to);
    if (i >= 0) {
      this.own[i + 2] = (this.own[i + 2] as number) + 1;
      return true;
    }
    if (this.own.length / 3 >= this.maxSteps) {
      this.droppedOwn++;
      return false;
    }
    // Exact-size copies while short (V8 gives a pushed-to array 17 slots); never writes the shared empty list.
    if (this.own.length < SMALL_ARRAY * 3) this.own = this.own.concat([from, to, 1]);
    else this.own.push(from, to, 1);
    return true;
  }

  /** This task's own transition counts so far (empty before the first); not to be changed. */
  ownTransitions(): Readonly<TransitionCounts> {
    return this.own;
  }

  /** Whether the task has counted any transition of its own (it then counts once as a task of history). */
  get contributed(): boolean {
    return this.own.length > 0;
  }

  /**
   * Starts this task from what the stored-history rebuild learned of it: those transitions become
   * its own counts (so judging subtracts them like any of its own) and a credit, so the same
   * transitions replayed live are not added to the baseline a second time.
   */
  adoptHistory(transitions: Readonly<TransitionCounts>): void {
    if (transitions.length === 0) return;
    this.own = transitions.slice();
    this.historyCredit = transitions.slice();
  }

  /** Uses up one history credit of this transition: true when the baseline already counts it. */
  useHistoryCredit(from: string, to: string): boolean {
    const credit = this.historyCredit;
    if (!credit) return false;
    const i = transitionIndex(credit, from, to);
    if (i < 0 || (credit[i + 2] as number) === 0) return false;
    credit[i + 2] = (credit[i + 2] as number) - 1;
    return true;
  }

  /** This task's own count of a transition and of transitions out of `from`; `contributed` once it recorded any. */
  ownCounts(from: string, to: string): { edge: number; from: number; contributed: boolean } {
    const own = this.own;
    let edge = 0;
    let fromTotal = 0;
    for (let i = 0; i < own.length; i += 3) {
      if (own[i] !== from) continue;
      const n = own[i + 2] as number;
      fromTotal += n;
      if (own[i + 1] === to) edge = n;
    }
    return { edge, from: fromTotal, contributed: this.contributed };
  }

  /** Whether a rule key was already reported for this task. */
  hasFired(key: string): boolean {
    return this.fired?.has(key) ?? false;
  }

  markFired(key: string): void {
    (this.fired ??= new Set()).add(key);
  }

  unmarkFired(key: string): void {
    this.fired?.delete(key);
  }

  /** Records a join key of a value the user or the system instructions gave. */
  addTrustedKey(key: string): void {
    (this.trustedKeys ??= new Set()).add(key);
  }

  /** True when `key` (or `norm` as text) is in the user's request or the system instructions. */
  isTrusted(key: string, norm: string): boolean {
    return (this.trustedKeys?.has(key) ?? false) || (norm.length >= 4 && this.trustedText.includes(norm.toLowerCase()));
  }
}
