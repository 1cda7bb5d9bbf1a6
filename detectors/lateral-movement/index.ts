import { matchesAnyGlob } from '../../shared/glob.ts';
import { EVENT_TYPE, type Attribution, type TimelineEvent } from '../../shared/event.ts';
import { severityRank, type Finding, type Severity } from '../../shared/finding.ts';
import { BoundedMap } from '../../shared/lru.ts';
import type { Capability, ToolCatalog } from '../catalog/tool-catalog.ts';
import type { Detector, DetectorInstance, DetectorMeta, TaskView } from '../detector.ts';
import { evidenceCopy, makeFinding, type EvidenceEvent } from '../finding-builder.ts';
import { LateralMovementConfigSchema, type LateralMovementConfig } from './config.ts';
import { LATERAL_MOVEMENT_FIXTURES } from './fixtures.ts';
import { inCidr, networkOf, parseCidr, parseIp, type Cidr } from './network.ts';
import { rewriteIdentity } from '../identity-rewrites.ts';

/**
 * Lateral movement: credentials and identities reaching beyond where they belong.
 *
 * - `credential-off-origin`: a credential used from a workload, host or network other than the one
 *   it was issued to (the issuance event's own workload / host / source address, else the runtime
 *   of the task it was issued for).
 * - `credential-outside-task`: a credential bound to one task used by an event stating another.
 * - `identity-new-service`: an identity reaching a service or account outside its learned baseline.
 * - `role-chaining`: session credentials obtained from session credentials, deeper than allowed.
 * - `delegation-widening`: a delegate agent reaching capabilities, data classes, services or
 *   resources its delegating task had not.
 *
 * State (issued credentials, task runtimes, identity baselines, delegations) lives in LRU maps
 * sized by the base policy; {@link LateralMovementInstance.stats} counts what they evicted.
 */

export { LateralMovementConfigSchema, type LateralMovementConfig } from './config.ts';

/** Metadata of the lateral-movement detector. */
export const LATERAL_MOVEMENT_META: DetectorMeta = {
  id: 'lateral-movement',
  title: 'Lateral movement',
  description:
    'Credentials used away from the workload, host, network or task they were issued to; identities reaching services outside their baseline; role chains and delegations that widen scope.',
  defaultSeverity: 'high',
  tags: ['owasp-agentic:T3', 'owasp-agentic:T9', 'maestro:L4', 'maestro:L7', 'nist-ai-rmf:MEASURE-2.7', 'nist-ai-rmf:MANAGE-4.1', 'mitre-attack:T1550', 'mitre-attack:T1078'],
  falsePositives: [
    'A workload that moved (pod rescheduled to another subnet) while keeping its session: widen ipv4_prefix or list the subnet in same_origin_cidrs.',
    'Egress through several NAT gateways: list their addresses in same_origin_cidrs.',
    'New deployments that legitimately start using a new AWS service or account (identity-new-service).',
    'Designed hub-and-spoke role chains deeper than one hop (raise role-chaining.max_depth).',
    'Orchestrators that delegate precisely what they cannot do themselves (delegation-widening).',
  ],
  rules: {
    'credential-off-origin': 'A credential used from a workload, host or network other than the one it was issued to.',
    'credential-outside-task': 'A credential bound to one task used by an event that states another task.',
    'identity-new-service': 'An identity reaching a service or account outside its learned baseline.',
    'role-chaining': 'A session credential used to obtain another, deeper than the policy allows.',
    'delegation-widening': 'A delegate reaching capabilities, data classes, services or resources its delegating task had not.',
  },
};

/** Extra framework tags per rule (beyond the detector's own). */
const RULE_TAGS: Readonly<Record<string, readonly string[]>> = {
  'credential-off-origin': ['mitre-attack:T1550.001', 'mitre-attack:T1078.004'],
  'credential-outside-task': ['mitre-attack:T1550.001'],
  'identity-new-service': ['mitre-attack:T1021', 'mitre-attack:T1078.004'],
  'role-chaining': ['mitre-attack:T1078.004', 'mitre-attack:T1548'],
  'delegation-widening': ['owasp-agentic:T13', 'maestro:L7'],
};

