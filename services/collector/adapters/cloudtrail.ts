import { EVENT_TYPE, type CanonicalEventInput, type CredentialInfo, type EventType, type ResourceRef } from '../../../shared/event.ts';
import { RecordError } from '../../../shared/errors.ts';
import { eventId } from '../../../shared/ids.ts';
import { ResultBuilder, frameJsonRecords, read, typeName, type Adapter, type AdapterResult } from './adapter.ts';

/**
 * AWS CloudTrail adapter.
 *
 * Accepts the three shapes CloudTrail records travel in: the S3 log-file form
 * `{"Records":[...]}`, a bare JSON array of records, and NDJSON (one record per line, as written by
 * most log shippers). Each record becomes one canonical event:
 *
 * - STS calls that mint temporary credentials (`AssumeRole*`, `GetFederationToken`,
 *   `GetSessionToken`, `AssumeRoot`) and succeed become `credential.issued`, carrying the issued
 *   access key id, the caller's key as parent (role chaining), the session name, session tags and
 *   expiry, so the correlator can bind the new key to a task.
 * - Everything else becomes `resource.access`, with `credential_id` set to the access key the
 *   caller used: that is the join key back to the issuing event.
 *
 * Secret material CloudTrail sometimes records (`responseElements.credentials.sessionToken`, and
 * any field named in {@link REDACTED_FIELD_NAMES}) is replaced by `'[redacted]'` before anything is
 * kept: Runtrail stores attributes verbatim and must never become a copy of live credentials.
 */

/** Value that replaces secret material in kept attributes. */
export const REDACTED = '[redacted]';

/**
 * Field names (compared case-insensitively, at any depth) whose values are secret material and are
 * never kept. CloudTrail omits most of these itself, but not all (STS `sessionToken`), and other
 * producers of CloudTrail-shaped records are not always as careful.
 */
export const REDACTED_FIELD_NAMES: ReadonlySet<string> = new Set(
  [
    'sessionToken',
    'secretAccessKey',
    'secretKey',
    'password',
    'newPassword',
    'oldPassword',
    'passwordData',
    'secretString',
    'secretBinary',
    'plaintext',
    'privateKey',
    'keyMaterial',
    'samlAssertion',
    'webIdentityToken',
    'authorizationToken',
    'accessToken',
    'refreshToken',
    'idToken',
    'clientSecret',
  ].map((k) => k.toLowerCase()),
);

/**
 * Well-known AWS APIs whose successful response hands secret material to the caller (a secret
 * value, a decrypted plaintext, a password, a new long-lived key, a registry/password token).
 * Events for these get data class `secret` and sensitivity `restricted`, whatever the outcome: a
 * denied attempt on a secret is as interesting to a detector as a granted one, and `outcome` says
 * which it was.
 *
 * `AssumeRole*` is deliberately absent: SDKs assume roles routinely, the event is already typed
 * `credential.issued`, and flagging every role hop as a secret read would drown the signal.
 * `GetSessionToken` / `GetFederationToken` stay: they mint credentials from a long-term key, a
 * classic persistence / exfiltration step.
 */
export const SECRET_BEARING_APIS: Readonly<Record<string, readonly string[]>> = {
  secretsmanager: ['GetSecretValue', 'BatchGetSecretValue', 'GetRandomPassword'],
  // Only with `withDecryption: true`; see isSecretRead.
  ssm: ['GetParameter', 'GetParameters', 'GetParametersByPath', 'GetParameterHistory'],
  kms: ['Decrypt', 'GenerateDataKey', 'GenerateDataKeyPair'],
  ec2: ['GetPasswordData'],
  iam: ['CreateAccessKey', 'CreateServiceSpecificCredential', 'ResetServiceSpecificCredential'],
  sts: ['GetSessionToken', 'GetFederationToken'],
  ecr: ['GetAuthorizationToken'],
  codeartifact: ['GetAuthorizationToken'],
  sso: ['GetRoleCredentials'],
  'cognito-identity': ['GetCredentialsForIdentity'],
};

