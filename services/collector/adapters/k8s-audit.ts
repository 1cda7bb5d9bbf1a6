import { EVENT_TYPE, type CanonicalEventInput, type Outcome, type ResourceRef, type Sensitivity } from '../../../shared/event.ts';
import { RecordError } from '../../../shared/errors.ts';
import { eventId } from '../../../shared/ids.ts';
import { ResultBuilder, embeddedJsonObject, frameJsonRecords, read, typeName, type Adapter, type AdapterResult } from './adapter.ts';

/**
 * Kubernetes API server audit events (`audit.k8s.io/v1` `Event`) -> canonical events.
 *
 * Accepts what the two audit backends and the usual shippers produce: the log backend's NDJSON
 * (one Event per line, as Fluent Bit / Vector forward it), the webhook backend's `EventList`, a
 * JSON array of Events, or a single Event. Shippers that did not parse the line and forward it as a
 * string under `log` (Fluent Bit tail) or `message` (Vector file source) are unwrapped.
 *
 * Every request yields up to four audit events (one per stage); only the final stage
 * (`ResponseComplete`, or `Panic`) is converted, because it repeats everything the earlier stages
 * carried and adds the response status. The earlier stages are counted as skipped.
 */

/** `user.extra` keys the service-account authenticator sets (Kubernetes 1.29+ for credential-id). */
export const K8S_USER_EXTRA = {
  /** `JTI=<jwt id>` of the token that authenticated the request (`X509SHA256=<hex>` for client certs). */
  credentialId: 'authentication.kubernetes.io/credential-id',
  /** Pod a bound service-account token was issued for. */
  podName: 'authentication.kubernetes.io/pod-name',
  podUid: 'authentication.kubernetes.io/pod-uid',
  /** Node a bound service-account token was issued for (1.30+). */
  nodeName: 'authentication.kubernetes.io/node-name',
  nodeUid: 'authentication.kubernetes.io/node-uid',
} as const;

/**
 * Audit annotations carrying the JWT id of a token issued by a TokenRequest
 * (`create serviceaccounts/token`), value `JTI=<jwt id>`. 1.30 renamed the 1.29 key; both are read.
 */
export const K8S_ISSUED_CREDENTIAL_ANNOTATIONS = [
  'authentication.kubernetes.io/issued-credential-id',
  'authentication.k8s.io/issued-credential-id',
] as const;

/** Prefix the apiserver puts before a JWT id in credential ids (`JTI=<jti>`). */
const JTI_PREFIX = 'JTI=';

/** Prefix of service-account usernames: `system:serviceaccount:<namespace>:<name>`. */
const SERVICE_ACCOUNT_PREFIX = 'system:serviceaccount:';

/** Stages describing a finished request: the only ones converted. */
const FINAL_STAGES: ReadonlySet<string> = new Set(['ResponseComplete', 'Panic']);
/** Stages whose content the final stage repeats: skipped. */
const PARTIAL_STAGES: ReadonlySet<string> = new Set(['RequestReceived', 'ResponseStarted']);

/** What a sensitive core-group resource implies for data classes and sensitivity. */
interface SensitiveResource {
  readonly dataClasses: readonly string[];
  readonly sensitivity: Sensitivity;
}

/**
 * Sensitive core-group (`apiGroup` "") resources, keyed `resource` or `resource/subresource`.
 * Secrets and issued tokens are secret material; exec/attach are not data but give a shell in the
 * pod (and so every secret mounted there), hence restricted without a data class.
 */
export const K8S_SENSITIVE_RESOURCES: Readonly<Record<string, SensitiveResource>> = Object.freeze({
  secrets: { dataClasses: ['secret'], sensitivity: 'restricted' },
  'serviceaccounts/token': { dataClasses: ['secret'], sensitivity: 'restricted' },
  'pods/exec': { dataClasses: [], sensitivity: 'restricted' },
  'pods/attach': { dataClasses: [], sensitivity: 'restricted' },
});

