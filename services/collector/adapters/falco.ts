import { EVENT_TYPE, type CanonicalEventInput, type ResourceRef } from '../../../shared/event.ts';
import { RecordError } from '../../../shared/errors.ts';
import { eventId } from '../../../shared/ids.ts';
import { ResultBuilder, frameJsonRecords, read, typeName, type Adapter, type AdapterResult } from './adapter.ts';

/**
 * Falco alerts -> canonical events.
 *
 * Accepts Falco's JSON output (`json_output: true`: stdout/file output as NDJSON, `http_output`
 * one object per POST) and falcosidekick's webhook payload (the same object plus `uuid`), as a
 * single object, a JSON array or NDJSON. Each alert becomes one `process.activity` or
 * `network.activity` workload event; the alert itself (rule, priority, tags, text, fields) is kept
 * in attributes for detectors.
 */

/** Falco `fd.type` values of IP sockets. */
const NETWORK_FD_TYPES: ReadonlySet<string> = new Set(['ipv4', 'ipv6']);
/** Falco `fd.type` values of filesystem objects. */
const FILE_FD_TYPES: ReadonlySet<string> = new Set(['file', 'directory']);
/** Syscalls that initiate traffic: the process is the client. */
const OUTBOUND_EVT_TYPES: ReadonlySet<string> = new Set(['connect', 'sendto', 'sendmsg', 'sendmmsg']);
/** Syscalls that receive connections: the process is the server. */
const INBOUND_EVT_TYPES: ReadonlySet<string> = new Set(['accept', 'accept4', 'listen']);
/** Syscalls that only make sense on sockets, used when the alert carries no `fd.*` fields. */
const NETWORK_EVT_TYPES: ReadonlySet<string> = new Set([
  ...OUTBOUND_EVT_TYPES,
  ...INBOUND_EVT_TYPES,
  'recvfrom',
  'recvmsg',
  'recvmmsg',
  'bind',
]);

/**
 * Rule tags meaning the alert is about credentials or secrets. Falco's stock rules tag these
 * `mitre_credential_access` plus a technique id; `credentials` / `secrets` are the customary
 * custom-rule tags. Matched case-insensitively.
 */
export const FALCO_SECRET_TAGS: readonly string[] = ['credentials', 'secrets', 'mitre_credential_access'];
/** MITRE techniques about credential material: T1552 Unsecured Credentials, T1555 Password Stores. */
export const FALCO_SECRET_TECHNIQUES: readonly string[] = ['T1552', 'T1555'];

/** Values Falco writes for a field that has no value in this event. */
function present(v: unknown): boolean {
  return v !== undefined && v !== null && v !== '' && v !== '<NA>';
}

/** The Falco adapter. */
export const falcoAdapter: Adapter = {
  format: 'falco',
  contentTypes: ['application/json', 'application/x-ndjson'],
  parse(body: Buffer): AdapterResult {
    const out = new ResultBuilder();
    for (const rec of frameJsonRecords(body)) {
      if ('error' in rec) out.reject(rec.index, rec.field, rec.error);
      else out.record(rec.index, () => [convertAlert(rec.value)]);
    }
    return out.result();
  },
};

