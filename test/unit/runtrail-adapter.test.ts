import { describe, it, expect } from 'vitest';
import { RuntrailEventInputSchema, canonicalJson, runtrailAdapter } from '../../services/collector/adapters/runtrail.ts';
import { BodyError } from '../../shared/errors.ts';
import { contentHash, eventId } from '../../shared/ids.ts';

// ---------------------------------------------------------------------------------------------
// Samples: what a SPIRE server event forwarder and a custom agent would send.
// ---------------------------------------------------------------------------------------------

const SPIFFE_ID = 'spiffe://prod.acme.internal/ns/agents/sa/research-agent';
const SVID_SERIAL = '214379185839215127386950221834658810321';

/** SPIRE minted an X.509-SVID for the agent's workload. */
const SVID_ISSUED = {
  id: 'spire-server-0/evt/000183',
  source: 'workload',
  type: 'credential.issued',
  time: '2024-05-14T09:20:58.120456789Z',
  workload_id: SPIFFE_ID,
  principal: 'spiffe://prod.acme.internal/spire/server',
  host: 'spire-server-0',
  credential: {
    id: SVID_SERIAL,
    kind: 'x509-svid',
    subject: SPIFFE_ID,
    expires_at: 1715682058120,
    tags: { 'spire.entry_id': '2f6c1d0e-7a3b-4c5d-9e8f-0a1b2c3d4e5f', 'spire.selector': 'k8s:sa:research-agent' },
  },
};

/** A custom agent reports a tool call, epoch-ms time, no ids at all. */
const TOOL_CALL = {
  source: 'agent',
  type: 'tool.call',
  time: 1715678467412,
  end_time: 1715678467980,
  task_id: 'task-7f3e',
  agent_id: 'research-agent',
  workload_id: SPIFFE_ID,
  action: 'tool:fetch_url',
  tool: { name: 'fetch_url', call_id: 'call_01', arguments: '{"url":"https://example.com/report.pdf"}' },
  resources: [{ type: 'url', id: 'https://example.com/report.pdf' }],
  outcome: 'success',
};

