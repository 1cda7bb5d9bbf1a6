import { describe, expect, it } from 'vitest';
import { CorrelatorConfigSchema } from '../../shared/config.ts';
import { CanonicalEventSchema, type CanonicalEvent, type CanonicalEventInput } from '../../shared/event.ts';
import { eventId } from '../../shared/ids.ts';
import { Correlator } from '../../services/correlator/correlator.ts';
import { OffsetTracker } from '../../services/correlator/offset-tracker.ts';

const T0 = Date.parse('2026-05-01T10:00:00Z');
let seq = 0;

function ev(partial: Partial<CanonicalEventInput> & Pick<CanonicalEventInput, 'source' | 'type'>): CanonicalEvent {
  seq++;
  return CanonicalEventSchema.parse({ event_id: eventId('test', seq), time: T0 + seq * 1000, format: 'runtrail', ...partial });
}

function correlator(over: Record<string, unknown> = {}): Correlator {
  return new Correlator(CorrelatorConfigSchema.parse({ graceMs: 30_000, graceWallMs: 3_600_000, ...over }));
}

describe('correlator', () => {
  it('resolves agent events by their stated task and child spans by trace', () => {
    const c = correlator();
    const root = ev({ source: 'agent', type: 'task.started', task_id: 'task-1', trace_id: 'a'.repeat(32), agent_id: 'agent-a' });
    const child = ev({ source: 'agent', type: 'tool.call', trace_id: 'a'.repeat(32), tool: { name: 'read_file' } });
    const out = c.ingest([{ event: child }, { event: root }]);
    expect(out.events.map((e) => [e.task_id, e.attribution])).toEqual([
      ['task-1', 'trace'],
      ['task-1', 'direct'],
    ]);
  });

  it('binds an STS credential by session tag and resolves its later use, even when the use arrives first', () => {
    const c = correlator();
    const use = ev({ source: 'resource', type: 'resource.access', credential_id: 'ASIAKEY1', action: 's3:GetObject' });
    const first = c.ingest([{ event: use, position: { topic: 'events.resource', partition: 0, offset: '7' } }]);
    expect(first.events).toHaveLength(0);
    expect(c.pendingCount).toBe(1);
    const issue = ev({
      source: 'resource',
      type: 'credential.issued',
      credential_id: 'AKIALONGLIVED',
      credential: { id: 'ASIAKEY1', kind: 'aws-access-key', session_name: 'whatever', tags: { 'runtrail.task.id': 'task-9' } },
    });
    const out = c.ingest([{ event: issue, position: { topic: 'events.resource', partition: 0, offset: '8' } }]);
    expect(out.bindings).toHaveLength(1);
    expect(out.bindings[0]).toMatchObject({ credential_id: 'ASIAKEY1', task_id: 'task-9', bound_by: 'tag', parent_credential_id: 'AKIALONGLIVED' });
    const use2 = out.events.find((e) => e.event_id === use.event_id);
    expect(use2).toMatchObject({ task_id: 'task-9', attribution: 'credential', join_key: 'ASIAKEY1' });
    expect(out.done.map((d) => d.offset).sort()).toEqual(['7', '8']);
    expect(c.pendingCount).toBe(0);
  });

  it('falls back to the role session name as the task, and chains roles through the parent key', () => {
    const c = correlator();
    const issue1 = ev({ source: 'resource', type: 'credential.issued', credential_id: 'AKIAUSER', credential: { id: 'ASIA1', kind: 'aws-access-key', session_name: 'sess-42' } });
    const issue2 = ev({ source: 'resource', type: 'credential.issued', credential_id: 'ASIA1', credential: { id: 'ASIA2', kind: 'aws-access-key', session_name: 'other-name' } });
    const out = c.ingest([{ event: issue1 }, { event: issue2 }]);
    expect(out.bindings.map((b) => [b.credential_id, b.task_id, b.bound_by])).toEqual([
      ['ASIA1', 'sess-42', 'session_name'],
      ['ASIA2', 'sess-42', 'parent'],
    ]);
  });

  it('joins a resource event through a request id a tool span carried', () => {
    const c = correlator();
    const ct = ev({ source: 'resource', type: 'resource.access', request_id: 'req-1', credential_id: 'AKIAUNKNOWN' });
    const span = ev({ source: 'agent', type: 'tool.call', task_id: 'task-r', request_id: 'req-1', tool: { name: 'aws_cli' } });
    const out = c.ingest([{ event: ct }, { event: span }]);
    expect(out.events.find((e) => e.event_id === ct.event_id)).toMatchObject({ task_id: 'task-r', attribution: 'request', join_key: 'req-1' });
  });

  it('joins workload events when exactly one task is open for the workload, and not when ambiguous', () => {
    const c = correlator();
    const wl = 'spiffe://prod/ns/agents/sa/planner';
    c.ingest([{ event: ev({ source: 'agent', type: 'task.started', task_id: 't1', workload_id: wl }) }]);
    const proc = ev({ source: 'workload', type: 'process.activity', workload_id: wl });
    expect(c.ingest([{ event: proc }]).events[0]).toMatchObject({ task_id: 't1', attribution: 'workload' });
    c.ingest([{ event: ev({ source: 'agent', type: 'task.started', task_id: 't2', workload_id: wl }) }]);
    const proc2 = ev({ source: 'workload', type: 'process.activity', workload_id: wl });
    expect(c.ingest([{ event: proc2 }]).events).toHaveLength(0);
  });

  it('stores events unattributed with the reason after the grace period of event time', () => {
    const c = correlator({ graceMs: 10_000 });
    const orphan = ev({ source: 'resource', type: 'resource.access', credential_id: 'AKIANOBODY', time: T0 });
    c.ingest([{ event: orphan }]);
    expect(c.tick(0).events).toHaveLength(0);
    // Event time advances past the grace period.
    c.ingest([{ event: ev({ source: 'agent', type: 'task.started', task_id: 'x', time: T0 + 11_000 }) }]);
    const out = c.tick(0);
    expect(out.events).toHaveLength(1);
    expect(out.events[0]).toMatchObject({ event_id: orphan.event_id, task_id: '', attribution: 'unattributed' });
    expect(out.events[0]?.unattributed_reason).toMatch(/grace/);
  });

  it('gives an issuance nobody claims a session task of its own after the grace period', () => {
    const c = correlator({ sessionNameIsTask: false });
    const issue = ev({ source: 'resource', type: 'credential.issued', credential: { id: 'lease/abc', kind: 'vault-lease' } });
    const use = ev({ source: 'resource', type: 'resource.access', credential_id: 'lease/abc' });
    c.ingest([{ event: issue }, { event: use }]);
    const out = c.tick(0, true);
    expect(out.events.map((e) => e.task_id)).toEqual(['session:lease/abc', 'session:lease/abc']);
    expect(out.bindings[0]).toMatchObject({ credential_id: 'lease/abc', bound_by: 'session' });
  });

  it('marks the binding revoked so later use can be told apart', () => {
    const c = correlator();
    c.ingest([{ event: ev({ source: 'resource', type: 'credential.issued', credential: { id: 'tok1', kind: 'vault-token', tags: { task_id: 'tv' } } }) }]);
    const rev = ev({ source: 'resource', type: 'credential.revoked', credential_id: 'admin-token', credential: { id: 'tok1', kind: 'vault-token' } });
    const out = c.ingest([{ event: rev }]);
    expect(out.events[0]).toMatchObject({ task_id: 'tv', attribution: 'credential' });
    expect(out.bindings[0]?.revoked_at).toBe(rev.time);
  });

  it('bounds the pending buffer and counts evictions', () => {
    const c = correlator({ maxPending: 3 });
    const inputs = Array.from({ length: 5 }, () => ({ event: ev({ source: 'resource', type: 'resource.access', credential_id: `AKIA${seq}` }) }));
    const out = c.ingest(inputs);
    expect(c.pendingCount).toBe(3);
    expect(c.stats.pendingEvicted).toBe(2);
    expect(out.events.map((e) => e.unattributed_reason)).toEqual([expect.stringMatching(/pending buffer full/), expect.stringMatching(/pending buffer full/)]);
  });

  it('lets go of the pending events of partitions moved to another instance, and only those', () => {
    const c = correlator();
    const pos = (partition: number, offset: number) => ({ topic: 'events.resource', partition, offset: String(offset) });
    const moved = ev({ source: 'resource', type: 'resource.access', credential_id: 'AKIAMOVED' });
    const kept = ev({ source: 'resource', type: 'resource.access', credential_id: 'AKIAKEPT' });
    c.ingest([
      { event: moved, position: pos(0, 1) },
      { event: kept, position: pos(1, 1) },
    ]);
    expect(c.pendingCount).toBe(2);
    expect(c.releasePartitions([{ topic: 'events.resource', partition: 0 }])).toBe(1);
    expect(c.pendingCount).toBe(1);
    expect(c.stats.pendingReleased).toBe(1);
    // The released event is the new owner's now: it is neither woken by its credential here...
    const issue = ev({ source: 'resource', type: 'credential.issued', credential: { id: 'AKIAMOVED', kind: 'aws-access-key', tags: { task_id: 'tm' } } });
    expect(c.ingest([{ event: issue, position: pos(1, 2) }]).events.map((e) => e.event_id)).not.toContain(moved.event_id);
    // ...nor expired and stored unattributed; the other partition's event still is.
    const out = c.tick(0, true);
    expect(out.events.map((e) => e.event_id)).toEqual([kept.event_id]);
    expect(out.done.map((d) => d.partition)).toEqual([1]);
    expect(c.releasePartitions([{ topic: 'events.resource', partition: 1 }])).toBe(0);
  });

  it('closes tasks after end + linger and marks later events late', () => {
    const c = correlator({ taskLingerMs: 5_000 });
    c.ingest([{ event: ev({ source: 'agent', type: 'task.ended', task_id: 'tend', time: T0 }) }]);
    c.ingest([{ event: ev({ source: 'agent', type: 'model.call', task_id: 'other', time: T0 + 6_000 }) }]);
    expect(c.tick(0).closedTasks).toContain('tend');
    const late = c.ingest([{ event: ev({ source: 'agent', type: 'tool.call', task_id: 'tend', time: T0 + 100, tool: { name: 'x' } }) }]);
    expect(late.events[0]?.late).toBe(true);
  });

  it('holds the watermark at the slowest active source, so a topic read ahead cannot expire joins still coming', () => {
    const c = correlator({ graceMs: 10_000 });
    const agentPos = (o: number) => ({ topic: 'events.agent', partition: 0, offset: String(o) });
    const resPos = (o: number) => ({ topic: 'events.resource', partition: 0, offset: String(o) });
    c.ingest([{ event: ev({ source: 'agent', type: 'task.started', task_id: 'slow', time: T0 }), position: agentPos(0) }]);
    const call = ev({ source: 'resource', type: 'resource.access', request_id: 'req-late', time: T0 + 1_000 });
    c.ingest([{ event: call, position: resPos(0) }]);
    // The resource topic runs a minute ahead of the agent topic.
    c.ingest([{ event: ev({ source: 'resource', type: 'resource.access', credential_id: 'AKIAX', time: T0 + 60_000 }), position: resPos(1) }]);
    expect(c.tick(0).events.map((e) => e.event_id)).not.toContain(call.event_id);
    const span = ev({ source: 'agent', type: 'tool.call', task_id: 'slow', request_id: 'req-late', time: T0 + 900, tool: { name: 'cloud' } });
    const out = c.ingest([{ event: span, position: agentPos(1) }]);
    expect(out.events.find((e) => e.event_id === call.event_id)).toMatchObject({ task_id: 'slow', attribution: 'request' });
  });

  it('bounds open tasks with LRU eviction', () => {
    const c = correlator({ maxOpenTasks: 10 });
    for (let i = 0; i < 25; i++) c.ingest([{ event: ev({ source: 'agent', type: 'task.started', task_id: `t${i}` }) }]);
    expect(c.openTaskCount).toBe(10);
    expect(c.stats.tasksEvicted).toBe(15);
  });
});

