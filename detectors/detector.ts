import type { z } from 'zod';
import type { TimelineEvent } from '../shared/event.ts';
import type { Finding, Severity } from '../shared/finding.ts';

/**
 * The detector contract. A detector is metadata + a zod config schema with defaults + an
 * evaluation that is pure with respect to its inputs: given a task's timeline so far (and the
 * detector's own bounded state), it returns findings. Detectors live in `detectors/<id>/` and
 * are listed in `detectors/registry.ts`.
 */

/** What a detector is, for the reference documentation and for findings' tags. */
export interface DetectorMeta {
  /** Kebab-case id, equal to the folder name. */
  id: string;
  title: string;
  description: string;
  defaultSeverity: Severity;
  /** OWASP Agentic AI Top 10, CSA MAESTRO, NIST AI RMF, MITRE ATT&CK ids. */
  tags: readonly string[];
  /** Situations known to trigger it legitimately. */
  falsePositives: readonly string[];
}

/** A task's timeline as the engine hands it to detectors (events in event-time order). */
export interface TaskView {
  taskId: string;
  events: readonly TimelineEvent[];
}

/** One instance of a detector with its effective config; holds any bounded per-task state. */
export interface DetectorInstance {
  /** Called for each new event with the task's timeline including it. */
  onEvent(event: TimelineEvent, task: TaskView): Finding[];
  /** Called when a task closes (for rules that depend on absence within a window). */
  onTaskClosed?(task: TaskView): Finding[];
}

/** A detector definition. */
export interface Detector<C = unknown> {
  meta: DetectorMeta;
  configSchema: z.ZodType<C>;
  create(config: C): DetectorInstance;
}
