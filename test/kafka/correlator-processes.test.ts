import { join } from 'node:path';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CanonicalEventSchema, type CanonicalEvent } from '../../shared/event.ts';
import { eventId } from '../../shared/ids.ts';
import { SOURCE_TOPIC } from '../../shared/names.ts';
import { brokers, connectedProducer, kafkaConfigInput, runId, topicsFor, waitFor } from './helpers.ts';
import { metricTotal, openProcessHarness, writeConfig, type ProcessHarness } from './processes.ts';

/**
 * Correlators as real processes on a real broker, writing to one ClickHouse engine over HTTP
 * (chDB behind ClickHouse's HTTP interface, so several processes share one store):
 * crash-and-restart exactly-once storage, and two instances in one group against one instance.
 */

let h: ProcessHarness;
let producer: Producer;

beforeAll(async () => {
  h = await openProcessHarness('runtrail-kproc-');
  producer = await connectedProducer('proc-test');
});

afterAll(async () => {
  await producer?.disconnect();
  await h?.close();
});

const T0 = Date.parse('2026-06-01T08:00:00Z');

/**
 * A realistic multi-source stream: per task, agent events carrying the task, a credential issued
 * for it (tagged), and resource calls made with that credential, spread over partitions.
 */
function scenario(run: string, tasks: number, perTask: number): { topic: 'agent' | 'resource'; key: string; event: CanonicalEvent }[] {
  const out: { topic: 'agent' | 'resource'; key: string; event: CanonicalEvent }[] = [];
  for (let i = 0; i < tasks; i++) {
    const task = `${run}-task-${i}`;
    const key = `ASIA${run.toUpperCase().slice(0, 8)}${String(i).padStart(8, '0')}`;
    const t = T0 + i * 50;
    const mk = (o: Record<string, unknown>) => CanonicalEventSchema.parse({ format: 'runtrail', ...o });
    out.push({ topic: 'agent', key: task, event: mk({ event_id: eventId('p', run, i, 'start'), source: 'agent', type: 'task.started', time: t, task_id: task, agent_id: `agent-${i % 7}` }) });
    out.push({
      topic: 'resource',
      key: `AKIACALLER${i % 5}`,
      event: mk({ event_id: eventId('p', run, i, 'issue'), source: 'resource', type: 'credential.issued', time: t + 1, credential_id: `AKIACALLER${i % 5}`, credential: { id: key, kind: 'aws-access-key', tags: { 'runtrail.task.id': task } } }),
    });
    for (let j = 0; j < perTask; j++) {
      if (j % 2 === 0) {
        out.push({ topic: 'agent', key: task, event: mk({ event_id: eventId('p', run, i, 'tool', j), source: 'agent', type: 'tool.call', time: t + 2 + j, task_id: task, tool: { name: `tool_${j % 4}` } }) });
      } else {
        out.push({ topic: 'resource', key, event: mk({ event_id: eventId('p', run, i, 'use', j), source: 'resource', type: 'resource.access', time: t + 2 + j, credential_id: key, action: 's3:GetObject' }) });
      }
    }
  }
  return out;
}

async function produce(run: string, items: ReturnType<typeof scenario>, batch = 500, topics: Record<string, string> = topicsFor(run)): Promise<void> {
  for (let i = 0; i < items.length; i += batch) {
    const slice = items.slice(i, i + batch);
    const agent = slice.filter((s) => s.topic === 'agent');
    const resource = slice.filter((s) => s.topic === 'resource');
    await producer.sendBatch({
      acks: -1,
      topicMessages: [
        { topic: topics[SOURCE_TOPIC.agent] as string, messages: agent.map((s) => ({ key: s.key, value: JSON.stringify(s.event) })) },
        { topic: topics[SOURCE_TOPIC.resource] as string, messages: resource.map((s) => ({ key: s.key, value: JSON.stringify(s.event) })) },
      ].filter((t) => t.messages.length > 0),
    });
  }
}

