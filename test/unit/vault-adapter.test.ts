import { describe, expect, it } from 'vitest';
import { vaultAdapter } from '../../services/collector/adapters/vault.ts';
import { BodyError } from '../../shared/errors.ts';
import type { CanonicalEvent } from '../../shared/event.ts';
import { eventId } from '../../shared/ids.ts';

/*
 * Audit lines in the shape Vault's file/socket audit device writes them (JSON, one entry per line,
 * HMAC'd tokens and accessors, `token_ttl` in auth blocks, `secret.lease_id` on leased responses),
 * following https://developer.hashicorp.com/vault/docs/audit/schema and Vault's audit formatter.
 * The story: an agent workload logs in with AppRole (its secret-id carries the task id as metadata),
 * creates a child token for a sub-task, reads a KV v2 secret, gets dynamic database credentials,
 * is denied a read, and the credentials are revoked. A Kubernetes-auth login stands in for a pod.
 */

const hmac = (seed: string): string => `hmac-sha256:${seed.repeat(64).slice(0, 64)}`;

const AGENT_TOKEN = hmac('a1');
const AGENT_ACCESSOR = hmac('b2');
const CHILD_TOKEN = hmac('c3');
const CHILD_ACCESSOR = hmac('d4');
const POD_ACCESSOR = hmac('e5');
const ENTITY = '7d2e1c4a-93b5-4f0e-8a61-2f4c9d0b5e17';
const POD_ENTITY = 'f1c2d3e4-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
const LEASE = 'database/creds/readonly/Qx3vTq8pZc1mN7rK2sYw9LbE';
const NS = { id: 'root' };
const REMOTE = { remote_address: '10.42.0.17', remote_port: 51844 };

const agentAuthBlock = {
  client_token: AGENT_TOKEN,
  accessor: AGENT_ACCESSOR,
  display_name: 'approle',
  policies: ['agent-runner', 'default'],
  token_policies: ['agent-runner', 'default'],
  metadata: { role_name: 'agent-runner', 'runtrail.task.id': 'task-7f3a' },
  entity_id: ENTITY,
  token_type: 'service',
  token_ttl: 3600,
  token_issue_time: '2024-05-14T09:12:03Z',
};

/** The agent's auth as it appears on every later request made with its token. */
const agentAuth = {
  ...agentAuthBlock,
  policy_results: { allowed: true, granting_policies: [{ name: 'agent-runner', namespace_id: 'root', type: 'acl' }] },
};

const approleLoginRequest = {
  id: '4f5c7e0a-1b2d-3e4f-5a6b-7c8d9e0f1a2b',
  operation: 'update',
  mount_point: 'auth/approle/',
  mount_type: 'approle',
  mount_accessor: 'auth_approle_5d1c2a9f',
  mount_running_version: 'v1.16.2+builtin.vault',
  mount_class: 'auth',
  namespace: NS,
  path: 'auth/approle/login',
  data: { role_id: hmac('11'), secret_id: hmac('22') },
  ...REMOTE,
};

