import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig, type Config } from '../../shared/config.ts';
import { ConfigError, RuntrailError, errorMessage } from '../../shared/errors.ts';

/** Output streams, injectable for tests. */
export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  /** True when stderr is a terminal (progress bars only then). */
  isTty: boolean;
}

/** Options shared by every subcommand. */
export const COMMON_OPTIONS = {
  config: { type: 'string', short: 'c' },
  data: { type: 'string', short: 'd' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies NonNullable<ParseArgsConfig['options']>;

export const COMMON_HELP = `Common options:
  -c, --config FILE     config file (YAML or JSON); also RUNTRAIL_CONFIG
  -d, --data DIR        data directory (default ./data); also RUNTRAIL_DATA_DIR
      --log-level LVL   fatal|error|warn|info|debug|trace|silent (default info)
  -h, --help            show this help`;

/** A subcommand. */
export interface Command {
  name: string;
  summary: string;
  /** Full help text (usage, options, examples). */
  help: string;
  options: NonNullable<ParseArgsConfig['options']>;
  allowPositionals: boolean;
  run(args: ParsedArgs, io: Io): Promise<number>;
}

/** Parsed arguments. */
export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** A usage error (exit code 2). */
export class UsageError extends RuntrailError {
  constructor(message: string) {
    super('usage', message);
  }
}

/** Parses argv for a command; throws UsageError with the parser's message. */
export function parseCommandArgs(cmd: Command, argv: string[]): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: { ...COMMON_OPTIONS, ...cmd.options }, allowPositionals: cmd.allowPositionals, strict: true });
    return { values: values as ParsedArgs['values'], positionals };
  } catch (err) {
    throw new UsageError(`${errorMessage(err)}\nRun \`runtrail ${cmd.name} --help\` for usage.`);
  }
}

/** Reads a string option. */
export function str(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === 'string' ? v : undefined;
}

/** Reads an integer option, with a clear message when it is not one. */
export function int(args: ParsedArgs, name: string): number | undefined {
  const v = str(args, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new UsageError(`--${name}: expected an integer, got "${v}"`);
  return n;
}

/** Loads config with the common flags applied as overrides. */
export function configFromArgs(args: ParsedArgs, extra: Record<string, unknown> = {}): Readonly<Config> {
  const overrides: Record<string, unknown> = { ...extra };
  const data = str(args, 'data');
  if (data) overrides.dataDir = data;
  const level = str(args, 'log-level');
  if (level) overrides.logLevel = level;
  return loadConfig({ file: str(args, 'config'), overrides });
}

/** Turns an error into a message and exit code. */
export function reportError(err: unknown, io: Io): number {
  if (err instanceof UsageError) {
    io.err(`runtrail: ${err.message}\n`);
    return 2;
  }
  if (err instanceof ConfigError) {
    io.err(`runtrail: invalid configuration: ${err.message}\n`);
    return 2;
  }
  io.err(`runtrail: ${errorMessage(err)}\n`);
  return 1;
}

/**
 * Log level for one-shot commands (replay, sql): their output is on stdout/stderr already, so the
 * default `info` is lowered to `warn`; an explicitly configured level is kept.
 */
export function quietLevel(configured: string): string {
  return configured === 'info' ? 'warn' : configured;
}