/**
 * What the detector keeps of an issuance event: its evidence copy, where it went (host, address)
 * and what it issued. A whole event (attributes, request and response) is ten times the size, and
 * one is held per credential.
 */
type IssuanceRef = EvidenceEvent & {
  readonly host: string | undefined;
  readonly src_ip: string | undefined;
  readonly credential: { readonly kind: NonNullable<TimelineEvent['credential']>['kind']; readonly subject: string | undefined } | undefined;
};

function issuanceRef(e: TimelineEvent): IssuanceRef {
  const c = e.credential;
  return { ...evidenceCopy(e), host: e.host, src_ip: e.src_ip, credential: c ? { kind: c.kind, subject: c.subject } : undefined };
}

/** What the detector remembers about an issued credential. */
interface IssuedCredential {
  id: string;
  event: IssuanceRef;
  taskId: string;
  /** Bound to a task an agent stated (not a synthetic session or an STS session name). */
  realTask: boolean;
  /** Session-credential hops from a credential not issued in view. */
  depth: number;
  /** Issuance events of the ancestors, oldest first (bounded). */
  chain: IssuanceRef[];
  /** Account of the issued subject (ARN account), when known. */
  account: string | undefined;
  /** Off-origin dedup keys already reported. */
  reported: Set<string>;
  /**
   * Uses that matched on everything comparable while the task's runtime (the origin's workload or
   * host) was not known yet: sources travel on separate topics, so a resource log can overtake the
   * agent spans that say where the task runs. Re-checked when the runtime becomes known (bounded).
   */
  waiting: TimelineEvent[];
}

/** The runtime a task ran in, from its agent and workload events (first values seen). */
interface TaskRuntime {
  workload?: string;
  host?: string;
}

/** An identity's baseline of services and accounts. */
interface Baseline {
  samples: number;
  firstTime: number;
  firstEvent: EvidenceEvent;
  items: BoundedMap<string, true>;
}

/** What a delegating task had reached when it delegated. */
interface Reach {
  capabilities: Set<Capability>;
  dataClasses: Set<string>;
  services: Set<string>;
  resources: Set<string>;
}

/** An open delegation. */
interface Delegation {
  event: TimelineEvent;
  taskId: string;
  reach: Reach;
  reported: Set<string>;
  /** Resource -> the delegate's event that first touched it (evidence copies). */
  newResources: BoundedMap<string, EvidenceEvent>;
  resourcesReported: boolean;
}

/** Counters of what the detector's bounded state evicted. */
export interface LateralMovementStats {
  credentialsEvicted: number;
  runtimesEvicted: number;
  identitiesEvicted: number;
  delegationsEvicted: number;
}

/** Most ancestors kept per credential for evidence. */
const MAX_CHAIN_EVIDENCE = 8;
/** Most resources remembered per delegator reach. */
const MAX_REACH_RESOURCES = 2_000;
/** Most delegate tasks remembered per delegating task. */
const MAX_DELEGATES_PER_TASK = 64;
/** Most uses waiting for a task runtime, per credential. */
const MAX_WAITING_USES = 8;
/** Most credentials indexed per task (for re-checks when the task's runtime becomes known). */
const MAX_CREDENTIALS_PER_TASK = 64;

/** Attribution kinds that tie an issuance to a task an agent stated. */
const REAL_TASK_ATTRIBUTIONS: ReadonlySet<Attribution> = new Set(['direct', 'trace', 'request']);


const cidrCache = new WeakMap<readonly string[], Cidr[]>();
function cidrs(list: readonly string[]): Cidr[] {
  let res = cidrCache.get(list);
  if (!res) cidrCache.set(list, (res = list.map(parseCidr).filter((c): c is Cidr => c !== undefined)));
  return res;
}

/** The agent a task belongs to (its first event naming one). */
function taskAgent(task: TaskView): string {
  for (const e of task.events) if (e.agent_id) return e.agent_id;
  return '';
}

function agentOf(e: TimelineEvent, task: TaskView): string {
  return e.agent_id ?? taskAgent(task);
}

