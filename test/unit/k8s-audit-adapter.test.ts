import { describe, it, expect } from 'vitest';
import { k8sAuditAdapter } from '../../services/collector/adapters/k8s-audit.ts';
import { BodyError } from '../../shared/errors.ts';
import { eventId } from '../../shared/ids.ts';

// ---------------------------------------------------------------------------------------------
// Samples, in the shape of the audit.k8s.io/v1 Event reference and the audit-annotation /
// service-account `user.extra` keys documented by Kubernetes (1.29+ credential ids).
// ---------------------------------------------------------------------------------------------

const JTI = '7c1b5a2e-93d4-4f0a-b6de-1f2e3d4c5b6a';
const POD = 'research-agent-6d8f7b9c5-x2kqz';
const SA = 'system:serviceaccount:agents:research-agent';

/** The agent's service account reads a secret with a bound, pod-scoped token. */
const SA_GET_SECRET = {
  kind: 'Event',
  apiVersion: 'audit.k8s.io/v1',
  level: 'Metadata',
  auditID: '4d2a8e5c-6b1f-4a37-9c0e-2f7b1d9e3a10',
  stage: 'ResponseComplete',
  requestURI: '/api/v1/namespaces/agents/secrets/openai-api-key',
  verb: 'get',
  user: {
    username: SA,
    uid: 'a709ef71-30e2-489a-bd19-ade97031b9db',
    groups: ['system:serviceaccounts', 'system:serviceaccounts:agents', 'system:authenticated'],
    extra: {
      'authentication.kubernetes.io/credential-id': [`JTI=${JTI}`],
      'authentication.kubernetes.io/node-name': ['ip-10-0-12-34.ec2.internal'],
      'authentication.kubernetes.io/node-uid': ['5e0b7c7a-1d5f-4a63-9b8e-0c2d4f6a8b10'],
      'authentication.kubernetes.io/pod-name': [POD],
      'authentication.kubernetes.io/pod-uid': ['900f80ed-bafe-49f0-9ae2-c5f0a3ac2cbe'],
    },
  },
  sourceIPs: ['10.0.12.77'],
  userAgent: 'python-requests/2.31.0',
  objectRef: { resource: 'secrets', namespace: 'agents', name: 'openai-api-key', apiVersion: 'v1' },
  responseStatus: { metadata: {}, code: 200 },
  requestReceivedTimestamp: '2024-05-14T09:21:07.412345Z',
  stageTimestamp: '2024-05-14T09:21:07.418902Z',
  annotations: {
    'authorization.k8s.io/decision': 'allow',
    'authorization.k8s.io/reason': 'RBAC: allowed by RoleBinding "agent-secrets/agents" of Role "secret-reader" to ServiceAccount "research-agent/agents"',
  },
};

/** A human runs `kubectl exec -it ... -- sh` in the agent's pod; the session lasts ten minutes. */
const KUBECTL_EXEC = {
  kind: 'Event',
  apiVersion: 'audit.k8s.io/v1',
  level: 'Metadata',
  auditID: 'b1f3c0de-2a9e-4d61-8f5b-7e6a5d4c3b21',
  stage: 'ResponseComplete',
  requestURI: `/api/v1/namespaces/agents/pods/${POD}/exec?command=sh&container=agent&stdin=true&stdout=true&tty=true`,
  verb: 'create',
  user: { username: 'alice@example.com', groups: ['platform-admins', 'system:authenticated'] },
  sourceIPs: ['203.0.113.24', '10.0.0.5'],
  userAgent: 'kubectl/v1.30.2 (linux/amd64) kubernetes/3968350',
  objectRef: { resource: 'pods', namespace: 'agents', name: POD, apiVersion: 'v1', subresource: 'exec' },
  responseStatus: { metadata: {}, code: 101 },
  requestReceivedTimestamp: '2024-05-14T09:30:00.000100Z',
  stageTimestamp: '2024-05-14T09:40:00.500000Z',
  annotations: { 'authorization.k8s.io/decision': 'allow', 'authorization.k8s.io/reason': 'RBAC: allowed by ClusterRoleBinding "platform-admins"' },
};

