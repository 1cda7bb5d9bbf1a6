import { describe, expect, it } from 'vitest';
import type { DetectorInstance, TaskView } from '../../detectors/detector.ts';
import { DetectorEngine } from '../../detectors/engine.ts';
import { tev } from '../../detectors/testing.ts';
import { EVENT_TYPE, type TimelineEvent } from '../../shared/event.ts';

/** A detector that records what the engine showed it. */
function recorder(): DetectorInstance & { views: Array<{ taskId: string; ids: string[] }>; closed: Array<{ taskId: string; ids: string[] }> } {
  const views: Array<{ taskId: string; ids: string[] }> = [];
  const closed: Array<{ taskId: string; ids: string[] }> = [];
  return {
    views,
    closed,
    onEvent(_e: TimelineEvent, task: TaskView) {
      views.push({ taskId: task.taskId, ids: task.events.map((x) => x.event_id) });
      return [];
    },
    onTaskClosed(task: TaskView) {
      closed.push({ taskId: task.taskId, ids: task.events.map((x) => x.event_id) });
      return [];
    },
  };
}

let t0 = Date.parse('2026-11-21T10:00:00Z');
function ev(task: string, id: string, extra: Partial<TimelineEvent> = {}): TimelineEvent {
  t0 += 1000;
  return tev({ id: `${task}/${id}`, source: 'agent', type: EVENT_TYPE.toolCall, task_id: task, time: t0, ...extra });
}