/** The Kubernetes audit adapter. */
export const k8sAuditAdapter: Adapter = {
  format: 'k8s-audit',
  contentTypes: ['application/json', 'application/x-ndjson'],
  parse(body: Buffer): AdapterResult {
    const out = new ResultBuilder();
    // `items` unwraps the webhook backend's EventList.
    for (const rec of frameJsonRecords(body, ['items'])) {
      if ('error' in rec) out.reject(rec.index, rec.field, rec.error);
      else out.record(rec.index, () => convertAuditEvent(rec.value));
    }
    return out.result();
  },
};

/** Converts one audit Event; null for stages that are deliberately skipped. */
function convertAuditEvent(value: unknown): CanonicalEventInput[] | null {
  const ev = unwrapShipperEnvelope(read.obj(value, ''));

  if (ev.kind === 'EventList') {
    // Go serializes an empty EventList's items as null; that is an empty batch, not an error.
    if (ev.items === undefined || ev.items === null) return null;
    if (!Array.isArray(ev.items)) throw new RecordError('items', `expected an array, got ${typeName(ev.items)}`);
    throw new RecordError('kind', 'an EventList inside a JSON array or NDJSON line is not supported; send its items');
  }
  if (ev.kind !== undefined && ev.kind !== 'Event') {
    throw new RecordError('kind', `expected "Event", got ${JSON.stringify(ev.kind)?.slice(0, 60)}`);
  }

  const auditId = read.str(ev.auditID, 'auditID');
  const stage = read.str(ev.stage, 'stage');
  if (PARTIAL_STAGES.has(stage)) return null;
  if (!FINAL_STAGES.has(stage)) {
    throw new RecordError('stage', `unknown stage ${JSON.stringify(stage)}; expected RequestReceived, ResponseStarted, ResponseComplete or Panic`);
  }
  const verb = read.str(ev.verb, 'verb');

  // The request's start is the event time: for long-running requests (exec, attach, port-forward,
  // watch) ResponseComplete is written when the stream closes, possibly hours later, and the call
  // must sit inside the agent task that made it. The completion goes to end_time.
  const received = optTime(ev.requestReceivedTimestamp, 'requestReceivedTimestamp');
  const completed = optTime(ev.stageTimestamp, 'stageTimestamp');
  const time = received ?? completed;
  if (time === undefined) throw new RecordError('requestReceivedTimestamp', 'missing (and no stageTimestamp either)');
  const endTime = received !== undefined && completed !== undefined && completed >= received ? completed : undefined;

  const user = read.optObj(ev.user, 'user');
  const username = read.optStr(user?.username, 'user.username');
  const extra = read.optObj(user?.extra, 'user.extra');
  const credentialId = stripJti(extraValue(extra, K8S_USER_EXTRA.credentialId));
  const sourceIps = strList(ev.sourceIPs, 'sourceIPs');

  const objectRef = readObjectRef(ev.objectRef);
  const requestUri = read.optStr(ev.requestURI, 'requestURI');
  const responseStatus = read.optObj(ev.responseStatus, 'responseStatus');
  const code = optInt(responseStatus?.code, 'responseStatus.code');
  const annotations = read.optObj(ev.annotations, 'annotations');

  const outcome: Outcome = code !== undefined ? (code < 400 ? 'success' : 'failure') : stage === 'Panic' ? 'failure' : 'unknown';
  const sensitive = objectRef ? sensitiveResource(objectRef) : undefined;

  const base: CanonicalEventInput = {
    event_id: eventId('k8s-audit', auditId, stage),
    source: 'resource',
    type: EVENT_TYPE.resourceAccess,
    time,
    end_time: endTime,
    format: 'k8s-audit',
    principal: username,
    workload_id: username !== undefined && isServiceAccount(username) ? username : undefined,
    credential_id: credentialId,
    request_id: auditId,
    src_ip: sourceIps[0],
    user_agent: read.optStr(ev.userAgent, 'userAgent'),
    action: `k8s:${verb}`,
    resources: resourceRefs(objectRef, requestUri),
    outcome,
    sensitivity: sensitive?.sensitivity ?? 'unknown',
    data_classes: [...(sensitive?.dataClasses ?? [])],
    attributes: compact({
      verb,
      requestURI: requestUri,
      stage,
      level: ev.level,
      apiVersion: ev.apiVersion,
      annotations,
      objectRef: objectRef?.raw,
      responseStatus,
      user,
      impersonatedUser: ev.impersonatedUser,
      sourceIPs: ev.sourceIPs,
      requestReceivedTimestamp: ev.requestReceivedTimestamp,
      stageTimestamp: ev.stageTimestamp,
      pod_name: extraValue(extra, K8S_USER_EXTRA.podName),
      pod_uid: extraValue(extra, K8S_USER_EXTRA.podUid),
      node_name: extraValue(extra, K8S_USER_EXTRA.nodeName),
      // Bodies can hold secret data (a Secret's data, a TokenRequest's token, even a
      // last-applied-configuration annotation), so only identifying metadata is kept.
      requestObject: objectSummary(ev.requestObject),
      responseObject: objectSummary(ev.responseObject),
    }),
  };

  // A successful TokenRequest is the issuance of the token it returns: the same record, typed
  // credential.issued (as CloudTrail's AssumeRole is), so binding sees it and access counts do not
  // see it twice.
  const issued = outcome === 'success' && verb === 'create' ? issuedToken(objectRef, annotations, ev, credentialId) : undefined;
  return [issued ? { ...base, type: EVENT_TYPE.credentialIssued, credential: issued } : base];
}

