import { isIP } from 'node:net';
import { EVENT_TYPE, type CanonicalEventInput, type ResourceRef } from '../../../shared/event.ts';
import { RecordError } from '../../../shared/errors.ts';
import { eventId } from '../../../shared/ids.ts';
import { ResultBuilder, decodeUtf8, embeddedJsonObject, frameJsonRecords, read, typeName, type Adapter, type AdapterResult } from './adapter.ts';

/**
 * SPIRE Server logs -> canonical events.
 *
 * SPIRE Server logs through logrus: one JSON object per line with `log_format = "json"`, else
 * `time="..." level=debug msg="..." key=value ...` lines. Accepted as a shipper sends them: the JSON
 * records as NDJSON or a JSON array; a text line, or a JSON line, wrapped under `log` (Fluent Bit's
 * tail and Kubernetes inputs) or `message` (Vector's file source); or, with `Content-Type:
 * text/plain`, the raw lines (a text/plain body that opens with `{` or `[` is framed as JSON).
 *
 * Mapping (field names as SPIRE logs them):
 * - `Signed X509 SVID` (debug level; the server's API handlers and its own SVID rotator) becomes
 *   `credential.issued` with kind `x509-svid`: the credential id is the certificate serial number
 *   (`serial_num`, logged since SPIRE 1.6; before, `x509-svid:<spiffe_id>@<expiration>`), the
 *   subject and `workload_id` the SVID's `spiffe_id`, expiry from `expiration`; the caller (the
 *   SPIRE agent that asked for it) is the principal. `caller_addr` stays in attributes only: it is
 *   the node agent's address, not the workload's, and as the issuance's source address it would
 *   make every use of the SVID from a pod look like use from another network;
 * - `Server CA successfully signed JWT SVID` (and the older `Signed JWT SVID`) becomes
 *   `credential.issued` with kind `jwt-svid`; SPIRE does not log the token id, so the id is a hash
 *   of the SPIFFE ID, audience, expiry and request id;
 * - audit entries (`type: audit`, with `audit_log_enabled = true`; one per operation of a batch
 *   call) become `resource.access`: the API method (`spire:<method>`) called on the server by the
 *   caller (and its `caller_addr` as the source address), on the SPIFFE ID or registration entry it
 *   names, `status` as the outcome;
 * - every other line (startup, attestation details, errors without an audit entry) is counted as
 *   skipped.
 */

/** Wrapper fields under which shippers put the original line. */
const LINE_FIELDS = ['log', 'message'] as const;
/** Wrapper fields a shipper stamps with its own read time, used when the line has none. */
const SHIPPER_TIME_FIELDS = ['time', 'timestamp', '@timestamp'] as const;

