/**
 * Token bucket: `burst` deliveries at once, refilled at `perMinute` (`Infinity`: no limit). {@link take} never refuses for
 * good: it says how long to wait, and the caller keeps the delivery queued until then.
 */
export class RateLimiter {
  private tokens: number;
  private last: number;
  private readonly perMs: number;

  constructor(
    perMinute: number,
    private readonly burst: number,
    now: number,
  ) {
    this.perMs = perMinute / 60_000;
    this.tokens = burst;
    this.last = now;
  }

  /** Takes a token and returns 0, or returns the ms until one is available (taking nothing). */
  take(now: number): number {
    // Unlimited (local sinks): Infinity x 0 ms elapsed would be NaN below.
    if (this.perMs === Number.POSITIVE_INFINITY) return 0;
    this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.perMs);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - this.tokens) / this.perMs);
  }
}