/** The parts of `objectRef` the mapping uses, plus the original for attributes. */
interface ObjectRef {
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  apiGroup?: string;
  raw: Record<string, unknown>;
}

function readObjectRef(v: unknown): ObjectRef | undefined {
  const o = read.optObj(v, 'objectRef');
  if (!o) return undefined;
  return {
    resource: read.optStr(o.resource, 'objectRef.resource'),
    subresource: read.optStr(o.subresource, 'objectRef.subresource'),
    namespace: read.optStr(o.namespace, 'objectRef.namespace'),
    name: read.optStr(o.name, 'objectRef.name'),
    apiGroup: read.optStr(o.apiGroup, 'objectRef.apiGroup'),
    raw: o,
  };
}

/**
 * `k8s/<resource>[/<subresource>]` typed, `<namespace>/<resource>/<name>` identified (missing parts
 * left out: a cluster-wide list of secrets is `secrets`). Non-resource URLs (`/healthz`,
 * `/version`) become their path, so the request is still attributable to something.
 */
function resourceRefs(ref: ObjectRef | undefined, requestUri: string | undefined): ResourceRef[] {
  if (ref?.resource) {
    const type = `k8s/${ref.resource}${ref.subresource ? `/${ref.subresource}` : ''}`;
    const id = [ref.namespace, ref.resource, ref.name].filter((p) => p !== undefined).join('/');
    return [{ type, id, account: ref.namespace }];
  }
  if (!ref && requestUri) {
    const path = requestUri.split('?')[0] ?? requestUri;
    if (path !== '') return [{ type: 'k8s/non-resource-url', id: path }];
  }
  return [];
}

function sensitiveResource(ref: ObjectRef): SensitiveResource | undefined {
  // Only the core group: a CRD that happens to be called `secrets` is not a Secret.
  if (!ref.resource || (ref.apiGroup !== undefined && ref.apiGroup !== '')) return undefined;
  const withSub = ref.subresource ? K8S_SENSITIVE_RESOURCES[`${ref.resource}/${ref.subresource}`] : undefined;
  return withSub ?? K8S_SENSITIVE_RESOURCES[ref.resource];
}

/**
 * The credential a successful TokenRequest issued, when the apiserver recorded its JWT id (1.29+).
 * Without a JTI there is nothing to join later uses on, so no issuance event is made (the token
 * itself is never read, even when a RequestResponse-level policy put it in the response body).
 */
