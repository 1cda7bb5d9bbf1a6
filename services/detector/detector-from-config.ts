import type { Bus } from '../../shared/bus/bus.ts';
import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { createRedactor, type RedactorOptions } from '../../shared/redaction.ts';
import type { DetectorEngine } from '../../detectors/engine.ts';
import { createDetectorEngine, type Policy } from '../../detectors/policy.ts';
import type { Store } from '../storage/store.ts';
import { DetectorStage } from './detector-stage.ts';

/**
 * The detector engine and stage as the config says, for the embedded pipeline and the distributed
 * `detector` alike: engine limits (`engine.*`, task windows capped by `correlator.maxOpenTasks`),
 * evidence summaries on findings for the alerter (`alerting.incidents.evidenceLimit`),
 * the redaction marker detectors match redacted values with, and the restart recovery window.
 */
export function detectorFromConfig(
  cfg: Readonly<Config>,
  policy: Policy,
  deps: { bus: Bus; store: Store; log: Logger; metrics: MetricsRegistry },
  /** The redaction the collector applies (see `redactionOptions`); unset = off. */
  redaction: RedactorOptions | undefined,
  /** Rebuild per-agent baselines from stored history at start (live modes; a replay learns as it goes). */
  opts: { learnHistory: boolean } = { learnHistory: false },
): { engine: DetectorEngine; stage: DetectorStage } {
  const redactor = createRedactor(redaction);
  const engine = createDetectorEngine(
    policy,
    {
      ...cfg.engine,
      maxTasks: Math.min(cfg.correlator.maxOpenTasks, cfg.engine.maxTasks),
      // What the alerter shows; summaries on the findings spare it a storage read per notification.
      evidenceSummaries: cfg.alerting.incidents.evidenceLimit,
    },
    redactor ? (v) => redactor.marker(v) : undefined,
  );
  const stage = new DetectorStage({
    ...deps,
    engine,
    recoveryWindowMs: cfg.engine.recoveryWindowMs,
    recoveryEventsPerTask: cfg.engine.recoveryEventsPerTask,
    ...(opts.learnHistory ? { baselineHistory: { days: cfg.engine.baselineHistoryDays, maxCalls: cfg.engine.baselineHistoryCalls } } : {}),
  });
  return { engine, stage };
}