/** The agent tries to list secrets in kube-system and is denied. */
const FORBIDDEN_LIST = {
  kind: 'Event',
  apiVersion: 'audit.k8s.io/v1',
  level: 'Metadata',
  auditID: 'e6a1d2c3-0f4b-4a5e-9d8c-7b6a5f4e3d2c',
  stage: 'ResponseComplete',
  requestURI: '/api/v1/namespaces/kube-system/secrets?limit=500',
  verb: 'list',
  user: { username: SA, groups: ['system:serviceaccounts', 'system:authenticated'], extra: SA_GET_SECRET.user.extra },
  sourceIPs: ['10.0.12.77'],
  userAgent: 'kubectl/v1.30.2 (linux/amd64) kubernetes/3968350',
  objectRef: { resource: 'secrets', namespace: 'kube-system', apiVersion: 'v1' },
  responseStatus: {
    metadata: {},
    status: 'Failure',
    message: `secrets is forbidden: User "${SA}" cannot list resource "secrets" in API group "" in the namespace "kube-system"`,
    reason: 'Forbidden',
    details: { kind: 'secrets' },
    code: 403,
  },
  requestReceivedTimestamp: '2024-05-14T09:22:11.000001Z',
  stageTimestamp: '2024-05-14T09:22:11.001502Z',
  annotations: { 'authorization.k8s.io/decision': 'forbid', 'authorization.k8s.io/reason': '' },
};

/** The first stage of the secret read above: same auditID, no response yet. */
const REQUEST_RECEIVED = {
  kind: 'Event',
  apiVersion: 'audit.k8s.io/v1',
  level: 'Metadata',
  auditID: SA_GET_SECRET.auditID,
  stage: 'RequestReceived',
  requestURI: SA_GET_SECRET.requestURI,
  verb: 'get',
  user: SA_GET_SECRET.user,
  sourceIPs: ['10.0.12.77'],
  userAgent: 'python-requests/2.31.0',
  objectRef: SA_GET_SECRET.objectRef,
  requestReceivedTimestamp: '2024-05-14T09:21:07.412345Z',
  stageTimestamp: '2024-05-14T09:21:07.412345Z',
};

const ISSUED_JTI = '2b8f0c61-5d7e-4e9a-a1c3-9f8e7d6c5b4a';
const LIVE_TOKEN = 'eyJhbGciOiJSUzI1NiIsImtpZCI6IkJPR1VTIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl';

/** The kubelet requests a projected token for the agent's pod (TokenRequest at RequestResponse level). */
const TOKEN_REQUEST = {
  kind: 'Event',
  apiVersion: 'audit.k8s.io/v1',
  level: 'RequestResponse',
  auditID: '0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d',
  stage: 'ResponseComplete',
  requestURI: '/api/v1/namespaces/agents/serviceaccounts/research-agent/token',
  verb: 'create',
  user: {
    username: 'system:node:ip-10-0-12-34.ec2.internal',
    groups: ['system:nodes', 'system:authenticated'],
    extra: { 'authentication.kubernetes.io/credential-id': ['X509SHA256=3f1a9c0b7d2e4f6a8b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a'] },
  },
  sourceIPs: ['10.0.12.34'],
  userAgent: 'kubelet/v1.30.2 (linux/amd64) kubernetes/3968350',
  objectRef: { resource: 'serviceaccounts', namespace: 'agents', name: 'research-agent', apiVersion: 'v1', subresource: 'token' },
  responseStatus: { metadata: {}, code: 201 },
  requestObject: {
    kind: 'TokenRequest',
    apiVersion: 'authentication.k8s.io/v1',
    metadata: { name: 'research-agent', namespace: 'agents', creationTimestamp: null },
    spec: {
      audiences: ['https://kubernetes.default.svc.cluster.local', 'vault'],
      expirationSeconds: 3607,
      boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: POD, uid: '900f80ed-bafe-49f0-9ae2-c5f0a3ac2cbe' },
    },
    status: { token: '', expirationTimestamp: null },
  },
  responseObject: {
    kind: 'TokenRequest',
    apiVersion: 'authentication.k8s.io/v1',
    metadata: { name: 'research-agent', namespace: 'agents', creationTimestamp: '2024-05-14T09:20:00Z' },
    spec: { audiences: ['https://kubernetes.default.svc.cluster.local', 'vault'], expirationSeconds: 3607 },
    status: { token: LIVE_TOKEN, expirationTimestamp: '2024-05-14T10:20:07Z' },
  },
  requestReceivedTimestamp: '2024-05-14T09:20:00.100000Z',
  stageTimestamp: '2024-05-14T09:20:00.104000Z',
  annotations: {
    'authentication.kubernetes.io/issued-credential-id': `JTI=${ISSUED_JTI}`,
    'authorization.k8s.io/decision': 'allow',
    'authorization.k8s.io/reason': '',
  },
};

