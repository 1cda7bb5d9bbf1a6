import type { z } from 'zod';
import type { TimelineEvent, ToolCallRecord } from '../shared/event.ts';
import type { Finding, Severity } from '../shared/finding.ts';
import type { ToolCatalog } from './catalog/tool-catalog.ts';

/**
 * The detector contract. A detector is metadata + a zod config schema with defaults (its section of
 * the policy file) + an evaluation that reads a task's timeline and its own bounded state and
 * returns findings. Detectors live in `detectors/<id>/` (id = folder name) with positive and
 * negative fixtures, and are listed in `detectors/registry.ts`.
 */

/** What a detector is, for the reference documentation and for findings' tags. */
export interface DetectorMeta {
  /** Kebab-case id, equal to the folder name. */
  id: string;
  title: string;
  description: string;
  defaultSeverity: Severity;
  /**
   * Framework references: `owasp-agentic:T2`, `maestro:L3`, `nist-ai-rmf:MEASURE-2.7`,
   * `mitre-attack:T1078` (where one fits).
   */
  tags: readonly string[];
  /** Situations known to trigger it legitimately. */
  falsePositives: readonly string[];
  /** Rule ids the detector can emit, with one line each (for the reference). */
  rules: Readonly<Record<string, string>>;
}

/** A task's timeline as the engine hands it to detectors (events in event-time order). */
export interface TaskView {
  taskId: string;
  /**
   * The task's RECENT events, not its whole history: the engine keeps a bounded window per task
   * (`engine.maxEventsPerTask`, default 16) under a global budget (`engine.maxEvents`) that drops
   * the windows of the least recently active tasks, and kept copies are slim (no `messages`,
   * `tool.result` or `attributes`; the event being evaluated is passed whole to `onEvent`). A
   * detector that needs facts from a task's whole history must keep its own compact, bounded
   * per-task state, updated in `onEvent`. See detectors/engine.ts.
   */
  events: readonly TimelineEvent[];
}

/** What every detector instance can use besides its config. */
export interface DetectorContext {
  catalog: ToolCatalog;
  /**
   * The collector's redaction marker of a value (`[REDACTED:hmac:...]`), when secrets are redacted
   * before the bus. Lets a detector follow a value from text where it stayed clear (an injected
   * instruction) into a field where it was redacted (a `password` argument).
   */
  secretMarker?: (value: string) => string;
}

/** One instance of a detector; holds bounded state (per task, per identity) of its own. */
export interface DetectorInstance {
  /**
   * Called for each new event with the task's timeline including it. Unattributed events come with
   * `task.taskId === ''` and a one-event view.
   */
  onEvent(event: TimelineEvent, task: TaskView): Finding[];
  /** Called when a task closes (rules whose verdict depends on absence within a window). */
  onTaskClosed?(task: TaskView): Finding[];
  /**
   * What the instance's bounded state has evicted so far, keyed by the policy setting that bounds
   * it (e.g. `limits.max_tasks`), so an operator knows which limit to raise. A pattern whose
   * earlier half was evicted is not found, so a growing count means missed findings.
   */
  stateEvictions?(): Readonly<Record<string, number>>;
  /**
   * Rebuilds what the instance learns from history (per-agent baselines) from stored tool calls of
   * earlier tasks, grouped by task in event-time order; called at start, before any event. Without
   * it, a restart would forget every baseline until enough new tasks had run.
   */
  learnHistory?(calls: readonly ToolCallRecord[]): void;
}

/** A detector definition. `C` is its config after defaults. */
export interface Detector<C = unknown> {
  meta: DetectorMeta;
  configSchema: z.ZodType<C>;
  /** `configFor(agentId)` gives the effective config, with per-agent overrides applied. */
  create(configFor: (agentId: string) => C, ctx: DetectorContext): DetectorInstance;
  /** Positive and negative fixtures; all are replayed through all detectors by one test. */
  fixtures: readonly DetectorFixture[];
}

/** A fixture: a timeline and what the detector must (or must not) find in it. */
export interface DetectorFixture {
  name: string;
  /** Events (timeline form) in any order. */
  events: TimelineEvent[];
  /** Expected findings of this detector: rule and minimum severity. Empty = must find nothing. */
  expect: Array<{ rule: string; minSeverity: Severity }>;
  /** Optional policy overrides (YAML-equivalent object) to run the fixture under. */
  policy?: Record<string, unknown>;
}
