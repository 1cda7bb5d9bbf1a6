import { runKafkaBench, formatKafkaBenchTable } from '../bench/kafka-bench.ts';
import { createRootLogger } from '../../shared/logger.ts';
import { BenchSetupError, formatBenchTable, runBench } from '../bench/bench.ts';
import { formatDetectorStateTable, measureDetectorState } from '../bench/detector-state.ts';
import { MIN_EVENTS_PER_TASK } from '../bench/generator.ts';
import { COMMON_HELP, UsageError, configFromArgs, int, str, type Command, type ParsedArgs } from './command.ts';

/**
 * Defaults sized so a run takes about 30-60 s (generation included) on a 2-core machine at the
 * pipeline's current speed (~11 000 events/s, see docs/performance.md); raise `events` as the
 * pipeline gets faster.
 */
const DEFAULTS = {
  events: 300_000,
  tasks: 5_000,
  eventsPerTask: 20,
  concurrency: 4,
  seed: 1,
} as const;

/** Events above which the bench spools its bodies to disk even without --spool. */
const SPOOL_ABOVE_EVENTS = 5_000_000;

function intIn(args: ParsedArgs, name: string, min: number, max: number, fallback: number): number {
  const v = int(args, name) ?? fallback;
  if (v < min || v > max) throw new UsageError(`--${name}: expected an integer from ${min.toLocaleString('en-US')} to ${max.toLocaleString('en-US')}, got ${v}`);
  return v;
}

/** Tasks `--detector-state` follows unless --tasks says otherwise: enough for a stable per-task figure in seconds. */
const DETECTOR_STATE_TASKS = 20_000;

/** `--correlators 1,2`: instance counts of the Kafka drain phases. */
function correlatorCounts(arg: string | undefined): number[] {
  if (arg === undefined) return [1, 2];
  const counts = arg.split(',').map((v) => Number(v.trim()));
  if (counts.length === 0 || counts.some((n) => !Number.isInteger(n) || n < 1 || n > 16)) {
    throw new UsageError(`--correlators: expected a comma-separated list of instance counts from 1 to 16, got "${arg}"`);
  }
  return counts;
}