/** SSM reads that return the plaintext only when asked to decrypt. */
const SSM_DECRYPTING_READS: ReadonlySet<string> = new Set(SECRET_BEARING_APIS['ssm']);

/** STS calls whose successful response contains new temporary credentials. */
export const STS_ISSUING_CALLS: ReadonlySet<string> = new Set([
  'AssumeRole',
  'AssumeRoleWithWebIdentity',
  'AssumeRoleWithSAML',
  'GetFederationToken',
  'GetSessionToken',
  'AssumeRoot',
]);

/**
 * A request parameter that names a resource. `services` / `events` narrow the rule where the
 * same key means something else elsewhere (`name` is an SSM parameter only for `*Parameter*`
 * calls). `type` uses the CloudFormation resource type names CloudTrail itself uses in `resources[]`.
 */
interface ParamResourceRule {
  readonly key: string;
  readonly type: string;
  readonly services?: readonly string[];
  readonly events?: RegExp;
}

/**
 * Identifier-bearing request parameters, generic across accounts and workloads. Keys ending in
 * `Arn`/`ARN`/`Arns` are handled separately (any service), as are S3 `bucketName`+`key` and EC2
 * `instancesSet`.
 */
const PARAM_RESOURCE_RULES: readonly ParamResourceRule[] = [
  { key: 'secretId', type: 'AWS::SecretsManager::Secret' },
  { key: 'name', type: 'AWS::SSM::Parameter', services: ['ssm'], events: /Parameter/ },
  { key: 'names', type: 'AWS::SSM::Parameter', services: ['ssm'], events: /Parameter/ },
  { key: 'instanceId', type: 'AWS::EC2::Instance' },
  { key: 'instanceIds', type: 'AWS::EC2::Instance' },
  { key: 'roleName', type: 'AWS::IAM::Role', services: ['iam'] },
  { key: 'userName', type: 'AWS::IAM::User', services: ['iam'] },
  { key: 'groupName', type: 'AWS::IAM::Group', services: ['iam'] },
  { key: 'functionName', type: 'AWS::Lambda::Function', services: ['lambda'] },
  { key: 'keyId', type: 'AWS::KMS::Key', services: ['kms'] },
  { key: 'snapshotId', type: 'AWS::EC2::Snapshot', services: ['ec2'] },
  { key: 'groupId', type: 'AWS::EC2::SecurityGroup', services: ['ec2'] },
  { key: 'trailName', type: 'AWS::CloudTrail::Trail', services: ['cloudtrail'] },
  { key: 'tableName', type: 'AWS::DynamoDB::Table', services: ['dynamodb'] },
  { key: 'logGroupName', type: 'AWS::Logs::LogGroup', services: ['logs'] },
  { key: 'queueUrl', type: 'AWS::SQS::Queue', services: ['sqs'] },
  { key: 'modelId', type: 'AWS::Bedrock::Model', services: ['bedrock'] },
];

/** Record fields mapped onto canonical fields (or flattened), so not copied again as attributes. */
const MAPPED_FIELDS: ReadonlySet<string> = new Set(['eventTime', 'requestID', 'userAgent', 'userIdentity', 'tlsDetails', 'resources']);

/** The CloudTrail adapter. */
export const cloudtrailAdapter: Adapter = {
  format: 'cloudtrail',
  contentTypes: ['application/json', 'application/x-ndjson', 'text/plain'],
  parse(body: Buffer): AdapterResult {
    const out = new ResultBuilder();
    for (const rec of frameJsonRecords(body, ['Records'])) {
      if ('error' in rec) out.reject(rec.index, rec.field, rec.error);
      else out.record(rec.index, () => [convertRecord(rec.value)]);
    }
    return out.result();
  },
};

