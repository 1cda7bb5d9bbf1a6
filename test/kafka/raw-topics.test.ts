import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeadLetterSchema, type DeadLetter } from '../../shared/bus/bus.ts';
import { RAW_SOURCE_GROUP } from '../../services/collector/raw-topic-source.ts';
import { brokers, connectedProducer, kafkaConfigInput, runId, topicsFor, waitFor } from './helpers.ts';
import { metricTotal, openProcessHarness, writeConfig, type ProcessHarness } from './processes.ts';

/**
 * Shippers writing their standard records straight to Kafka (`kafka.rawTopics`): the collector
 * process converts each message as its HTTP endpoint would, the correlator stores the events,
 * rejected records and unreadable messages land on the dead-letter topic with their reason, and
 * the collector's group commits past every message, so a restart converts nothing twice.
 */

let h: ProcessHarness;

beforeAll(async () => {
  h = await openProcessHarness('runtrail-kraw-');
});

afterAll(async () => {
  await h?.close();
});

const T = '2026-10-02T08:00:00Z';

function ct(id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    eventVersion: '1.08',
    eventID: id,
    eventTime: T,
    eventSource: 's3.amazonaws.com',
    eventName: 'GetObject',
    awsRegion: 'eu-west-1',
    sourceIPAddress: '10.0.0.5',
    userIdentity: { type: 'AssumedRole', arn: 'arn:aws:sts::111122223333:assumed-role/agent/pod', accessKeyId: 'ASIARAWTOPIC00000001' },
    requestParameters: { bucketName: 'invoices', key: `${id}.pdf` },
    ...extra,
  };
}

/** Every dead letter on the run's dead-letter topic, read from the beginning until `n` arrived. */
async function deadLetters(run: string, n: number): Promise<DeadLetter[]> {
  const consumer = new Kafka({ clientId: `${run}-dl`, brokers: brokers(), logLevel: logLevel.NOTHING }).consumer({ groupId: `${run}-dl-reader` });
  const out: DeadLetter[] = [];
  await consumer.connect();
  await consumer.subscribe({ topics: [topicsFor(run)['dead-letter'] as string], fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => void out.push(DeadLetterSchema.parse(JSON.parse(String(message.value)))) });
  await waitFor(async () => out.length, (v) => v >= n, 30_000);
  await consumer.disconnect();
  return out;
}

describe('raw shipper topics on a real broker', () => {
  it('converts CloudTrail and SPIRE records shippers wrote to Kafka, dead-letters the bad ones with their reason, and commits past them', async () => {
    const run = runId();
    const database = `${run}_raw`;
    const rawTopics = { cloudtrail: `${run}.shipper.cloudtrail`, spire: `${run}.shipper.spire` };
    const cfgFile = writeConfig(h.dir, `${run}-raw`, kafkaConfigInput(run, join(h.dir, run), { storage: { clickhouseUrl: h.chdb.url, database }, kafka: { rawTopics } }));
    let collector = await h.start('collector', cfgFile);
    const correlator = await h.start('correlator', cfgFile);

    const producer = await connectedProducer(`${run}-shipper`);
    // A CloudTrail log file as Fluent Bit forwards it, one record broken; then a message that is not JSON at all.
    await producer.send({
      topic: rawTopics.cloudtrail,
      acks: -1,
      messages: [
        { value: JSON.stringify({ Records: [ct(`${run}-ct-1`), ct(`${run}-ct-bad`, { eventTime: 'yesterday' }), ct(`${run}-ct-2`)] }) },
        { key: 'garbage', value: 'this is not a CloudTrail record' },
      ],
    });
    // SPIRE Server's text log line (no header: read as text lines), and a JSON line with its content type.
    const line = `time="${T}" level=debug msg="Signed X509 SVID" serial_num=${run}777 spiffe_id="spiffe://example.org/ns/agents/sa/raw" expiration="2026-10-02T09:00:00Z"`;
    await producer.send({
      topic: rawTopics.spire,
      acks: -1,
      messages: [
        { value: line },
        {
          value: JSON.stringify({ time: T, level: 'info', msg: 'API accessed', type: 'audit', method: 'BatchCreateEntry', status: 'success', caller_uid: 0, spiffe_id: 'spiffe://example.org/ns/x', request_id: run }),
          headers: { 'content-type': 'application/json' },
        },
      ],
    });
    await producer.disconnect();

    const store = h.store(database);
    await store.start();
    const rows = await waitFor(
      () => store.querySql('SELECT format, type, credential_id, JSONExtractString(credential, \'id\') AS issued FROM events FINAL ORDER BY format, type', {}, { maxRows: 100 }),
      (r) => r.length >= 4,
      60_000,
    );
    expect(rows.map((r) => [r.format, r.type])).toEqual([
      ['cloudtrail', 'resource.access'],
      ['cloudtrail', 'resource.access'],
      ['spire', 'credential.issued'],
      ['spire', 'resource.access'],
    ]);
    expect(rows[2]?.issued).toBe(`${run}777`);

    // The two messages may sit on different partitions: each dead letter names where it came from.
    const letters = (await deadLetters(run, 2)).sort((a, b) => a.code.localeCompare(b.code));
    expect(letters.map((d) => [d.stage, d.topic, d.code])).toEqual([
      ['collector', rawTopics.cloudtrail, 'body_invalid'],
      ['collector', rawTopics.cloudtrail, 'record_invalid'],
    ]);
    expect(letters[0]?.key).toBe('garbage');
    expect(letters[0]?.payload).toBe('this is not a CloudTrail record');
    expect(letters[1]?.reason).toMatch(/^record 1: field `eventTime`: /);
    for (const d of letters) expect(d.offset).toMatch(/^[01]$/);
    expect(await metricTotal(collector.url, 'runtrail_collector_raw_messages_total')).toBe(4);

    // Committed past every message: a restarted collector converts nothing again.
    const admin = new Kafka({ clientId: `${run}-admin`, brokers: brokers(), logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    const committed = await waitFor(
      async () => (await admin.fetchOffsets({ groupId: `${run}-${RAW_SOURCE_GROUP}`, topics: Object.values(rawTopics) })).flatMap((t) => t.partitions.map((p) => Math.max(0, Number(p.offset)))).reduce((a, b) => a + b, 0),
      (v) => v === 4,
    );
    await admin.disconnect();
    expect(committed).toBe(4);
    expect(await collector.stop()).toBe(0);
    collector = await h.start('collector', cfgFile);
    // One new message after the restart: once it is converted, the group is reading, and it must be the only one.
    const again = await connectedProducer(`${run}-shipper-2`);
    await again.send({ topic: rawTopics.cloudtrail, acks: -1, messages: [{ value: JSON.stringify({ Records: [ct(`${run}-ct-3`)] }) }] });
    await again.disconnect();
    const converted = await waitFor(() => metricTotal(collector.url, 'runtrail_collector_raw_messages_total'), (v) => v >= 1, 60_000);
    await new Promise((r) => setTimeout(r, 1000));
    expect(converted).toBe(1);
    expect(await metricTotal(collector.url, 'runtrail_collector_raw_messages_total')).toBe(1);
    expect(await collector.stop()).toBe(0);
    expect(await correlator.stop()).toBe(0);
    await store.shutdown();
  }, 180_000);
});