function issuedToken(
  ref: ObjectRef | undefined,
  annotations: Record<string, unknown> | undefined,
  ev: Record<string, unknown>,
  callerCredentialId: string | undefined,
): CanonicalEventInput['credential'] {
  if (ref?.resource !== 'serviceaccounts' || ref.subresource !== 'token' || (ref.apiGroup ?? '') !== '') return undefined;
  let jti: string | undefined;
  for (const key of K8S_ISSUED_CREDENTIAL_ANNOTATIONS) {
    jti = stripJti(read.optStr(annotations?.[key], `annotations.${key}`));
    if (jti !== undefined) break;
  }
  if (jti === undefined) return undefined;

  const response = read.optObj(ev.responseObject, 'responseObject');
  const status = read.optObj(response?.status, 'responseObject.status');
  const request = read.optObj(ev.requestObject, 'requestObject');
  const spec = read.optObj(request?.spec, 'requestObject.spec');
  const bound = read.optObj(spec?.boundObjectRef, 'requestObject.spec.boundObjectRef');
  const audiences = strList(spec?.audiences, 'requestObject.spec.audiences');

  const tags = compactStrings({
    audiences: audiences.length > 0 ? audiences.join(',') : undefined,
    bound_object_kind: read.optStr(bound?.kind, 'requestObject.spec.boundObjectRef.kind'),
    bound_object_name: read.optStr(bound?.name, 'requestObject.spec.boundObjectRef.name'),
    bound_object_uid: read.optStr(bound?.uid, 'requestObject.spec.boundObjectRef.uid'),
  });
  return {
    id: jti,
    kind: 'k8s-token',
    // The token is issued to the service account named by the request path, not to the caller
    // (usually the kubelet, requesting projected tokens for its pods).
    subject: ref.namespace && ref.name ? `${SERVICE_ACCOUNT_PREFIX}${ref.namespace}:${ref.name}` : undefined,
    parent_id: callerCredentialId,
    expires_at: optTime(status?.expirationTimestamp, 'responseObject.status.expirationTimestamp'),
    tags: Object.keys(tags).length > 0 ? tags : undefined,
  };
}

/** `kind`, `apiVersion` and identifying metadata of a request/response body; nothing else. */
function objectSummary(v: unknown): Record<string, unknown> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const meta = typeof o.metadata === 'object' && o.metadata !== null ? (o.metadata as Record<string, unknown>) : {};
  const metadata = compactStrings({
    name: meta.name,
    generateName: meta.generateName,
    namespace: meta.namespace,
    uid: meta.uid,
  });
  const summary = compactStrings({ kind: o.kind, apiVersion: o.apiVersion });
  return Object.keys(metadata).length > 0 ? { ...summary, metadata } : Object.keys(summary).length > 0 ? summary : undefined;
}

/**
 * A Fluent Bit / Vector record that carries the raw audit line as a string instead of parsed
 * fields. Records that already look like an audit event are returned as they are.
 */
function unwrapShipperEnvelope(rec: Record<string, unknown>): Record<string, unknown> {
  if (rec.auditID !== undefined || rec.kind !== undefined) return rec;
  for (const key of ['log', 'message']) {
    const line = rec[key];
    if (typeof line !== 'string' || !line.trimStart().startsWith('{')) continue;
    return embeddedJsonObject(line, key, 'not a valid JSON audit event');
  }
  return rec;
}

function isServiceAccount(username: string): boolean {
  // Exactly `system:serviceaccount:<ns>:<name>`: anything else under the prefix is not an account.
  return username.startsWith(SERVICE_ACCOUNT_PREFIX) && username.split(':').length === 4;
}

/** The JWT id of a `JTI=<id>` credential id; other schemes (`X509SHA256=`) are kept whole. */
function stripJti(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const id = v.startsWith(JTI_PREFIX) ? v.slice(JTI_PREFIX.length) : v;
  return id === '' ? undefined : id;
}

/** First value of a `user.extra` entry (the apiserver writes string arrays; a bare string is tolerated). */
function extraValue(extra: Record<string, unknown> | undefined, key: string): string | undefined {
  const v = extra?.[key];
  if (Array.isArray(v)) return read.optStr(v[0], `user.extra.${key}.0`);
  return read.optStr(v, `user.extra.${key}`);
}

function optTime(v: unknown, field: string): number | undefined {
  // MicroTime serializes its zero value as null.
  return v === undefined || v === null ? undefined : read.time(v, field);
}

function optInt(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new RecordError(field, `expected an integer, got ${typeName(v)}`);
  return v;
}

function strList(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new RecordError(field, `expected an array of strings, got ${typeName(v)}`);
  return v.map((s, i) => read.str(s, `${field}.${i}`));
}

/** Drops undefined values so attributes hold only what the record had. */
function compact(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/** Keeps non-empty string values only. */
function compactStrings(o: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(o)) if (typeof v === 'string' && v !== '') out[k] = v;
  return out;
}
