import { describe, expect, it } from 'vitest';
import { checkCanonicalEvent, finalizeEvent, setEventValidation } from '../../services/collector/adapters/adapter.ts';
import { ADAPTERS } from '../../services/collector/adapters/index.ts';
import { generateTraffic } from '../../services/bench/generator.ts';
import { RecordError } from '../../shared/errors.ts';
import { CanonicalEventSchema, MAX_EVENT_TIME_MS, type CanonicalEventInput } from '../../shared/event.ts';

/**
 * The `structural` check of adapter output must give the canonical zod schema's verdicts: the same
 * events out (defaults applied) for valid input, a RecordError naming the same field for invalid.
 */

function zodVerdict(input: unknown): { ok: true; value: unknown } | { ok: false; field: string } {
  const r = CanonicalEventSchema.safeParse(input);
  return r.success ? { ok: true, value: r.data } : { ok: false, field: r.error.issues[0]?.path.join('.') ?? '' };
}

function structuralVerdict(input: unknown): { ok: true; value: unknown } | { ok: false; field: string } {
  try {
    return { ok: true, value: checkCanonicalEvent(structuredClone(input) as CanonicalEventInput) };
  } catch (err) {
    if (err instanceof RecordError) return { ok: false, field: err.field };
    throw err;
  }
}

const VALID: CanonicalEventInput = {
  event_id: 'a'.repeat(32),
  source: 'agent',
  type: 'tool.call',
  time: 1_790_000_000_000.5,
  end_time: 1_790_000_000_100,
  format: 'otlp-traces',
  task_id: 'task-1',
  trace_id: 'b'.repeat(32),
  resources: [{ type: 'AWS::S3::Object', id: 'arn:aws:s3:::b/k', account: '123' }],
  data_classes: ['secret'],
  tool: { name: 'read', arguments: '{}', result: '', annotations: { readOnlyHint: true } },
  model: { name: 'm', input_tokens: 3, output_tokens: 0 },
  messages: { system: 's', input: '', output: 'o' },
  credential: { id: 'ASIA1', kind: 'aws-access-key', tags: { k: 'v' }, expires_at: 1 },
  process: { pid: -1, cmdline: '' },
  network: { dst_port: 443, direction: 'outbound' },
  delegation: { to_task_id: 't2' },
  attributes: { any: { nested: [1, 'x'] } },
};

/** One invalid variant per constraint the schema states. */
const INVALID: Array<[string, (e: Record<string, unknown>) => void]> = [
  ['event_id', (e) => void (e.event_id = 'A'.repeat(32))],
  ['source', (e) => void (e.source = 'other')],
  ['type', (e) => void (e.type = 'tool.used')],
  ['time', (e) => void (e.time = -1)],
  ['time', (e) => void (e.time = Number.POSITIVE_INFINITY)],
  ['end_time', (e) => void (e.end_time = Number.NaN)],
  // Past the end of the DateTime64 range (year 2299): such an event could never be stored.
  ['time', (e) => void (e.time = 1e20)],
  ['time', (e) => void (e.time = MAX_EVENT_TIME_MS + 1)],
  ['end_time', (e) => void (e.end_time = Date.UTC(2300, 0, 1))],
  ['format', (e) => void (e.format = 'csv')],
  ['agent_id', (e) => void (e.agent_id = '')],
  ['request_id', (e) => void (e.request_id = 7)],
  ['resources', (e) => void (e.resources = 'arn')],
  ['resources.0.id', (e) => void (e.resources = [{ id: '' }])],
  ['resources.0.account', (e) => void (e.resources = [{ id: 'x', account: '' }])],
  ['outcome', (e) => void (e.outcome = 'ok')],
  ['sensitivity', (e) => void (e.sensitivity = 'secret')],
  ['data_classes.0', (e) => void (e.data_classes = [''])],
  ['tool.name', (e) => void (e.tool = { name: '' })],
  ['tool.result', (e) => void (e.tool = { name: 'x', result: 5 })],
  ['tool.annotations.readOnlyHint', (e) => void (e.tool = { name: 'x', annotations: { readOnlyHint: 'yes' } })],
  ['model.input_tokens', (e) => void (e.model = { input_tokens: 1.5 })],
  ['model.output_tokens', (e) => void (e.model = { output_tokens: -1 })],
  ['messages.system', (e) => void (e.messages = { system: 1 })],
  ['credential.id', (e) => void (e.credential = { id: '', kind: 'jwt' })],
  ['credential.kind', (e) => void (e.credential = { id: 'x', kind: 'password' })],
  ['credential.tags.k', (e) => void (e.credential = { id: 'x', kind: 'jwt', tags: { k: 1 } })],
  ['credential.expires_at', (e) => void (e.credential = { id: 'x', kind: 'jwt', expires_at: Number.NaN })],
  ['credential.expires_at', (e) => void (e.credential = { id: 'x', kind: 'jwt', expires_at: -1 })],
  ['credential.expires_at', (e) => void (e.credential = { id: 'x', kind: 'jwt', expires_at: 1e300 })],
  ['process.pid', (e) => void (e.process = { pid: 1.5 })],
  ['network.dst_port', (e) => void (e.network = { dst_port: 70_000 })],
  ['network.direction', (e) => void (e.network = { direction: 'sideways' })],
  ['delegation.to_agent_id', (e) => void (e.delegation = { to_agent_id: '' })],
  ['attributes', (e) => void (e.attributes = [])],
  ['ingested_at', (e) => void (e.ingested_at = -5)],
  ['ingested_at', (e) => void (e.ingested_at = 1e16)],
];

describe('structural event validation', () => {
  it('accepts what the schema accepts and returns the same event, defaults applied', () => {
    expect(structuralVerdict(VALID)).toEqual(zodVerdict(VALID));
    const minimal = { event_id: 'c'.repeat(32), source: 'resource', type: 'resource.access', time: 0, format: 'cloudtrail' };
    expect(structuralVerdict(minimal)).toEqual(zodVerdict(minimal));
  });

  it.each(INVALID)('rejects an invalid %s, naming the field zod names', (field, mutate) => {
    const input = structuredClone(VALID) as Record<string, unknown>;
    mutate(input);
    const z = zodVerdict(input);
    expect(z.ok, 'the schema rejects this variant').toBe(false);
    expect(structuralVerdict(input)).toEqual({ ok: false, field: (z as { field: string }).field });
    expect(field === (z as { field: string }).field || (z as { field: string }).field.startsWith(field)).toBe(true);
  });

  it('gives the same events as the zod schema on the benchmark traffic of every adapter', () => {
    const traffic = generateTraffic({ seed: 11, openTasks: 50, eventsPerTask: 12, totalEvents: 3_000, startTime: Date.parse('2026-11-21T00:00:00Z') });
    try {
      for (const b of traffic.bodies) {
        setEventValidation('full');
        const full = ADAPTERS[b.format].parse(b.body, b.contentType);
        setEventValidation('structural');
        const fast = ADAPTERS[b.format].parse(b.body, b.contentType);
        expect(fast.rejected).toEqual(full.rejected);
        expect(fast.events).toEqual(full.events);
      }
    } finally {
      setEventValidation('full');
    }
    expect(finalizeEvent(VALID).task_id).toBe('task-1');
  });
});