function ndjson(...records: unknown[]): Buffer {
  return Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

function parse(b: Buffer | string) {
  return runtrailAdapter.parse(typeof b === 'string' ? Buffer.from(b) : b, 'application/x-ndjson');
}

// ---------------------------------------------------------------------------------------------

describe('runtrailAdapter: mapping', () => {
  it('declares its format and content types', () => {
    expect(runtrailAdapter.format).toBe('runtrail');
    expect(runtrailAdapter.contentTypes).toEqual(['application/json', 'application/x-ndjson']);
  });

  it('maps a SPIRE X.509-SVID issuance, with the event id derived from the producer id', () => {
    const res = parse(JSON.stringify(SVID_ISSUED));
    expect(res).toMatchObject({ records: 1, skipped: 0, rejected: [] });
    const [e] = res.events;
    expect(e).toMatchObject({
      event_id: eventId('runtrail', SVID_ISSUED.id),
      source: 'workload',
      type: 'credential.issued',
      format: 'runtrail',
      workload_id: SPIFFE_ID,
      host: 'spire-server-0',
      credential: SVID_ISSUED.credential,
      // Canonical defaults are applied.
      resources: [],
      outcome: 'unknown',
      sensitivity: 'unknown',
      data_classes: [],
      attributes: { id: SVID_ISSUED.id },
    });
    expect(e?.time).toBeCloseTo(Date.parse('2024-05-14T09:20:58.120Z') + 0.456789, 6);
    expect(e).not.toHaveProperty('id');
  });

  it('accepts epoch milliseconds (also as a digit string) and keeps an explicit event_id', () => {
    const explicit = { ...TOOL_CALL, event_id: 'a'.repeat(32) };
    const stringy = { ...TOOL_CALL, time: '1715678467412', end_time: '1715678467980.5' };
    const res = parse(ndjson(TOOL_CALL, explicit, stringy));
    expect(res.rejected).toEqual([]);
    expect(res.events[0]).toMatchObject({ time: 1715678467412, end_time: 1715678467980, tool: TOOL_CALL.tool, task_id: 'task-7f3e' });
    expect(res.events[1]?.event_id).toBe('a'.repeat(32));
    expect(res.events[2]).toMatchObject({ time: 1715678467412, end_time: 1715678467980.5 });
  });

  it('derives the id of an id-less record from its content, whatever its key order', () => {
    const reordered = Object.fromEntries(Object.entries(TOOL_CALL).reverse());
    const res = parse(ndjson(TOOL_CALL, reordered, { ...TOOL_CALL, time: TOOL_CALL.time + 1 }));
    const [a, b, c] = res.events.map((e) => e.event_id);
    expect(a).toBe(eventId('runtrail', contentHash(canonicalJson(TOOL_CALL))));
    expect(b).toBe(a);
    expect(c).not.toBe(a);
  });

  it('forces format to runtrail', () => {
    const [e] = parse(JSON.stringify({ ...TOOL_CALL, format: 'cloudtrail' })).events;
    expect(e?.format).toBe('runtrail');
  });

  it('keeps unknown top-level fields in attributes, explicit attributes winning', () => {
    const rec = { ...TOOL_CALL, spiffe_bundle: 'prod', region: 'eu-west-1', attributes: { region: 'eu-central-1', model: 'gpt-4o' } };
    const [e] = parse(JSON.stringify(rec)).events;
    expect(e?.attributes).toEqual({ spiffe_bundle: 'prod', region: 'eu-central-1', model: 'gpt-4o' });
  });

  it('accepts integer producer ids', () => {
    const [e] = parse(JSON.stringify({ ...SVID_ISSUED, id: 183 })).events;
    expect(e?.event_id).toBe(eventId('runtrail', '183'));
    expect(e?.attributes['id']).toBe(183);
  });

  it('accepts RFC 3339 offsets and space separators', () => {
    const res = parse(ndjson({ ...TOOL_CALL, time: '2024-05-14T11:21:07.412+02:00', end_time: undefined }, { ...TOOL_CALL, time: '2024-05-14 09:21:07Z', end_time: undefined }));
    expect(res.rejected).toEqual([]);
    expect(res.events.map((e) => e.time)).toEqual([Date.parse('2024-05-14T09:21:07.412Z'), Date.parse('2024-05-14T09:21:07Z')]);
  });

  it('exposes the input schema for producers and docs', () => {
    expect(RuntrailEventInputSchema.safeParse(SVID_ISSUED).success).toBe(true);
    expect(RuntrailEventInputSchema.safeParse({ source: 'agent', type: 'task.started' }).success).toBe(false);
  });
});

describe('runtrailAdapter: malformed input', () => {
  it('rejects each bad record with its index and field, keeping the rest', () => {
    const { time: _t, ...noTime } = TOOL_CALL;
    const { source: _s, ...noSource } = TOOL_CALL;
    const { type: _y, ...noType } = TOOL_CALL;
    const cases: Array<[unknown, string, string | RegExp]> = [
      [{ ...TOOL_CALL, time: 'yesterday' }, 'time', 'expected RFC 3339 or epoch milliseconds, got "yesterday"'],
      [noTime, 'time', 'missing'],
      [noSource, 'source', 'missing'],
      [noType, 'type', 'missing'],
      [{ ...TOOL_CALL, type: 'credential.minted' }, 'type', /expected one of/],
      [{ ...TOOL_CALL, time: true }, 'time', 'expected RFC 3339 or epoch milliseconds, got boolean'],
      [{ ...TOOL_CALL, time: -5 }, 'time', /expected RFC 3339 or epoch milliseconds/],
      [{ ...TOOL_CALL, time: '2024-02-31T00:00:00Z' }, 'time', /expected RFC 3339/],
      [{ ...TOOL_CALL, time: 'May 14 2024 09:21' }, 'time', /expected RFC 3339/],
      [{ ...TOOL_CALL, end_time: 'soon' }, 'end_time', /expected RFC 3339/],
      [{ ...TOOL_CALL, tool: { name: 5 } }, 'tool.name', 'expected string, received number'],
      [{ ...TOOL_CALL, resources: [{ type: 'url' }] }, 'resources.0.id', 'missing'],
      [{ ...SVID_ISSUED, credential: { id: SVID_SERIAL, kind: 'x509' } }, 'credential.kind', /expected one of/],
      [{ ...TOOL_CALL, event_id: 'not-hex' }, 'event_id', 'expected 32 lowercase hex characters'],
      [{ ...TOOL_CALL, network: { dst_port: 70000 } }, 'network.dst_port', /65535/],
      [['not', 'an', 'object'], '', 'expected an object, got array'],
    ];
    const res = parse(ndjson(SVID_ISSUED, ...cases.map(([r]) => r), TOOL_CALL));
    expect(res.records).toBe(cases.length + 2);
    expect(res.events.map((e) => e.type)).toEqual(['credential.issued', 'tool.call']);
    expect(res.rejected.map((r) => [r.index, r.field])).toEqual(cases.map(([, field], i) => [i + 1, field]));
    res.rejected.forEach((r, i) => {
      const want = cases[i]?.[2];
      if (typeof want === 'string') expect(r.reason).toBe(want);
      else expect(r.reason).toMatch(want as RegExp);
    });
  });

  it('names the first problem and counts the others', () => {
    const res = parse(JSON.stringify({ time: 'later', agent_id: 7 }));
    expect(res.rejected).toHaveLength(1);
    expect(res.rejected[0]?.reason).toMatch(/\(and \d+ more problems\)$/);
  });

  it('rejects a truncated NDJSON line by index and keeps the rest', () => {
    const text = `${JSON.stringify(SVID_ISSUED)}\n${JSON.stringify(TOOL_CALL).slice(0, 50)}\n${JSON.stringify(TOOL_CALL)}\n`;
    const res = parse(text);
    expect(res.events).toHaveLength(2);
    expect(res.rejected).toEqual([{ index: 1, field: '', reason: expect.stringMatching(/^line 2: not valid JSON/) }]);
  });

  it('throws BodyError for a truncated array or single object', () => {
    expect(() => parse(JSON.stringify([SVID_ISSUED, TOOL_CALL]).slice(0, -3))).toThrow(BodyError);
    expect(() => parse(JSON.stringify(SVID_ISSUED, null, 2).slice(0, -40))).toThrow(BodyError);
  });

  it('throws BodyError for invalid UTF-8', () => {
    const bytes = Buffer.concat([Buffer.from('{"source":"agent","type":"tool.call","time":1,"principal":"'), Buffer.from([0xe2, 0x28, 0xa1]), Buffer.from('"}')]);
    expect(() => parse(bytes)).toThrow(BodyError);
    expect(() => parse(bytes)).toThrow(/not valid UTF-8/);
  });

  it('throws BodyError for a garbage body', () => {
    expect(() => parse('source=agent type=tool.call time=now\n')).toThrow(BodyError);
  });
});

describe('runtrailAdapter: deterministic ids', () => {
  it('maps a re-sent batch to the same ids', () => {
    const first = parse(ndjson(SVID_ISSUED, TOOL_CALL)).events.map((e) => e.event_id);
    const again = parse(JSON.stringify([SVID_ISSUED, TOOL_CALL])).events.map((e) => e.event_id);
    expect(again).toEqual(first);
    expect(new Set(first).size).toBe(2);
    for (const id of first) expect(id).toMatch(/^[0-9a-f]{32}$/);
  });

  it('canonicalJson sorts keys at every depth and keeps array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: null } })).toBe('{"a":{"c":null,"d":[2,{"e":0,"f":1}]},"b":1}');
  });
});