const LINES = {
  approleLoginRequest: { time: '2024-05-14T09:12:03.118273Z', type: 'request', auth: { token_type: 'default' }, request: approleLoginRequest },
  approleLoginResponse: {
    time: '2024-05-14T09:12:03.131904512Z',
    type: 'response',
    // On a login, Vault logs the newly created token as the entry's auth.
    auth: agentAuthBlock,
    request: approleLoginRequest,
    response: {
      auth: agentAuthBlock,
      mount_type: 'approle',
      mount_accessor: 'auth_approle_5d1c2a9f',
      mount_running_plugin_version: 'v1.16.2+builtin.vault',
      mount_class: 'auth',
    },
  },
  k8sLoginResponse: {
    time: '2024-05-14T09:13:40.502118Z',
    type: 'response',
    auth: {
      client_token: hmac('f6'),
      accessor: POD_ACCESSOR,
      display_name: 'kubernetes-agents-research-agent',
      policies: ['default', 'research-agent'],
      token_policies: ['default', 'research-agent'],
      metadata: {
        role: 'research-agent',
        service_account_name: 'research-agent',
        service_account_namespace: 'agents',
        service_account_secret_name: '',
        service_account_uid: '6c0b5a1e-8d3f-4b2a-9e7c-1f0d2a3b4c5d',
      },
      entity_id: POD_ENTITY,
      token_type: 'service',
      token_ttl: 1200,
    },
    request: {
      id: '9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4',
      operation: 'update',
      mount_point: 'auth/kubernetes/',
      mount_type: 'kubernetes',
      mount_class: 'auth',
      namespace: NS,
      path: 'auth/kubernetes/login',
      data: { jwt: hmac('33'), role: hmac('44') },
      remote_address: '10.42.3.9',
      remote_port: 40112,
    },
    response: {
      auth: {
        client_token: hmac('f6'),
        accessor: POD_ACCESSOR,
        display_name: 'kubernetes-agents-research-agent',
        policies: ['default', 'research-agent'],
        token_policies: ['default', 'research-agent'],
        metadata: {
          role: 'research-agent',
          service_account_name: 'research-agent',
          service_account_namespace: 'agents',
          service_account_secret_name: '',
          service_account_uid: '6c0b5a1e-8d3f-4b2a-9e7c-1f0d2a3b4c5d',
        },
        entity_id: POD_ENTITY,
        token_type: 'service',
        token_ttl: 1200,
      },
      mount_type: 'kubernetes',
      mount_class: 'auth',
    },
  },
  childTokenResponse: {
    time: '2024-05-14T09:14:00.000001Z',
    type: 'response',
    auth: agentAuth,
    request: {
      id: '1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6',
      client_token: AGENT_TOKEN,
      client_token_accessor: AGENT_ACCESSOR,
      operation: 'update',
      mount_point: 'auth/token/',
      mount_type: 'token',
      mount_class: 'auth',
      namespace: NS,
      path: 'auth/token/create',
      data: { policies: [hmac('55')], ttl: hmac('66'), meta: { task_id: hmac('77') } },
      ...REMOTE,
    },
    response: {
      auth: {
        client_token: CHILD_TOKEN,
        accessor: CHILD_ACCESSOR,
        display_name: 'token',
        policies: ['default', 'kv-reader'],
        token_policies: ['default', 'kv-reader'],
        metadata: { task_id: 'task-7f3a/sub-1' },
        entity_id: ENTITY,
        token_type: 'service',
        token_ttl: 900,
      },
      mount_type: 'token',
      mount_class: 'auth',
    },
  },
  kvReadRequest: {
    time: '2024-05-14T09:15:21.400000Z',
    type: 'request',
    auth: agentAuth,
    request: {
      id: 'c0ffee00-1111-2222-3333-444455556666',
      client_token: AGENT_TOKEN,
      client_token_accessor: AGENT_ACCESSOR,
      operation: 'read',
      mount_point: 'secret/',
      mount_type: 'kv',
      mount_class: 'secret',
      namespace: NS,
      path: 'secret/data/payments/stripe',
      ...REMOTE,
    },
  },
  kvReadResponse: {
    time: '2024-05-14T09:15:21.412345678Z',
    type: 'response',
    auth: agentAuth,
    request: {
      id: 'c0ffee00-1111-2222-3333-444455556666',
      client_token: AGENT_TOKEN,
      client_token_accessor: AGENT_ACCESSOR,
      operation: 'read',
      mount_point: 'secret/',
      mount_type: 'kv',
      mount_class: 'secret',
      namespace: NS,
      path: 'secret/data/payments/stripe',
      headers: { 'user-agent': ['langchain-vault-tool/0.3'] },
      ...REMOTE,
    },
    response: {
      mount_point: 'secret/',
      mount_type: 'kv',
      mount_class: 'secret',
      data: {
        data: { api_key: hmac('88') },
        metadata: { created_time: hmac('99'), custom_metadata: null, deletion_time: hmac('aa'), destroyed: false, version: 3 },
      },
    },
  },
  dbCredsResponse: {
    time: '2024-05-14T09:16:02.250000Z',
    type: 'response',
    auth: agentAuth,
    request: {
      id: 'd8b0e1f2-3a4b-4c5d-8e6f-7a8b9c0d1e2f',
      client_token: AGENT_TOKEN,
      client_token_accessor: AGENT_ACCESSOR,
      operation: 'read',
      mount_point: 'database/',
      mount_type: 'database',
      mount_class: 'secret',
      namespace: NS,
      path: 'database/creds/readonly',
      ...REMOTE,
    },
    response: {
      secret: { lease_id: LEASE },
      mount_point: 'database/',
      mount_type: 'database',
      mount_class: 'secret',
      data: { password: hmac('bb'), username: hmac('cc') },
    },
  },
  deniedResponse: {
    time: '2024-05-14T09:17:45.000000Z',
    type: 'response',
    auth: agentAuth,
    error: '1 error occurred:\n\t* permission denied\n\n',
    request: {
      id: 'e1e2e3e4-f5f6-4a7b-8c9d-0e1f2a3b4c5d',
      client_token: AGENT_TOKEN,
      client_token_accessor: AGENT_ACCESSOR,
      operation: 'read',
      mount_point: 'secret/',
      mount_type: 'kv',
      mount_class: 'secret',
      namespace: NS,
      path: 'secret/data/prod/root-ca',
      ...REMOTE,
    },
    response: { mount_point: 'secret/', mount_type: 'kv', mount_class: 'secret', data: { error: hmac('dd') } },
  },
  leaseRevokeResponse: {
    time: '2024-05-14T09:20:00.000000Z',
    type: 'response',
    auth: agentAuth,
    request: {
      id: 'a0a1a2a3-b4b5-4c6c-8d7d-e8e9f0f1f2f3',
      client_token: AGENT_TOKEN,
      client_token_accessor: AGENT_ACCESSOR,
      operation: 'update',
      mount_point: 'sys/',
      mount_type: 'system',
      mount_class: 'secret',
      namespace: NS,
      path: `sys/leases/revoke/${LEASE}`,
      ...REMOTE,
    },
    response: { mount_point: 'sys/', mount_type: 'system', mount_class: 'secret' },
  },
  accessorRevokeResponse: {
    time: '2024-05-14T09:21:00.000000Z',
    type: 'response',
    auth: agentAuth,
    request: {
      id: 'b1b2b3b4-c5c6-4d7d-8e8e-f9f0a1a2b3b4',
      client_token: AGENT_TOKEN,
      client_token_accessor: AGENT_ACCESSOR,
      operation: 'update',
      mount_point: 'auth/token/',
      mount_type: 'token',
      mount_class: 'auth',
      namespace: NS,
      path: 'auth/token/revoke-accessor',
      // Vault HMACs request data with the same salt it uses for accessors, so this still joins.
      data: { accessor: CHILD_ACCESSOR },
      ...REMOTE,
    },
    response: { mount_point: 'auth/token/', mount_type: 'token', mount_class: 'auth' },
  },
} as const;

