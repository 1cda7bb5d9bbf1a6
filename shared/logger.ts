import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * Creates the process's root logger. Services create one at start and hand children
 * (`root.child({ component: 'correlator' })`) to their components; nothing else creates loggers.
 * Logs go to stderr so stdout stays free for command output (tables, JSON lines).
 */
export function createRootLogger(level: string, name = 'runtrail'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: false }));
}

/** A logger that discards everything, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Counts a repeated condition and logs it at most once per interval, with the count since the
 * last log line, instead of once per event.
 */
export class RateLimitedLog {
  private count = 0;
  private last = 0;

  constructor(
    private readonly log: Logger,
    private readonly msg: string,
    private readonly intervalMs = 10_000,
  ) {}

  /** Records one occurrence; logs when the interval has elapsed. */
  hit(fields: Record<string, unknown> = {}, n = 1): void {
    this.count += n;
    const now = Date.now();
    if (now - this.last >= this.intervalMs) {
      this.log.warn({ ...fields, occurrences: this.count }, this.msg);
      this.count = 0;
      this.last = now;
    }
  }
}
