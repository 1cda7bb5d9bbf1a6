import { describe, it, expect } from 'vitest';
import { falcoAdapter } from '../../services/collector/adapters/falco.ts';
import { BodyError } from '../../shared/errors.ts';
import { eventId } from '../../shared/ids.ts';

// ---------------------------------------------------------------------------------------------
// Samples in the shape of Falco's `json_output: true` alerts (stock rules' output fields) and of
// falcosidekick's webhook payload (the same object plus `uuid`).
// ---------------------------------------------------------------------------------------------

const POD = 'research-agent-6d8f7b9c5-x2kqz';

/** Stock rule "Terminal shell in container", as Falco's stdout/file JSON output writes it. */
const SHELL_IN_CONTAINER = {
  hostname: 'ip-10-0-12-34',
  output:
    '09:21:07.412345678: Notice A shell was spawned in a container with an attached terminal | evt_type=execve user=root user_uid=0 user_loginuid=-1 process=bash proc_exepath=/usr/bin/bash parent=runc command=bash terminal=34816 exe_flags=EXE_WRITABLE container_id=3ad7b26ded6d container_name=agent',
  output_fields: {
    'container.id': '3ad7b26ded6d',
    'container.image.repository': 'ghcr.io/acme/research-agent',
    'container.image.tag': '1.4.2',
    'container.name': 'agent',
    'evt.arg.flags': 'EXE_WRITABLE',
    'evt.time': 1715678467412345678,
    'evt.type': 'execve',
    'k8s.ns.name': 'agents',
    'k8s.pod.name': POD,
    'proc.cmdline': 'bash',
    'proc.exepath': '/usr/bin/bash',
    'proc.name': 'bash',
    'proc.pid': 48211,
    'proc.pname': 'runc',
    'proc.tty': 34816,
    'user.loginuid': -1,
    'user.name': 'root',
    'user.uid': 0,
  },
  priority: 'Notice',
  rule: 'Terminal shell in container',
  source: 'syscall',
  tags: ['T1059', 'container', 'maturity_stable', 'mitre_execution', 'shell'],
  time: '2024-05-14T09:21:07.412345678Z',
};

/** Stock rule "Read sensitive file untrusted": /etc/shadow read by `cat` in the agent's container. */
const READ_SHADOW = {
  hostname: 'ip-10-0-12-34',
  output:
    '09:21:09.000000123: Warning Sensitive file opened for reading by non-trusted program | file=/etc/shadow gparent=containerd-shim ggparent=<NA> gggparent=<NA> evt_type=openat user=root user_uid=0 user_loginuid=-1 process=cat proc_exepath=/usr/bin/cat parent=bash command=cat /etc/shadow terminal=34816 container_id=3ad7b26ded6d container_name=agent',
  output_fields: {
    'container.id': '3ad7b26ded6d',
    'container.name': 'agent',
    'evt.type': 'openat',
    'fd.name': '/etc/shadow',
    'fd.type': 'file',
    'k8s.ns.name': 'agents',
    'k8s.pod.name': POD,
    'proc.aname[2]': 'containerd-shim',
    'proc.aname[3]': null,
    'proc.aname[4]': null,
    'proc.cmdline': 'cat /etc/shadow',
    'proc.exepath': '/usr/bin/cat',
    'proc.name': 'cat',
    'proc.pid': 48377,
    'proc.pname': 'bash',
    'proc.tty': 34816,
    'user.loginuid': -1,
    'user.name': 'root',
    'user.uid': 0,
  },
  priority: 'Warning',
  rule: 'Read sensitive file untrusted',
  source: 'syscall',
  tags: ['T1555', 'container', 'filesystem', 'host', 'maturity_stable', 'mitre_credential_access'],
  time: '2024-05-14T09:21:09.000000123Z',
};

const SIDEKICK_UUID = '9d3a6a5e-3f0e-4a3b-8d6f-7e2c1b0a9f8e';