/** Account field of an ARN, when the subject is one. */
function arnAccount(s: string | undefined): string | undefined {
  if (!s?.startsWith('arn:')) return undefined;
  const a = s.split(':')[4];
  return a ? a : undefined;
}

/**
 * A workload identity in comparable form. A Kubernetes service account appears both as a SPIFFE
 * ID (`spiffe://td/ns/X/sa/Y`) and as `system:serviceaccount:X:Y`; both map to `k8s:X/Y` so the
 * same workload seen by two sources is not "another workload". Ids of different kinds are not
 * compared at all.
 */
function workloadKey(id: string): { kind: string; key: string } {
  const spiffeSa = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  if (spiffeSa) return { kind: 'k8s', key: `${spiffeSa[1]}/${spiffeSa[2]}` };
  const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(id);
  if (sa) return { kind: 'k8s', key: `${sa[1]}/${sa[2]}` };
  if (id.startsWith('spiffe://')) return { kind: 'spiffe', key: id };
  return { kind: 'other', key: id };
}

/** Service part of an action (`s3:GetObject` -> `s3`). */
function serviceOf(action: string | undefined): string | undefined {
  if (!action) return undefined;
  const i = action.indexOf(':');
  return i > 0 ? action.slice(0, i) : undefined;
}


function maxSeverity(a: Severity, b: Severity): Severity {
  return severityRank(a) >= severityRank(b) ? a : b;
}

/** The detector instance; exported for tests that inspect its bounded state. */
export class LateralMovementInstance implements DetectorInstance {
  private readonly issued: BoundedMap<string, IssuedCredential>;
  private readonly runtimes: BoundedMap<string, TaskRuntime>;
  private readonly baselines: BoundedMap<string, Baseline>;
  private readonly delegations: BoundedMap<string, Delegation>;
  /** Delegating task -> tasks it delegated to (for credential-outside-task). */
  private readonly delegatedTasks: BoundedMap<string, Set<string>>;
  /** Task -> credentials issued for it. */
  private readonly taskCredentials: BoundedMap<string, string[]>;

  constructor(
    private readonly configFor: (agentId: string) => LateralMovementConfig,
    private readonly catalog: ToolCatalog,
  ) {
    // Sizes come from the base policy: state is shared by all agents, so it cannot vary per agent.
    const base = configFor('');
    this.issued = new BoundedMap(base.max_credentials);
    this.runtimes = new BoundedMap(base.max_credentials);
    this.baselines = new BoundedMap(base.max_identities);
    this.delegations = new BoundedMap(base.max_delegations);
    this.delegatedTasks = new BoundedMap(base.max_delegations);
    this.taskCredentials = new BoundedMap(base.max_credentials);
  }

  stateEvictions(): Readonly<Record<string, number>> {
    const s = this.stats;
    return { max_credentials: s.credentialsEvicted + s.runtimesEvicted, max_identities: s.identitiesEvicted, max_delegations: s.delegationsEvicted };
  }

  /** Eviction counts of the detector's bounded state. */
  get stats(): LateralMovementStats {
    return {
      credentialsEvicted: this.issued.evicted,
      runtimesEvicted: this.runtimes.evicted + this.taskCredentials.evicted,
      identitiesEvicted: this.baselines.evicted,
      delegationsEvicted: this.delegations.evicted + this.delegatedTasks.evicted,
    };
  }

  /** Sizes of the bounded state (for tests and metrics). */
  get sizes(): { credentials: number; runtimes: number; identities: number; delegations: number } {
    return { credentials: this.issued.size, runtimes: this.runtimes.size, identities: this.baselines.size, delegations: this.delegations.size };
  }

