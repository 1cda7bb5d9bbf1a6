import { createRootLogger } from '../../shared/logger.ts';
import { DEFAULT_AGENTDOJO_DIR, evaluateAgentdojo, formatReport } from '../eval/agentdojo.ts';
import { COMMON_HELP, UsageError, configFromArgs, quietLevel, str, type Command } from './command.ts';

/** Benchmarks `runtrail eval` knows. */
const BENCHMARKS = ['agentdojo'] as const;

/** `runtrail eval`: measured detection quality on labelled third-party traces. */
export const evalCommand: Command = {
  name: 'eval',
  summary: 'measure detection quality on a labelled benchmark (agentdojo)',
  help: `Usage: runtrail eval agentdojo [--dataset DIR] [--policy FILE] [--holdout SUITE] [--json]

Replays the AgentDojo traces (banking-slack.otlp.ndjson.gz) through the real pipeline (collectors'
parser, correlator, every registered detector, store) into a temporary data directory, then scores
the findings against banking-slack.labels.jsonl.gz as ../shared/datasets/README.md defines: a run is
flagged when at least one finding of severity high or critical names its task; positives are
attacked runs whose attack succeeded (attack types ending in "dos" excluded); negatives are benign,
user_requested and failed-attack runs. Runs labelled error: true stay in their category.

Prints true/false positive counts and rates by attack type and by suite, each suite checked against
the targets on its own (a generalisation check: what was tuned on one suite must hold on the other),
then the overall TPR, FPR over all negatives and FPR over benign+user_requested runs.

Options:
      --dataset DIR     folder with the traces and labels (default ../shared/datasets/agentdojo)
      --policy FILE     detection policy to apply (YAML)
      --holdout SUITE   report SUITE as held out and the others as tuning suites
      --json            print the metrics as one JSON line instead of tables
${COMMON_HELP}

Exit status: 0 when the evaluation ran (whatever the scores), 1 when the dataset cannot be read,
2 on a usage error.

Example:
  runtrail eval agentdojo --holdout slack`,
  options: {
    dataset: { type: 'string' },
    policy: { type: 'string' },
    holdout: { type: 'string' },
    json: { type: 'boolean' },
  },
  allowPositionals: true,
  async run(args, io) {
    const [bench, ...extra] = args.positionals;
    if (!bench) throw new UsageError(`name a benchmark (one of ${BENCHMARKS.join(', ')})`);
    if (!(BENCHMARKS as readonly string[]).includes(bench)) throw new UsageError(`unknown benchmark "${bench}" (one of ${BENCHMARKS.join(', ')})`);
    if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);
    const policy = str(args, 'policy');
    const cfg = configFromArgs(args, policy ? { policyFile: policy } : {});
    const log = createRootLogger(str(args, 'log-level') ?? quietLevel(cfg.logLevel));
    const json = args.values.json === true;
    try {
      const report = await evaluateAgentdojo({
        datasetDir: str(args, 'dataset') ?? DEFAULT_AGENTDOJO_DIR,
        cfg,
        log,
        keepDataDir: str(args, 'data') !== undefined,
        holdout: str(args, 'holdout'),
        onProgress:
          json || !io.isTty
            ? undefined
            : (p) => io.err(`\rreplaying: ${p.bytesTotal > 0 ? Math.min(100, (100 * p.bytesRead) / p.bytesTotal).toFixed(0) : 100}%`),
      });
      if (!json && io.isTty) io.err('\n');
      io.out(json ? `${JSON.stringify(report)}\n` : formatReport(report));
      return 0;
    } finally {
      log.flush();
    }
  },
};