/** The SPIRE adapter. */
export const spireAdapter: Adapter = {
  format: 'spire',
  contentTypes: ['application/json', 'application/x-ndjson', 'text/plain'],
  // SPIRE's default log format is text lines; a text/plain body that opens as JSON is framed as JSON.
  undeclaredContentType: 'text/plain',
  parse(body: Buffer, contentType: string): AdapterResult {
    const out = new ResultBuilder();
    const text = contentType.toLowerCase().startsWith('text/plain') ? decodeUtf8(body) : undefined;
    if (text !== undefined && !/^\s*[[{]/.test(text)) {
      // Raw logrus text lines (a body that opens as JSON is framed as JSON below, as for the other
      // formats): each line is a record on its own.
      const lines = text.split(/\r?\n/);
      let index = 0;
      for (const line of lines) {
        if (line.trim() === '') continue;
        const i = index++;
        out.record(i, () => convert(parseLine(line, '')));
      }
      return out.result();
    }
    for (const rec of frameJsonRecords(body)) {
      if ('error' in rec) out.reject(rec.index, rec.field, rec.error);
      else out.record(rec.index, () => convert(unwrap(rec.value)));
    }
    return out.result();
  },
};

/** A SPIRE log record: its fields as logged, and the field path it was read from (for errors). */
interface SpireRecord {
  fields: Record<string, unknown>;
  /** `''` for a top-level record, `log.` / `message.` when it came from a shipper's wrapper. */
  prefix: string;
  /** The shipper's time for the record, when the line has none. */
  fallbackTime: unknown;
}

/** The SPIRE record in a JSON value: the value itself, or the line a shipper wrapped. */
function unwrap(value: unknown): SpireRecord {
  const o = read.obj(value, '');
  if (o.msg !== undefined) return { fields: o, prefix: '', fallbackTime: undefined };
  for (const f of LINE_FIELDS) {
    const line = o[f];
    if (typeof line === 'string') {
      const inner = parseLine(line, `${f}.`);
      inner.fallbackTime = SHIPPER_TIME_FIELDS.map((k) => o[k]).find((t) => t !== undefined);
      return inner;
    }
  }
  throw new RecordError('msg', 'missing: not a SPIRE log record (no `msg`, and no `log` or `message` line)');
}

/** One line: a logrus JSON object or a logrus text line (`key=value`, values quoted as Go does). */
function parseLine(line: string, prefix: string): SpireRecord {
  const t = line.trim();
  if (t.startsWith('{')) return { fields: embeddedJsonObject(t, prefix.slice(0, -1)), prefix, fallbackTime: undefined };
  return { fields: logfmt(t, prefix), prefix, fallbackTime: undefined };
}

/** `key=value` pairs of a logrus text line; a quoted value is unquoted (Go `%q` quoting). */
export function logfmt(line: string, prefix = ''): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) {
    const key = m[1] as string;
    const raw = m[2] as string;
    out[key] = raw.startsWith('"') ? unquote(raw, `${prefix}${key}`) : raw;
  }
  if (out.msg === undefined) throw new RecordError(`${prefix}msg`, 'missing: not a SPIRE log line (expected time="..." level=... msg="...")');
  return out;
}

function unquote(quoted: string, field: string): string {
  try {
    // Go's %q escapes are JSON's, except \x.. and \u{..}-less forms that logrus does not emit for text.
    return JSON.parse(quoted.replace(/\\x([0-9a-fA-F]{2})/g, '\\u00$1')) as string;
  } catch {
    throw new RecordError(field, `badly quoted value ${quoted.slice(0, 60)}`);
  }
}

/** Kind of record, by its message. */
function classify(msg: string, fields: Record<string, unknown>): 'x509' | 'jwt' | 'audit' | undefined {
  if (fields.type === 'audit') return 'audit';
  const m = msg.toLowerCase();
  if (m === 'signed x509 svid') return 'x509';
  if (m === 'server ca successfully signed jwt svid' || m === 'signed jwt svid') return 'jwt';
  return undefined;
}

