import { describe, expect, it } from 'vitest';
import { setEventValidation } from '../../services/collector/adapters/adapter.ts';
import { ADAPTERS } from '../../services/collector/adapters/index.ts';
import { EVENTS_CODEC } from '../../services/storage/rows.ts';
import { MAX_EVENT_TIME_MS } from '../../shared/event.ts';

/*
 * Regression (issue 7, found by the ingest fuzz suite): the collector accepted event times the
 * store cannot hold (epoch ms 1e20, year 275760, a Vault token living 10^12 s). The insert then
 * failed with a permanent error that the correlator retried forever: the acknowledged event was
 * never stored, and nothing after it either. Times past the end of the DateTime64 range
 * (2299-12-31) are now refused at the edge, naming the field. So are date-times without a zone,
 * which Date.parse read in the server's local time (CloudTrail `eventTime: "1"` became 2001).
 */

const T = '2026-05-01T12:00:00Z';

function parse(format: 'runtrail' | 'cloudtrail' | 'vault', body: unknown) {
  return ADAPTERS[format].parse(Buffer.from(JSON.stringify(body)), 'application/json');
}

describe.each(['structural', 'full'] as const)('event times the store cannot hold (%s validation)', (mode) => {
  it('rejects them naming the field, keeping the others', () => {
    setEventValidation(mode);
    const r = parse('runtrail', [
      { id: 'a', source: 'workload', type: 'process.activity', time: 1e20 },
      { id: 'b', source: 'workload', type: 'process.activity', time: '9999-12-31T23:59:59Z' },
      { id: 'c', source: 'workload', type: 'process.activity', time: T, end_time: '2300-01-01T00:00:00Z' },
      { id: 'd', source: 'workload', type: 'process.activity', time: '2299-12-31T23:59:59.999Z' },
      { id: 'e', source: 'workload', type: 'process.activity', time: T },
    ]);
    expect(r.rejected.map((x) => [x.index, x.field])).toEqual([
      [0, 'time'],
      [1, 'time'],
      [2, 'end_time'],
    ]);
    for (const x of r.rejected) expect(x.reason).toMatch(/year 2299/);
    expect(r.events).toHaveLength(2);
    // What is accepted can be encoded as a row.
    for (const e of r.events) expect(() => EVENTS_CODEC.encode({ ...e, ingested_at: 0, task_id: '', attribution: 'none', join_key: '', unattributed_reason: '', late: false } as never)).not.toThrow();
    const ct = parse('cloudtrail', { Records: [{ eventID: 'x', eventTime: '9999-12-31T23:59:59Z', eventSource: 's3.amazonaws.com', eventName: 'GetObject' }] });
    // Named as the source record names it.
    expect(ct.rejected).toEqual([{ index: 0, field: 'eventTime', reason: expect.stringMatching(/year 2299/) }]);
    setEventValidation('full');
  });

  it('refuses date-times without a zone, which would be read in the server\'s local time', () => {
    setEventValidation(mode);
    const times = ['1', '2026-05-01 12:00:00', 'May 1, 2026', '2026-05-01', 'Fri May 01 2026 12:00:00', '2026-05-01T12:00:00.123456789Z', '2026-05-01 12:00:00+02:00'];
    const ct = parse('cloudtrail', { Records: times.map((eventTime, i) => ({ eventID: `z${i}`, eventTime, eventSource: 's3.amazonaws.com', eventName: 'GetObject' })) });
    expect(ct.rejected.map((x) => [x.index, x.field])).toEqual([0, 1, 2, 3, 4].map((i) => [i, 'eventTime']));
    expect(ct.rejected[1]?.reason).toMatch(/with its zone/);
    expect(ct.events.map((e) => e.time)).toEqual([Date.parse('2026-05-01T12:00:00.123Z') + 0.456789, Date.parse('2026-05-01T10:00:00Z')]);
    setEventValidation('full');
  });

  it('rejects a credential whose expiry the store cannot hold', () => {
    setEventValidation(mode);
    const login = {
      type: 'response',
      time: T,
      auth: { accessor: 'hmac-sha256:caller' },
      request: { id: 'req-ttl', operation: 'update', path: 'auth/token/create' },
      response: { auth: { accessor: 'hmac-sha256:child', token_ttl: 1e13 } },
    };
    const r = parse('vault', [login]);
    expect(r.rejected).toEqual([{ index: 0, field: 'credential.expires_at', reason: expect.stringMatching(/year 2299/) }]);
    expect(MAX_EVENT_TIME_MS).toBe(Date.UTC(2299, 11, 31, 23, 59, 59, 999) + 0.999);
    setEventValidation('full');
  });
});