type LineName = keyof typeof LINES;

function body(...entries: Array<LineName | string | object>): Buffer {
  return Buffer.from(
    entries
      .map((e) => (typeof e === 'string' ? (e in LINES ? JSON.stringify(LINES[e as LineName]) : e) : JSON.stringify(e)))
      .join('\n') + '\n',
  );
}

function parse(...entries: Array<LineName | string | object>) {
  return vaultAdapter.parse(body(...entries), 'application/x-ndjson');
}

function only(...entries: Array<LineName | string | object>): CanonicalEvent {
  const res = parse(...entries);
  expect(res.rejected).toEqual([]);
  expect(res.events).toHaveLength(1);
  return res.events[0] as CanonicalEvent;
}

/** Deep copy with one path replaced (or removed when value is undefined). */
function withField(name: LineName, path: string[], value: unknown): Record<string, unknown> {
  const copy = JSON.parse(JSON.stringify(LINES[name])) as Record<string, unknown>;
  let cur = copy;
  for (const k of path.slice(0, -1)) cur = cur[k] as Record<string, unknown>;
  const last = path[path.length - 1] as string;
  if (value === undefined) delete cur[last];
  else cur[last] = value;
  return copy;
}

describe('vault adapter: token issuance', () => {
  it('turns an AppRole login into credential.issued for the new token, with no parent', () => {
    const e = only('approleLoginResponse');
    expect(e.type).toBe('credential.issued');
    expect(e.source).toBe('resource');
    expect(e.format).toBe('vault');
    expect(e.event_id).toBe(eventId('vault', '4f5c7e0a-1b2d-3e4f-5a6b-7c8d9e0f1a2b', 'response'));
    // RFC 3339 nanoseconds survive as the fractional part of epoch ms.
    expect(e.time).toBeCloseTo(Date.UTC(2024, 4, 14, 9, 12, 3, 131) + 0.904512, 3);
    expect(e.credential).toEqual({
      id: AGENT_ACCESSOR,
      kind: 'vault-token',
      subject: ENTITY,
      tags: { role_name: 'agent-runner', 'runtrail.task.id': 'task-7f3a' },
      expires_at: e.time + 3600 * 1000,
    });
    // Logins are unauthenticated: the token Vault logs as `auth` is the one being issued.
    expect(e.credential_id).toBeUndefined();
    expect(e.principal).toBe('approle');
    expect(e.action).toBe('vault:update');
    expect(e.request_id).toBe('4f5c7e0a-1b2d-3e4f-5a6b-7c8d9e0f1a2b');
    expect(e.src_ip).toBe('10.42.0.17');
    expect(e.resources).toEqual([{ type: 'vault/path', id: 'auth/approle/login' }]);
    expect(e.outcome).toBe('success');
  });

  it('derives the Kubernetes service account as workload id from kubernetes-auth metadata', () => {
    const e = only('k8sLoginResponse');
    expect(e.type).toBe('credential.issued');
    expect(e.workload_id).toBe('system:serviceaccount:agents:research-agent');
    expect(e.principal).toBe('kubernetes-agents-research-agent');
    expect(e.credential).toMatchObject({ id: POD_ACCESSOR, kind: 'vault-token', subject: POD_ENTITY });
    expect(e.credential?.tags).toMatchObject({ service_account_name: 'research-agent', service_account_namespace: 'agents', role: 'research-agent' });
    expect(e.credential?.expires_at).toBe(e.time + 1_200_000);
  });

  it('takes a SPIFFE ID from token metadata as the workload id', () => {
    const spiffe = withField('approleLoginResponse', ['auth', 'metadata'], { spiffe_id: 'spiffe://example.org/ns/agents/sa/planner' });
    expect(only(spiffe).workload_id).toBe('spiffe://example.org/ns/agents/sa/planner');
  });

  it('gives a child token its parent accessor, and the creation the parent as credential used', () => {
    const e = only('childTokenResponse');
    expect(e.type).toBe('credential.issued');
    expect(e.credential_id).toBe(AGENT_ACCESSOR);
    expect(e.credential).toEqual({
      id: CHILD_ACCESSOR,
      kind: 'vault-token',
      parent_id: AGENT_ACCESSOR,
      subject: ENTITY,
      tags: { task_id: 'task-7f3a/sub-1' },
      expires_at: e.time + 900_000,
    });
    expect(e.principal).toBe('approle');
  });

  it('does not treat a token renewal as issuance', () => {
    const renew = withField('childTokenResponse', ['request', 'path'], 'auth/token/renew-self');
    const e = only(renew);
    expect(e.type).toBe('resource.access');
    expect(e.credential).toBeUndefined();
  });
});