  onEvent(e: TimelineEvent, task: TaskView): Finding[] {
    const out: Finding[] = [];
    const cfg = this.configFor(agentOf(e, task));
    if (this.learnRuntime(e) && cfg['credential-off-origin'].enabled) this.recheckWaiting(e.task_id, cfg, out);
    if (e.type === EVENT_TYPE.credentialIssued && e.credential) this.onIssued(e, cfg, out);
    if (e.type === EVENT_TYPE.agentDelegation && e.delegation) this.onDelegation(e, task);
    if (e.credential_id) {
      const issue = this.issued.get(e.credential_id);
      if (issue) {
        if (cfg['credential-off-origin'].enabled) this.offOrigin(e, issue, task.taskId, cfg, out, false);
        if (cfg['credential-outside-task'].enabled) this.outsideTask(e, issue, cfg, out);
      }
    }
    if (cfg['identity-new-service'].enabled) this.newService(e, task, cfg, out);
    if (cfg['delegation-widening'].enabled) this.widening(e, cfg, out);
    return out;
  }

  /** The runtime of a task: workload and host of its agent and workload events. True when it just grew. */
  private learnRuntime(e: TimelineEvent): boolean {
    if (!e.task_id || e.source === 'resource' || (!e.workload_id && !e.host)) return false;
    const rt = this.runtimes.get(e.task_id) ?? {};
    let grew = false;
    if (!rt.workload && e.workload_id) {
      rt.workload = e.workload_id;
      grew = true;
    }
    if (!rt.host && e.host) {
      rt.host = e.host;
      grew = true;
    }
    this.runtimes.set(e.task_id, rt);
    return grew;
  }

  /** Re-judges uses of the task's credentials that waited for its runtime. */
  private recheckWaiting(taskId: string, cfg: LateralMovementConfig, out: Finding[]): void {
    for (const id of this.taskCredentials.peek(taskId) ?? []) {
      const issue = this.issued.peek(id);
      if (!issue || issue.waiting.length === 0) continue;
      const waiting = issue.waiting;
      issue.waiting = [];
      for (const use of waiting) this.offOrigin(use, issue, taskId, cfg, out, true);
    }
  }

  private onIssued(e: TimelineEvent, cfg: LateralMovementConfig, out: Finding[]): void {
    const cred = e.credential as NonNullable<TimelineEvent['credential']>;
    const parentId = cred.parent_id ?? e.credential_id;
    const parent = parentId ? this.issued.get(parentId) : undefined;
    const realTask =
      !!e.task_id && !e.task_id.startsWith('session:') && (REAL_TASK_ATTRIBUTIONS.has(e.attribution) || (e.attribution === 'credential' && parent?.realTask === true));
    // Vault leases are secrets obtained with a token, not sessions: they do not deepen a chain.
    const hop = cred.kind !== 'vault-lease';
    const depth = parent && hop ? parent.depth + 1 : 0;
    const chain = parent && hop ? [...parent.chain, parent.event].slice(-MAX_CHAIN_EVIDENCE) : [];
    const account = arnAccount(cred.subject) ?? e.resources.find((r) => r.account)?.account;
    const rec: IssuedCredential = { id: cred.id, event: issuanceRef(e), taskId: e.task_id, realTask, depth, chain, account, reported: new Set(), waiting: [] };
    this.issued.set(cred.id, rec);
    if (e.task_id) {
      const list = this.taskCredentials.get(e.task_id) ?? [];
      if (!list.includes(cred.id) && list.length < MAX_CREDENTIALS_PER_TASK) list.push(cred.id);
      this.taskCredentials.set(e.task_id, list);
    }

    const rc = cfg['role-chaining'];
    if (!rc.enabled || depth <= rc.max_depth) return;
    const accounts = new Set([...chain.map((c) => arnAccount(c.credential?.subject)), account].filter((a): a is string => a !== undefined));
    const crossAccount = accounts.size > 1;
    const severity = crossAccount ? maxSeverity(rc.severity, rc.cross_account_severity) : rc.severity;
    out.push(
      makeFinding(LATERAL_MOVEMENT_META, {
        rule: 'role-chaining',
        severity,
        title: `Role chain of depth ${depth} (allowed ${rc.max_depth})${crossAccount ? ' across accounts' : ''}`,
        summary:
          `Credential ${cred.id}${cred.subject ? ` (${cred.subject})` : ''} was obtained with ${parentId}, itself an issued session credential; ` +
          `the chain is ${depth} hop(s) deep${crossAccount ? ` and spans accounts ${[...accounts].join(', ')}` : ''}.`,
        taskId: e.task_id,
        evidence: [...chain, e],
        joinKeys: { credential_id: cred.id, parent_credential_id: parentId ?? '' },
        metrics: { depth, max_depth: rc.max_depth, accounts: accounts.size },
        tags: RULE_TAGS['role-chaining'],
        dedupKey: cred.id,
      }),
    );
  }

