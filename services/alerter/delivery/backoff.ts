import type { DeliveryConfig } from '../../../shared/config.ts';

/**
 * Wait before retry number `attempt` (1 = the first retry): `backoffInitialMs × multiplier^(attempt-1)`,
 * capped at `backoffMaxMs`, spread by ±`jitter` so channels recovering from an outage are not hit by
 * every alerter at the same instant. `random` is injectable for tests.
 */
export function backoffMs(cfg: Readonly<DeliveryConfig>, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(cfg.backoffMaxMs, cfg.backoffInitialMs * cfg.backoffMultiplier ** Math.max(0, attempt - 1));
  const spread = base * cfg.jitter * (2 * random() - 1);
  return Math.max(0, Math.round(base + spread));
}