describe('vault adapter: leases and revocation', () => {
  it('turns a dynamic-secret response into credential.issued for the lease, bound to the requester', () => {
    const e = only('dbCredsResponse');
    expect(e.type).toBe('credential.issued');
    expect(e.credential_id).toBe(AGENT_ACCESSOR);
    expect(e.credential).toEqual({
      id: LEASE,
      kind: 'vault-lease',
      parent_id: AGENT_ACCESSOR,
      subject: ENTITY,
      tags: { role_name: 'agent-runner', 'runtrail.task.id': 'task-7f3a' },
    });
    // Stock Vault logs only the lease id: the expiry is unknown rather than guessed.
    expect(e.credential?.expires_at).toBeUndefined();
    expect(e.data_classes).toEqual(['secret']);
    expect(e.sensitivity).toBe('restricted');
  });

  it('computes the lease expiry from lease_duration when the entry carries one', () => {
    const enriched = withField('dbCredsResponse', ['response', 'secret'], { lease_id: LEASE, lease_duration: 2764800, renewable: true });
    const e = only(enriched);
    expect(e.credential?.expires_at).toBe(e.time + 2_764_800_000);
  });

  it('emits two events with distinct ids when one response issues both a token and a lease', () => {
    const both = withField('childTokenResponse', ['response', 'secret'], { lease_id: 'aws/creds/deploy/xyz' });
    const res = parse(both);
    expect(res.rejected).toEqual([]);
    expect(res.events.map((e) => [e.credential?.kind, e.credential?.id])).toEqual([
      ['vault-token', CHILD_ACCESSOR],
      ['vault-lease', 'aws/creds/deploy/xyz'],
    ]);
    const reqId = LINES.childTokenResponse.request.id;
    expect(res.events.map((e) => e.event_id)).toEqual([eventId('vault', reqId, 'response', 'auth'), eventId('vault', reqId, 'response', 'lease')]);
  });

  it('does not treat a lease renewal as issuance', () => {
    const renew = withField('dbCredsResponse', ['request', 'path'], 'sys/leases/renew');
    const e = only(renew);
    expect(e.type).toBe('resource.access');
    expect(e.data_classes).toEqual([]);
  });

  it('turns a lease revocation into credential.revoked, taking the lease id from the path', () => {
    const e = only('leaseRevokeResponse');
    expect(e.type).toBe('credential.revoked');
    expect(e.credential).toEqual({ id: LEASE, kind: 'vault-lease' });
    expect(e.credential_id).toBe(AGENT_ACCESSOR);
    // The engine path embedded in the revoke path is not a secret read.
    expect(e.data_classes).toEqual([]);
  });

  it('takes the lease id from request data, and marks prefix revocations', () => {
    const byData = withField('leaseRevokeResponse', ['request'], { ...LINES.leaseRevokeResponse.request, path: 'sys/leases/revoke', data: { lease_id: hmac('ee') } });
    const byPrefix = withField('leaseRevokeResponse', ['request', 'path'], 'sys/leases/revoke-prefix/database/creds/readonly');
    const [a, b] = parse(byData, byPrefix).events;
    expect(a?.credential).toEqual({ id: hmac('ee'), kind: 'vault-lease' });
    expect(a?.attributes['revoke_prefix']).toBeUndefined();
    expect(b?.credential).toEqual({ id: 'database/creds/readonly', kind: 'vault-lease' });
    expect(b?.attributes['revoke_prefix']).toBe(true);
  });

  it('turns token revocations into credential.revoked for the revoked accessor', () => {
    const e = only('accessorRevokeResponse');
    expect(e.type).toBe('credential.revoked');
    expect(e.credential).toEqual({ id: CHILD_ACCESSOR, kind: 'vault-token' });
    const self = only(withField('accessorRevokeResponse', ['request', 'path'], 'auth/token/revoke-self'));
    expect(self.credential).toEqual({ id: AGENT_ACCESSOR, kind: 'vault-token' });
  });

  it('never uses a raw (un-HMAC\'d) token as a credential id', () => {
    const raw = withField('accessorRevokeResponse', ['request'], {
      ...LINES.accessorRevokeResponse.request,
      path: 'auth/token/revoke',
      data: { token: 'hvs.CAESIRAWTOKENMUSTNEVERBESTORED' },
    });
    const res = parse(raw);
    expect(res.events[0]?.type).toBe('resource.access');
    expect(JSON.stringify(res)).not.toContain('hvs.CAESIRAWTOKENMUSTNEVERBESTORED');
    const hashed = withField('accessorRevokeResponse', ['request'], { ...LINES.accessorRevokeResponse.request, path: 'auth/token/revoke', data: { token: CHILD_TOKEN } });
    expect(only(hashed).credential).toEqual({ id: CHILD_TOKEN, kind: 'vault-token' });
  });

  it('keeps a failed revocation as a failed resource.access', () => {
    const failed = { ...LINES.leaseRevokeResponse, error: '1 error occurred:\n\t* lease not found\n\n' };
    const e = only(failed);
    expect(e.type).toBe('resource.access');
    expect(e.outcome).toBe('failure');
  });
});