  private offOrigin(e: TimelineEvent, issue: IssuedCredential, taskId: string, cfg: LateralMovementConfig, out: Finding[], recheck: boolean): void {
    if (e.event_id === issue.event.event_id) return;
    const oc = cfg['credential-off-origin'];
    // A service acting on the caller's behalf (or AWS's own network) is not the caller's origin.
    if (e.principal && matchesAnyGlob(oc.allowed_actors, e.principal)) return;
    for (const k of oc.actor_attributes) {
      const v = e.attributes[k];
      if (typeof v === 'string' && matchesAnyGlob(oc.allowed_actors, v)) return;
    }
    const rt = this.runtimes.peek(issue.taskId);
    // An issuance logged by the issuer names the issuer's endpoint as host (CloudTrail's
    // `sts.amazonaws.com`): the task's runtime is then the better statement of where it went.
    const hosts = [issue.event.host, rt?.host].filter((h): h is string => !!h && !matchesAnyGlob(oc.ignore_hosts, h));
    const origin = {
      workload: issue.event.workload_id ?? rt?.workload,
      host: hosts[0],
      srcIp: issue.event.src_ip,
    };
    const mismatches: Array<{ dim: string; issued: string; used: string }> = [];
    if (oc.compare_workload && origin.workload && e.workload_id) {
      const a = workloadKey(origin.workload);
      const b = workloadKey(e.workload_id);
      if (a.kind === b.kind && a.key !== b.key) mismatches.push({ dim: 'workload', issued: origin.workload, used: e.workload_id });
    }
    if (oc.compare_host && origin.host && e.host && !matchesAnyGlob(oc.ignore_hosts, e.host)) {
      if (origin.host.toLowerCase() !== e.host.toLowerCase()) mismatches.push({ dim: 'host', issued: origin.host, used: e.host });
    }
    if (oc.compare_network && origin.srcIp && e.src_ip) {
      const a = parseIp(origin.srcIp);
      const b = parseIp(e.src_ip);
      if (a && b && a.family === b.family && !cidrs(oc.allowed_source_cidrs).some((c) => inCidr(b, c))) {
        const sameBlock = cidrs(oc.same_origin_cidrs).some((c) => inCidr(a, c) && inCidr(b, c));
        if (!sameBlock && networkOf(a, oc.ipv4_prefix, oc.ipv6_prefix) !== networkOf(b, oc.ipv4_prefix, oc.ipv6_prefix)) {
          mismatches.push({ dim: 'network', issued: origin.srcIp, used: e.src_ip });
        }
      }
    }
    if (mismatches.length === 0) {
      const unknownOrigin = (oc.compare_workload && !origin.workload && !!e.workload_id) || (oc.compare_host && !origin.host && !!e.host && !matchesAnyGlob(oc.ignore_hosts, e.host));
      if (unknownOrigin && !recheck && issue.waiting.length < MAX_WAITING_USES) issue.waiting.push(e);
      return;
    }
    const key = mismatches.map((m) => `${m.dim}=${m.used}`).join('|');
    if (issue.reported.has(key) || issue.reported.size >= oc.max_findings_per_credential) return;
    issue.reported.add(key);
    const dims = mismatches.map((m) => m.dim);
    out.push(
      makeFinding(LATERAL_MOVEMENT_META, {
        rule: 'credential-off-origin',
        severity: oc.severity,
        title: `Credential ${issue.id} used from another ${dims.join(' and ')} than it was issued to`,
        summary:
          `Credential ${issue.id} (${issue.event.credential?.kind ?? 'credential'}) was issued to ` +
          mismatches.map((m) => `${m.dim} ${m.issued}`).join(', ') +
          ` but used${e.action ? ` for ${e.action}` : ''} from ` +
          mismatches.map((m) => `${m.dim} ${m.used}`).join(', ') +
          (dims.includes('network') ? ` (addresses grouped by /${oc.ipv4_prefix} IPv4, /${oc.ipv6_prefix} IPv6).` : '.'),
        taskId: issue.taskId || taskId,
        evidence: [issue.event, e],
        joinKeys: { credential_id: issue.id },
        windowStart: issue.event.time,
        windowEnd: e.time,
        metrics: {
          workload_mismatch: dims.includes('workload') ? 1 : 0,
          host_mismatch: dims.includes('host') ? 1 : 0,
          network_mismatch: dims.includes('network') ? 1 : 0,
          ipv4_prefix: oc.ipv4_prefix,
          seconds_since_issue: Math.round((e.time - issue.event.time) / 1000),
        },
        tags: RULE_TAGS['credential-off-origin'],
        dedupKey: `${issue.id}|${key}`,
      }),
    );
  }