/** Converts one CloudTrail record. Throws RecordError naming the field when it cannot. */
function convertRecord(value: unknown): CanonicalEventInput {
  const r = read.obj(value, '');
  const eventID = read.str(r['eventID'], 'eventID');
  const time = read.time(r['eventTime'], 'eventTime');
  const eventSource = read.str(r['eventSource'], 'eventSource');
  const eventName = read.str(r['eventName'], 'eventName');
  const service = eventSource.replace(/\.amazonaws\.com$/, '');
  const apiName = stripApiVersion(eventName);
  const ui = read.optObj(r['userIdentity'], 'userIdentity') ?? {};
  const req = optObjLenient(r['requestParameters']);
  const resp = optObjLenient(r['responseElements']);
  const errorCode = read.optStr(r['errorCode'], 'errorCode');
  const account = read.optStr(r['recipientAccountId'], 'recipientAccountId');
  const tls = read.optObj(r['tlsDetails'], 'tlsDetails');

  const identityType = read.optStr(ui['type'], 'userIdentity.type');
  const callerKey = read.optStr(ui['accessKeyId'], 'userIdentity.accessKeyId');
  const webSubject =
    identityType === 'WebIdentityUser'
      ? (read.optStr(ui['userName'], 'userIdentity.userName') ?? optString(resp?.['subjectFromWebIdentityToken']))
      : undefined;
  const principal =
    webSubject ??
    read.optStr(ui['arn'], 'userIdentity.arn') ??
    read.optStr(ui['principalId'], 'userIdentity.principalId') ??
    read.optStr(ui['userName'], 'userIdentity.userName') ??
    read.optStr(ui['invokedBy'], 'userIdentity.invokedBy') ??
    identityType;

  const failed = errorCode !== undefined || resp?.['ConsoleLogin'] === 'Failure';
  const sourceIp = read.optStr(r['sourceIPAddress'], 'sourceIPAddress');
  const secret = isSecretRead(service, apiName, req);

  const attributes: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) {
    if (MAPPED_FIELDS.has(k) || v === undefined || v === null) continue;
    // A service principal ("lambda.amazonaws.com", "AWS Internal") is not an address: keep it here only.
    if (k === 'sourceIPAddress' && sourceIp !== undefined && looksLikeIp(sourceIp)) continue;
    attributes[k] = redact(v);
  }
  flattenInto('userIdentity', ui, attributes);
  if (tls) flattenInto('tlsDetails', tls, attributes);

  let type: EventType = EVENT_TYPE.resourceAccess;
  let credential: CredentialInfo | undefined;
  if (service === 'sts' && STS_ISSUING_CALLS.has(eventName) && !failed) {
    credential = issuedCredential(eventName, time, ui, req, resp, callerKey);
    if (credential) type = EVENT_TYPE.credentialIssued;
  }

  let workloadId: string | undefined;
  if (webSubject !== undefined) {
    workloadId = workloadFromSubject(webSubject);
    // The JWT's issuer and audience identify the workload platform (EKS OIDC provider, SPIRE, ...).
    setIf(attributes, 'web_identity.subject', webSubject);
    setIf(attributes, 'web_identity.provider', optString(resp?.['provider']) ?? optString(ui['identityProvider']));
    setIf(attributes, 'web_identity.audience', optString(resp?.['audience']));
  }

  return {
    event_id: eventId('cloudtrail', eventID),
    source: 'resource',
    type,
    time,
    format: 'cloudtrail',
    workload_id: workloadId,
    credential_id: callerKey,
    request_id: read.optStr(r['requestID'], 'requestID'),
    principal,
    action: `${service}:${apiName}`,
    resources: collectResources(r['resources'], service, apiName, req, resp, account),
    outcome: failed ? 'failure' : 'success',
    sensitivity: secret ? 'restricted' : 'unknown',
    data_classes: secret ? ['secret'] : [],
    src_ip: sourceIp !== undefined && looksLikeIp(sourceIp) ? sourceIp : undefined,
    host: tls ? read.optStr(tls['clientProvidedHostHeader'], 'tlsDetails.clientProvidedHostHeader') : undefined,
    user_agent: read.optStr(r['userAgent'], 'userAgent'),
    credential,
    attributes,
  };
}

