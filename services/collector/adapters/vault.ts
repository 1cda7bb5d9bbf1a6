import { EVENT_TYPE, type CanonicalEventInput, type CredentialInfo } from '../../../shared/event.ts';
import { RecordError } from '../../../shared/errors.ts';
import { eventId } from '../../../shared/ids.ts';
import { ResultBuilder, frameJsonRecords, read, type Adapter, type AdapterResult } from './adapter.ts';

/**
 * HashiCorp Vault audit-device adapter (file and socket devices, JSON format: one entry per line).
 *
 * Vault writes two entries per API call, both carrying `request.id`: a `request` entry before the
 * call is routed and a `response` entry after it, which repeats the request and auth and adds the
 * result. Vault writes the response entry on every path, including permission-denied and other
 * errors, so only response entries are converted and request entries are counted as `skipped`. A
 * log that somehow holds only request entries (e.g. a filtered audit device) yields no events.
 *
 * Mapping:
 * - a response issuing a token (`response.auth.accessor`: logins, `auth/token/create*`) becomes
 *   `credential.issued` with kind `vault-token`;
 * - a response carrying a dynamic-secret lease (`response.secret.lease_id`) becomes
 *   `credential.issued` with kind `vault-lease` (both, with distinct ids, if a response had both);
 * - a successful revocation (`sys/leases/revoke*`, `auth/token/revoke*`) becomes `credential.revoked`;
 * - anything else becomes `resource.access`.
 *
 * Sensitive values are HMAC'd by Vault by default (`hmac-sha256:...`). HMAC'd accessors still join:
 * the same audit device hashes the same accessor to the same string everywhere. Values that are
 * NOT HMAC'd because the device runs with `log_raw` are never copied: request/response `data`
 * values, client tokens and wrapping tokens are dropped (only `data` key names are kept).
 */

/** Prefix Vault puts on every HMAC'd value. */
const HMAC_PREFIX = 'hmac-sha256:';

/**
 * Request paths (outside `sys/`) whose response hands secret material to the caller. Paths are as
 * Vault logs them, without `/v1/`; mounts can sit anywhere, so the patterns anchor on the
 * structural part: dynamic credentials (database, AWS, GCP, SSH, Consul, ...), transit decryption /
 * plaintext data keys / key export, PKI issuance (returns a private key) and AppRole secret-id
 * generation. `sys/` is excluded because lease paths there embed the engine path
 * (`sys/leases/revoke/database/creds/...`) without returning anything secret; the one `sys/`
 * endpoint that does, response unwrapping, is listed in {@link SECRET_SYS_PATHS}. KV and cubbyhole
 * reads are recognised by {@link isKvRead}, which needs the operation and mount.
 */
export const SECRET_PATH_PATTERNS: readonly RegExp[] = [
  /(?:^|\/)(?:creds|static-creds|sts)\/[^/]+/,
  /(?:^|\/)(?:roleset|static-account|impersonated-account)\/[^/]+\/(?:token|key)$/,
  /(?:^|\/)decrypt\/[^/]+/,
  /(?:^|\/)datakey\/plaintext\/[^/]+/,
  /(?:^|\/)export\/(?:encryption-key|signing-key|hmac-key)\//,
  /(?:^|\/)issue\/[^/]+$/,
  /^auth\/[^/]+\/role\/[^/]+\/secret-id$/,
];

/** `sys/` endpoints whose response carries a secret. */
export const SECRET_SYS_PATHS: ReadonlySet<string> = new Set(['sys/wrapping/unwrap']);

/** Lease renewals return the lease again; they neither issue it nor hand out its secret. */
const LEASE_RENEWAL = /^sys\/(?:leases\/)?renew(?:\/|$)/;

/** Metadata keys that hold a SPIFFE ID (JWT/OIDC and cert auth can be configured to record one). */
const SPIFFE_METADATA_KEYS = ['spiffe_id', 'spiffeID', 'spiffe-id'] as const;

/** Fields dropped when flattening an entry into attributes: secret material or mapped elsewhere. */
const DROPPED_FIELDS: ReadonlySet<string> = new Set(['client_token', 'token', 'data', 'headers']);

/** The Vault audit-log adapter. */
export const vaultAdapter: Adapter = {
  format: 'vault',
  contentTypes: ['application/json', 'application/x-ndjson', 'text/plain'],
  parse(body: Buffer): AdapterResult {
    const out = new ResultBuilder();
    for (const rec of frameJsonRecords(body)) {
      if ('error' in rec) out.reject(rec.index, rec.field, rec.error);
      else out.record(rec.index, () => convertEntry(rec.value));
    }
    return out.result();
  },
};