describe('offset tracker', () => {
  it('holds the commit back at the first offset still pending', () => {
    const t = new OffsetTracker();
    t.received('events.resource', 0, ['10', '11', '12'], '13');
    t.done('events.resource', 0, '10');
    t.done('events.resource', 0, '12');
    const first = t.commitable();
    expect(first).toEqual([{ topic: 'events.resource', partition: 0, offset: '11' }]);
    t.committed(first);
    t.done('events.resource', 0, '11');
    const second = t.commitable();
    expect(second).toEqual([{ topic: 'events.resource', partition: 0, offset: '13' }]);
    t.committed(second);
    expect(t.commitable()).toEqual([]);
  });

  it('offers an offset again until its commit succeeded, even on a partition gone quiet', () => {
    const t = new OffsetTracker();
    t.received('events.resource', 0, ['0', '1'], '2');
    t.done('events.resource', 0, '0');
    t.done('events.resource', 0, '1');
    expect(t.commitable()).toEqual([{ topic: 'events.resource', partition: 0, offset: '2' }]);
    // The commit failed (not reported): the next call carries it.
    expect(t.commitable()).toEqual([{ topic: 'events.resource', partition: 0, offset: '2' }]);
  });

  it('registers a redelivered batch once, so its partition keeps committing', () => {
    const t = new OffsetTracker();
    // Handling the batch failed after it was registered; the bus delivers it again.
    t.received('events.resource', 0, ['0', '1', '2'], '3');
    t.received('events.resource', 0, ['0', '1', '2'], '3');
    for (const o of ['0', '1', '2']) t.done('events.resource', 0, o);
    expect(t.commitable()).toEqual([{ topic: 'events.resource', partition: 0, offset: '3' }]);
    expect(t.outstanding).toBe(0);
    // A partition revoked and read again from its committed offset starts afresh.
    t.forget('events.resource', 0);
    t.received('events.resource', 0, ['1', '2'], '3');
    expect(t.outstanding).toBe(2);
  });
});