function convert(rec: SpireRecord): CanonicalEventInput[] | null {
  const { fields, prefix } = rec;
  const msg = read.str(fields.msg, `${prefix}msg`);
  const kind = classify(msg, fields);
  if (!kind) return null;
  const f = new Fields(fields, prefix);
  const timeRaw = fields.time ?? rec.fallbackTime;
  const time = read.time(timeRaw, fields.time !== undefined ? `${prefix}time` : 'time');
  const spiffeId = f.str('spiffe_id');
  const callerId = f.str('caller_id');
  const requestId = f.str('request_id');
  const method = f.str('method');
  const status = f.str('status');
  const serial = f.str('serial_num');
  const entryId = f.str('entry_id');
  const common = {
    source: 'workload' as const,
    time,
    format: 'spire' as const,
    principal: callerId ?? udsCaller(f),
    request_id: requestId,
    attributes: attributesOf(fields),
  };
  const idParts = [requestId, msg, String(timeRaw), spiffeId, serial, entryId, method, status];

  if (kind === 'audit') {
    if (!method) throw new RecordError(`${prefix}method`, 'missing: an audit entry names the API method called');
    const resources: ResourceRef[] = [];
    if (spiffeId) resources.push({ type: 'spiffe-id', id: spiffeId });
    const entry = entryId ?? f.str('id');
    if (entry) resources.push({ type: 'spire-entry', id: entry });
    return [
      {
        ...common,
        event_id: eventId('spire', ...idParts),
        type: EVENT_TYPE.resourceAccess,
        src_ip: ipOf(f.str('caller_addr')),
        // The identity acting: an X509-SVID caller's SPIFFE ID (local admin calls have none).
        workload_id: callerId?.startsWith('spiffe://') ? callerId : undefined,
        action: `spire:${method}`,
        resources,
        outcome: status === 'success' ? 'success' : status === 'error' ? 'failure' : 'unknown',
      },
    ];
  }

  if (!spiffeId) throw new RecordError(`${prefix}spiffe_id`, 'missing: an SVID issuance names the SPIFFE ID it was issued to');
  const expiration = f.str('expiration');
  const expiresAt = expiration === undefined ? undefined : read.time(expiration, `${prefix}expiration`);
  const credentialId =
    kind === 'x509'
      ? (serial ?? `x509-svid:${spiffeId}@${expiration ?? String(timeRaw)}`)
      : `jwt-svid:${eventId('spire-jwt', spiffeId, f.str('audience'), expiration, requestId, String(timeRaw))}`;
  return [
    {
      ...common,
      event_id: eventId('spire', ...idParts),
      type: EVENT_TYPE.credentialIssued,
      workload_id: spiffeId,
      action: `spire:${method ?? (kind === 'x509' ? 'SignX509SVID' : 'SignJWTSVID')}`,
      resources: [{ type: 'spiffe-id', id: spiffeId }],
      outcome: 'success',
      credential: {
        id: credentialId,
        kind: kind === 'x509' ? 'x509-svid' : 'jwt-svid',
        subject: spiffeId,
        expires_at: expiresAt,
        tags: tagsOf(f),
      },
    },
  ];
}

/** A local (Unix socket) admin caller: `uds:<uid>:<binary path>` when SPIRE could tell. */
function udsCaller(f: Fields): string | undefined {
  const uid = f.str('caller_uid');
  const path = f.str('caller_path');
  return uid === undefined && path === undefined ? undefined : `uds:${uid ?? '?'}:${path ?? '?'}`;
}

/** The address part of `caller_addr` (`10.0.0.7:51234`, `[::1]:51234`), when it is an IP. */
function ipOf(addr: string | undefined): string | undefined {
  if (!addr) return undefined;
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(addr);
  const host = bracketed ? (bracketed[1] as string) : addr.includes(':') && isIP(addr) === 0 ? addr.slice(0, addr.lastIndexOf(':')) : addr;
  return isIP(host) !== 0 ? host : undefined;
}

/** What the registration entry said of the SVID, as credential tags. */
function tagsOf(f: Fields): Record<string, string> | undefined {
  const tags: Record<string, string> = {};
  for (const k of ['entry_id', 'revision_number', 'audience', 'authorized_as', 'authorized_via', 'subsystem_name']) {
    const v = f.str(k);
    if (v !== undefined) tags[k] = v;
  }
  return Object.keys(tags).length > 0 ? tags : undefined;
}

/** The record's scalar fields, kept as attributes (nested values as SPIRE logged them). */
function attributesOf(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null && v !== '') out[k] = v;
  return out;
}

/** Typed reads of a record's fields, with errors naming the field as it appeared in the input. */
class Fields {
  constructor(
    private readonly fields: Record<string, unknown>,
    private readonly prefix: string,
  ) {}

  /** A string field; numbers and booleans as text (JSON logs type them, text logs cannot); arrays joined by commas. */
  str(key: string): string | undefined {
    const v = this.fields[key];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v.join(',');
    throw new RecordError(`${this.prefix}${key}`, `expected a string, got ${typeName(v)}`);
  }
}