/** The parts of a response entry every produced event shares. */
interface EntryContext {
  time: number;
  requestId: string;
  path: string;
  failed: boolean;
  auth: Record<string, unknown>;
  req: Record<string, unknown>;
  resp: Record<string, unknown>;
  base: CanonicalEventInput;
}

/** Converts one audit entry; `null` for request entries (see the module comment). */
function convertEntry(value: unknown): CanonicalEventInput[] | null {
  const e = read.obj(value, '');
  const entryType = read.str(e['type'], 'type');
  if (entryType === 'request') return null;
  if (entryType !== 'response') throw new RecordError('type', `expected "request" or "response", got ${JSON.stringify(entryType).slice(0, 60)}`);

  const ctx = entryContext(e);
  const out: CanonicalEventInput[] = [];
  if (!ctx.failed) {
    const token = issuedToken(ctx);
    const lease = issuedLease(ctx);
    const both = token !== undefined && lease !== undefined;
    if (token) out.push(issuance(ctx, token, both ? 'auth' : undefined));
    if (lease) out.push(issuance(ctx, lease, both ? 'lease' : undefined));
    if (out.length === 0) {
      const revoked = revokedCredential(ctx);
      if (revoked) {
        const attributes = revoked.prefix ? { ...ctx.base.attributes, revoke_prefix: true } : ctx.base.attributes;
        out.push({ ...ctx.base, type: EVENT_TYPE.credentialRevoked, credential: revoked.credential, attributes });
      }
    }
  }
  if (out.length === 0) out.push({ ...ctx.base, type: EVENT_TYPE.resourceAccess });
  return out;
}

/** Reads the fields shared by all events of one response entry and builds the common event. */
function entryContext(e: Record<string, unknown>): EntryContext {
  const time = read.time(e['time'], 'time');
  const auth = read.optObj(e['auth'], 'auth') ?? {};
  const req = read.obj(e['request'], 'request');
  const resp = read.optObj(e['response'], 'response') ?? {};
  const requestId = read.str(req['id'], 'request.id');
  const operation = read.str(req['operation'], 'request.operation');
  const path = read.optStr(req['path'], 'request.path') ?? '';
  const error = read.optStr(e['error'], 'error');
  const ns = read.optObj(req['namespace'], 'request.namespace');
  const nsPath = ns ? read.optStr(ns['path'], 'request.namespace.path') : undefined;
  const metadata = read.optObj(auth['metadata'], 'auth.metadata');
  const respAuth = read.optObj(resp['auth'], 'response.auth');
  const respMetadata = respAuth ? read.optObj(respAuth['metadata'], 'response.auth.metadata') : undefined;

  const secret =
    isKvRead(req, operation, path) ||
    SECRET_SYS_PATHS.has(path) ||
    (!path.startsWith('sys/') && SECRET_PATH_PATTERNS.some((p) => p.test(path))) ||
    // A new lease means a dynamic secret (database password, cloud keys) was handed out.
    (leaseIdOf(resp) !== undefined && !LEASE_RENEWAL.test(path));

  const attributes: Record<string, unknown> = {};
  flattenInto('', e, attributes);
  const reqData = optObjLenient(req['data']);
  if (reqData) attributes['request.data_keys'] = Object.keys(reqData).sort();
  const respData = optObjLenient(resp['data']);
  if (respData) attributes['response.data_keys'] = Object.keys(respData).sort();

  const base: CanonicalEventInput = {
    event_id: eventId('vault', requestId, 'response'),
    source: 'resource',
    type: EVENT_TYPE.resourceAccess,
    time,
    format: 'vault',
    workload_id: workloadId(metadata) ?? workloadId(respMetadata),
    credential_id: usedCredential(auth, req),
    request_id: requestId,
    principal: read.optStr(auth['display_name'], 'auth.display_name') ?? read.optStr(auth['entity_id'], 'auth.entity_id'),
    action: `vault:${operation}`,
    resources: path === '' ? [] : [{ type: 'vault/path', id: path, account: nsPath }],
    outcome: error !== undefined ? 'failure' : 'success',
    sensitivity: secret ? 'restricted' : 'unknown',
    data_classes: secret ? ['secret'] : [],
    src_ip: read.optStr(req['remote_address'], 'request.remote_address'),
    user_agent: userAgent(req['headers']),
    attributes,
  };
  return { time, requestId, path, failed: error !== undefined, auth, req, resp, base };
}

