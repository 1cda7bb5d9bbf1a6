#!/usr/bin/env node
// Smoke test: kafkajs (from node_modules) against the local broker started by scripts/kafka/kafka.sh.
// Exercises the protocol paths the project relies on:
//   admin createTopics (3 partitions) / listTopics / fetchTopicMetadata / fetchTopicOffsets,
//   producer acks=-1 (plain and idempotent), consumer group + eachBatch + manual commit,
//   admin fetchOffsets / describeGroups, transactional producer (commit + abort), resume from committed
//   offsets with a second consumer (read_committed: aborted records must not show up),
//   cleanup via deleteGroups / deleteTopics.
// Usage: node scripts/kafka/smoke.mjs   (env: KAFKA_BROKERS=host:port[,..] or KAFKA_PORT, default 127.0.0.1:19092)
import kafkajs from 'kafkajs';

const { Kafka, logLevel, Partitioners } = kafkajs;

const brokers = (process.env.KAFKA_BROKERS || `127.0.0.1:${process.env.KAFKA_PORT || 19092}`)
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const OVERALL_TIMEOUT_MS = Number(process.env.SMOKE_TIMEOUT_MS || 120_000);
const suffix = `${Date.now()}-${process.pid}`;
const topic = `runtrail-smoke-${suffix}`;
const groupId = `runtrail-smoke-group-${suffix}`;
const PARTITIONS = 3;
const FIRST_BATCH = 30;
const SECOND_BATCH = 9;
const TX_COMMITTED = 3;

const t0 = Date.now();
const log = (msg) => console.log(`[smoke +${((Date.now() - t0) / 1000).toFixed(2)}s] ${msg}`);
const fail = (msg) => {
  throw new Error(msg);
};
const assert = (cond, msg) => {
  if (!cond) fail(`assertion failed: ${msg}`);
};

// Compact one-line kafkajs logs. Errors kafkajs retries by itself (a fresh broker's coordinators are
// still loading, a previous transaction is still being completed) are hidden unless SMOKE_VERBOSE=1.
const RETRIABLE =
  /coordinator is (not available|loading)|not the correct coordinator|leader not available|rebalanc|concurrent operation on the same transaction/i;
const logCreator =
  () =>
  ({ namespace, label, log: entry }) => {
    const { message, error } = entry;
    if (RETRIABLE.test(`${message} ${error ?? ""}`) && !process.env.SMOKE_VERBOSE) return;
    console.log(`[kafkajs ${label}] ${namespace}: ${message}${error ? ` (${error})` : ''}`);
  };

const kafka = new Kafka({
  clientId: 'runtrail-smoke',
  brokers,
  logLevel: logLevel.WARN,
  logCreator,
  connectionTimeout: 5000,
  requestTimeout: 30000,
  retry: { retries: 5 },
});

const admin = kafka.admin();
const cleanup = [];

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Consume with eachBatch until `expected` messages arrived; commit explicitly; return received messages. */
async function consumeBatch(expected, label) {
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: 10000,
    heartbeatInterval: 1000,
    rebalanceTimeout: 20000,
    maxWaitTimeInMs: 500,
  });
  cleanup.push(() => consumer.disconnect().catch(() => {}));
  const received = [];
  let batches = 0;
  let done;
  const finished = new Promise((res) => {
    done = res;
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, commitOffsetsIfNecessary }) => {
      batches++;
      for (const m of batch.messages) {
        received.push({ partition: batch.partition, offset: m.offset, key: m.key?.toString(), value: m.value?.toString() });
        resolveOffset(m.offset);
      }
      await heartbeat();
      // autoCommit=false -> commit explicitly the offsets resolved in this batch
      await consumer.commitOffsets([
        {
          topic: batch.topic,
          partition: batch.partition,
          offset: (BigInt(batch.lastOffset()) + 1n).toString(),
        },
      ]);
      await commitOffsetsIfNecessary(); // no-op with autoCommit=false, exercised for API coverage
      if (received.length >= expected) done();
    },
  });
  await withTimeout(finished, 60_000, `${label}: waiting for ${expected} messages (got ${received.length})`);
  // small grace period: make sure nothing unexpected arrives
  await new Promise((r) => setTimeout(r, 1000));
  await consumer.disconnect();
  log(`${label}: consumed ${received.length} messages in ${batches} batches`);
  return received;
}

