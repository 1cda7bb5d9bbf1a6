import { describe, expect, it } from 'vitest';
import { evidenceCopy } from '../../detectors/finding-builder.ts';
import { toolCall } from '../../detectors/tool-chaining/fixtures.ts';
import { Interner } from '../../shared/intern.ts';

describe('Interner', () => {
  it('returns one canonical value per key, made once', () => {
    let made = 0;
    const i = new Interner<{ name: string }>(10, (name) => {
      made++;
      return { name };
    });
    const a = i.get('send_email');
    expect(i.get('send_email')).toBe(a);
    expect(i.get('read_inbox')).not.toBe(a);
    expect(made).toBe(2);
    expect(i.size).toBe(2);
  });

  it('stays within its bound: past it, values come back fresh and are counted, and earlier ones stay shared', () => {
    const i = new Interner<{ name: string }>(2, (name) => ({ name }));
    const a = i.get('a');
    i.get('b');
    const c1 = i.get('c');
    const c2 = i.get('c');
    expect(c1).toEqual({ name: 'c' });
    expect(c1).not.toBe(c2);
    expect(i.overflow).toBe(2);
    expect(i.size).toBe(2);
    expect(i.get('a')).toBe(a);
  });
});

describe('evidenceCopy', () => {
  it('shares the tool object of copies of calls to the same tool, and keeps what a finding needs', () => {
    const one = toolCall({ id: 'e1', task: 't1', agent: 'ops', time: 1_000, tool: 'send_email', args: { to: 'a@example.org' } });
    const two = toolCall({ id: 'e2', task: 't2', agent: 'ops', time: 2_000, tool: 'send_email', args: { to: 'b@example.org' } });
    const c1 = evidenceCopy(one);
    const c2 = evidenceCopy(two);
    expect(c1.tool).toBe(c2.tool);
    expect(Object.isFrozen(c1.tool)).toBe(true);
    expect(c1).toEqual({ event_id: one.event_id, time: 1_000, type: 'tool.call', agent_id: 'ops', workload_id: undefined, tool: { name: 'send_email' } });
    expect(evidenceCopy(toolCall({ id: 'e3', task: 't1', agent: 'ops', time: 3_000, tool: 'read_inbox', args: {} })).tool).not.toBe(c1.tool);
  });
});
