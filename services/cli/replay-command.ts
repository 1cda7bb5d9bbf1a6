import { writeFileSync } from 'node:fs';
import { createRootLogger } from '../../shared/logger.ts';
import { REPLAY_FORMATS, replay, InputError } from '../replay/replay.ts';
import { COMMON_HELP, UsageError, configFromArgs, quietLevel, str, type Command } from './command.ts';

/** `runtrail replay`: the whole pipeline over files. */
export const replayCommand: Command = {
  name: 'replay',
  summary: 'run the whole pipeline over log files (backtest a policy on old logs)',
  help: `Usage: runtrail replay FILE... --format FORMAT [options]

Runs collectors' parsers, the correlator, the detectors and the store in-process over files
(plain or .gz; NDJSON, JSON arrays, CloudTrail files), on event time. Replaying the same files
into the same data directory again stores no duplicate events.

Options:
  -f, --format FORMAT   ${Object.keys(REPLAY_FORMATS).join(' | ')}
      --findings OUT    write every finding as one JSON line to OUT
      --stats OUT       write run statistics as JSON to OUT
      --policy FILE     detection policy to apply (YAML)
  -q, --quiet           no progress output
${COMMON_HELP}

Exit status: 0 on success, 1 when an input cannot be read, 2 on a usage error.

Example:
  runtrail replay traces.otlp.ndjson.gz --format otlp-json --findings findings.jsonl --stats stats.json`,
  options: {
    format: { type: 'string', short: 'f' },
    findings: { type: 'string' },
    stats: { type: 'string' },
    policy: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
  },
  allowPositionals: true,
  async run(args, io) {
    const format = str(args, 'format');
    if (!format) throw new UsageError(`--format is required (one of ${Object.keys(REPLAY_FORMATS).join(', ')})`);
    if (!REPLAY_FORMATS[format]) throw new UsageError(`unknown --format "${format}" (one of ${Object.keys(REPLAY_FORMATS).join(', ')})`);
    if (args.positionals.length === 0) throw new UsageError('no input files given');
    const policy = str(args, 'policy');
    const cfg = configFromArgs(args, policy ? { policyFile: policy } : {});
    const log = createRootLogger(str(args, 'log-level') ?? quietLevel(cfg.logLevel));
    const quiet = args.values.quiet === true;
    let shownRejects = 0;
    let lastLine = '';
    try {
      const stats = await replay({
        files: args.positionals,
        format,
        cfg,
        log,
        findingsOut: str(args, 'findings'),
        onProgress: quiet
          ? undefined
          : (p) => {
              const pct = p.bytesTotal > 0 ? Math.min(100, (100 * p.bytesRead) / p.bytesTotal) : 100;
              const line = `${p.file}: ${pct.toFixed(0)}%  records ${p.records}  accepted ${p.accepted}  rejected ${p.rejected}`;
              if (io.isTty) io.err(`\r${line.padEnd(lastLine.length)}`);
              else if (pct === 100) io.err(`${line}\n`);
              lastLine = line;
            },
        onReject: (r) => {
          if (shownRejects++ < 20) io.err(`\n${r.file}: record ${r.index}${r.field ? `: field \`${r.field}\`` : ''}: ${r.reason}\n`);
        },
      });
      if (io.isTty && !quiet) io.err('\n');
      const statsOut = str(args, 'stats');
      if (statsOut) writeFileSync(statsOut, `${JSON.stringify(stats, null, 2)}\n`);
      io.out(
        `records ${stats.records_read}, accepted ${stats.events_accepted}, rejected ${stats.records_rejected}, ` +
          `tasks ${stats.tasks}, unattributed ${stats.unattributed_events}, findings ${stats.findings}, ` +
          `${stats.elapsed_s}s (${stats.events_per_s} events/s)\n`,
      );
      return 0;
    } catch (err) {
      if (err instanceof InputError) {
        io.err(`runtrail replay: ${err.message}\n`);
        return 1;
      }
      throw err;
    } finally {
      log.flush();
    }
  },
};