/** A custom outbound-connection rule as falcosidekick POSTs it to a webhook. */
const SIDEKICK_OUTBOUND = {
  uuid: SIDEKICK_UUID,
  output:
    '09:22:30.250000000: Notice Unexpected outbound connection (command=python3 agent.py connection=10.0.12.77:49152->203.0.113.50:443 container=agent pod=research-agent-6d8f7b9c5-x2kqz ns=agents)',
  priority: 'Notice',
  rule: 'Unexpected outbound connection',
  time: '2024-05-14T09:22:30.250000000Z',
  output_fields: {
    'container.id': '3ad7b26ded6d',
    'evt.type': 'connect',
    'fd.cport': 49152,
    'fd.l4proto': 'tcp',
    'fd.name': '10.0.12.77:49152->203.0.113.50:443',
    'fd.sip': '203.0.113.50',
    'fd.sport': 443,
    'fd.type': 'ipv4',
    'k8s.ns.name': 'agents',
    'k8s.pod.name': POD,
    'proc.cmdline': 'python3 agent.py',
    'proc.name': 'python3',
    'proc.pid': 41002,
    'user.name': 'agent',
  },
  source: 'syscall',
  tags: ['container', 'network', 'mitre_exfiltration'],
  hostname: 'ip-10-0-12-34',
};

/** A process on the node itself (container.id "host"), no Kubernetes metadata. */
const HOST_PROCESS = {
  hostname: 'ip-10-0-12-34',
  output: '09:23:00.000000001: Warning Detected ptrace PTRACE_ATTACH attempt | proc_pcmdline=sshd evt_type=ptrace user=root process=gdb',
  output_fields: { 'container.id': 'host', 'evt.type': 'ptrace', 'proc.name': 'gdb', 'proc.cmdline': 'gdb -p 1', 'proc.pid': 5120, 'user.name': 'root' },
  priority: 'Warning',
  rule: 'PTRACE attached to process',
  source: 'syscall',
  tags: ['T1055.008', 'container', 'host', 'maturity_stable', 'mitre_privilege_escalation', 'process'],
  time: '2024-05-14T09:23:00.000000001Z',
};

