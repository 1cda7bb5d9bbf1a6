import { readFileSync } from 'node:fs';
import { alertsCommand } from './alerts-command.ts';
import { parseCommandArgs, reportError, type Command, type Io } from './command.ts';
import { ANALYST_COMMANDS } from './analyst-commands.ts';
import { benchCommand } from './bench-command.ts';
import { evalCommand } from './eval-command.ts';
import { policyCommand } from './policy-command.ts';
import { replayCommand } from './replay-command.ts';
import { schemaCommand } from './schema-command.ts';
import { sqlCommand } from './sql-command.ts';
import { SERVICE_COMMANDS } from './service-commands.ts';
import { startCommand } from './start-command.ts';
import { tokenCommand } from './token-command.ts';

/** Every subcommand, in help order. */
export const COMMANDS: readonly Command[] = [
  startCommand,
  replayCommand,
  evalCommand,
  ...ANALYST_COMMANDS,
  sqlCommand,
  alertsCommand,
  tokenCommand,
  policyCommand,
  schemaCommand,
  benchCommand,
  ...SERVICE_COMMANDS,
];

function version(): string {
  const pkg: unknown = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  return typeof pkg === 'object' && pkg !== null && 'version' in pkg ? String(pkg.version) : 'unknown';
}

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `runtrail ${version()}: runtime telemetry correlation and anomaly detection for AI agents and workloads

Usage: runtrail <command> [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}

Run \`runtrail <command> --help\` for a command's options.
`;
}

const defaultIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  isTty: process.stderr.isTTY === true,
};

/** CLI entry point; returns the exit code. */
export async function main(argv: readonly string[], io: Io = defaultIo): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    const sub = name === 'help' ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    io.out(sub ? `${sub.help}\n` : topHelp());
    return 0;
  }
  if (name === '--version' || name === '-v' || name === 'version') {
    io.out(`${version()}\n`);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    io.err(`runtrail: unknown command "${name}"\n\n${topHelp()}`);
    return 2;
  }
  try {
    const args = parseCommandArgs(cmd, [...rest]);
    if (args.values.help === true) {
      io.out(`${cmd.help}\n`);
      return 0;
    }
    return await cmd.run(args, io);
  } catch (err) {
    return reportError(err, io);
  }
}
