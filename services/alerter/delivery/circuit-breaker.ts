/** Breaker states; the numbers are the values of the `runtrail_alert_breaker_state` gauge. */
export const BREAKER_STATE = { closed: 0, open: 1, halfOpen: 2 } as const;
export type BreakerState = keyof typeof BREAKER_STATE;

/**
 * Per-channel circuit breaker: after `threshold` consecutive failures it opens and holds every
 * delivery of the channel back for `openMs`, then lets one trial through (half-open): success
 * closes it, failure opens it again. Deliveries held back stay queued; nothing is dropped.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private trialRunning = false;
  state: BreakerState = 'closed';
  /** Times it opened. */
  opened = 0;

  constructor(
    private readonly threshold: number,
    private readonly openMs: number,
  ) {}

  /** 0 when a delivery may start now, else ms until the breaker lets a trial through. */
  waitMs(now: number): number {
    if (this.state === 'closed') return 0;
    if (this.state === 'open') {
      const left = this.openedAt + this.openMs - now;
      if (left > 0) return left;
      this.state = 'halfOpen';
    }
    // Half-open: one trial at a time; the others wait for its outcome.
    return this.trialRunning ? this.openMs : 0;
  }

  /** Called when a delivery starts. */
  started(): void {
    if (this.state === 'halfOpen') this.trialRunning = true;
  }

  success(): void {
    this.failures = 0;
    this.trialRunning = false;
    this.state = 'closed';
  }

  /**
   * Ends a delivery that gave no verdict on the channel (a 429 asking for a pause, a stored entry
   * that does not decode, a storage error before sending): a half-open trial is over, and the next
   * delivery may be the trial. Without this the breaker would wait for a verdict that never comes.
   */
  release(): void {
    this.trialRunning = false;
  }

  failure(now: number): void {
    this.failures++;
    this.trialRunning = false;
    if (this.state === 'halfOpen' || (this.state === 'closed' && this.failures >= this.threshold)) {
      this.state = 'open';
      this.openedAt = now;
      this.opened++;
    }
  }
}
