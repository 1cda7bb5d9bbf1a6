import { describe, expect, it } from 'vitest';
import { logfmt, spireAdapter } from '../../services/collector/adapters/spire.ts';
import { EVENT_TYPE } from '../../shared/event.ts';

// ---------------------------------------------------------------------------------------------
// Samples in the shape SPIRE Server logs them (logrus; fields as in SPIRE's issue #3688 and its
// doc/auditlog.md): the debug "Signed X509 SVID" line of BatchNewX509SVID with the serial and
// revision numbers SPIRE 1.6 added, a JWT-SVID signing, and audit entries.
// ---------------------------------------------------------------------------------------------

const AGENT = 'spiffe://example.org/spire/agent/join_token/99a9a879-4e18-46bb-8389-2dde59050faa';
const WORKLOAD = 'spiffe://example.org/ns/agents/sa/billing';

/** `log_format = "json"`: the X509-SVID a SPIRE agent asked for on behalf of a workload. */
const X509_JSON = {
  authorized_as: 'agent',
  authorized_via: 'datastore',
  caller_addr: '10.0.4.17:61745',
  caller_id: AGENT,
  entry_id: 'd1004dd5-364f-43a3-bdcb-57cce31256d9',
  expiration: '2026-11-21T10:00:01Z',
  level: 'debug',
  method: 'BatchNewX509SVID',
  msg: 'Signed X509 SVID',
  request_id: '4a7b1f7e-96d2-42a5-8c98-a8a8f6e28379',
  revision_number: 3,
  serial_num: '209514317385420880713512338458016221337',
  service: 'svid.v1.SVID',
  spiffe_id: WORKLOAD,
  subsystem_name: 'api',
  time: '2026-11-21T09:00:01Z',
};

/** The same record in SPIRE's default text format. */
const X509_TEXT =
  'time="2026-11-21T09:00:01Z" level=debug msg="Signed X509 SVID" authorized_as=agent authorized_via=datastore caller_addr="10.0.4.17:61745" ' +
  `caller_id="${AGENT}" entry_id=d1004dd5-364f-43a3-bdcb-57cce31256d9 expiration="2026-11-21T10:00:01Z" method=BatchNewX509SVID ` +
  'request_id=4a7b1f7e-96d2-42a5-8c98-a8a8f6e28379 revision_number=3 serial_num=209514317385420880713512338458016221337 service=svid.v1.SVID ' +
  `spiffe_id="${WORKLOAD}" subsystem_name=api`;

const JWT_JSON = {
  audience: ['vault', 'payments-api'],
  caller_addr: '[fd00::4]:40112',
  caller_id: AGENT,
  expiration: '2026-11-21T09:05:02Z',
  level: 'debug',
  method: 'NewJWTSVID',
  msg: 'Server CA successfully signed JWT SVID',
  request_id: 'a0c7d2a4-6c39-4b7e-9d0e-5a1b2c3d4e5f',
  service: 'svid.v1.SVID',
  spiffe_id: WORKLOAD,
  subsystem_name: 'api',
  time: '2026-11-21T09:00:02.250Z',
};

/** An admin creating a registration entry over the local socket (`audit_log_enabled = true`). */
const AUDIT_CREATE = {
  caller_gid: 0,
  caller_path: '/opt/spire/bin/spire-server',
  caller_uid: 0,
  entry_id: '0c1f3b0e-6a2c-4d0b-9b8f-2a7e5e3f1c44',
  level: 'info',
  method: 'BatchCreateEntry',
  msg: 'API accessed',
  parent_id: 'spiffe://example.org/spire/agent/k8s_psat/prod/node-7',
  request_id: '77f0d3b1-1f4e-4c55-8d6a-6b2b8f0e9a10',
  service: 'entry.v1.Entry',
  spiffe_id: 'spiffe://example.org/ns/agents/sa/admin-tools',
  status: 'success',
  subsystem_name: 'api',
  time: '2026-11-21T09:00:03Z',
  type: 'audit',
};

/** A refused call by an agent over TCP. */
const AUDIT_DENIED = {
  caller_addr: '10.0.4.17:61800',
  caller_id: AGENT,
  level: 'info',
  method: 'MintX509SVID',
  msg: 'API accessed',
  request_id: '5d1e9c40-0c55-4d6a-9e8e-0f3c2b1a7d66',
  service: 'svid.v1.SVID',
  status: 'error',
  status_code: 'PermissionDenied',
  status_message: 'authorization denied for method /spire.api.server.svid.v1.SVID/MintX509SVID',
  subsystem_name: 'api',
  time: '2026-11-21T09:00:04Z',
  type: 'audit',
};

