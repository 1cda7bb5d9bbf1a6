import { afterEach, describe, expect, it } from 'vitest';
import type { Bus } from '../../shared/bus/bus.ts';
import { LocalBus } from '../../shared/bus/local-bus.ts';
import { CorrelatorConfigSchema } from '../../shared/config.ts';
import { CanonicalEventSchema, isTaskClosedMarker, type CanonicalEvent, type TimelineEvent } from '../../shared/event.ts';
import { eventId } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/logger.ts';
import { MetricsRegistry } from '../../shared/metrics.ts';
import { SOURCE_TOPIC, TOPIC } from '../../shared/names.ts';
import { watchingCommits } from '../fixtures/doubles.ts';
import type { Store } from '../../services/storage/store.ts';
import { CorrelatorStage } from '../../services/correlator/correlator-stage.ts';

/**
 * The pipelined correlator stage: outputs are stored while later batches are correlated, but an
 * input offset is committed only after everything derived from it (and from every earlier input)
 * is stored, published, and (with an in-memory timeline) handled by the detector.
 */

const T0 = Date.parse('2026-11-21T10:00:00Z');
let seq = 0;
function agentEvent(task: string): CanonicalEvent {
  seq++;
  return CanonicalEventSchema.parse({ event_id: eventId('pipelined', seq), source: 'agent', type: 'tool.call', time: T0 + seq, format: 'runtrail', task_id: task, tool: { name: 't' } });
}

/** A store whose event inserts complete only when the test says so. */
class GatedStore {
  readonly calls: Array<{ rows: readonly TimelineEvent[]; release: () => void }> = [];
  readonly stored = new Set<string>();

  insertEvents(rows: readonly TimelineEvent[]): Promise<void> {
    return new Promise((resolve) => {
      this.calls.push({
        rows,
        release: () => {
          for (const r of rows) this.stored.add(r.event_id);
          resolve();
        },
      });
    });
  }
  /** Nothing was stored before the test: a taking-over correlator finds no earlier copies. */
  async storedAttributions(ids: readonly string[]): Promise<Map<string, { task_id: string }>> {
    expect(ids.filter((id) => this.stored.has(id))).toEqual([]);
    return new Map();
  }
  async insertBindings(): Promise<void> {}
  async insertDeadLetters(): Promise<void> {}
  async loadBindings(): Promise<[]> {
    return [];
  }
}

/** The LocalBus, with every commit recorded along with what was stored at that moment. */
function recordingBus(inner: LocalBus, store: GatedStore, commits: Array<{ offset: number; storedAtCommit: number }>): Bus {
  return watchingCommits(inner, (offsets) => {
    for (const o of offsets) if (o.topic === SOURCE_TOPIC.agent) commits.push({ offset: Number(o.offset), storedAtCommit: store.stored.size });
  });
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 30));
const stages: CorrelatorStage[] = [];
afterEach(async () => {
  for (const s of stages.splice(0)) await s.shutdown();
});

function setup(
  extra: {
    timelineHandled?: () => Promise<void>;
    commitAfterHandled?: boolean;
    publishTaskCloses?: boolean;
    onTasksClosed?: (ids: readonly string[]) => Promise<void>;
    shutdownGraceMs?: number;
  } = {},
) {
  const local = new LocalBus({ dir: null, fsync: false, maxBatch: 3, maxBacklog: 10_000, segmentBytes: 1 << 20, log: silentLogger() });
  const store = new GatedStore();
  const commits: Array<{ offset: number; storedAtCommit: number }> = [];
  const bus = recordingBus(local, store, commits);
  const stage = new CorrelatorStage({
    bus,
    store: store as unknown as Store,
    cfg: CorrelatorConfigSchema.parse({}),
    log: silentLogger(),
    metrics: new MetricsRegistry(),
    wallClock: false,
    tickMs: 3_600_000,
    maxInFlight: 4,
    ...extra,
  });
  stages.push(stage);
  return { local, store, commits, stage };
}