/**
 * The token that authorised the request: its accessor, else its (HMAC'd) client token. A client
 * token that is not HMAC'd is a live secret (`log_raw` device) and is never used as an id.
 */
function usedCredential(auth: Record<string, unknown>, req: Record<string, unknown>): string | undefined {
  const accessor = read.optStr(auth['accessor'], 'auth.accessor') ?? read.optStr(req['client_token_accessor'], 'request.client_token_accessor');
  if (accessor !== undefined) return accessor;
  const token = read.optStr(auth['client_token'], 'auth.client_token');
  return token !== undefined && token.startsWith(HMAC_PREFIX) ? token : undefined;
}

/**
 * A token issued by this response (login or token creation). Token renewals also return an auth
 * block, for the same token: those are not issuance.
 */
function issuedToken(ctx: EntryContext): CredentialInfo | undefined {
  const ra = read.optObj(ctx.resp['auth'], 'response.auth');
  if (!ra) return undefined;
  const id = read.optStr(ra['accessor'], 'response.auth.accessor');
  if (id === undefined || /^auth\/token\/renew/.test(ctx.path)) return undefined;
  // On a login Vault logs the new token as the entry's `auth` too: it has no parent.
  const caller = usedCredential(ctx.auth, ctx.req);
  const ttl = numberOf(ra['token_ttl']) ?? numberOf(ra['lease_duration']);
  return {
    id,
    kind: 'vault-token',
    parent_id: caller === id ? undefined : caller,
    subject: read.optStr(ra['entity_id'], 'response.auth.entity_id') ?? read.optStr(ra['display_name'], 'response.auth.display_name'),
    tags: stringMap(ra['metadata']),
    expires_at: ttl !== undefined && ttl > 0 ? ctx.time + ttl * 1000 : undefined,
  };
}

/**
 * A dynamic-secret lease issued by this response. Lease renewals (`sys/leases/renew`,
 * `sys/renew`) return the same lease and are not issuance.
 *
 * Stock Vault logs only `lease_id` in `response.secret`; `lease_duration` is read when a shipper
 * or fork adds it, otherwise the expiry is unknown.
 */
function issuedLease(ctx: EntryContext): CredentialInfo | undefined {
  const id = leaseIdOf(ctx.resp);
  if (id === undefined || LEASE_RENEWAL.test(ctx.path)) return undefined;
  const secret = read.obj(ctx.resp['secret'], 'response.secret');
  const ttl = numberOf(secret['lease_duration']) ?? numberOf(secret['ttl']);
  const caller = usedCredential(ctx.auth, ctx.req);
  return {
    id,
    kind: 'vault-lease',
    parent_id: caller,
    subject: read.optStr(ctx.auth['entity_id'], 'auth.entity_id') ?? read.optStr(ctx.auth['display_name'], 'auth.display_name'),
    tags: stringMap(ctx.auth['metadata']),
    expires_at: ttl !== undefined && ttl > 0 ? ctx.time + ttl * 1000 : undefined,
  };
}

/** Builds a `credential.issued` event; `suffix` separates two issuances in one response. */
function issuance(ctx: EntryContext, credential: CredentialInfo, suffix: 'auth' | 'lease' | undefined): CanonicalEventInput {
  return {
    ...ctx.base,
    event_id: suffix === undefined ? ctx.base.event_id : eventId('vault', ctx.requestId, 'response', suffix),
    type: EVENT_TYPE.credentialIssued,
    // A login is logged with the new token as its own `auth`; no credential was used to get it.
    credential_id: ctx.base.credential_id === credential.id ? undefined : ctx.base.credential_id,
    credential,
  };
}

/** A revoked credential; `prefix` when a whole lease prefix was revoked and `credential.id` is that prefix. */
interface Revocation {
  credential: CredentialInfo;
  prefix: boolean;
}

/**
 * The credential a successful revocation ended. Lease ids in request data are HMAC'd by default
 * (unlike the raw `lease_id` logged at issuance), so the id taken from the path is preferred; a
 * prefix revocation reports the prefix as the id and is marked `attributes.revoke_prefix`.
 * Returns undefined when the revoked credential cannot be named; the entry then stays
 * `resource.access`.
 */
