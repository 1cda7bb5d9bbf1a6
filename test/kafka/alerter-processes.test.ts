import { join } from 'node:path';
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOPIC } from '../../shared/names.ts';
import { finding, startReceiver, type Receiver } from '../integration/alerting-harness.ts';
import { connectedProducer, kafkaConfigInput, runId, topicsFor, waitFor } from './helpers.ts';
import { openProcessHarness, writeConfig, type ProcessHarness } from './processes.ts';

/**
 * The alerter as a real process on a real broker, storing incidents and its outbox in one
 * ClickHouse engine over HTTP, delivering to a local webhook receiver: killed with SIGKILL while
 * deliveries are under way and restarted, it records every incident once and delivers every one
 * of them. A notification whose outcome was not yet stored when the process died may be sent
 * twice (at-least-once, as the README's limits say); the test bounds how many.
 */

let h: ProcessHarness;
let producer: Producer;
let hook: Receiver;

beforeAll(async () => {
  h = await openProcessHarness('runtrail-kalert-');
  producer = await connectedProducer('alert-test');
  hook = await startReceiver();
});

afterAll(async () => {
  await producer?.disconnect();
  await hook?.close();
  await h?.close();
});

const INCIDENTS = 120;

describe('alerter process on a real broker', () => {
  it('killed with SIGKILL mid-delivery and restarted, records each incident once and delivers every one', async () => {
    const run = runId();
    const database = `${run}_alert`;
    const cfgFile = writeConfig(
      h.dir,
      `${run}-alert`,
      kafkaConfigInput(run, join(h.dir, run), {
        storage: { clickhouseUrl: h.chdb.url, database, batchMaxDelayMs: 20 },
        alerting: {
          // 20 a second: the deliveries take seconds, so the kill lands while they go on.
          channels: [{ type: 'webhook', name: 'hook', url: `${hook.url}/runtrail`, secret: 'test-secret-of-16-chars-or-more', ratePerMinute: 1_200 }],
          delivery: { backoffInitialMs: 20, jitter: 0 },
        },
      }),
    );
    // One finding per task: one incident each (the default fingerprint is detector, rule and task).
    const findings = Array.from({ length: INCIDENTS }, (_, i) => finding({ task_id: `${run}-task-${i}`, id: `${run}-f-${i}` }, i));
    const store = h.store(database);
    await store.start();
    // What the detector does: store the findings, then publish them.
    await store.insertFindings(findings);
    await producer.send({ topic: topicsFor(run)[TOPIC.findings] as string, acks: -1, messages: findings.map((f) => ({ key: f.task_id, value: JSON.stringify(f) })) });

    let alerter = await h.start('alerter', cfgFile);
    const ours = () => hook.accepted().filter((r) => r.body.includes(run));
    await waitFor(async () => ours().length, (n) => n >= 25, 60_000);
    await alerter.kill();
    const beforeKill = ours().length;
    expect(beforeKill).toBeLessThan(INCIDENTS);

    alerter = await h.start('alerter', cfgFile);
    const delivered = () => new Set(ours().map((r) => (JSON.parse(r.body) as { task_id: string }).task_id));
    await waitFor(async () => delivered().size, (n) => n >= INCIDENTS, 90_000);
    expect(await alerter.stop(), alerter.stderr.join('').slice(-3000)).toBe(0);

    expect([...delivered()].sort()).toEqual(findings.map((f) => f.task_id).sort());
    const incidents = await store.querySql('SELECT task_id, finding_count, status FROM incidents FINAL WHERE task_id LIKE {p:String}', { p: `${run}-%` }, { maxRows: 1000 });
    expect(incidents).toHaveLength(INCIDENTS);
    for (const i of incidents) expect(i).toMatchObject({ finding_count: '1', status: 'open' });
    const pending = await store.querySql("SELECT count() AS n FROM alert_outbox FINAL WHERE status NOT IN ('delivered')");
    expect(Number(pending[0]?.n)).toBe(0);
    // Repeats are only notifications sent just before the kill whose outcome was not stored yet.
    const repeats = ours().length - INCIDENTS;
    expect(repeats).toBeLessThanOrEqual(beforeKill);
    for (const r of ours()) expect(r.headers['x-runtrail-signature']).toMatch(/^sha256=[0-9a-f]{64}$/);
    await store.shutdown();
  }, 240_000);
});