  private outsideTask(e: TimelineEvent, issue: IssuedCredential, cfg: LateralMovementConfig, out: Finding[]): void {
    const oc = cfg['credential-outside-task'];
    // Only an event that states its own task contradicts the binding; credential-joined events
    // are in the bound task by construction. Minting a child session is role-chaining's concern.
    if (!issue.realTask || !e.task_id || e.task_id === issue.taskId || e.type === EVENT_TYPE.credentialIssued) return;
    if (e.attribution === 'credential' || e.attribution === 'unattributed' || e.attribution === 'session') return;
    if (oc.allow_delegated_tasks && this.delegatedTasks.peek(issue.taskId)?.has(e.task_id)) return;
    out.push(
      makeFinding(LATERAL_MOVEMENT_META, {
        rule: 'credential-outside-task',
        severity: oc.severity,
        title: `Credential of task ${issue.taskId} used by task ${e.task_id}`,
        summary:
          `Credential ${issue.id} was issued for task ${issue.taskId} but used${e.action ? ` for ${e.action}` : ''} by an event stating task ${e.task_id}` +
          ` (attributed by ${e.attribution}${e.join_key ? ` via ${e.join_key}` : ''}).`,
        taskId: e.task_id,
        evidence: [issue.event, e],
        joinKeys: { credential_id: issue.id, bound_task_id: issue.taskId, using_task_id: e.task_id },
        metrics: { seconds_since_issue: Math.round((e.time - issue.event.time) / 1000) },
        tags: RULE_TAGS['credential-outside-task'],
        dedupKey: `${issue.id}|${e.task_id}`,
      }),
    );
  }

  private newService(e: TimelineEvent, task: TaskView, cfg: LateralMovementConfig, out: Finding[]): void {
    const nc = cfg['identity-new-service'];
    if (!nc.sources.includes(e.source)) return;
    const raw = e.workload_id ?? e.principal;
    if (!raw || (e.action && matchesAnyGlob(nc.ignore_actions, e.action))) return;
    const identity = rewriteIdentity(raw, nc.identity_rewrites);
    const keys: string[] = [];
    const svc = serviceOf(e.action);
    if (nc.compare_services && svc) keys.push(`service:${svc}`);
    if (nc.compare_accounts) for (const a of new Set(e.resources.map((r) => r.account).filter((x): x is string => !!x))) keys.push(`account:${a}`);
    if (keys.length === 0) return;
    let b = this.baselines.get(identity);
    if (!b) {
      b = { samples: 0, firstTime: e.time, firstEvent: evidenceCopy(e), items: new BoundedMap(nc.max_services_per_identity) };
      this.baselines.set(identity, b);
    }
    const trusted = b.samples >= nc.min_samples && e.time - b.firstTime >= nc.min_baseline_ms;
    const novel: string[] = [];
    for (const k of keys) {
      if (b.items.get(k)) continue;
      if (trusted) novel.push(k);
      b.items.set(k, true);
    }
    b.samples++;
    if (novel.length === 0) return;
    out.push(
      makeFinding(LATERAL_MOVEMENT_META, {
        rule: 'identity-new-service',
        severity: nc.severity,
        title: `${identity} reached ${novel.map((k) => k.replace(':', ' ')).join(', ')} outside its baseline`,
        summary:
          `Identity ${identity} reached ${novel.join(', ')}${e.action ? ` (${e.action})` : ''}, not seen in its baseline of ` +
          `${b.samples - 1} events since ${new Date(b.firstTime).toISOString()} covering ${b.items.size - novel.length} services/accounts.`,
        taskId: task.taskId,
        evidence: b.firstEvent.event_id === e.event_id ? [e] : [b.firstEvent, e],
        joinKeys: { identity },
        windowStart: b.firstTime,
        windowEnd: e.time,
        metrics: { baseline_samples: b.samples - 1, baseline_items: b.items.size - novel.length, new_items: novel.length, min_samples: nc.min_samples },
        tags: RULE_TAGS['identity-new-service'],
        dedupKey: `${identity}|${novel.join(',')}`,
      }),
    );
  }