function body(...records: unknown[]): Buffer {
  return Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

function parse(b: Buffer | string) {
  return k8sAuditAdapter.parse(typeof b === 'string' ? Buffer.from(b) : b, 'application/x-ndjson');
}

// ---------------------------------------------------------------------------------------------

describe('k8sAuditAdapter: mapping', () => {
  it('declares its format and content types', () => {
    expect(k8sAuditAdapter.format).toBe('k8s-audit');
    expect(k8sAuditAdapter.contentTypes).toEqual(['application/json', 'application/x-ndjson']);
  });

  it('maps a service account reading a secret, joining on the token JTI', () => {
    const res = parse(body(SA_GET_SECRET));
    expect(res).toMatchObject({ records: 1, skipped: 0, rejected: [] });
    const [e] = res.events;
    expect(e).toMatchObject({
      event_id: eventId('k8s-audit', SA_GET_SECRET.auditID, 'ResponseComplete'),
      source: 'resource',
      type: 'resource.access',
      format: 'k8s-audit',
      principal: SA,
      workload_id: SA,
      credential_id: JTI,
      request_id: SA_GET_SECRET.auditID,
      src_ip: '10.0.12.77',
      user_agent: 'python-requests/2.31.0',
      action: 'k8s:get',
      resources: [{ type: 'k8s/secrets', id: 'agents/secrets/openai-api-key', account: 'agents' }],
      outcome: 'success',
      sensitivity: 'restricted',
      data_classes: ['secret'],
    });
    // RFC 3339 microseconds survive as the fractional millisecond.
    expect(e?.time).toBeCloseTo(Date.parse('2024-05-14T09:21:07.412Z') + 0.345, 6);
    expect(e?.end_time).toBeCloseTo(Date.parse('2024-05-14T09:21:07.418Z') + 0.902, 6);
    expect(e?.attributes).toMatchObject({
      verb: 'get',
      requestURI: '/api/v1/namespaces/agents/secrets/openai-api-key',
      stage: 'ResponseComplete',
      level: 'Metadata',
      pod_name: POD,
      pod_uid: '900f80ed-bafe-49f0-9ae2-c5f0a3ac2cbe',
      node_name: 'ip-10-0-12-34.ec2.internal',
      objectRef: SA_GET_SECRET.objectRef,
      responseStatus: { metadata: {}, code: 200 },
      annotations: SA_GET_SECRET.annotations,
    });
  });

  it('maps kubectl exec: restricted, timed at the request start, not at the end of the session', () => {
    const [e] = parse(body(KUBECTL_EXEC)).events;
    expect(e).toMatchObject({
      action: 'k8s:create',
      principal: 'alice@example.com',
      src_ip: '203.0.113.24',
      resources: [{ type: 'k8s/pods/exec', id: `agents/pods/${POD}`, account: 'agents' }],
      outcome: 'success',
      sensitivity: 'restricted',
      data_classes: [],
    });
    // Not a service account, and no token credential id.
    expect(e?.workload_id).toBeUndefined();
    expect(e?.credential_id).toBeUndefined();
    expect(e?.time).toBeCloseTo(Date.parse('2024-05-14T09:30:00.000Z') + 0.1, 6);
    expect(e?.end_time).toBe(Date.parse('2024-05-14T09:40:00.500Z'));
    expect(e?.attributes['sourceIPs']).toEqual(['203.0.113.24', '10.0.0.5']);
  });

  it('maps a forbidden list as a failed attempt on secrets', () => {
    const [e] = parse(body(FORBIDDEN_LIST)).events;
    expect(e).toMatchObject({
      action: 'k8s:list',
      outcome: 'failure',
      resources: [{ type: 'k8s/secrets', id: 'kube-system/secrets', account: 'kube-system' }],
      data_classes: ['secret'],
      sensitivity: 'restricted',
      credential_id: JTI,
    });
    expect(e?.attributes['responseStatus']).toMatchObject({ code: 403, reason: 'Forbidden' });
    expect(e?.attributes['annotations']).toMatchObject({ 'authorization.k8s.io/decision': 'forbid' });
  });

  it('skips RequestReceived and ResponseStarted, counting them', () => {
    const started = { ...KUBECTL_EXEC, stage: 'ResponseStarted', responseStatus: { metadata: {}, code: 101 } };
    const res = parse(body(REQUEST_RECEIVED, SA_GET_SECRET, started, KUBECTL_EXEC));
    expect(res).toMatchObject({ records: 4, skipped: 2, rejected: [] });
    expect(res.events.map((e) => e.request_id)).toEqual([SA_GET_SECRET.auditID, KUBECTL_EXEC.auditID]);
  });

  it('unwraps an EventList (webhook backend)', () => {
    const list = { kind: 'EventList', apiVersion: 'audit.k8s.io/v1', metadata: {}, items: [REQUEST_RECEIVED, SA_GET_SECRET, FORBIDDEN_LIST] };
    const res = k8sAuditAdapter.parse(Buffer.from(JSON.stringify(list)), 'application/json');
    expect(res).toMatchObject({ records: 3, skipped: 1, rejected: [] });
    expect(res.events.map((e) => e.action)).toEqual(['k8s:get', 'k8s:list']);
  });

  it('treats an EventList with null items as an empty batch', () => {
    const res = parse(JSON.stringify({ kind: 'EventList', apiVersion: 'audit.k8s.io/v1', metadata: {}, items: null }));
    expect(res.events).toEqual([]);
    expect(res.rejected).toEqual([]);
  });

  it('accepts a JSON array and a single pretty-printed Event', () => {
    expect(parse(JSON.stringify([SA_GET_SECRET, KUBECTL_EXEC])).events).toHaveLength(2);
    expect(parse(JSON.stringify(SA_GET_SECRET, null, 2)).events).toHaveLength(1);
  });

  it('unwraps a shipper envelope carrying the raw audit line under `log` or `message`', () => {
    const fluentBit = { date: 1715678467.41, log: JSON.stringify(SA_GET_SECRET) };
    const vector = { file: '/var/log/kubernetes/audit.log', host: 'cp-1', message: JSON.stringify(KUBECTL_EXEC), source_type: 'file' };
    const res = parse(body(fluentBit, vector));
    expect(res.rejected).toEqual([]);
    expect(res.events.map((e) => e.action)).toEqual(['k8s:get', 'k8s:create']);
  });

  it('types a successful TokenRequest with a JTI as credential.issued and never keeps the token', () => {
    const res = parse(body(TOKEN_REQUEST));
    expect(res.rejected).toEqual([]);
    expect(res.events).toHaveLength(1);
    const [e] = res.events;
    expect(e).toMatchObject({
      event_id: eventId('k8s-audit', TOKEN_REQUEST.auditID, 'ResponseComplete'),
      type: 'credential.issued',
      principal: 'system:node:ip-10-0-12-34.ec2.internal',
      action: 'k8s:create',
      resources: [{ type: 'k8s/serviceaccounts/token', id: 'agents/serviceaccounts/research-agent', account: 'agents' }],
      data_classes: ['secret'],
      sensitivity: 'restricted',
      credential: {
        id: ISSUED_JTI,
        kind: 'k8s-token',
        subject: SA,
        parent_id: 'X509SHA256=3f1a9c0b7d2e4f6a8b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a',
        expires_at: Date.parse('2024-05-14T10:20:07Z'),
        tags: {
          audiences: 'https://kubernetes.default.svc.cluster.local,vault',
          bound_object_kind: 'Pod',
          bound_object_name: POD,
          bound_object_uid: '900f80ed-bafe-49f0-9ae2-c5f0a3ac2cbe',
        },
      },
    });
    // The kubelet is not a service account: the caller is not the workload.
    expect(e?.workload_id).toBeUndefined();
    expect(e?.attributes['responseObject']).toEqual({
      kind: 'TokenRequest',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { name: 'research-agent', namespace: 'agents' },
    });
    expect(JSON.stringify(res.events)).not.toContain(LIVE_TOKEN);
  });

  it('reads the 1.29 annotation key too', () => {
    const annotations = { 'authentication.k8s.io/issued-credential-id': `JTI=${ISSUED_JTI}` };
    const [e] = parse(body({ ...TOKEN_REQUEST, annotations })).events;
    expect(e?.type).toBe('credential.issued');
    expect(e?.credential?.id).toBe(ISSUED_JTI);
  });

  it('keeps a TokenRequest without a JTI, or a failed one, as resource.access', () => {
    const noJti = { ...TOKEN_REQUEST, auditID: 'no-jti', annotations: { 'authorization.k8s.io/decision': 'allow' } };
    const denied = { ...TOKEN_REQUEST, auditID: 'denied', responseStatus: { metadata: {}, code: 403 } };
    const res = parse(body(noJti, denied));
    expect(res.events.map((e) => [e.type, e.outcome])).toEqual([
      ['resource.access', 'success'],
      ['resource.access', 'failure'],
    ]);
    expect(res.events.every((e) => e.credential === undefined)).toBe(true);
  });

  it('drops request and response bodies except identifying metadata', () => {
    const createSecret = {
      ...SA_GET_SECRET,
      auditID: 'create-secret',
      level: 'RequestResponse',
      verb: 'create',
      requestURI: '/api/v1/namespaces/agents/secrets',
      objectRef: { resource: 'secrets', namespace: 'agents', name: 'db-password', apiVersion: 'v1' },
      responseStatus: { metadata: {}, code: 201 },
      requestObject: {
        kind: 'Secret',
        apiVersion: 'v1',
        metadata: {
          name: 'db-password',
          namespace: 'agents',
          annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"data":{"password":"aHVudGVyMg=="}}' },
        },
        data: { password: 'aHVudGVyMg==' },
        type: 'Opaque',
      },
    };
    const [e] = parse(body(createSecret)).events;
    expect(e?.attributes['requestObject']).toEqual({ kind: 'Secret', apiVersion: 'v1', metadata: { name: 'db-password', namespace: 'agents' } });
    expect(JSON.stringify(e)).not.toContain('aHVudGVyMg==');
  });

  it('maps non-resource URLs, cluster-scoped objects and CRDs', () => {
    const healthz = {
      kind: 'Event',
      auditID: 'healthz',
      stage: 'ResponseComplete',
      verb: 'get',
      requestURI: '/healthz?verbose',
      user: { username: 'system:anonymous' },
      responseStatus: { code: 200 },
      requestReceivedTimestamp: '2024-05-14T09:00:00.000000Z',
    };
    const node = { ...FORBIDDEN_LIST, auditID: 'node', verb: 'get', objectRef: { resource: 'nodes', name: 'ip-10-0-12-34', apiVersion: 'v1' } };
    // An external-secrets CRD named "secrets" is not a core Secret.
    const crd = { ...FORBIDDEN_LIST, auditID: 'crd', objectRef: { resource: 'secrets', apiGroup: 'example.io', namespace: 'agents', apiVersion: 'v1' } };
    const res = parse(body(healthz, node, crd));
    expect(res.rejected).toEqual([]);
    expect(res.events[0]).toMatchObject({ resources: [{ type: 'k8s/non-resource-url', id: '/healthz' }], sensitivity: 'unknown', data_classes: [] });
    expect(res.events[0]?.end_time).toBeUndefined();
    expect(res.events[1]?.resources).toEqual([{ type: 'k8s/nodes', id: 'nodes/ip-10-0-12-34' }]);
    expect(res.events[2]).toMatchObject({ sensitivity: 'unknown', data_classes: [] });
  });

  it('maps a Panic as a failure even without a response status', () => {
    const panic = { ...SA_GET_SECRET, stage: 'Panic', responseStatus: undefined };
    const [e] = parse(body(panic)).events;
    expect(e).toMatchObject({ outcome: 'failure', event_id: eventId('k8s-audit', SA_GET_SECRET.auditID, 'Panic') });
  });
});