async function main() {
  log(`brokers=${brokers.join(',')} topic=${topic}`);
  await admin.connect();

  const cluster = await admin.describeCluster();
  log(`describeCluster: clusterId=${cluster.clusterId} controller=${cluster.controller} brokers=${cluster.brokers.map((b) => `${b.nodeId}@${b.host}:${b.port}`).join(',')}`);

  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
  });
  assert(created === true, 'createTopics returned true');
  cleanup.push(() => admin.deleteTopics({ topics: [topic] }).catch(() => {}));
  const topics = await admin.listTopics();
  assert(topics.includes(topic), 'listTopics contains new topic');
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  assert(md.topics[0].partitions.length === PARTITIONS, `topic has ${PARTITIONS} partitions`);
  log(`createTopics/listTopics/fetchTopicMetadata ok (${PARTITIONS} partitions)`);

  // --- produce, acks=-1 (all) ---
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  cleanup.push(() => producer.disconnect().catch(() => {}));
  await producer.connect();
  const messages = Array.from({ length: FIRST_BATCH }, (_, i) => ({
    key: `k${i}`,
    value: JSON.stringify({ i, at: Date.now() }),
    partition: i % PARTITIONS,
    headers: { source: 'smoke' },
  }));
  const sendRes = await producer.send({ topic, acks: -1, messages: messages.slice(0, 15) });
  const batchRes = await producer.sendBatch({ acks: -1, topicMessages: [{ topic, messages: messages.slice(15) }] });
  assert(sendRes.every((r) => r.errorCode === 0) && batchRes.every((r) => r.errorCode === 0), 'produce errorCode 0');
  log(`produce acks=-1: send + sendBatch ok (${FIRST_BATCH} msgs)`);

  const offsets = await admin.fetchTopicOffsets(topic);
  const total = offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  assert(total === FIRST_BATCH, `fetchTopicOffsets total ${total} === ${FIRST_BATCH}`);
  log(`fetchTopicOffsets ok: ${offsets.map((o) => `p${o.partition}=${o.high}`).join(' ')}`);

  // --- consume with group + eachBatch + manual commit ---
  const got1 = await consumeBatch(FIRST_BATCH, 'consumer#1');
  assert(got1.length === FIRST_BATCH, `consumer#1 got exactly ${FIRST_BATCH} (got ${got1.length})`);
  const keys = new Set(got1.map((m) => m.key));
  assert(keys.size === FIRST_BATCH, 'all distinct keys received');
  for (const m of got1) assert(Number(m.key.slice(1)) % PARTITIONS === m.partition, `key ${m.key} on partition ${m.partition}`);

  // --- admin fetchOffsets: committed == high watermark ---
  const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
  const parts = committed[0].partitions;
  for (const p of parts) {
    const high = offsets.find((o) => o.partition === p.partition).high;
    assert(p.offset === high, `committed offset p${p.partition}=${p.offset} === high ${high}`);
  }
  log(`admin.fetchOffsets ok: ${parts.map((p) => `p${p.partition}=${p.offset}`).join(' ')}`);

  const groups = await admin.describeGroups([groupId]);
  log(`describeGroups: state=${groups.groups[0].state} protocolType=${groups.groups[0].protocolType}`);

  // --- idempotent producer (InitProducerId), acks=-1 required ---
  const idem = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    retry: { retries: Number.MAX_SAFE_INTEGER }, // kafkajs warns otherwise; the overall timeout bounds it
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  cleanup.push(() => idem.disconnect().catch(() => {}));
  await idem.connect();
  await idem.send({
    topic,
    acks: -1,
    messages: Array.from({ length: SECOND_BATCH }, (_, i) => ({ key: `n${i}`, value: `second-${i}` })),
  });
  await idem.disconnect();
  log(`idempotent producer acks=-1 ok (${SECOND_BATCH} msgs)`);

  // --- transactional producer: one committed, one aborted transaction ---
  const txp = kafka.producer({
    transactionalId: `runtrail-smoke-tx-${suffix}`,
    idempotent: true,
    maxInFlightRequests: 1,
    retry: { retries: Number.MAX_SAFE_INTEGER },
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  cleanup.push(() => txp.disconnect().catch(() => {}));
  await txp.connect();
  let tx = await txp.transaction();
  await tx.send({ topic, messages: Array.from({ length: TX_COMMITTED }, (_, i) => ({ key: `t${i}`, value: `tx-commit-${i}` })) });
  await tx.commit();
  tx = await txp.transaction();
  await tx.send({ topic, messages: [{ key: 'a0', value: 'tx-abort-0' }, { key: 'a1', value: 'tx-abort-1' }] });
  await tx.abort();
  await txp.disconnect();
  log(`transactions ok (1 committed with ${TX_COMMITTED} msgs, 1 aborted)`);

  // --- second consumer in same group resumes from committed offsets (OffsetFetch + JoinGroup again);
  //     read_committed (kafkajs default) must skip the aborted transaction ---
  const expected2 = SECOND_BATCH + TX_COMMITTED;
  const got2 = await consumeBatch(expected2, 'consumer#2');
  assert(got2.length === expected2, `consumer#2 got exactly ${expected2} new messages (got ${got2.length})`);
  assert(
    got2.every((m) => m.value.startsWith('second-') || m.value.startsWith('tx-commit-')),
    'consumer#2 resumed after committed offsets and saw no aborted records',
  );

  await producer.disconnect();
  await admin.deleteGroups([groupId]);
  await admin.deleteTopics({ topics: [topic] });
  log('deleteGroups/deleteTopics ok');
  await admin.disconnect();
  log('SMOKE OK');
}

withTimeout(main(), OVERALL_TIMEOUT_MS, 'smoke test')
  .then(() => process.exit(0))
  .catch(async (err) => {
    console.error(`[smoke] FAILED: ${err?.stack || err}`);
    for (const c of cleanup.reverse()) await withTimeout(c(), 5000, 'cleanup').catch(() => {});
    await admin.disconnect().catch(() => {});
    process.exit(1);
  });