  private onDelegation(e: TimelineEvent, task: TaskView): void {
    const d = e.delegation as NonNullable<TimelineEvent['delegation']>;
    if (!d.to_agent_id && !d.to_task_id) return;
    const reach: Reach = { capabilities: new Set(), dataClasses: new Set(), services: new Set(), resources: new Set() };
    for (const x of task.events) {
      if (x.time > e.time) break;
      if (d.to_agent_id && x.agent_id === d.to_agent_id && x.agent_id !== e.agent_id) continue;
      this.addReach(reach, x);
    }
    const dl: Delegation = { event: e, taskId: task.taskId, reach, reported: new Set(), newResources: new BoundedMap(MAX_REACH_RESOURCES), resourcesReported: false };
    if (d.to_task_id) {
      this.delegations.set(`task:${d.to_task_id}`, dl);
      if (task.taskId) {
        const set = this.delegatedTasks.get(task.taskId) ?? new Set<string>();
        if (set.size < MAX_DELEGATES_PER_TASK) set.add(d.to_task_id);
        this.delegatedTasks.set(task.taskId, set);
      }
    }
    if (d.to_agent_id && d.to_agent_id !== e.agent_id) this.delegations.set(`agent:${d.to_agent_id}`, dl);
  }

  /** What one event reaches: capabilities (tool calls), data classes, services/accounts, resources. */
  private contributions(x: TimelineEvent): { caps: Capability[]; classes: string[]; services: string[]; resources: string[] } {
    const caps = x.type === EVENT_TYPE.toolCall && x.tool ? [...this.catalog.classify(x.tool).capabilities] : [];
    const ok = x.outcome !== 'failure';
    const classes = ok ? x.data_classes : [];
    const services: string[] = [];
    if (x.source !== 'agent') {
      const svc = serviceOf(x.action);
      if (svc) services.push(`service:${svc}`);
      for (const r of x.resources) if (r.account) services.push(`account:${r.account}`);
    }
    const resources = ok ? x.resources.map((r) => r.id) : [];
    return { caps, classes, services, resources };
  }

  private addReach(reach: Reach, x: TimelineEvent): void {
    const c = this.contributions(x);
    for (const v of c.caps) reach.capabilities.add(v);
    for (const v of c.classes) reach.dataClasses.add(v);
    for (const v of c.services) reach.services.add(v);
    for (const v of c.resources) if (reach.resources.size < MAX_REACH_RESOURCES) reach.resources.add(v);
  }

