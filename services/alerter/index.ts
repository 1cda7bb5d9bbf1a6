import type { Bus } from '../../shared/bus/bus.ts';
import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import type { MetricsRegistry } from '../../shared/metrics.ts';
import { loadPolicy } from '../../detectors/policy.ts';
import type { Store } from '../storage/store.ts';
import { AlerterStage, effectiveChannels, type AlerterMode } from './alerter-stage.ts';

export { AlerterStage, effectiveChannels, type AlerterMode } from './alerter-stage.ts';

/**
 * Whether a pipeline in this mode runs the alerter: `alerting.enabled`, and for `replay` only when
 * channels are configured (replays of old files then record no incidents and notify nobody).
 */
export function alerterWanted(cfg: Readonly<Config>, mode: AlerterMode): boolean {
  return cfg.alerting.enabled && (mode !== 'replay' || cfg.alerting.channels !== undefined);
}

/** Builds the alerter stage from the whole config: the mode's channels and the policy's suppressions. */
export function createAlerterStage(opts: {
  cfg: Readonly<Config>;
  mode: AlerterMode;
  bus: Bus;
  store: Store;
  log: Logger;
  metrics: MetricsRegistry;
  /** Where a `jsonl` channel with `path: "-"` writes; default stdout. */
  stdout?: (line: string) => void;
}): AlerterStage {
  const { cfg } = opts;
  return new AlerterStage({
    bus: opts.bus,
    store: opts.store,
    cfg: cfg.alerting,
    channels: effectiveChannels(cfg.alerting, opts.mode),
    suppressions: loadPolicy(cfg.policyFile).suppressions,
    dataDir: cfg.dataDir,
    log: opts.log,
    metrics: opts.metrics,
    stdout: opts.stdout,
  });
}