function convertAlert(value: unknown): CanonicalEventInput {
  const alert = read.obj(value, '');
  const rule = read.str(alert.rule, 'rule');
  const time = read.time(alert.time, 'time');
  const hostname = read.optStr(alert.hostname, 'hostname');
  const output = read.optStr(alert.output, 'output');
  const uuid = read.optStr(alert.uuid, 'uuid');
  const priority = read.optStr(alert.priority, 'priority');
  const falcoSource = read.optStr(alert.source, 'source');
  const tags = strList(alert.tags, 'tags');
  const fields = read.optObj(alert.output_fields, 'output_fields') ?? {};
  const f = new OutputFields(fields);

  const fdType = f.str('fd.type');
  const evtType = f.str('evt.type');
  const dstIp = f.str('fd.sip') ?? f.str('fd.rip');
  const dstPort = f.port('fd.sport') ?? f.port('fd.rport');
  const srcPort = f.port('fd.cport');
  // An explicit fd.type decides; without one, IP/port fields or a socket syscall mean network.
  const isNetwork =
    fdType !== undefined
      ? NETWORK_FD_TYPES.has(fdType)
      : dstIp !== undefined || dstPort !== undefined || srcPort !== undefined || (evtType !== undefined && NETWORK_EVT_TYPES.has(evtType));

  const containerId = f.str('container.id');
  // Falco reports processes outside any container as container.id "host".
  const inContainer = containerId !== undefined && containerId !== 'host';
  const ns = f.str('k8s.ns.name');
  const pod = f.str('k8s.pod.name');
  const workloadId = ns && pod ? `k8s:pod:${ns}/${pod}` : inContainer ? `container:${containerId}` : undefined;

  const secret = tags.some(isSecretTag);
  const resources: ResourceRef[] = [];
  if (!isNetwork) {
    const path = f.str('fd.name') ?? f.str('fs.path.name');
    const looksLikeFile = fdType !== undefined ? FILE_FD_TYPES.has(fdType) : path?.startsWith('/') === true;
    if (path !== undefined && looksLikeFile) resources.push({ type: 'file', id: path });
  }

  return {
    // Falco itself has no alert id; falcosidekick adds a uuid. Without one, the alert's own content
    // (nanosecond time, rule, host, rendered text) identifies it.
    event_id: uuid !== undefined ? eventId('falco', uuid) : eventId('falco', String(alert.time), rule, hostname, output),
    source: 'workload',
    type: isNetwork ? EVENT_TYPE.networkActivity : EVENT_TYPE.processActivity,
    time,
    format: 'falco',
    workload_id: workloadId,
    host: hostname,
    action: `falco:${rule}`,
    resources,
    outcome: 'success',
    // Priority is the alert's severity, not the sensitivity of the data touched, so it stays in
    // attributes; only credential/secret rules say something about the data.
    sensitivity: secret ? 'restricted' : 'unknown',
    data_classes: secret ? ['secret'] : [],
    process: processInfo(f, inContainer ? containerId : undefined),
    network: isNetwork
      ? {
          dst_ip: dstIp,
          dst_port: dstPort,
          src_port: srcPort,
          protocol: f.str('fd.l4proto'),
          direction: evtType !== undefined && OUTBOUND_EVT_TYPES.has(evtType) ? 'outbound' : evtType !== undefined && INBOUND_EVT_TYPES.has(evtType) ? 'inbound' : 'unknown',
        }
      : undefined,
    attributes: Object.fromEntries(
      Object.entries({ rule, priority, tags, output, output_fields: fields, source: falcoSource, uuid }).filter(([, v]) => v !== undefined),
    ),
  };
}

/** Process details, or undefined when the alert names no process (plugin sources such as k8s_audit). */
function processInfo(f: OutputFields, containerId: string | undefined): CanonicalEventInput['process'] {
  const info = {
    pid: f.int('proc.pid'),
    name: f.str('proc.name'),
    cmdline: f.str('proc.cmdline'),
    // proc.exe is argv[0]; proc.exepath is the resolved binary, preferred when the rule output has it.
    exe: f.str('proc.exepath') ?? f.str('proc.exe'),
    parent: f.str('proc.pname'),
    user: f.str('user.name'),
    container_id: containerId,
  };
  return Object.values(info).some((v) => v !== undefined) ? info : undefined;
}

function isSecretTag(tag: string): boolean {
  const t = tag.toLowerCase();
  if (FALCO_SECRET_TAGS.includes(t)) return true;
  // Technique tags may carry a sub-technique (`T1552.001`).
  return FALCO_SECRET_TECHNIQUES.some((id) => tag.toUpperCase() === id || tag.toUpperCase().startsWith(`${id}.`));
}

/** Typed reads of `output_fields` entries, with errors naming `output_fields.<falco field>`. */
class OutputFields {
  constructor(private readonly fields: Record<string, unknown>) {}

  /** A string field; numbers are accepted as text because Falco's type depends on the field. */
  str(key: string): string | undefined {
    const v = this.fields[key];
    if (!present(v)) return undefined;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    throw new RecordError(`output_fields.${key}`, `expected a string, got ${typeName(v)}`);
  }

  /** An integer field; decimal strings are accepted (some forwarders stringify every value). */
  int(key: string): number | undefined {
    const v = this.fields[key];
    if (!present(v)) return undefined;
    const n = typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isSafeInteger(n)) {
      throw new RecordError(`output_fields.${key}`, `expected an integer, got ${typeof v === 'string' ? JSON.stringify(v.slice(0, 40)) : typeName(v)}`);
    }
    return n;
  }

  port(key: string): number | undefined {
    const n = this.int(key);
    if (n !== undefined && (n < 0 || n > 65535)) throw new RecordError(`output_fields.${key}`, `expected a port 0-65535, got ${n}`);
    return n;
  }
}

function strList(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new RecordError(field, `expected an array of strings, got ${typeName(v)}`);
  return v.map((s, i) => read.str(s, `${field}.${i}`));
}
