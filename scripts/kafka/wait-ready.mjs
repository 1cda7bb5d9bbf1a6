#!/usr/bin/env node
// Wait until the local Kafka broker really serves requests:
//   1. the TCP port accepts connections,
//   2. a metadata request succeeds (kafkajs admin.listTopics()),
//   3. the group coordinator is available (admin.describeGroups -> FindCoordinator; this also makes the
//      broker create __consumer_offsets, so the first consumer group in a test does not pay for it).
// Usage: node scripts/kafka/wait-ready.mjs [--timeout SECONDS] [--pid PID] [--log FILE] [--quiet]
// Env:   KAFKA_BROKERS=host:port[,..] or KAFKA_PORT (default 127.0.0.1:19092), KAFKA_READY_TIMEOUT (s, default 90)
// Exit:  0 ready; 1 not ready in time / broker process died (prints the tail of --log); 2 usage/setup error.
import net from 'node:net';
import fs from 'node:fs';

function parseArgs(argv) {
  const out = { timeout: Number(process.env.KAFKA_READY_TIMEOUT || 90), pid: 0, log: '', quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--timeout') out.timeout = Number(argv[++i]);
    else if (a === '--pid') out.pid = Number(argv[++i]);
    else if (a === '--log') out.log = argv[++i];
    else if (a === '--quiet') out.quiet = true;
    else {
      console.error(`wait-ready: unknown argument ${a}`);
      process.exit(2);
    }
  }
  if (!(out.timeout > 0)) {
    console.error('wait-ready: --timeout must be a positive number of seconds');
    process.exit(2);
  }
  return out;
}

const opts = parseArgs(process.argv.slice(2));
const brokers = (process.env.KAFKA_BROKERS || `127.0.0.1:${process.env.KAFKA_PORT || 19092}`)
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const [host, portStr] = brokers[0].split(':');
const port = Number(portStr);
const t0 = Date.now();
const deadline = t0 + opts.timeout * 1000;
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
const say = (msg) => {
  if (!opts.quiet) console.log(`kafka: ${msg}`);
};
// per-request timeout, capped by the time left so the overall --timeout is honoured
const budget = (ms) => Math.max(100, Math.min(ms, deadline - Date.now()));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tailLog(file, lines = 40) {
  if (!file) return '';
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines - 1).join('\n');
  } catch (e) {
    return `(cannot read ${file}: ${e.message})`;
  }
}

function brokerAlive() {
  if (!opts.pid) return true;
  try {
    process.kill(opts.pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

function die(reason) {
  console.error(`kafka: NOT READY after ${elapsed()}: ${reason}`);
  if (opts.log) {
    console.error(`kafka: last lines of ${opts.log}:`);
    console.error(tailLog(opts.log));
  }
  process.exit(1);
}

function canConnect() {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok) => {
      sock.removeAllListeners();
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function main() {
  let kafkajs;
  try {
    kafkajs = (await import('kafkajs')).default;
  } catch (e) {
    console.error(`kafka: cannot load kafkajs (${e.message}); run npm install first`);
    process.exit(2);
  }
  const { Kafka, logLevel } = kafkajs;

  // 1. port
  for (;;) {
    if (!brokerAlive()) die(`broker process ${opts.pid} exited`);
    if (await canConnect()) break;
    if (Date.now() > deadline) die(`port ${host}:${port} does not accept connections`);
    await sleep(250);
  }
  say(`port ${host}:${port} open (${elapsed()})`);

  // 2 + 3. real requests, retried until the deadline
  const kafka = new Kafka({
    clientId: 'runtrail-wait-ready',
    brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 3000,
    requestTimeout: 10000,
    retry: { retries: 0 },
  });
  let lastErr = null;
  let step = 'metadata';
  let metadataOk = false;
  for (;;) {
    if (!brokerAlive()) die(`broker process ${opts.pid} exited`);
    if (Date.now() > deadline) die(`${step} request still failing: ${lastErr?.message || lastErr}`);
    const admin = kafka.admin({ retry: { retries: 0 } });
    try {
      await withTimeout(admin.connect(), budget(5000), 'connect');
      step = 'metadata';
      const topics = await withTimeout(admin.listTopics(), budget(10000), 'listTopics');
      if (!metadataOk) say(`metadata ok, ${topics.length} topic(s) (${elapsed()})`);
      metadataOk = true;
      step = 'group coordinator';
      const groups = await withTimeout(admin.describeGroups(['runtrail-wait-ready']), budget(10000), 'describeGroups');
      if (!groups?.groups?.length) throw new Error('describeGroups returned no group');
      say(`group coordinator ok (${elapsed()})`);
      await withTimeout(admin.disconnect(), 1000, 'disconnect').catch(() => {});
      return;
    } catch (e) {
      lastErr = e;
      await withTimeout(admin.disconnect(), 1000, 'disconnect').catch(() => {});
      await sleep(500);
    }
  }
}

main().then(
  () => process.exit(0),
  (e) => die(e?.stack || String(e)),
);