describe('DetectorEngine bounds', () => {
  it('keeps only the most recent maxEventsPerTask events of a task, in event-time order', () => {
    const rec = recorder();
    const engine = new DetectorEngine([rec], { maxTasks: 10, maxEventsPerTask: 3 });
    const events = ['a', 'b', 'c', 'd', 'e'].map((id) => ev('t1', id));
    engine.process(events);
    // Evaluated with the window plus itself; then the oldest drops off.
    expect(rec.views.at(-1)?.ids).toEqual(events.slice(1).map((e) => e.event_id));
    expect(engine.eventCount).toBe(3);
    expect(engine.stats.truncatedEvents).toBe(2);
    // A late event lands in time order and is in the view it is evaluated with; then the window is
    // trimmed back to the most recent events by event time (here, the late one itself drops off).
    const late = ev('t1', 'late', { time: events[3]!.time - 1 });
    engine.process([late]);
    expect(rec.views.at(-1)?.ids).toEqual([events[2]!.event_id, late.event_id, events[3]!.event_id, events[4]!.event_id]);
    const after = ev('t1', 'f');
    engine.process([after]);
    expect(rec.views.at(-1)?.ids).toEqual([late.event_id, events[3]!.event_id, events[4]!.event_id, after.event_id]);
    expect(engine.eventCount).toBe(3);
  });

  it('stays within the global event budget by dropping the least recently active tasks whole, and counts it', () => {
    const rec = recorder();
    const engine = new DetectorEngine([rec], { maxTasks: 1000, maxEventsPerTask: 4, maxEvents: 10 });
    for (const task of ['t1', 't2', 't3']) engine.process([ev(task, '1'), ev(task, '2'), ev(task, '3')]);
    expect(engine.eventCount).toBe(9);
    // t1 becomes the most recently active; the budget then evicts t2 (least recent), not t1.
    engine.process([ev('t1', '4')]);
    expect(engine.eventCount).toBe(10);
    engine.process([ev('t4', '1'), ev('t4', '2')]);
    expect(engine.eventCount).toBeLessThanOrEqual(10);
    expect(engine.stats.evictedTasks).toBe(1);
    expect(engine.stats.evictedEvents).toBe(3);
    expect(engine.taskCount).toBe(3);
    // t2's next event starts a fresh window; t1 kept its own.
    const fresh = ev('t2', '4');
    engine.process([fresh]);
    expect(rec.views.at(-1)).toEqual({ taskId: 't2', ids: [fresh.event_id] });
    engine.process([ev('t1', '5')]);
    expect(rec.views.at(-1)?.ids.length).toBe(5);
    // The budget holds however many tasks come and go.
    for (let i = 0; i < 200; i++) engine.process([ev(`x${i}`, '1'), ev(`x${i}`, '2')]);
    expect(engine.eventCount).toBeLessThanOrEqual(10);
  });

  it('still closes a task whose window was evicted, with an empty view, and frees a closed window from the budget', () => {
    const rec = recorder();
    const engine = new DetectorEngine([rec], { maxTasks: 1000, maxEventsPerTask: 4, maxEvents: 4 });
    engine.process([ev('old', '1'), ev('old', '2'), ev('old', '3')]);
    engine.process([ev('new', '1'), ev('new', '2')]);
    expect(engine.stats.evictedTasks).toBe(1);
    engine.close(['old', 'new']);
    expect(rec.closed.map((c) => [c.taskId, c.ids.length])).toEqual([
      ['old', 0],
      ['new', 2],
    ]);
    expect(engine.eventCount).toBe(0);
    expect(engine.taskCount).toBe(0);
  });

  it('hands detectors the whole event but keeps slim copies (no messages, tool result or attributes)', () => {
    const seen: TimelineEvent[] = [];
    const windows: Array<readonly TimelineEvent[]> = [];
    const inst: DetectorInstance = {
      onEvent(e, task) {
        seen.push(e);
        windows.push(task.events);
        return [];
      },
    };
    const engine = new DetectorEngine([inst], { maxTasks: 10, maxEventsPerTask: 8, slimEvents: true });
    const full = ev('t1', 'a', {
      messages: { system: 'you are helpful', input: 'do it' },
      tool: { name: 'read_file', arguments: '{"path":"/etc/passwd"}', result: 'root:x:0:0' },
      attributes: { big: 'x'.repeat(1000) },
    });
    engine.process([full]);
    expect(seen[0]).toBe(full);
    const kept = windows[0]?.[0] as TimelineEvent;
    expect(kept.event_id).toBe(full.event_id);
    expect(kept.messages).toBeUndefined();
    expect(kept.tool).toEqual({ name: 'read_file', arguments: '{"path":"/etc/passwd"}' });
    expect(kept.attributes).toEqual({});
    expect(kept.task_id).toBe('t1');
    expect(kept.time).toBe(full.time);
  });

  it('skips a redelivered event within the dedup window', () => {
    const rec = recorder();
    const engine = new DetectorEngine([rec], { maxTasks: 10, maxEventsPerTask: 8, dedupWindow: 100 });
    const e = ev('t1', 'a');
    engine.process([e]);
    engine.process([e]);
    expect(rec.views).toHaveLength(1);
    expect(engine.stats.duplicateEvents).toBe(1);
  });
});