  private widening(e: TimelineEvent, cfg: LateralMovementConfig, out: Finding[]): void {
    if (e.type === EVENT_TYPE.agentDelegation) return;
    const found = new Set<Delegation>();
    if (e.task_id) {
      const dl = this.delegations.get(`task:${e.task_id}`);
      if (dl) found.add(dl);
    }
    if (e.agent_id) {
      const dl = this.delegations.get(`agent:${e.agent_id}`);
      if (dl) found.add(dl);
    }
    const wc = cfg['delegation-widening'];
    for (const dl of found) {
      if (e.time < dl.event.time || e.time > dl.event.time + wc.window_ms) continue;
      const c = this.contributions(e);
      const novel: string[] = [];
      let high = false;
      for (const cap of c.caps) {
        if (!wc.capabilities.includes(cap) || dl.reach.capabilities.has(cap)) continue;
        const k = `capability:${cap}`;
        if (dl.reported.has(k)) continue;
        novel.push(k);
        if (wc.high_capabilities.includes(cap)) high = true;
      }
      for (const cls of c.classes) {
        const k = `data_class:${cls}`;
        if (wc.data_classes.includes(cls) && !dl.reach.dataClasses.has(cls) && !dl.reported.has(k)) novel.push(k);
      }
      if (wc.compare_services) for (const s of c.services) if (!dl.reach.services.has(s) && !dl.reported.has(s)) novel.push(s);
      const delegate = dl.event.delegation?.to_agent_id ?? dl.event.delegation?.to_task_id ?? 'delegate';
      if (novel.length > 0) {
        for (const k of novel) dl.reported.add(k);
        out.push(
          makeFinding(LATERAL_MOVEMENT_META, {
            rule: 'delegation-widening',
            severity: high ? maxSeverity(wc.severity, 'high') : wc.severity,
            title: `Delegate ${delegate} reached ${novel.join(', ')} beyond its delegating task`,
            summary:
              `Task ${dl.taskId} delegated to ${delegate}; the delegate then reached ${novel.join(', ')}${e.action ? ` (${e.action})` : ''}, ` +
              `which the delegating task had not (it had ${[...dl.reach.capabilities].join(', ') || 'no tool capabilities'}).`,
            taskId: e.task_id || dl.taskId,
            evidence: [dl.event, e],
            joinKeys: { delegating_task_id: dl.taskId, delegate: delegate },
            metrics: { new_items: novel.length, delegator_capabilities: dl.reach.capabilities.size, seconds_since_delegation: Math.round((e.time - dl.event.time) / 1000) },
            tags: RULE_TAGS['delegation-widening'],
            dedupKey: `${dl.event.event_id}|${novel.join(',')}`,
          }),
        );
      }
      if (wc.new_resources_threshold > 0 && !dl.resourcesReported) {
        // One copy per event, shared by its resources: the evidence below lists each event once.
        let ref: EvidenceEvent | undefined;
        for (const r of c.resources) if (!dl.reach.resources.has(r) && !dl.newResources.has(r)) dl.newResources.set(r, (ref ??= evidenceCopy(e)));
        if (dl.newResources.size >= wc.new_resources_threshold) {
          dl.resourcesReported = true;
          const evidence = [dl.event, ...new Set([...dl.newResources.values()].slice(0, 20))];
          out.push(
            makeFinding(LATERAL_MOVEMENT_META, {
              rule: 'delegation-widening',
              severity: wc.severity,
              title: `Delegate ${delegate} touched ${dl.newResources.size} resources its delegating task never did`,
              summary: `Task ${dl.taskId} delegated to ${delegate}; the delegate has since touched ${dl.newResources.size} distinct resources outside the delegator's ${dl.reach.resources.size}.`,
              taskId: e.task_id || dl.taskId,
              evidence,
              joinKeys: { delegating_task_id: dl.taskId, delegate: delegate },
              metrics: { new_resources: dl.newResources.size, threshold: wc.new_resources_threshold, delegator_resources: dl.reach.resources.size },
              tags: RULE_TAGS['delegation-widening'],
              dedupKey: `${dl.event.event_id}|resources`,
            }),
          );
        }
      }
    }
  }
}

/** The lateral-movement detector. */
export const lateralMovementDetector: Detector<LateralMovementConfig> = {
  meta: LATERAL_MOVEMENT_META,
  configSchema: LateralMovementConfigSchema,
  create: (configFor, ctx) => new LateralMovementInstance(configFor, ctx.catalog),
  fixtures: LATERAL_MOVEMENT_FIXTURES,
};