/**
 * The IAM action name for an event name. Some services log the API version in the event name
 * (Lambda `UpdateFunctionConfiguration20150331v2`, CloudFront `GetDistribution2020_05_31`); IAM
 * policies, detectors and analysts use the unversioned name. The raw name stays in `attributes.eventName`.
 */
export function stripApiVersion(eventName: string): string {
  const stripped = eventName.replace(/(?:\d{8}(?:v\d+)?|\d{4}_\d{2}_\d{2})$/, '');
  return stripped === '' ? eventName : stripped;
}

/**
 * Credential details of a successful STS issuance, or undefined when the response carries no
 * issued key (CloudTrail omits `responseElements` for some callers and for large responses).
 */
function issuedCredential(
  eventName: string,
  time: number,
  ui: Record<string, unknown>,
  req: Record<string, unknown> | undefined,
  resp: Record<string, unknown> | undefined,
  callerKey: string | undefined,
): CredentialInfo | undefined {
  if (!resp) return undefined;
  const creds = read.optObj(resp['credentials'], 'responseElements.credentials');
  if (!creds) return undefined;
  const id = read.optStr(creds['accessKeyId'], 'responseElements.credentials.accessKeyId');
  if (!id) return undefined;

  const assumed = read.optObj(resp['assumedRoleUser'], 'responseElements.assumedRoleUser');
  const federated = read.optObj(resp['federatedUser'], 'responseElements.federatedUser');
  const subject =
    (assumed && read.optStr(assumed['arn'], 'responseElements.assumedRoleUser.arn')) ??
    (federated && read.optStr(federated['arn'], 'responseElements.federatedUser.arn')) ??
    // GetSessionToken / AssumeRoot: the session acts as the caller itself.
    optString(ui['arn']);
  const sessionName = optString(req?.['roleSessionName']) ?? (eventName === 'GetFederationToken' ? optString(req?.['name']) : undefined);
  const tags = sessionTags(req?.['tags']);

  let expiresAt = parseAwsTime(creds['expiration']);
  if (expiresAt === undefined) {
    // No (or an unreadable) expiration: the requested duration still bounds the session.
    const d = req?.['durationSeconds'];
    if (typeof d === 'number' && Number.isFinite(d) && d > 0) expiresAt = time + d * 1000;
  }

  return {
    id,
    kind: 'aws-access-key',
    parent_id: callerKey,
    subject,
    session_name: sessionName,
    tags,
    expires_at: expiresAt,
  };
}

/**
 * Session tags as a flat map. CloudTrail writes `[{key, value}]`; the STS API (and some log
 * re-shippers) use `[{Key, Value}]`. Entries without a string key and value are ignored: a tag map
 * with a guessed value would mis-bind the credential.
 */
function sessionTags(v: unknown): Record<string, string> | undefined {
  if (!Array.isArray(v)) return undefined;
  const out: Record<string, string> = {};
  let n = 0;
  for (const t of v) {
    if (typeof t !== 'object' || t === null) continue;
    const o = t as Record<string, unknown>;
    const k = o['key'] ?? o['Key'];
    const val = o['value'] ?? o['Value'];
    if (typeof k === 'string' && k !== '' && typeof val === 'string') {
      out[k] = val;
      n++;
    }
  }
  return n > 0 ? out : undefined;
}

/** True when the call hands secret material to the caller (see {@link SECRET_BEARING_APIS}). */
function isSecretRead(service: string, eventName: string, req: Record<string, unknown> | undefined): boolean {
  const names = SECRET_BEARING_APIS[service];
  if (!names || !names.includes(eventName)) return false;
  if (service === 'ssm' && SSM_DECRYPTING_READS.has(eventName)) return req?.['withDecryption'] === true;
  return true;
}

/** A workload identity when the web-identity subject is one (SPIFFE ID or Kubernetes service account). */
function workloadFromSubject(subject: string): string | undefined {
  if (subject.startsWith('spiffe://')) return subject;
  if (/^system:serviceaccount:[^:]+:[^:]+$/.test(subject)) return subject;
  return undefined;
}