async function createTopics(run: string, topics: Record<string, string> = topicsFor(run)): Promise<void> {
  const admin = new Kafka({ clientId: 'proc-admin', brokers: brokers(), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  await admin.createTopics({ waitForLeaders: true, topics: Object.values(topics).map((topic) => ({ topic, numPartitions: 6 })) });
  await admin.disconnect();
}

/** Waits until a consumer group is stable with `members` members that all hold partitions. */
async function groupSettled(groupId: string, members: number): Promise<void> {
  const admin = new Kafka({ clientId: 'proc-admin', brokers: brokers(), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  const settled = await waitFor(
    async () => {
      const { groups } = await admin.describeGroups([groupId]);
      const g = groups[0];
      return g?.state === 'Stable' && g.members.length === members && g.members.every((m) => m.memberAssignment.length > 8);
    },
    (ok) => ok,
    60_000,
  );
  await admin.disconnect();
  if (!settled) throw new Error(`consumer group ${groupId} did not settle with ${members} members`);
}

async function readTopic(topic: string, expected: number): Promise<Array<{ task_id: string; event_id: string; attribution: string; join_key: string }>> {
  const consumer: Consumer = new Kafka({ clientId: 'proc-reader', brokers: brokers(), logLevel: logLevel.NOTHING }).consumer({ groupId: `reader-${topic}-${Date.now()}` });
  const rows: Array<{ task_id: string; event_id: string; attribution: string; join_key: string }> = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const v = JSON.parse(message.value?.toString() ?? '{}') as Record<string, string>;
      rows.push({ task_id: v.task_id ?? '', event_id: v.event_id ?? '', attribution: v.attribution ?? '', join_key: v.join_key ?? '' });
    },
  });
  await waitFor(async () => rows.length, (n) => n >= expected, 60_000);
  await consumer.disconnect();
  return rows;
}

function canonicalRows(rows: Array<{ task_id: string; event_id: string; attribution: string; join_key: string }>): string[] {
  return [...new Set(rows.map((r) => `${r.task_id}|${r.event_id}|${r.attribution}|${r.join_key}`))].sort();
}

describe('correlator processes on a real broker', () => {
  it('a correlator killed with SIGKILL mid-stream and restarted stores every acknowledged event exactly once', async () => {
    const run = runId();
    await createTopics(run);
    const database = `${run}_crash`;
    const cfgFile = writeConfig(h.dir, `${run}-crash`, kafkaConfigInput(run, join(h.dir, run), { storage: { clickhouseUrl: h.chdb.url, database } }));
    const items = scenario(run, 400, 48); // 20,000 events
    expect(items).toHaveLength(20_000);
    const store = h.store(database);
    let a = await h.start('correlator', cfgFile);
    await store.start();
    const first = items.slice(0, 12_000);
    await produce(run, first);
    // Crash once some, but not all, of the stream is stored.
    await waitFor(() => store.countEvents(), (n) => n >= 2_000, 60_000);
    await a.kill();
    const storedAtCrash = await store.countEvents();
    // Killed while the first 12,000 were still being stored: the rest comes after the restart.
    expect(storedAtCrash).toBeLessThan(first.length);
    await produce(run, items.slice(12_000));
    a = await h.start('correlator', cfgFile);
    const n = await waitFor(() => store.countEvents(), (v) => v >= 20_000, 90_000);
    expect(n).toBe(20_000);
    expect(await a.stop()).toBe(0);
    const ids = await store.querySql('SELECT event_id FROM events FINAL', {}, { maxRows: 100_000 });
    expect(new Set(ids.map((r) => String(r.event_id)))).toEqual(new Set(items.map((i) => i.event.event_id)));
    const dupes = await store.querySql('SELECT count() AS n FROM (SELECT event_id FROM events FINAL GROUP BY event_id HAVING count() > 1)');
    expect(Number(dupes[0]?.n)).toBe(0);
    // Every resource call made with a task's credential landed in that task.
    const misplaced = await store.querySql("SELECT count() AS n FROM events FINAL WHERE type = 'resource.access' AND (task_id = '' OR attribution != 'credential')");
    expect(Number(misplaced[0]?.n)).toBe(0);
    await store.shutdown();
  }, 240_000);

  it('a second instance joining while events wait for their bindings: every event stored once, in its task, and commits reach the end of every partition', async () => {
    const run = runId();
    await createTopics(run);
    const database = `${run}_join`;
    // Long enough wall-clock grace that waiting events are still waiting when their bindings come.
    const cfgFile = writeConfig(h.dir, `${run}-join`, kafkaConfigInput(run, join(h.dir, run), { storage: { clickhouseUrl: h.chdb.url, database }, correlator: { graceWallMs: 120_000 } }));
    const items = scenario(run, 300, 20); // 6,600 events
    const issuances = items.filter((i) => i.event.type === 'credential.issued');
    const rest = items.filter((i) => i.event.type !== 'credential.issued');
    const store = h.store(database);
    await store.start();
    const a = await h.start('correlator', cfgFile);
    // Every call made with a credential arrives before the credential's issuance: they wait in
    // a's pending buffer and hold its commits back, while the agent events are stored.
    await produce(run, rest);
    const agentEvents = rest.filter((i) => i.topic === 'agent').length;
    await waitFor(() => store.countEvents(), (n) => n >= agentEvents, 60_000);
    // The rebalance: partitions a keeps are fetched again from their (held back) committed offsets.
    const b = await h.start('correlator', cfgFile);
    await groupSettled(`${run}-runtrail-correlator`, 2);
    await produce(run, issuances);
    expect(await waitFor(() => store.countEvents(), (n) => n >= items.length, 90_000)).toBe(items.length);

    // Commits reach the end of every partition while both run (a partition whose commits stall
    // is read again, whole, by whoever owns it next).
    const admin = new Kafka({ clientId: `${run}-admin`, brokers: brokers(), logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    const topics = topicsFor(run);
    const ingest = [topics[SOURCE_TOPIC.agent] as string, topics[SOURCE_TOPIC.resource] as string];
    const behind = async (): Promise<number> => {
      const committed = await admin.fetchOffsets({ groupId: `${run}-runtrail-correlator`, topics: ingest });
      let gap = 0;
      for (const t of committed) {
        const ends = await admin.fetchTopicOffsets(t.topic);
        for (const p of t.partitions) gap += Number(ends.find((e) => e.partition === p.partition)?.high ?? 0) - Math.max(0, Number(p.offset));
      }
      return gap;
    };
    expect(await waitFor(behind, (g) => g === 0, 60_000)).toBe(0);
    await admin.disconnect();
    expect(await a.stop()).toBe(0);
    expect(await b.stop()).toBe(0);
    const dupes = await store.querySql('SELECT count() AS n FROM (SELECT event_id FROM events FINAL GROUP BY event_id HAVING count() > 1)');
    expect(Number(dupes[0]?.n)).toBe(0);
    const misplaced = await store.querySql("SELECT count() AS n FROM events FINAL WHERE type = 'resource.access' AND (task_id = '' OR attribution != 'credential')");
    expect(Number(misplaced[0]?.n)).toBe(0);
    await store.shutdown();
  }, 300_000);

  it('two correlator instances in one consumer group split the partitions and produce exactly the timelines one instance produces', async () => {
    const run = runId();
    await createTopics(run);
    const items = scenario(run, 300, 20);
    await produce(run, items);
    const topics = topicsFor(run);

    // One instance.
    const single = writeConfig(h.dir, `${run}-single`, kafkaConfigInput(run, join(h.dir, `${run}-1`), {
      storage: { clickhouseUrl: h.chdb.url, database: `${run}_one` },
      kafka: { groupPrefix: `${run}-one-`, topics: { ...topics, timeline: `${run}.timeline.one`, bindings: `${run}.bindings.one` } },
    }));
    const one = await h.start('correlator', single);
    const oneStore = h.store(`${run}_one`);
    await oneStore.start();
    await waitFor(() => oneStore.countEvents(), (n) => n >= items.length, 90_000);
    expect(await one.stop()).toBe(0);

    // Two instances in one group, fed the same records on a copy of the ingest topics once both
    // hold partitions (otherwise the first to join could finish the whole stream alone).
    const pairTopics = Object.fromEntries(Object.entries(topics).map(([id, name]) => [id, `${name}.pair`]));
    await createTopics(run, pairTopics);
    const pair = writeConfig(h.dir, `${run}-pair`, kafkaConfigInput(run, join(h.dir, `${run}-2`), {
      storage: { clickhouseUrl: h.chdb.url, database: `${run}_two` },
      kafka: { groupPrefix: `${run}-two-`, topics: { ...pairTopics, timeline: `${run}.timeline.two`, bindings: `${run}.bindings.two` } },
    }));
    const [p1, p2] = await Promise.all([h.start('correlator', pair), h.start('correlator', pair)]);
    await groupSettled(`${run}-two-runtrail-correlator`, 2);
    await produce(run, items, 500, pairTopics);
    const twoStore = h.store(`${run}_two`);
    await twoStore.start();
    await waitFor(() => twoStore.countEvents(), (n) => n >= items.length, 90_000);
    const in1 = await metricTotal(p1.url, 'runtrail_events_in_total', 'stage="correlator"');
    const in2 = await metricTotal(p2.url, 'runtrail_events_in_total', 'stage="correlator"');
    expect(in1).toBeGreaterThan(0);
    expect(in2).toBeGreaterThan(0);
    expect(await p1.stop()).toBe(0);
    expect(await p2.stop()).toBe(0);

    const q = 'SELECT task_id, event_id, attribution, join_key FROM events FINAL ORDER BY task_id, event_time, event_id';
    const storedOne = await oneStore.querySql(q, {}, { maxRows: 100_000 });
    const storedTwo = await twoStore.querySql(q, {}, { maxRows: 100_000 });
    expect(storedOne).toHaveLength(items.length);
    expect(storedTwo).toEqual(storedOne);
    const t1 = canonicalRows(await readTopic(`${run}.timeline.one`, items.length));
    const t2 = canonicalRows(await readTopic(`${run}.timeline.two`, items.length));
    expect(t1).toHaveLength(items.length);
    expect(t2).toEqual(t1);
    await oneStore.shutdown();
    await twoStore.shutdown();
  }, 300_000);
});