function ndjson(...records: unknown[]): Buffer {
  return Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

function parse(b: Buffer | string) {
  return falcoAdapter.parse(typeof b === 'string' ? Buffer.from(b) : b, 'application/json');
}

// ---------------------------------------------------------------------------------------------

describe('falcoAdapter: mapping', () => {
  it('declares its format and content types', () => {
    expect(falcoAdapter.format).toBe('falco');
    expect(falcoAdapter.contentTypes).toContain('application/json');
  });

  it('maps a shell spawned in a pod to process.activity of that pod', () => {
    const res = parse(JSON.stringify(SHELL_IN_CONTAINER));
    expect(res).toMatchObject({ records: 1, skipped: 0, rejected: [] });
    const [e] = res.events;
    expect(e).toMatchObject({
      event_id: eventId('falco', SHELL_IN_CONTAINER.time, SHELL_IN_CONTAINER.rule, SHELL_IN_CONTAINER.hostname, SHELL_IN_CONTAINER.output),
      source: 'workload',
      type: 'process.activity',
      format: 'falco',
      host: 'ip-10-0-12-34',
      workload_id: `k8s:pod:agents/${POD}`,
      action: 'falco:Terminal shell in container',
      resources: [],
      outcome: 'success',
      sensitivity: 'unknown',
      data_classes: [],
      process: { pid: 48211, name: 'bash', cmdline: 'bash', exe: '/usr/bin/bash', parent: 'runc', user: 'root', container_id: '3ad7b26ded6d' },
      attributes: {
        rule: 'Terminal shell in container',
        priority: 'Notice',
        tags: SHELL_IN_CONTAINER.tags,
        output: SHELL_IN_CONTAINER.output,
        output_fields: SHELL_IN_CONTAINER.output_fields,
        source: 'syscall',
      },
    });
    expect(e?.network).toBeUndefined();
    // Nanoseconds survive as the fractional millisecond.
    expect(e?.time).toBeCloseTo(Date.parse('2024-05-14T09:21:07.412Z') + 0.345678, 6);
  });

  it('maps a credential-access file read to a restricted secret access of the file', () => {
    const [e] = parse(JSON.stringify(READ_SHADOW)).events;
    expect(e).toMatchObject({
      type: 'process.activity',
      resources: [{ type: 'file', id: '/etc/shadow' }],
      data_classes: ['secret'],
      sensitivity: 'restricted',
      process: { pid: 48377, name: 'cat', cmdline: 'cat /etc/shadow', parent: 'bash' },
    });
    expect(e?.attributes['priority']).toBe('Warning');
  });

  it('maps a falcosidekick network alert to network.activity, keyed by its uuid', () => {
    const [e] = parse(JSON.stringify(SIDEKICK_OUTBOUND)).events;
    expect(e).toMatchObject({
      event_id: eventId('falco', SIDEKICK_UUID),
      type: 'network.activity',
      workload_id: `k8s:pod:agents/${POD}`,
      network: { dst_ip: '203.0.113.50', dst_port: 443, src_port: 49152, protocol: 'tcp', direction: 'outbound' },
      resources: [],
      process: { pid: 41002, name: 'python3', user: 'agent', container_id: '3ad7b26ded6d' },
    });
    expect(e?.attributes['uuid']).toBe(SIDEKICK_UUID);
  });

  it('recognises network alerts without fd.type and reads the remote side and inbound direction', () => {
    const accept = {
      ...SIDEKICK_OUTBOUND,
      uuid: undefined,
      output_fields: { 'evt.type': 'accept4', 'fd.rip': '198.51.100.7', 'fd.rport': '8443', 'container.id': 'c0ffee123456' },
    };
    const [e] = parse(JSON.stringify(accept)).events;
    expect(e).toMatchObject({
      type: 'network.activity',
      workload_id: 'container:c0ffee123456',
      network: { dst_ip: '198.51.100.7', dst_port: 8443, direction: 'inbound' },
    });
  });

  it('does not treat a unix-socket sendto as network activity', () => {
    const unix = { ...SHELL_IN_CONTAINER, output_fields: { 'evt.type': 'sendto', 'fd.type': 'unix', 'fd.name': '/run/containerd/containerd.sock' } };
    const [e] = parse(JSON.stringify(unix)).events;
    expect(e?.type).toBe('process.activity');
    expect(e?.resources).toEqual([]);
  });

  it('leaves workload and container unset for host processes', () => {
    const [e] = parse(JSON.stringify(HOST_PROCESS)).events;
    expect(e?.workload_id).toBeUndefined();
    expect(e?.process).toEqual({ pid: 5120, name: 'gdb', cmdline: 'gdb -p 1', user: 'root' });
  });

  it('marks rules tagged credentials/secrets or credential-theft techniques as secret', () => {
    const tokenRead = {
      ...READ_SHADOW,
      rule: 'Read service account token',
      tags: ['kubernetes', 'Credentials'],
      output_fields: { ...READ_SHADOW.output_fields, 'fd.name': '/var/run/secrets/kubernetes.io/serviceaccount/token' },
    };
    const grepKeys = { ...HOST_PROCESS, rule: 'Search Private Keys or Passwords', tags: ['T1552.001', 'host', 'process'] };
    const res = parse(ndjson(tokenRead, grepKeys, HOST_PROCESS));
    expect(res.events.map((e) => e.data_classes)).toEqual([['secret'], ['secret'], []]);
    expect(res.events[0]?.resources).toEqual([{ type: 'file', id: '/var/run/secrets/kubernetes.io/serviceaccount/token' }]);
  });

  it('accepts arrays and NDJSON as well as single objects', () => {
    expect(parse(JSON.stringify([SHELL_IN_CONTAINER, READ_SHADOW, SIDEKICK_OUTBOUND])).events).toHaveLength(3);
    const res = parse(ndjson(SHELL_IN_CONTAINER, READ_SHADOW, SIDEKICK_OUTBOUND, HOST_PROCESS));
    expect(res.events.map((e) => e.type)).toEqual(['process.activity', 'process.activity', 'network.activity', 'process.activity']);
  });

  it('tolerates alerts without output_fields (plugin sources)', () => {
    const plugin = { output: 'Attach/Exec to pod', priority: 'Notice', rule: 'Attach/Exec Pod', source: 'k8s_audit', tags: ['k8s'], time: '2024-05-14T09:30:00.000000000Z' };
    const [e] = parse(JSON.stringify(plugin)).events;
    expect(e).toMatchObject({ type: 'process.activity', action: 'falco:Attach/Exec Pod', attributes: { source: 'k8s_audit' } });
    expect(e?.process).toBeUndefined();
    expect(e?.host).toBeUndefined();
  });
});

describe('falcoAdapter: malformed input', () => {
  it('rejects a truncated NDJSON line by index and keeps the rest', () => {
    const text = `${JSON.stringify(SHELL_IN_CONTAINER)}\n${JSON.stringify(READ_SHADOW).slice(0, 120)}\n${JSON.stringify(SIDEKICK_OUTBOUND)}\n`;
    const res = parse(text);
    expect(res.events).toHaveLength(2);
    expect(res.rejected).toEqual([{ index: 1, field: '', reason: expect.stringMatching(/^line 2: not valid JSON/) }]);
  });

  it('throws BodyError for a truncated array or single object', () => {
    expect(() => parse(JSON.stringify([SHELL_IN_CONTAINER, READ_SHADOW]).slice(0, -20))).toThrow(BodyError);
    expect(() => parse(JSON.stringify(SIDEKICK_OUTBOUND).slice(0, -1))).toThrow(BodyError);
  });

  it('rejects missing required fields and wrong types by index and field, keeping the rest', () => {
    const { rule: _r, ...noRule } = SHELL_IN_CONTAINER;
    const { time: _t, ...noTime } = SHELL_IN_CONTAINER;
    const withFields = (extra: Record<string, unknown>) => ({ ...SHELL_IN_CONTAINER, output_fields: { ...SHELL_IN_CONTAINER.output_fields, ...extra } });
    const cases: Array<[unknown, string]> = [
      [noRule, 'rule'],
      [noTime, 'time'],
      [{ ...SHELL_IN_CONTAINER, time: 'yesterday' }, 'time'],
      [{ ...SHELL_IN_CONTAINER, rule: 42 }, 'rule'],
      [{ ...SHELL_IN_CONTAINER, tags: 'container,shell' }, 'tags'],
      [{ ...SHELL_IN_CONTAINER, output_fields: 'proc.name=bash' }, 'output_fields'],
      [withFields({ 'proc.pid': 'forty-two' }), 'output_fields.proc.pid'],
      [withFields({ 'fd.sport': 70000, 'fd.type': 'ipv4' }), 'output_fields.fd.sport'],
      [withFields({ 'proc.name': { comm: 'bash' } }), 'output_fields.proc.name'],
      [null, ''],
    ];
    const res = parse(ndjson(READ_SHADOW, ...cases.map(([r]) => r), SIDEKICK_OUTBOUND));
    expect(res.records).toBe(cases.length + 2);
    expect(res.events.map((e) => e.attributes['rule'])).toEqual([READ_SHADOW.rule, SIDEKICK_OUTBOUND.rule]);
    expect(res.rejected.map((r) => [r.index, r.field])).toEqual(cases.map(([, field], i) => [i + 1, field]));
    expect(res.rejected[0]?.reason).toBe('missing');
    expect(res.rejected[2]?.reason).toContain('expected RFC 3339 or epoch milliseconds');
    expect(res.rejected[7]?.reason).toBe('expected a port 0-65535, got 70000');
  });

  it('throws BodyError for invalid UTF-8', () => {
    const bytes = Buffer.concat([Buffer.from('{"rule":"x","output":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
    expect(() => parse(bytes)).toThrow(BodyError);
    expect(() => parse(bytes)).toThrow(/not valid UTF-8/);
  });

  it('throws BodyError for a garbage body', () => {
    expect(() => parse('09:21:07.412345678: Notice A shell was spawned in a container (user=root)\n')).toThrow(BodyError);
    expect(() => parse('<html><body>502 Bad Gateway</body></html>')).toThrow(BodyError);
  });
});

describe('falcoAdapter: deterministic ids', () => {
  it('maps a re-sent alert to the same id, and distinct alerts to distinct ids', () => {
    const first = parse(ndjson(SHELL_IN_CONTAINER, READ_SHADOW, SIDEKICK_OUTBOUND)).events.map((e) => e.event_id);
    const again = parse(JSON.stringify([SHELL_IN_CONTAINER, READ_SHADOW, SIDEKICK_OUTBOUND])).events.map((e) => e.event_id);
    expect(again).toEqual(first);
    expect(new Set(first).size).toBe(3);
    // Same rule on the same host at another nanosecond is another alert.
    const later = parse(JSON.stringify({ ...SHELL_IN_CONTAINER, time: '2024-05-14T09:21:07.412345679Z' })).events[0]?.event_id;
    expect(later).not.toBe(first[0]);
  });
});