describe('vault adapter: access events', () => {
  it('maps a KV v2 read to a secret, restricted resource.access by the token that made it', () => {
    const e = only('kvReadResponse');
    expect(e.type).toBe('resource.access');
    expect(e.event_id).toBe(eventId('vault', 'c0ffee00-1111-2222-3333-444455556666', 'response'));
    expect(e.credential_id).toBe(AGENT_ACCESSOR);
    expect(e.principal).toBe('approle');
    expect(e.action).toBe('vault:read');
    expect(e.resources).toEqual([{ type: 'vault/path', id: 'secret/data/payments/stripe' }]);
    expect(e.data_classes).toEqual(['secret']);
    expect(e.sensitivity).toBe('restricted');
    expect(e.outcome).toBe('success');
    expect(e.user_agent).toBe('langchain-vault-tool/0.3');
    expect(e.attributes['request.mount_type']).toBe('kv');
    expect(e.attributes['auth.metadata.runtrail.task.id']).toBe('task-7f3a');
    expect(e.attributes['auth.policies']).toEqual(['agent-runner', 'default']);
    expect(e.attributes['response.data_keys']).toEqual(['data', 'metadata']);
  });

  it('does not classify KV metadata reads, writes, or non-secret paths as secret', () => {
    const meta = withField('kvReadResponse', ['request', 'path'], 'secret/metadata/payments/stripe');
    const write = withField('kvReadResponse', ['request', 'operation'], 'update');
    const policy = withField('kvReadResponse', ['request'], { ...LINES.kvReadResponse.request, path: 'sys/policies/acl/agent-runner', mount_type: 'system', mount_point: 'sys/' });
    const events = parse(meta, write, policy).events;
    expect(events).toHaveLength(3);
    for (const e of events) {
      expect(e.data_classes).toEqual([]);
      expect(e.sensitivity).toBe('unknown');
    }
  });

  it('classifies transit decrypt, PKI issue and response unwrapping as secret', () => {
    const at = (path: string, mountType: string) =>
      withField('kvReadResponse', ['request'], { ...LINES.kvReadResponse.request, operation: 'update', path, mount_type: mountType, mount_point: `${path.split('/')[0]}/` });
    const events = parse(at('transit/decrypt/payments', 'transit'), at('pki/issue/agents', 'pki'), at('sys/wrapping/unwrap', 'system')).events;
    expect(events.map((e) => e.data_classes)).toEqual([['secret'], ['secret'], ['secret']]);
  });

  it('records an error response as a failure, still classified by path', () => {
    const e = only('deniedResponse');
    expect(e.type).toBe('resource.access');
    expect(e.outcome).toBe('failure');
    expect(e.data_classes).toEqual(['secret']);
    expect(e.attributes['error']).toContain('permission denied');
  });

  it('keeps the namespace path as the resource account', () => {
    const nsd = withField('kvReadResponse', ['request', 'namespace'], { id: 'aB3dE', path: 'team-payments/' });
    expect(only(nsd).resources).toEqual([{ type: 'vault/path', id: 'secret/data/payments/stripe', account: 'team-payments/' }]);
  });

  it('never keeps client tokens or data values, which are live secrets on a log_raw device', () => {
    const raw = withField('kvReadResponse', ['response', 'data'], { data: { api_key: 'sk_live_RAWSECRETVALUE' } });
    const rawAuth = withField('kvReadResponse', ['auth', 'client_token'], 'hvs.RAWCLIENTTOKEN');
    const res = parse(raw, rawAuth);
    const out = JSON.stringify(res);
    expect(out).not.toContain('sk_live_RAWSECRETVALUE');
    expect(out).not.toContain('hvs.RAWCLIENTTOKEN');
    expect(out).not.toContain(AGENT_TOKEN);
    // The accessor is what joins events; it is kept.
    expect(res.events[1]?.credential_id).toBe(AGENT_ACCESSOR);
  });

  it('falls back to the HMAC\'d client token when no accessor is logged', () => {
    const noAccessor = withField('kvReadResponse', ['auth'], { client_token: AGENT_TOKEN, display_name: 'approle' });
    const req = (noAccessor['request'] as Record<string, unknown>);
    delete req['client_token_accessor'];
    expect(only(noAccessor).credential_id).toBe(AGENT_TOKEN);
  });
});