/** A startup line: nothing to map. */
const STARTUP = { level: 'info', msg: 'Starting Server APIs', address: '[::]:8081', network: 'tcp', subsystem_name: 'endpoints', time: '2026-11-21T08:59:00Z' };

function parse(body: string, contentType = 'application/x-ndjson') {
  return spireAdapter.parse(Buffer.from(body), contentType);
}
const ndjson = (...records: unknown[]): string => records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n');

describe('SPIRE Server log adapter', () => {
  it('turns a signed X509-SVID into a credential issuance bound to its SPIFFE ID and serial', () => {
    const r = parse(ndjson(X509_JSON));
    expect(r.rejected).toEqual([]);
    expect(r.events).toHaveLength(1);
    expect(r.events[0]).toMatchObject({
      source: 'workload',
      type: EVENT_TYPE.credentialIssued,
      format: 'spire',
      time: Date.parse('2026-11-21T09:00:01Z'),
      workload_id: WORKLOAD,
      principal: AGENT,
      request_id: X509_JSON.request_id,
      action: 'spire:BatchNewX509SVID',
      resources: [{ type: 'spiffe-id', id: WORKLOAD }],
      outcome: 'success',
      credential: {
        id: X509_JSON.serial_num,
        kind: 'x509-svid',
        subject: WORKLOAD,
        expires_at: Date.parse('2026-11-21T10:00:01Z'),
        tags: { entry_id: X509_JSON.entry_id, revision_number: '3', authorized_as: 'agent', authorized_via: 'datastore', subsystem_name: 'api' },
      },
    });
    // The node agent's address, not the workload's: kept, but not the issuance's source address.
    expect(r.events[0]?.src_ip).toBeUndefined();
    expect(r.events[0]?.attributes).toMatchObject({ service: 'svid.v1.SVID', level: 'debug', caller_addr: '10.0.4.17:61745' });
  });

  it('reads the default text format the same way, raw or wrapped by Fluent Bit or Vector', () => {
    const fromJson = parse(ndjson(X509_JSON)).events[0];
    const raw = parse(X509_TEXT, 'text/plain; charset=utf-8');
    const fluentBit = parse(ndjson({ log: X509_TEXT, stream: 'stderr', time: '2026-11-21T09:00:01.731Z', kubernetes: { namespace_name: 'spire' } }));
    const vector = parse(ndjson({ message: JSON.stringify(X509_JSON), file: '/var/log/spire/server.log', host: 'spire-0' }));
    for (const r of [raw, fluentBit, vector]) {
      expect(r.rejected).toEqual([]);
      expect(r.events).toHaveLength(1);
      expect(r.events[0]?.credential).toEqual(fromJson?.credential);
      expect(r.events[0]).toMatchObject({ time: fromJson?.time, workload_id: WORKLOAD, principal: AGENT, type: EVENT_TYPE.credentialIssued });
    }
  });

  it('names an SVID logged before SPIRE logged serials by its SPIFFE ID and expiry', () => {
    const { serial_num: _serial, revision_number: _rev, ...older } = X509_JSON;
    const e = parse(ndjson(older)).events[0];
    expect(e?.credential?.id).toBe(`x509-svid:${WORKLOAD}@2026-11-21T10:00:01Z`);
  });

  it('turns a signed JWT-SVID into a jwt-svid issuance with a stable id and the audience as a tag', () => {
    const a = parse(ndjson(JWT_JSON)).events[0];
    const b = parse(ndjson(JWT_JSON)).events[0];
    expect(a).toMatchObject({
      type: EVENT_TYPE.credentialIssued,
      workload_id: WORKLOAD,
      credential: { kind: 'jwt-svid', subject: WORKLOAD, expires_at: Date.parse('2026-11-21T09:05:02Z'), tags: { audience: 'vault,payments-api' } },
    });
    expect(a?.credential?.id).toMatch(/^jwt-svid:[0-9a-f]{32}$/);
    expect(b?.credential?.id).toBe(a?.credential?.id);
    expect(b?.event_id).toBe(a?.event_id);
    const other = parse(ndjson({ ...JWT_JSON, audience: ['other'] })).events[0];
    expect(other?.credential?.id).not.toBe(a?.credential?.id);
  });

  it('turns audit entries into API accesses on the server, with the caller and the outcome', () => {
    const r = parse(ndjson(AUDIT_CREATE, AUDIT_DENIED));
    expect(r.rejected).toEqual([]);
    expect(r.events).toHaveLength(2);
    expect(r.events[0]).toMatchObject({
      type: EVENT_TYPE.resourceAccess,
      action: 'spire:BatchCreateEntry',
      principal: 'uds:0:/opt/spire/bin/spire-server',
      outcome: 'success',
      resources: [
        { type: 'spiffe-id', id: 'spiffe://example.org/ns/agents/sa/admin-tools' },
        { type: 'spire-entry', id: AUDIT_CREATE.entry_id },
      ],
    });
    expect(r.events[0]?.workload_id).toBeUndefined();
    expect(r.events[1]).toMatchObject({ action: 'spire:MintX509SVID', principal: AGENT, workload_id: AGENT, src_ip: '10.0.4.17', outcome: 'failure' });
    const ipv6 = parse(ndjson({ ...AUDIT_DENIED, caller_addr: '[fd00::4]:40112' })).events[0];
    expect(ipv6?.src_ip).toBe('fd00::4');
    expect(r.events[1]?.attributes).toMatchObject({ status_code: 'PermissionDenied' });
  });

  it('counts lines that are neither issuance nor audit as skipped, not rejected', () => {
    const r = parse(ndjson(STARTUP, X509_JSON, { ...STARTUP, msg: 'Agent attestation request completed' }));
    expect(r.events).toHaveLength(1);
    expect(r.skipped).toBe(2);
    expect(r.rejected).toEqual([]);
    expect(r.records).toBe(3);
  });

  it('gives the same line the same event id (a re-shipped log deduplicates) and distinct lines distinct ids', () => {
    const a = parse(ndjson(X509_JSON, AUDIT_CREATE)).events.map((e) => e.event_id);
    const b = parse(ndjson(X509_JSON, AUDIT_CREATE)).events.map((e) => e.event_id);
    expect(b).toEqual(a);
    expect(new Set(a).size).toBe(2);
    // Two operations of one batch call share the request id.
    const second = parse(ndjson({ ...AUDIT_CREATE, entry_id: 'f2c9a1d0-0000-4000-8000-000000000001', spiffe_id: 'spiffe://example.org/ns/agents/sa/other' })).events[0];
    expect(second?.event_id).not.toBe(a[1]);
  });

  it('rejects a bad record naming its index and field, and keeps the good ones', () => {
    const r = parse(
      ndjson(
        X509_JSON,
        { ...X509_JSON, time: '2026-11-21 09:00:01' },
        { ...X509_JSON, spiffe_id: undefined },
        { ...X509_JSON, expiration: 'tomorrow' },
        { ...AUDIT_DENIED, method: undefined },
        { ...X509_JSON, caller_id: { id: AGENT } },
        { log: 'level=debug msg="Signed X509 SVID" spiffe_id="spiffe://example.org/x"' },
        { log: 'just some text' },
        { level: 'info' },
        '{"msg": ',
        AUDIT_CREATE,
      ),
    );
    expect(r.events.map((e) => e.action)).toEqual(['spire:BatchNewX509SVID', 'spire:BatchCreateEntry']);
    expect(r.rejected.map((x) => [x.index, x.field])).toEqual([
      [1, 'time'],
      [2, 'spiffe_id'],
      [3, 'expiration'],
      [4, 'method'],
      [5, 'caller_id'],
      [6, 'time'],
      [7, 'log.msg'],
      [8, 'msg'],
      [9, ''],
    ]);
    expect(r.rejected[0]?.reason).toMatch(/zone/);
    expect(r.rejected[6]?.reason).toMatch(/not a SPIRE log line/);
    expect(r.rejected[7]?.reason).toMatch(/not a SPIRE log record/);
  });

  it('refuses a wrapped JSON line nested too deep, naming the field inside the wrapper', () => {
    const deep = '{"a":'.repeat(5000) + '1' + '}'.repeat(5000);
    const r = parse(ndjson({ message: `{"msg":"Signed X509 SVID","time":"2026-11-21T09:00:01Z","spiffe_id":"${WORKLOAD}","x":${deep}}` }, X509_JSON));
    expect(r.events).toHaveLength(1);
    expect(r.rejected).toEqual([{ index: 0, field: 'message.x', reason: expect.stringMatching(/nested deeper than/) }]);
  });

  it('parses logrus text quoting: escapes, empty values, keys with dots', () => {
    expect(logfmt('time="2026-11-21T09:00:01Z" level=info msg="say \\"hi\\"\\n" empty= a.b=c')).toEqual({
      time: '2026-11-21T09:00:01Z',
      level: 'info',
      msg: 'say "hi"\n',
      empty: '',
      'a.b': 'c',
    });
  });
});