describe('CorrelatorStage pipelined commits', () => {
  it('correlates the next batch while an insert is in flight, publishes at once in order, and commits only what is stored', async () => {
    const { local, store, commits, stage } = setup();
    const timeline: string[] = [];
    await local.start();
    await local.subscribe({ topics: [TOPIC.timeline], onBatch: async (b) => void timeline.push(...b.messages.map((m) => (isTaskClosedMarker(m.value) ? `closed:${m.value.task_id}` : m.value.event_id))) });
    await stage.start();

    const a = [agentEvent('ta'), agentEvent('ta'), agentEvent('ta')];
    const b = [agentEvent('tb'), agentEvent('tb'), agentEvent('tb')];
    await local.publish(SOURCE_TOPIC.agent, a.map((e) => ({ key: 'ta', value: { ...e, ingested_at: T0 } })));
    await local.publish(SOURCE_TOPIC.agent, b.map((e) => ({ key: 'tb', value: { ...e, ingested_at: T0 } })));
    // Both batches were correlated and their inserts started, though neither has finished.
    await until(() => store.calls.length === 2);
    expect(stage.inFlightOutputs).toBe(2);

    // Detectors see both outputs before storage finishes, in correlation order.
    await until(() => timeline.length === 6);
    expect(timeline).toEqual([...a, ...b].map((e) => e.event_id));

    // The later batch's insert finishes first: nothing may be committed yet.
    store.calls[1]?.release();
    await settle();
    expect(commits).toEqual([]);

    store.calls[0]?.release();
    await until(() => commits.some((c) => c.offset === 6));
    await stage.idle();
    // Every commit covered only stored events.
    for (const c of commits) expect(c.storedAtCommit).toBeGreaterThanOrEqual(c.offset);
    expect(commits.map((c) => c.offset)).toEqual([...commits.map((c) => c.offset)].sort((x, y) => x - y));
    expect(stage.inFlightOutputs).toBe(0);
  });

  it('with an in-memory timeline, commits only once the detector has handled what was published', async () => {
    let handled: () => void = () => undefined;
    const barrier = new Promise<void>((r) => (handled = r));
    let asked = 0;
    const { local, store, commits, stage } = setup({
      timelineHandled: () => {
        asked++;
        return barrier;
      },
      commitAfterHandled: true,
    });
    await local.start();
    await stage.start();
    await local.publish(SOURCE_TOPIC.agent, [agentEvent('tc'), agentEvent('tc')].map((e) => ({ key: 'tc', value: { ...e, ingested_at: T0 } })));
    await until(() => store.calls.length === 1);
    store.calls[0]?.release();
    await until(() => asked === 1);
    await settle();
    // Stored and published, but the detector has not got to it: still uncommitted.
    expect(commits).toEqual([]);
    expect(stage.inFlightOutputs).toBe(1);
    handled();
    await until(() => commits.some((c) => c.offset === 2));
    await stage.idle();
    expect(stage.inFlightOutputs).toBe(0);
  });
  it('tells onTasksClosed of a close only once the detector has handled the task\'s events, without holding back commits', async () => {
    let handled: () => void = () => undefined;
    const barrier = new Promise<void>((r) => (handled = r));
    let asked = 0;
    const closed: string[] = [];
    const { local, store, commits, stage } = setup({
      timelineHandled: () => {
        asked++;
        return barrier;
      },
      onTasksClosed: async (ids) => void closed.push(...ids),
    });
    await local.start();
    await stage.start();
    await local.publish(SOURCE_TOPIC.agent, [agentEvent('tw'), agentEvent('tw')].map((e) => ({ key: 'tw', value: { ...e, ingested_at: T0 } })));
    await until(() => store.calls.length === 1);
    store.calls[0]?.release();
    // No close in this output: committed as soon as stored, the detector is not asked.
    await until(() => commits.some((c) => c.offset === 2));
    expect(asked).toBe(0);
    const closing = stage.tick(true);
    await until(() => asked === 1);
    await settle();
    // The detector has not handled the task's events yet (it lags): close-time rules must wait.
    expect(closed).toEqual([]);
    handled();
    await closing;
    await until(() => closed.length === 1);
    expect(closed).toEqual(['tw']);
  });

  it('shutdown gives up on an output the detector never handles after shutdownGraceMs, leaving it uncommitted', async () => {
    let asked = 0;
    const { local, store, commits, stage } = setup({
      // A detector that never gets to the output (stalled on storage, say).
      timelineHandled: () => {
        asked++;
        return new Promise<void>(() => undefined);
      },
      commitAfterHandled: true,
      shutdownGraceMs: 100,
    });
    await local.start();
    await stage.start();
    await local.publish(SOURCE_TOPIC.agent, [agentEvent('tg'), agentEvent('tg')].map((e) => ({ key: 'tg', value: { ...e, ingested_at: T0 } })));
    await until(() => store.calls.length === 1);
    store.calls[0]?.release();
    // The output began waiting for the detector before shutdown started.
    await until(() => asked === 1);
    await settle();
    await stage.shutdown();
    // Nothing committed past the output's inputs (offset 0 = none of them consumed).
    expect(commits.filter((c) => c.offset > 0)).toEqual([]);
    expect(stage.inFlightOutputs).toBe(0);
  });

  for (const publish of [true, false]) {
    it(`${publish ? 'publishes' : 'with publishTaskCloses off publishes no'} task-closed marker${publish ? ' on the timeline after the task\'s events' : ''} when a task closes`, async () => {
      const { local, store, stage } = setup({ publishTaskCloses: publish });
      const timeline: string[] = [];
      await local.start();
      await local.subscribe({ topics: [TOPIC.timeline], onBatch: async (b) => void timeline.push(...b.messages.map((m) => (isTaskClosedMarker(m.value) ? `closed:${m.value.task_id}` : m.value.task_id))) });
      await stage.start();
      const task = publish ? 'tm-on' : 'tm-off';
      await local.publish(SOURCE_TOPIC.agent, [agentEvent(task), agentEvent(task)].map((e) => ({ key: task, value: { ...e, ingested_at: T0 } })));
      await until(() => store.calls.length === 1);
      store.calls[0]?.release();
      await until(() => timeline.length === 2);
      // The task is still open: nothing says it closed.
      await settle();
      expect(timeline).toEqual([task, task]);
      // Closing every open task (as at the end of its linger); its output's inserts go through too.
      const closing = stage.tick(true);
      for (let i = 0; i < 20 && store.calls.some((c) => !c.rows.every((r) => store.stored.has(r.event_id))); i++) {
        for (const c of store.calls) c.release();
        await settle();
      }
      await closing;
      await stage.idle();
      await settle();
      expect(timeline).toEqual(publish ? [task, task, `closed:${task}`] : [task, task]);
    });
  }
});