describe('vault adapter: request entries and malformed input', () => {
  it('skips request entries and counts them', () => {
    const res = parse('approleLoginRequest', 'approleLoginResponse', 'kvReadRequest', 'kvReadResponse');
    expect(res.records).toBe(4);
    expect(res.skipped).toBe(2);
    expect(res.rejected).toEqual([]);
    expect(res.events.map((e) => e.type)).toEqual(['credential.issued', 'resource.access']);
  });

  it('yields nothing but skips when only request entries are logged', () => {
    const res = parse('approleLoginRequest', 'kvReadRequest');
    expect(res).toEqual({ events: [], rejected: [], rejectedCount: 0, records: 2, skipped: 2 });
  });

  it('converts the whole story in order', () => {
    const res = parse(
      'approleLoginRequest',
      'approleLoginResponse',
      'k8sLoginResponse',
      'childTokenResponse',
      'kvReadRequest',
      'kvReadResponse',
      'dbCredsResponse',
      'deniedResponse',
      'leaseRevokeResponse',
      'accessorRevokeResponse',
    );
    expect(res.rejected).toEqual([]);
    expect(res.events.map((e) => e.type)).toEqual([
      'credential.issued',
      'credential.issued',
      'credential.issued',
      'resource.access',
      'credential.issued',
      'resource.access',
      'credential.revoked',
      'credential.revoked',
    ]);
    expect(new Set(res.events.map((e) => e.event_id)).size).toBe(res.events.length);
  });

  it('rejects a response without time by index and field, keeping the others', () => {
    const res = parse('approleLoginResponse', withField('kvReadResponse', ['time'], undefined), 'dbCredsResponse');
    expect(res.records).toBe(3);
    expect(res.events.map((e) => e.request_id)).toEqual([LINES.approleLoginResponse.request.id, LINES.dbCredsResponse.request.id]);
    expect(res.rejected).toEqual([{ index: 1, field: 'time', reason: 'missing' }]);
  });

  it('rejects a response whose auth is not an object', () => {
    const res = parse('kvReadResponse', withField('dbCredsResponse', ['auth'], 'approle'));
    expect(res.events).toHaveLength(1);
    expect(res.rejected).toHaveLength(1);
    expect(res.rejected[0]).toMatchObject({ index: 1, field: 'auth' });
    expect(res.rejected[0]?.reason).toContain('expected an object, got string');
  });

  it('rejects a truncated line and keeps the lines around it', () => {
    const truncated = JSON.stringify(LINES.kvReadResponse).slice(0, 200);
    const res = parse('approleLoginResponse', truncated, 'dbCredsResponse');
    expect(res.records).toBe(3);
    expect(res.events).toHaveLength(2);
    expect(res.rejected).toHaveLength(1);
    expect(res.rejected[0]).toMatchObject({ index: 1, field: '' });
    expect(res.rejected[0]?.reason).toMatch(/^line 2: not valid JSON/);
  });

  it('rejects entries with an unknown type, no request, or no request id', () => {
    const res = parse(
      withField('kvReadResponse', ['type'], 'audit'),
      withField('kvReadResponse', ['request'], undefined),
      withField('kvReadResponse', ['request', 'id'], undefined),
      withField('kvReadResponse', ['type'], undefined),
    );
    expect(res.events).toEqual([]);
    expect(res.rejected.map((r) => [r.index, r.field])).toEqual([
      [0, 'type'],
      [1, 'request'],
      [2, 'request.id'],
      [3, 'type'],
    ]);
  });

  it('throws BodyError when no line is JSON', () => {
    expect(() => vaultAdapter.parse(Buffer.from('vault: audit log rotated\nnot json either\n'), 'text/plain')).toThrow(BodyError);
  });
});