describe('k8sAuditAdapter: malformed input', () => {
  it('rejects a truncated NDJSON line by index and keeps the rest', () => {
    const text = `${JSON.stringify(SA_GET_SECRET)}\n${JSON.stringify(KUBECTL_EXEC).slice(0, 80)}\n${JSON.stringify(FORBIDDEN_LIST)}\n`;
    const res = parse(text);
    expect(res.records).toBe(3);
    expect(res.events.map((e) => e.action)).toEqual(['k8s:get', 'k8s:list']);
    expect(res.rejected).toHaveLength(1);
    expect(res.rejected[0]).toMatchObject({ index: 1, field: '' });
    expect(res.rejected[0]?.reason).toMatch(/^line 2: not valid JSON/);
  });

  it('throws BodyError for a truncated JSON array or a truncated single event', () => {
    expect(() => parse(JSON.stringify([SA_GET_SECRET, KUBECTL_EXEC]).slice(0, -30))).toThrow(BodyError);
    expect(() => parse(JSON.stringify(SA_GET_SECRET).slice(0, -10))).toThrow(BodyError);
  });

  it('rejects missing required fields and wrong types by index and field, keeping the rest', () => {
    const { auditID: _a, ...noAuditId } = SA_GET_SECRET;
    const { verb: _v, ...noVerb } = SA_GET_SECRET;
    const { requestReceivedTimestamp: _r, stageTimestamp: _s, ...noTime } = SA_GET_SECRET;
    const cases: Array<[unknown, string]> = [
      [noAuditId, 'auditID'],
      [noVerb, 'verb'],
      [noTime, 'requestReceivedTimestamp'],
      [{ ...SA_GET_SECRET, verb: 5 }, 'verb'],
      [{ ...SA_GET_SECRET, stage: 'Done' }, 'stage'],
      [{ ...SA_GET_SECRET, sourceIPs: '10.0.12.77' }, 'sourceIPs'],
      [{ ...SA_GET_SECRET, responseStatus: { code: '200' } }, 'responseStatus.code'],
      [{ ...SA_GET_SECRET, stageTimestamp: 'yesterday' }, 'stageTimestamp'],
      [{ ...SA_GET_SECRET, objectRef: { resource: ['secrets'] } }, 'objectRef.resource'],
      [{ ...SA_GET_SECRET, user: { username: 'x', extra: { 'authentication.kubernetes.io/credential-id': [42] } } }, 'user.extra.authentication.kubernetes.io/credential-id.0'],
      [{ ...SA_GET_SECRET, kind: 'Pod' }, 'kind'],
      [[SA_GET_SECRET], ''],
      ['an audit event', ''],
    ];
    const res = parse(body(KUBECTL_EXEC, ...cases.map(([r]) => r), FORBIDDEN_LIST));
    expect(res.records).toBe(cases.length + 2);
    expect(res.events.map((e) => e.action)).toEqual(['k8s:create', 'k8s:list']);
    expect(res.rejected.map((r) => [r.index, r.field])).toEqual(cases.map(([, field], i) => [i + 1, field]));
    expect(res.rejected[0]?.reason).toBe('missing');
    expect(res.rejected[3]?.reason).toBe('expected a non-empty string, got number');
    expect(res.rejected[7]?.reason).toContain('expected RFC 3339 or epoch milliseconds');
  });

  it('throws BodyError naming the offset of invalid UTF-8', () => {
    const good = Buffer.from(JSON.stringify(SA_GET_SECRET).slice(0, 40));
    const bad = Buffer.concat([good, Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    expect(() => parse(bad)).toThrow(BodyError);
    expect(() => parse(bad)).toThrow(/not valid UTF-8 .*offset 40/);
  });

  it('throws BodyError for a garbage body', () => {
    expect(() => parse('GET /api/v1/secrets 200 OK\nnot json at all\n')).toThrow(BodyError);
    expect(() => parse(Buffer.from([0x1f, 0x8b, 0x08, 0x00]))).toThrow(BodyError);
  });

  it('returns nothing for an empty body', () => {
    expect(parse('  \n')).toEqual({ events: [], rejected: [], rejectedCount: 0, records: 0, skipped: 0 });
  });
});

describe('k8sAuditAdapter: deterministic ids', () => {
  it('maps a re-shipped record to the same event id, distinct requests to distinct ids', () => {
    const first = parse(body(SA_GET_SECRET, FORBIDDEN_LIST)).events.map((e) => e.event_id);
    const again = parse(JSON.stringify({ kind: 'EventList', items: [SA_GET_SECRET, FORBIDDEN_LIST] })).events.map((e) => e.event_id);
    expect(again).toEqual(first);
    expect(new Set(first).size).toBe(2);
    for (const id of first) expect(id).toMatch(/^[0-9a-f]{32}$/);
  });
});