/**
 * Resources from the record's `resources[]` (authoritative, typed by CloudTrail) followed by those
 * derivable from request parameters. A parameter value already covered by an ARN (same id, or an
 * ARN ending in `/value` or `:value`) is not repeated.
 */
function collectResources(
  raw: unknown,
  service: string,
  eventName: string,
  req: Record<string, unknown> | undefined,
  resp: Record<string, unknown> | undefined,
  account: string | undefined,
): ResourceRef[] {
  const out: ResourceRef[] = [];
  const seen = new Set<string>();
  const add = (id: string, type: string | undefined, acct: string | undefined): void => {
    if (id === '' || seen.has(id)) return;
    for (const s of seen) {
      if (!id.startsWith('arn:') && (s.endsWith(`/${id.replace(/^\//, '')}`) || s.endsWith(`:${id}`))) return;
    }
    seen.add(id);
    out.push({ id, type, account: acct });
  };

  if (raw !== undefined && raw !== null) {
    if (!Array.isArray(raw)) throw new RecordError('resources', `expected an array, got ${typeName(raw)}`);
    raw.forEach((item, i) => {
      const o = read.obj(item, `resources.${i}`);
      // Data events on many objects carry only a prefix.
      const arn = read.optStr(o['ARN'], `resources.${i}.ARN`) ?? read.optStr(o['ARNPrefix'], `resources.${i}.ARNPrefix`);
      if (arn === undefined) return;
      add(arn, read.optStr(o['type'], `resources.${i}.type`), read.optStr(o['accountId'], `resources.${i}.accountId`) ?? arnAccount(arn) ?? account);
    });
  }
  if (service === 'iam' && eventName === 'CreateAccessKey') {
    // The new long-lived key: a later call signed with it leads back here.
    const created = optObjLenient(resp?.['accessKey']);
    const keyId = optString(created?.['accessKeyId']);
    if (keyId !== undefined) add(keyId, 'AWS::IAM::AccessKey', account);
  }
  if (!req) return out;

  for (const [key, v] of Object.entries(req)) {
    if (!/(?:Arn|ARN|Arns|ARNs)$/.test(key) && key !== 'arn') continue;
    for (const s of stringsOf(v)) if (s.startsWith('arn:')) add(s, undefined, arnAccount(s) ?? account);
  }

  const bucket = optString(req['bucketName']);
  if (bucket !== undefined) {
    const objectKey = optString(req['key']);
    if (objectKey !== undefined) add(`arn:aws:s3:::${bucket}/${objectKey}`, 'AWS::S3::Object', account);
    add(`arn:aws:s3:::${bucket}`, 'AWS::S3::Bucket', account);
  }

  for (const rule of PARAM_RESOURCE_RULES) {
    if (rule.services && !rule.services.includes(service)) continue;
    if (rule.events && !rule.events.test(eventName)) continue;
    for (const s of stringsOf(req[rule.key])) add(s, rule.type, arnAccount(s) ?? account);
  }

  // EC2's XML-derived shape: {"instancesSet": {"items": [{"instanceId": "i-..."}]}}.
  const set = req['instancesSet'];
  if (typeof set === 'object' && set !== null && !Array.isArray(set)) {
    const items = (set as Record<string, unknown>)['items'];
    if (Array.isArray(items)) {
      for (const it of items) {
        if (typeof it !== 'object' || it === null) continue;
        const id = (it as Record<string, unknown>)['instanceId'];
        if (typeof id === 'string') add(id, 'AWS::EC2::Instance', account);
      }
    }
  }
  return out;
}

/** Non-empty strings in a value that is a string or an array of strings. */
function stringsOf(v: unknown): string[] {
  if (typeof v === 'string') return v === '' ? [] : [v];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string' && x !== '');
  return [];
}

/** Account field of an ARN (`arn:partition:service:region:account:resource`), when present. */
function arnAccount(arn: string): string | undefined {
  if (!arn.startsWith('arn:')) return undefined;
  const acct = arn.split(':')[4];
  return acct === undefined || acct === '' ? undefined : acct;
}