/** `runtrail bench`: throughput, latency and memory of the embedded pipeline on generated traffic. */
export const benchCommand: Command = {
  name: 'bench',
  summary: 'benchmark the embedded pipeline on generated agent, CloudTrail and Vault traffic',
  help: `Usage: runtrail bench [options]

Generates realistic mixed traffic (deterministic for a seed): agent tasks as OTLP/JSON trace
exports (invoke_agent, chat and execute_tool spans), STS AssumeRole and resource calls as
CloudTrail files, Vault audit logins and KV reads, plus unattributed noise from long-lived IAM
keys. Then pushes it through the embedded pipeline in a fresh data directory, timing collector
parsing, the bus, correlation, detection and storage until every event is stored.

Prints progress on stderr every second, a table on stdout, and as the last line one JSON object
(events, elapsed_s, events_per_s, p50_ms, p99_ms, rss_mb, peak_open_tasks, mode, scale, ...).

Options:
      --events N            events to generate (default ${DEFAULTS.events.toLocaleString('en-US')}, or enough for
                            --tasks x --events-per-task plus noise when that is more)
      --tasks N             agent tasks open at once (default ${DEFAULTS.tasks.toLocaleString('en-US')}); e.g. 100000 for
                            the memory scenario
      --events-per-task N   events per agent task, noise excluded (default ${DEFAULTS.eventsPerTask}, at least ${MIN_EVENTS_PER_TASK})
      --concurrency N       request bodies parsed and published at once (default ${DEFAULTS.concurrency})
      --rate N              offered load, events/s: send bodies no faster than this on average
                            (for latency at a given load; default: as fast as the pipeline takes them)
      --seed N              generator seed (default ${DEFAULTS.seed})
      --noise RATIO         share of events that are unattributed noise, 0-0.9 (default 0.05)
      --attacks RATIO       share of agent tasks carrying an injected prompt-injection attack,
                            0-1 (default 0.01); the table reports how many were detected
      --mode MODE           live: fsync'd write-ahead log and wall-clock grace, as \`runtrail start\`
                            (default); replay: no log, event time only, as \`runtrail replay\`
      --keep                keep the temporary data directory (path printed at the end)
      --spool               generate the bodies into a file in the data directory and read them
                            back during the timed part, instead of holding them in memory (for
                            loads whose bodies exceed RAM, e.g. --tasks 1000000; on by itself
                            above 5,000,000 events)
      --cpu-prof FILE       write a V8 CPU profile of the timed part to FILE; summarise it with
                            node --import tsx services/bench/cpuprofile-summary.ts FILE
      --detector-state      instead of the pipeline: the heap each detector holds per concurrent
                            task with its limits sized to follow every task (--tasks, default
                            20,000; --events-per-task, --seed, --attacks apply)
  -q, --quiet               no progress lines
${COMMON_HELP}

With --data DIR the directory must be empty or absent, and it is kept. Without it a temporary
directory is used and deleted afterwards unless --keep (RUNTRAIL_DATA_DIR and the config file's
dataDir are ignored, so a benchmark never writes into real data). Logs at warn unless
--log-level says otherwise.

The memory scenario (--tasks 100000) currently needs more than Node's default 4 GiB heap:
run it with NODE_OPTIONS=--max-old-space-size=16384. A million open tasks (--tasks 1000000
--events-per-task 5, about 5.3 M events) spools its bodies (about 5 GB) to disk.

Detector state (--detector-state): generates --tasks agent tasks, runs their agent events through
the real OTLP adapter and one detector engine per detector (then all together), and prints heap
bytes per task after full collections. That is the figure to size the detectors' limits
(tool-chaining limits.max_tasks, blast-radius max_scopes, ...) for a fleet: README "Bounded
memory". Credential and resource events are left out (their state grows with credentials).

Kafka mode (--kafka): correlators run as real \`runtrail correlator\` processes storing into one
ClickHouse over HTTP (CLICKHOUSE_URL, or the embedded engine served by the bench). Live phase: the
bench parses and publishes the traffic to fresh topics on the broker named by KAFKA_BROKERS (acks
from all in-sync replicas) while one correlator consumes: publish rate, events/s and end-to-end
lag. Drain phases: for each count in --correlators (default 1,2) a fresh consumer group of that
many instances reads the filled topics into a fresh database: each count's events/s and the
scaling. --partitions N sets partitions per topic (default 6).

Examples:
  runtrail bench
  npm run kafka:start && KAFKA_BROKERS=127.0.0.1:19092 runtrail bench --kafka --events 200000
  KAFKA_BROKERS=127.0.0.1:19092 runtrail bench --kafka --correlators 1,2 --partitions 12
  NODE_OPTIONS=--max-old-space-size=16384 runtrail bench --tasks 100000
  NODE_OPTIONS=--max-old-space-size=16384 runtrail bench --tasks 1000000 --events-per-task 5 --spool
  runtrail bench --mode replay --events 500000 --seed 7 | tail -n 1 | jq .events_per_s`,
  options: {
    events: { type: 'string' },
    tasks: { type: 'string' },
    'events-per-task': { type: 'string' },
    concurrency: { type: 'string' },
    rate: { type: 'string' },
    seed: { type: 'string' },
    noise: { type: 'string' },
    attacks: { type: 'string' },
    mode: { type: 'string' },
    keep: { type: 'boolean' },
    spool: { type: 'boolean' },
    'cpu-prof': { type: 'string' },
    'detector-state': { type: 'boolean' },
    quiet: { type: 'boolean', short: 'q' },
    kafka: { type: 'boolean' },
    partitions: { type: 'string' },
    correlators: { type: 'string' },
  },
  allowPositionals: false,
  async run(args, io) {
    const tasks = intIn(args, 'tasks', 1, 10_000_000, DEFAULTS.tasks);
    const eventsPerTask = intIn(args, 'events-per-task', MIN_EVENTS_PER_TASK, 100_000, DEFAULTS.eventsPerTask);
    const noiseArg = str(args, 'noise');
    const noiseRatio = noiseArg === undefined ? 0.05 : Number(noiseArg);
    if (!Number.isFinite(noiseRatio) || noiseRatio < 0 || noiseRatio > 0.9) throw new UsageError(`--noise: expected a number from 0 to 0.9, got "${noiseArg}"`);
    const attacksArg = str(args, 'attacks');
    const attackRatio = attacksArg === undefined ? 0.01 : Number(attacksArg);
    if (!Number.isFinite(attackRatio) || attackRatio < 0 || attackRatio > 1) throw new UsageError(`--attacks: expected a number from 0 to 1, got "${attacksArg}"`);
    // Enough events for every one of --tasks to start: their own events plus the noise around them.
    const fleetEvents = Math.ceil((tasks * eventsPerTask) / (1 - noiseRatio));
    const explicitEvents = int(args, 'events');
    const events = intIn(args, 'events', 1, 1_000_000_000, Math.max(DEFAULTS.events, fleetEvents));
    const concurrency = intIn(args, 'concurrency', 1, 1024, DEFAULTS.concurrency);
    const rate = int(args, 'rate') === undefined ? undefined : intIn(args, 'rate', 1, 10_000_000, 1);
    const seed = intIn(args, 'seed', 0, 0xffffffff, DEFAULTS.seed);
    const modeArg = str(args, 'mode') ?? 'live';
    if (modeArg !== 'live' && modeArg !== 'replay') throw new UsageError(`--mode: expected live or replay, got "${modeArg}"`);
    if (explicitEvents !== undefined && explicitEvents < fleetEvents) {
      io.err(`runtrail bench: note: --events ${explicitEvents} is less than --tasks x --events-per-task plus noise (${fleetEvents}); fewer than ${tasks} tasks will be open at once\n`);
    }

    const quiet = args.values.quiet === true;
    if (args.values['detector-state'] === true) {
      const result = measureDetectorState({
        tasks: int(args, 'tasks') === undefined ? DETECTOR_STATE_TASKS : tasks,
        eventsPerTask,
        seed,
        attackRatio,
        onPhase: quiet ? undefined : (m) => io.err(`bench: ${m}\n`),
      });
      io.out(`${formatDetectorStateTable(result)}\n`);
      io.out(`${JSON.stringify(result)}\n`);
      return 0;
    }
    const cfg = configFromArgs(args);
    const log = createRootLogger(str(args, 'log-level') ?? 'warn');
    if (args.values.kafka === true) {
      // Distributed path: real broker, one correlator instance (see services/bench/kafka-bench.ts).
      const result = await runKafkaBench({
        cfg,
        log,
        events,
        openTasks: tasks,
        eventsPerTask,
        seed,
        partitions: intIn(args, 'partitions', 1, 1000, 6),
        correlators: correlatorCounts(str(args, 'correlators')),
        onProgress: quiet ? undefined : (line) => io.err(`bench: ${line}\n`),
      });
      io.out(`${formatKafkaBenchTable(result)}\n`);
      io.out(`${JSON.stringify(result)}\n`);
      log.flush();
      return 0;
    }
    const n = (v: number) => Math.round(v).toLocaleString('en-US');
    try {
      const result = await runBench({
        cfg,
        log,
        events,
        tasks,
        eventsPerTask,
        concurrency,
        rate,
        seed,
        noiseRatio,
        attackRatio,
        mode: modeArg,
        // Only an explicit --data: a data directory from the config or environment may hold real data.
        dataDir: str(args, 'data'),
        keep: args.values.keep === true,
        // Above this the bodies would take most of the machine's memory (about 1.2 KB per event).
        spool: args.values.spool === true || events > SPOOL_ABOVE_EVENTS,
        cpuProfile: str(args, 'cpu-prof'),
        onPhase: quiet ? undefined : (m) => io.err(`bench: ${m}\n`),
        onProgress: quiet
          ? undefined
          : (p) =>
              io.err(
                `bench: ${p.elapsedS.toFixed(0).padStart(4)} s  published ${n(p.published)} (${n(p.publishRate)}/s)  ` +
                  `stored ${n(p.stored)} (${n(p.storeRate)}/s)  open tasks ${n(p.openTasks)}  pending ${n(p.pending)}  ` +
                  `lag ${n(p.ingestLag)}  bus held ${n(p.busRetained)}  rss ${n(p.rssMb)} MiB\n`,
              ),
      });
      io.out(`${formatBenchTable(result)}\n`);
      io.out(`${JSON.stringify(result)}\n`);
      return 0;
    } catch (err) {
      if (err instanceof BenchSetupError) throw new UsageError(err.message);
      throw err;
    } finally {
      log.flush();
    }
  },
};