function revokedCredential(ctx: EntryContext): Revocation | undefined {
  const data = optObjLenient(ctx.req['data']) ?? {};
  const lease = /^sys\/(?:leases\/)?(revoke(?:-prefix|-force)?)(?:\/(.+))?$/.exec(ctx.path);
  if (lease) {
    const prefix = lease[1] !== 'revoke';
    const id = lease[2] ?? optString(prefix ? data['prefix'] : data['lease_id']);
    return id === undefined ? undefined : { credential: { id, kind: 'vault-lease' }, prefix };
  }
  const token = /^auth\/token\/(revoke(?:-self|-accessor|-orphan)?)$/.exec(ctx.path);
  if (token) {
    let id: string | undefined;
    if (token[1] === 'revoke-self') id = usedCredential(ctx.auth, ctx.req);
    else if (token[1] === 'revoke-accessor') id = optString(data['accessor']);
    else {
      // `revoke` / `revoke-orphan` name the token itself; only its HMAC may be kept.
      const t = optString(data['token']);
      id = t !== undefined && t.startsWith(HMAC_PREFIX) ? t : undefined;
    }
    return id === undefined ? undefined : { credential: { id, kind: 'vault-token' }, prefix: false };
  }
  return undefined;
}

/**
 * KV reads: every `read` on a kv/generic mount except KV v2 metadata and config, or — when the entry
 * lacks mount information (older Vault) — a read of a top-level KV v2 `data/` path or of `secret/`,
 * the default KV mount.
 */
function isKvRead(req: Record<string, unknown>, operation: string, path: string): boolean {
  if (operation !== 'read') return false;
  if (path.startsWith('cubbyhole/')) return true;
  const mountType = optString(req['mount_type']);
  if (mountType === 'kv' || mountType === 'generic') {
    const mountPoint = optString(req['mount_point']) ?? '';
    const rel = mountPoint !== '' && path.startsWith(mountPoint) ? path.slice(mountPoint.length) : path.replace(/^[^/]+\//, '');
    return !/^(?:metadata|config|subkeys)(?:\/|$)/.test(rel);
  }
  if (mountType !== undefined) return false;
  return /^[^/]+\/data\/./.test(path) || /^secret\/./.test(path);
}

/** Workload identity from token metadata: a SPIFFE ID, else the Kubernetes service account. */
function workloadId(metadata: Record<string, unknown> | undefined): string | undefined {
  if (!metadata) return undefined;
  for (const k of SPIFFE_METADATA_KEYS) {
    const v = optString(metadata[k]);
    if (v?.startsWith('spiffe://')) return v;
  }
  const sa = optString(metadata['service_account_name']);
  const ns = optString(metadata['service_account_namespace']);
  if (sa !== undefined && ns !== undefined) return `system:serviceaccount:${ns}:${sa}`;
  for (const v of Object.values(metadata)) {
    if (typeof v === 'string' && v.startsWith('spiffe://')) return v;
  }
  return undefined;
}

/** Non-empty `response.secret.lease_id`, if any (KV v1 returns a secret block without one). */
function leaseIdOf(resp: Record<string, unknown>): string | undefined {
  const secret = read.optObj(resp['secret'], 'response.secret');
  return secret ? read.optStr(secret['lease_id'], 'response.secret.lease_id') : undefined;
}

/** `User-Agent` when the device audits it and it is not HMAC'd (headers are lists in Vault's log). */
function userAgent(headers: unknown): string | undefined {
  const h = optObjLenient(headers);
  if (!h) return undefined;
  const v = h['user-agent'] ?? h['User-Agent'];
  const first = Array.isArray(v) ? v[0] : v;
  return typeof first === 'string' && first !== '' && !first.startsWith(HMAC_PREFIX) ? first : undefined;
}

/** String-valued entries of a metadata map (Vault metadata is string→string; anything else is skipped). */
function stringMap(v: unknown): Record<string, string> | undefined {
  const o = optObjLenient(v);
  if (!o) return undefined;
  const out: Record<string, string> = {};
  let n = 0;
  for (const [k, val] of Object.entries(o)) {
    if (typeof val === 'string') {
      out[k] = val;
      n++;
    }
  }
  return n > 0 ? out : undefined;
}

function numberOf(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function optString(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function optObjLenient(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

/**
 * Flattens the entry into dotted attribute keys (`request.mount_type`, `auth.metadata.role`),
 * dropping {@link DROPPED_FIELDS}: tokens may be raw secrets and `data` values are the secrets
 * themselves when the device logs raw.
 */
function flattenInto(prefix: string, obj: Record<string, unknown>, out: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null || DROPPED_FIELDS.has(k)) continue;
    const key = prefix === '' ? k : `${prefix}.${k}`;
    if (typeof v === 'object' && !Array.isArray(v)) flattenInto(key, v as Record<string, unknown>, out);
    else out[key] = v;
  }
}