/**
 * True for an IPv4 or IPv6 literal. Deliberately lenient about leading zeros in IPv4 octets
 * (`node:net.isIP` rejects them, but anonymised logs use them) so that only service names such as
 * `ec2.amazonaws.com` or `AWS Internal` are kept out of `src_ip`.
 */
function looksLikeIp(v: string): boolean {
  if (/^\d{1,3}(?:\.\d{1,3}){3}$/.test(v)) return true;
  return /^[0-9a-fA-F:.]+$/.test(v) && v.includes(':');
}

const MONTHS: Readonly<Record<string, number>> = {
  jan: 0, feb: 1, mar: 2, apr: 3, may: 4, jun: 5, jul: 6, aug: 7, sep: 8, oct: 9, nov: 10, dec: 11,
};

/** `Jul 30, 2024, 9:46:15 PM`, `Aug 1, 2024 1:33:28 PM`, 24-hour variants; always UTC in CloudTrail. */
const AWS_HUMAN_TIME = /^([A-Za-z]{3})[A-Za-z]*\.?\s+(\d{1,2}),?\s+(\d{4}),?\s+(\d{1,2}):(\d{2}):(\d{2})(?:\s*([AaPp])\.?[Mm]\.?)?$/;

/**
 * Parses the timestamps CloudTrail writes inside `responseElements` (credential expirations, create
 * dates): Java's human-readable `MMM d, yyyy[,] h:mm:ss a` in UTC, or ISO 8601. `Date.parse` cannot
 * be used for the former: it would read it in the host's local zone. Returns epoch ms or undefined.
 */
export function parseAwsTime(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  // Newer JDKs put a narrow no-break space before AM/PM.
  const s = v.replace(/[\u202f\u00a0]/g, ' ').trim();
  const m = AWS_HUMAN_TIME.exec(s);
  if (m) {
    const month = MONTHS[(m[1] as string).toLowerCase()];
    if (month === undefined) return undefined;
    let hour = Number(m[4]);
    const ampm = m[7]?.toLowerCase();
    if (ampm !== undefined) {
      if (hour < 1 || hour > 12) return undefined;
      hour = (hour % 12) + (ampm === 'p' ? 12 : 0);
    }
    const t = Date.UTC(Number(m[3]), month, Number(m[2]), hour, Number(m[5]), Number(m[6]));
    return Number.isNaN(t) ? undefined : t;
  }
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(s)) {
    // An ISO time without an offset is UTC in AWS logs, but local time to Date.parse.
    const t = Date.parse(/(?:Z|[+-]\d{2}:?\d{2})$/i.test(s) ? s : `${s}Z`);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/** Object fields that are not objects in some producers' output are kept as attributes but not read. */
function optObjLenient(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function optString(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function setIf(target: Record<string, unknown>, key: string, v: string | undefined): void {
  if (v !== undefined) target[key] = v;
}

/** Deep copy of a JSON value with every {@link REDACTED_FIELD_NAMES} value replaced. */
export function redact(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(redact);
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, inner] of Object.entries(v)) {
      out[k] = REDACTED_FIELD_NAMES.has(k.toLowerCase()) && inner !== null && inner !== undefined ? REDACTED : redact(inner);
    }
    return out;
  }
  return v;
}

/**
 * Flattens an object into dotted keys (`userIdentity.sessionContext.sessionIssuer.arn`), keeping
 * scalars and arrays as they are, redacting secret fields. Flat keys are what analysts filter on.
 */
function flattenInto(prefix: string, obj: Record<string, unknown>, out: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null) continue;
    const key = `${prefix}.${k}`;
    if (REDACTED_FIELD_NAMES.has(k.toLowerCase())) out[key] = REDACTED;
    else if (typeof v === 'object' && !Array.isArray(v)) flattenInto(key, v as Record<string, unknown>, out);
    else out[key] = redact(v);
  }
}
