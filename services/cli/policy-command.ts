import { stringify } from 'yaml';
import { loadPolicy, PolicyError } from '../../detectors/policy.ts';
import { DETECTORS } from '../../detectors/registry.ts';
import { COMMON_HELP, UsageError, configFromArgs, type Command } from './command.ts';

/** `runtrail policy validate FILE` / `runtrail policy show [FILE]`. */
export const policyCommand: Command = {
  name: 'policy',
  summary: 'validate a detection policy file, or show the effective policy',
  help: `Usage: runtrail policy validate FILE
       runtrail policy show [FILE] [--json]

validate  checks a policy file (YAML): every field, every per-agent override against its
          detector's schema. Exit 0 when valid, 1 with the field named when not.
show      prints the effective policy: the file (or RUNTRAIL_POLICY / policyFile, or none)
          merged over the defaults, as YAML (or JSON with --json). With no file at all it
          shows the built-in defaults, which is a good starting point for your own.

Detectors: ${DETECTORS.map((d) => d.meta.id).join(', ') || '(none registered)'}

Options:
      --json            print JSON instead of YAML
${COMMON_HELP}

Examples:
  runtrail policy show > policy.yaml
  runtrail policy validate policy.yaml
  runtrail replay old-logs.ndjson.gz --format otlp-json --policy policy.yaml --findings f.jsonl`,
  options: { json: { type: 'boolean' } },
  allowPositionals: true,
  async run(args, io) {
    const [sub, file, ...extra] = args.positionals;
    if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);
    if (sub === 'validate') {
      if (!file) throw new UsageError('policy validate needs a FILE');
      try {
        loadPolicy(file);
      } catch (err) {
        if (err instanceof PolicyError) {
          io.err(`${err.message}\n`);
          return 1;
        }
        throw err;
      }
      io.out(`${file}: valid\n`);
      return 0;
    }
    if (sub === 'show') {
      const source = file ?? configFromArgs(args).policyFile;
      const policy = loadPolicy(source);
      io.out(args.values.json === true ? `${JSON.stringify(policy, null, 2)}\n` : `# effective policy${source ? ` (from ${source})` : ' (built-in defaults)'}\n${stringify(policy)}`);
      return 0;
    }
    throw new UsageError(`expected "validate FILE" or "show [FILE]", got "${sub ?? ''}"`);
  },
};