describe('DetectorEngine evidence summaries', () => {
  /** Fires one finding, on the event with id suffix `fire`, whose evidence is the given ids. */
  function firing(evidence: () => string[]): DetectorInstance {
    return {
      onEvent(e: TimelineEvent, task: TaskView) {
        if (!e.event_id || !e.tool?.name.startsWith('fire')) return [];
        return [{ id: `f-${e.event_id}`, detector: 'test', rule: 'r', severity: 'high', title: 't', summary: '', task_id: task.taskId, agent_id: '', workload_id: '', time: e.time, evidence: evidence(), join_keys: {}, metrics: {}, tags: [] }];
      },
    };
  }

  it('attaches summaries of the first evidence events the task window holds, in evidence order', () => {
    const read = ev('t1', 'read', { tool: { name: 'read_inbox' }, agent_id: 'mail-agent', outcome: 'success' });
    const access = ev('t1', 'access', { source: 'resource', type: EVENT_TYPE.resourceAccess, action: 's3:GetObject', principal: 'arn:aws:sts::1:assumed-role/r/s', resources: [{ id: 'arn:aws:s3:::b/k' }, { id: 'arn:aws:s3:::b/k2' }] });
    const other = ev('t1', 'other');
    const fire = ev('t1', 'fire', { tool: { name: 'fire_transfer' } });
    const gone = ev('t1', 'gone', { time: read.time - 500 });
    const engine = new DetectorEngine([firing(() => [gone.event_id, access.event_id, read.event_id, fire.event_id])], { maxTasks: 10, maxEventsPerTask: 3, evidenceSummaries: 3 });
    // `gone` falls off the 3-event window before the finding fires.
    const [f] = engine.process([gone, read, access, other, fire]);
    expect(f?.evidence_events).toEqual([
      { event_id: access.event_id, time: access.time, source: 'resource', type: EVENT_TYPE.resourceAccess, action: 's3:GetObject', resource: 'arn:aws:s3:::b/k', principal: 'arn:aws:sts::1:assumed-role/r/s' },
      { event_id: read.event_id, time: read.time, source: 'agent', type: EVENT_TYPE.toolCall, agent_id: 'mail-agent', tool: 'read_inbox', outcome: 'success' },
    ]);
  });

  it('attaches none by default, and at most the limit', () => {
    const a = ev('t2', 'a');
    const b = ev('t2', 'b');
    const fire = ev('t2', 'fire', { tool: { name: 'fire' } });
    const ids = () => [a.event_id, b.event_id, fire.event_id];
    const plain = new DetectorEngine([firing(ids)], { maxTasks: 10, maxEventsPerTask: 8 }).process([a, b, fire]);
    expect(plain).toHaveLength(1);
    expect(plain[0]?.evidence).toEqual(ids());
    expect(plain[0]?.evidence_events).toBeUndefined();
    const [f] = new DetectorEngine([firing(ids)], { maxTasks: 10, maxEventsPerTask: 8, evidenceSummaries: 2 }).process([a, b, fire]);
    expect(f?.evidence_events?.map((s) => s.event_id)).toEqual([a.event_id, b.event_id]);
  });
});

describe('DetectorEngine with a detector that throws', () => {
  it('loses only that detector\'s verdict on that event: the other detectors and later events go on, and the error is counted', () => {
    const finds: DetectorInstance = {
      onEvent(e: TimelineEvent, task: TaskView) {
        if (!e.tool?.name.startsWith('fire')) return [];
        return [{ id: `f-${e.event_id}`, detector: 'ok', rule: 'r', severity: 'high', title: 't', summary: '', task_id: task.taskId, agent_id: '', workload_id: '', time: e.time, evidence: [e.event_id], join_keys: {}, metrics: {}, tags: [] }];
      },
      onTaskClosed: () => {
        throw new Error('close failed');
      },
    };
    const throws: DetectorInstance = {
      onEvent(e: TimelineEvent) {
        if (e.tool?.name === 'fire_bad') throw new TypeError('cannot read properties of undefined');
        return [];
      },
    };
    const engine = new DetectorEngine([throws, finds], { maxTasks: 10, maxEventsPerTask: 8 }, ['thrower', 'finder']);
    const bad = ev('t9', 'bad', { tool: { name: 'fire_bad' } });
    const good = ev('t9', 'good', { tool: { name: 'fire_good' } });
    expect(engine.process([bad, good]).map((f) => f.id)).toEqual([`f-${bad.event_id}`, `f-${good.event_id}`]);
    expect(engine.stats.detectorErrors).toBe(1);
    expect(engine.takeErrors()).toEqual([{ detector: 'thrower', error: 'TypeError: cannot read properties of undefined' }]);
    expect(engine.takeErrors()).toEqual([]);
    expect(engine.close(['t9'])).toEqual([]);
    expect(engine.stats.detectorErrors).toBe(2);
    expect(engine.hasTask('t9')).toBe(false);
  });
});
