import { matchesAnyGlob } from '../../shared/glob.ts';
import { EVENT_TYPE, type TimelineEvent } from '../../shared/event.ts';
import type { Finding, Severity } from '../../shared/finding.ts';
import { BoundedMap } from '../../shared/lru.ts';
import type { Detector, DetectorInstance, DetectorMeta, TaskView } from '../detector.ts';
import { evidenceCopy, makeFinding, type EvidenceEvent } from '../finding-builder.ts';
import { CredentialLifecycleConfigSchema, type CredentialLifecycleConfig } from './config.ts';
import { CREDENTIAL_LIFECYCLE_FIXTURES } from './fixtures.ts';

/**
 * Credential lifecycle: a credential is issued for a task, lives until it expires or is revoked,
 * and belongs to one agent. This detector reports use outside that life:
 *
 * - `use-after-task-end`: use of a task's credential after the task ended (its `task.ended` time +
 *   grace; for tasks closed idle, a late event long after the task's last activity);
 * - `use-after-revoke`: use after a `credential.revoked` for it (also Vault prefix revocations);
 * - `use-after-expiry`: use after `expires_at` (or a `credential.expired`) + clock skew;
 * - `long-lived-credential`: an agent or workload using a credential nobody issued in view (a
 *   long-term `AKIA…` key, an unattributed event carrying a credential id), or an issuance whose
 *   lifetime exceeds the policy maximum;
 * - `shared-credential`: one credential used by more agents or tasks than allowed.
 *
 * Unattributed events (task `''`) are evaluated too: they are how an un-issued credential shows.
 * Revocations and task ends that arrive after a later-timed use are checked against the latest use.
 */

export { CredentialLifecycleConfigSchema, type CredentialLifecycleConfig } from './config.ts';

/** Metadata of the credential-lifecycle detector. */
export const CREDENTIAL_LIFECYCLE_META: DetectorMeta = {
  id: 'credential-lifecycle',
  title: 'Credential lifecycle',
  description:
    'Credentials used after their task ended, after revocation or after expiry; long-lived credentials nobody issued to a task; one credential shared by several agents or tasks.',
  defaultSeverity: 'high',
  tags: ['owasp-agentic:T3', 'owasp-agentic:T9', 'maestro:L4', 'maestro:L6', 'nist-ai-rmf:MEASURE-2.7', 'nist-ai-rmf:MANAGE-4.1', 'mitre-attack:T1550', 'mitre-attack:T1078'],
  falsePositives: [
    'Asynchronous work that legitimately outlives its task (uploads, cleanup): raise use-after-task-end.grace_ms.',
    'Clock differences between log sources larger than clock_skew_ms.',
    'Services whose session started before the logs in view (no issuance seen): list them in long-lived-credential.ignore_credentials.',
    'Deliberately shared service keys (shared-credential.ignore_credentials).',
  ],
  rules: {
    'use-after-task-end': "A task's credential used after the task ended (plus grace).",
    'use-after-revoke': 'A credential used after it was revoked.',
    'use-after-expiry': 'A credential used after it expired (plus clock skew).',
    'long-lived-credential': 'An agent or workload using a credential with no issuance seen, or an issuance longer than the policy allows.',
    'shared-credential': 'One credential used by more agents or tasks than the policy allows.',
  },
};

const RULE_TAGS: Readonly<Record<string, readonly string[]>> = {
  'use-after-task-end': ['mitre-attack:T1550.001', 'mitre-attack:T1528'],
  'use-after-revoke': ['mitre-attack:T1550.001'],
  'use-after-expiry': ['mitre-attack:T1550.001', 'mitre-attack:T1606'],
  'long-lived-credential': ['mitre-attack:T1078.004', 'mitre-attack:T1098.001'],
  'shared-credential': ['mitre-attack:T1078'],
};

/** Most agents / tasks remembered per credential (enough to cross any sane threshold). */
const MAX_USERS_PER_CREDENTIAL = 32;
/** Most credentials remembered per task. */
const MAX_CREDENTIALS_PER_TASK = 64;
/** Most Vault prefix revocations remembered. */
const MAX_REVOKED_PREFIXES = 256;

/** Events once each by id (a user's evidence copy and the event at hand may be the same event), first occurrence kept. */
function uniqueById(events: readonly EvidenceEvent[]): EvidenceEvent[] {
  const seen = new Set<string>();
  return events.filter((x) => !seen.has(x.event_id) && (seen.add(x.event_id), true));
}

/**
 * What the detector knows about one credential. Events kept only as evidence are six-field copies
 * (`evidenceCopy`); the revocation and the latest use stay whole, because later events are judged
 * against their principal, outcome, action and origin.
 */
interface CredState {
  issue?: EvidenceEvent;
  /** Task it was issued for ('' when unknown). */
  taskId: string;
  /** Issued for a task an agent stated (not a synthetic session). */
  realTask: boolean;
  /** Epoch ms, 0 when unknown. */
  expiresAt: number;
  /** The event that states the expiry (issuance or `credential.expired`). */
  expiryEvent?: EvidenceEvent;
  revoke?: TimelineEvent;
  /** Latest use by event time (for revocations and task ends that arrive after it). */
  lastUse?: TimelineEvent;
  agents: Map<string, EvidenceEvent>;
  tasks: Map<string, EvidenceEvent>;
  reported: Set<string>;
}

/** What the detector knows about one task. */
interface TaskState {
  agent: string;
  endEvent?: EvidenceEvent;
  /** Epoch ms of the end, 0 while running. */
  endTime: number;
  /** Latest event time seen on time (not late), epoch ms. */
  lastTime: number;
  /** Evidence copy of the latest on-time event (a whole one per running task was ~2 KB each). */
  lastEvent?: EvidenceEvent;
  credentials: string[];
}

/** Counters of what the detector's bounded state evicted. */
export interface CredentialLifecycleStats {
  credentialsEvicted: number;
  tasksEvicted: number;
  prefixesEvicted: number;
}


const regexCache = new WeakMap<readonly string[], RegExp[]>();
function matchesRegex(patterns: readonly string[], value: string): boolean {
  let res = regexCache.get(patterns);
  if (!res) regexCache.set(patterns, (res = patterns.map((p) => new RegExp(p))));
  return res.some((r) => r.test(value));
}

function taskAgent(task: TaskView): string {
  for (const e of task.events) if (e.agent_id) return e.agent_id;
  return '';
}

/** A task an agent could have stated: not unattributed, not a synthetic per-credential session. */
function isRealTaskId(id: string): boolean {
  return id !== '' && !id.startsWith('session:');
}

function seconds(ms: number): number {
  return Math.round(ms / 1000);
}

/** The detector instance; exported for tests that inspect its bounded state. */
export class CredentialLifecycleInstance implements DetectorInstance {
  private readonly creds: BoundedMap<string, CredState>;
  private readonly tasks: BoundedMap<string, TaskState>;
  private readonly revokedPrefixes: BoundedMap<string, TimelineEvent>;
  /** Delegated task -> the task that delegated to it. */
  private readonly delegatedFrom: BoundedMap<string, string>;

  constructor(private readonly configFor: (agentId: string) => CredentialLifecycleConfig) {
    // Sizes come from the base policy: state is shared by all agents.
    const base = configFor('');
    this.creds = new BoundedMap(base.max_credentials);
    this.tasks = new BoundedMap(base.max_tasks);
    this.revokedPrefixes = new BoundedMap(MAX_REVOKED_PREFIXES);
    this.delegatedFrom = new BoundedMap(base.max_tasks);
  }

  stateEvictions(): Readonly<Record<string, number>> {
    // Revoked prefixes are bounded by a constant, not a policy setting; counted with credentials.
    return { max_credentials: this.creds.evicted + this.revokedPrefixes.evicted, max_tasks: this.tasks.evicted + this.delegatedFrom.evicted };
  }

  /** Eviction counts of the detector's bounded state. */
  get stats(): CredentialLifecycleStats {
    return {
      credentialsEvicted: this.creds.evicted,
      tasksEvicted: this.tasks.evicted + this.delegatedFrom.evicted,
      prefixesEvicted: this.revokedPrefixes.evicted,
    };
  }

  /** Sizes of the bounded state. */
  get sizes(): { credentials: number; tasks: number } {
    return { credentials: this.creds.size, tasks: this.tasks.size };
  }

  onEvent(e: TimelineEvent, task: TaskView): Finding[] {
    const out: Finding[] = [];
    const agent = e.agent_id ?? (task.taskId ? taskAgent(task) : '');
    const cfg = this.configFor(agent);
    const ts = e.task_id ? this.trackTask(e) : undefined;

    if (e.type === EVENT_TYPE.credentialIssued && e.credential) this.onIssued(e, agent, cfg, out);
    if ((e.type === EVENT_TYPE.credentialRevoked || e.type === EVENT_TYPE.credentialExpired) && e.credential) this.onLifecycle(e, cfg, out);
    if (e.type === EVENT_TYPE.taskEnded && ts) this.onTaskEnded(e, ts, cfg, out);
    const toTask = e.type === EVENT_TYPE.agentDelegation ? e.delegation?.to_task_id : undefined;
    if (toTask && e.task_id && toTask !== e.task_id) this.delegatedFrom.set(toTask, this.rootTask(e.task_id));

    // A revocation is administration of another credential (the correlator files it under the task
    // of the credential it ends, not of whoever revoked it), and `revoke-self` ends the token's own
    // life: neither is judged as a use.
    const lifecycle = e.type === EVENT_TYPE.credentialRevoked || e.type === EVENT_TYPE.credentialExpired || e.type === EVENT_TYPE.taskStarted || e.type === EVENT_TYPE.taskEnded;
    if (e.credential_id && !lifecycle) this.onUse(e, e.credential_id, task, agent, cfg, out);
    return out;
  }

  private trackTask(e: TimelineEvent): TaskState {
    let ts = this.tasks.get(e.task_id);
    if (!ts) {
      ts = { agent: '', endTime: 0, lastTime: 0, credentials: [] };
      this.tasks.set(e.task_id, ts);
    }
    if (!ts.agent && e.agent_id) ts.agent = e.agent_id;
    // Late events are what this detector judges; they must not move the task's own activity window.
    if (!e.late && e.time >= ts.lastTime) {
      ts.lastTime = e.time;
      ts.lastEvent = evidenceCopy(e);
    }
    return ts;
  }

  /** The task at the top of a delegation chain (bounded walk). */
  private rootTask(taskId: string): string {
    let t = taskId;
    for (let i = 0; i < 16; i++) {
      const up = this.delegatedFrom.peek(t);
      if (!up || up === t) break;
      t = up;
    }
    return t;
  }

  private cred(id: string): CredState {
    let cs = this.creds.get(id);
    if (!cs) {
      cs = { taskId: '', realTask: false, expiresAt: 0, agents: new Map(), tasks: new Map(), reported: new Set() };
      this.creds.set(id, cs);
    }
    return cs;
  }

  private onIssued(e: TimelineEvent, agent: string, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    const c = e.credential as NonNullable<TimelineEvent['credential']>;
    const cs = this.cred(c.id);
    const ref = evidenceCopy(e);
    cs.issue = ref;
    cs.taskId = e.task_id;
    cs.realTask = isRealTaskId(e.task_id) && e.attribution !== 'session';
    if (c.expires_at !== undefined) {
      cs.expiresAt = c.expires_at;
      cs.expiryEvent = ref;
    }
    if (e.task_id) {
      const ts = this.tasks.get(e.task_id);
      if (ts && !ts.credentials.includes(c.id) && ts.credentials.length < MAX_CREDENTIALS_PER_TASK) ts.credentials.push(c.id);
    }
    // The issuing task and agent are the credential's owners: the first "users" for shared-credential.
    if (cs.realTask && cs.tasks.size < MAX_USERS_PER_CREDENTIAL && !cs.tasks.has(e.task_id)) cs.tasks.set(e.task_id, ref);
    if (agent && cs.agents.size < MAX_USERS_PER_CREDENTIAL && !cs.agents.has(agent)) cs.agents.set(agent, ref);

    const lc = cfg['long-lived-credential'];
    if (!lc.enabled || c.expires_at === undefined || matchesAnyGlob(lc.ignore_credentials, c.id)) return;
    const lifetime = c.expires_at - e.time;
    if (lifetime <= lc.max_lifetime_ms) return;
    out.push(
      makeFinding(CREDENTIAL_LIFECYCLE_META, {
        rule: 'long-lived-credential',
        severity: lc.lifetime_severity,
        title: `Credential ${c.id} issued for ${(lifetime / 3_600_000).toFixed(1)} h (max ${(lc.max_lifetime_ms / 3_600_000).toFixed(1)} h)`,
        summary: `${c.kind} ${c.id}${c.subject ? ` for ${c.subject}` : ''} was issued with a lifetime of ${seconds(lifetime)} s, over the policy maximum of ${seconds(lc.max_lifetime_ms)} s.`,
        taskId: e.task_id,
        evidence: [e],
        joinKeys: { credential_id: c.id },
        metrics: { lifetime_s: seconds(lifetime), max_lifetime_s: seconds(lc.max_lifetime_ms) },
        tags: RULE_TAGS['long-lived-credential'],
        dedupKey: `${c.id}|lifetime`,
      }),
    );
  }

  private onLifecycle(e: TimelineEvent, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    const id = (e.credential as NonNullable<TimelineEvent['credential']>).id;
    if (e.type === EVENT_TYPE.credentialExpired) {
      const cs = this.cred(id);
      if (cs.expiresAt === 0 || e.time < cs.expiresAt) {
        cs.expiresAt = e.time;
        cs.expiryEvent = evidenceCopy(e);
      }
      return;
    }
    if (e.attributes['revoke_prefix'] === true) {
      this.revokedPrefixes.set(id, e);
      return;
    }
    const cs = this.cred(id);
    if (cs.revoke && cs.revoke.time <= e.time) return;
    cs.revoke = e;
    // A use stamped after the revocation may have arrived before it.
    if (cs.lastUse && cs.lastUse.event_id !== e.event_id) this.checkRevoke(cs, id, cs.lastUse, e, cfg, out);
  }

  private onTaskEnded(e: TimelineEvent, ts: TaskState, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    ts.endEvent = evidenceCopy(e);
    ts.endTime = e.end_time ?? e.time;
    // Uses stamped after the end may have arrived before the end event.
    for (const id of ts.credentials) {
      const cs = this.creds.peek(id);
      if (cs?.lastUse) this.checkTaskEnd(cs, id, cs.lastUse, cfg, out);
    }
  }

  private onUse(e: TimelineEvent, id: string, task: TaskView, agent: string, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    const cs = this.cred(id);
    if (!cs.lastUse || e.time >= cs.lastUse.time) cs.lastUse = e;
    if (cs.revoke) this.checkRevoke(cs, id, e, cs.revoke, cfg, out);
    else {
      for (const [prefix, rev] of this.revokedPrefixes.entries()) {
        if (id.startsWith(prefix)) {
          this.checkRevoke(cs, id, e, rev, cfg, out);
          break;
        }
      }
    }
    this.checkExpiry(cs, id, e, cfg, out);
    this.checkTaskEnd(cs, id, e, cfg, out);
    this.checkUnissued(cs, id, e, task, agent, cfg, out);
    this.checkShared(cs, id, e, agent, cfg, out);
  }

  private useSeverity(e: TimelineEvent, ok: Severity, failed: Severity): Severity {
    return e.outcome === 'failure' ? failed : ok;
  }

  private checkRevoke(cs: CredState, id: string, use: TimelineEvent, revoke: TimelineEvent, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    const rc = cfg['use-after-revoke'];
    if (!rc.enabled || use.time <= revoke.time + cfg.clock_skew_ms) return;
    const severity = this.useSeverity(use, rc.severity, rc.failed_use_severity);
    const key = `${id}|revoke|${severity}`;
    if (cs.reported.has(key)) return;
    cs.reported.add(key);
    const after = use.time - revoke.time;
    out.push(
      makeFinding(CREDENTIAL_LIFECYCLE_META, {
        rule: 'use-after-revoke',
        severity,
        title: `Credential ${id} used ${seconds(after)} s after it was revoked${use.outcome === 'failure' ? ' (refused)' : ''}`,
        summary:
          `Credential ${id} was revoked at ${new Date(revoke.time).toISOString()}${revoke.principal ? ` by ${revoke.principal}` : ''}; ` +
          `it was used${use.action ? ` for ${use.action}` : ''} ${seconds(after)} s later with outcome ${use.outcome}` +
          `${use.src_ip ? ` from ${use.src_ip}` : ''}${use.workload_id ? ` by ${use.workload_id}` : ''}.`,
        taskId: use.task_id || cs.taskId,
        evidence: cs.issue ? [cs.issue, revoke, use] : [revoke, use],
        joinKeys: { credential_id: id },
        windowStart: revoke.time,
        windowEnd: use.time,
        metrics: { seconds_after_revoke: seconds(after), clock_skew_s: seconds(cfg.clock_skew_ms), success: use.outcome === 'success' ? 1 : 0 },
        tags: RULE_TAGS['use-after-revoke'],
        dedupKey: key,
      }),
    );
  }

  private checkExpiry(cs: CredState, id: string, use: TimelineEvent, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    const xc = cfg['use-after-expiry'];
    if (!xc.enabled || cs.expiresAt === 0 || use.time <= cs.expiresAt + cfg.clock_skew_ms) return;
    const severity = this.useSeverity(use, xc.severity, xc.failed_use_severity);
    const key = `${id}|expiry|${severity}`;
    if (cs.reported.has(key)) return;
    cs.reported.add(key);
    const after = use.time - cs.expiresAt;
    out.push(
      makeFinding(CREDENTIAL_LIFECYCLE_META, {
        rule: 'use-after-expiry',
        severity,
        title: `Credential ${id} used ${seconds(after)} s after it expired${use.outcome === 'failure' ? ' (refused)' : ''}`,
        summary:
          `Credential ${id} expired at ${new Date(cs.expiresAt).toISOString()}; it was used${use.action ? ` for ${use.action}` : ''} ` +
          `${seconds(after)} s later (allowance ${seconds(cfg.clock_skew_ms)} s) with outcome ${use.outcome}.`,
        taskId: use.task_id || cs.taskId,
        evidence: cs.expiryEvent ? [cs.expiryEvent, use] : [use],
        joinKeys: { credential_id: id },
        windowStart: cs.expiresAt,
        windowEnd: use.time,
        metrics: { seconds_after_expiry: seconds(after), clock_skew_s: seconds(cfg.clock_skew_ms), success: use.outcome === 'success' ? 1 : 0 },
        tags: RULE_TAGS['use-after-expiry'],
        dedupKey: key,
      }),
    );
  }

  private checkTaskEnd(cs: CredState, id: string, use: TimelineEvent, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    const tc = cfg['use-after-task-end'];
    if (!tc.enabled || !cs.realTask) return;
    const ts = this.tasks.peek(cs.taskId);
    if (!ts) return;
    let endTime: number;
    let endEvent: EvidenceEvent | undefined;
    let severity: Severity;
    let inferred = false;
    if (ts.endTime > 0) {
      if (use.time <= ts.endTime + tc.grace_ms) return;
      endTime = ts.endTime;
      endEvent = ts.endEvent;
      severity = this.useSeverity(use, tc.severity, tc.failed_use_severity);
    } else if (use.late && use.task_id === cs.taskId && ts.lastTime > 0 && use.time > ts.lastTime + tc.idle_end_ms) {
      // The task closed without an end event; the late flag says it is over, its last activity says when.
      endTime = ts.lastTime;
      endEvent = ts.lastEvent;
      severity = tc.idle_severity;
      inferred = true;
    } else return;
    const key = `${id}|task-end|${severity}`;
    if (cs.reported.has(key)) return;
    cs.reported.add(key);
    const after = use.time - endTime;
    out.push(
      makeFinding(CREDENTIAL_LIFECYCLE_META, {
        rule: 'use-after-task-end',
        severity,
        title: `Credential of task ${cs.taskId} used ${seconds(after)} s after the task ${inferred ? 'went idle' : 'ended'}`,
        summary:
          `Credential ${id} was issued for task ${cs.taskId}, which ${inferred ? 'had its last activity' : 'ended'} at ${new Date(endTime).toISOString()}; ` +
          `it was used${use.action ? ` for ${use.action}` : ''} ${seconds(after)} s later (grace ${seconds(inferred ? tc.idle_end_ms : tc.grace_ms)} s)` +
          `${use.late ? ', arriving after the task had closed' : ''}, outcome ${use.outcome}.`,
        taskId: cs.taskId,
        evidence: [cs.issue, endEvent, use].filter((x): x is EvidenceEvent => x !== undefined),
        joinKeys: { credential_id: id, task_id: cs.taskId },
        windowStart: endTime,
        windowEnd: use.time,
        metrics: { seconds_after_end: seconds(after), grace_s: seconds(inferred ? tc.idle_end_ms : tc.grace_ms), late: use.late ? 1 : 0, inferred_end: inferred ? 1 : 0 },
        tags: RULE_TAGS['use-after-task-end'],
        dedupKey: key,
      }),
    );
  }

  private checkUnissued(cs: CredState, id: string, e: TimelineEvent, task: TaskView, agent: string, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    const lc = cfg['long-lived-credential'];
    if (!lc.enabled || cs.issue || matchesAnyGlob(lc.ignore_credentials, id)) return;
    // A credential-joined event proves the pipeline saw (and bound) an issuance, even if this
    // detector did not (restart, eviction).
    if (e.attribution === 'credential' && e.join_key === id) return;
    if (task.taskId.startsWith('session:')) return;
    const longTerm = matchesRegex(lc.long_term_id_patterns, id);
    // A runtime's own session minting a per-task child (AssumeRole) is how issuance works; the
    // child is what the agent uses. A long-term key minting sessions is still reported.
    if (e.type === EVENT_TYPE.credentialIssued && !longTerm) return;
    const context = agent !== '' || e.workload_id !== undefined;
    if (!context) return;
    const key = `${id}|unissued`;
    if (cs.reported.has(key)) return;
    cs.reported.add(key);
    const who = agent ? `agent ${agent}` : `workload ${e.workload_id}`;
    out.push(
      makeFinding(CREDENTIAL_LIFECYCLE_META, {
        rule: 'long-lived-credential',
        severity: lc.severity,
        title: longTerm ? `${who} used long-term credential ${id}` : `${who} used credential ${id} that no task was issued`,
        summary:
          `${who} used ${longTerm ? 'long-term credential' : 'credential'} ${id}${e.action ? ` for ${e.action}` : ''}; no issuance of it was seen` +
          `${task.taskId ? ` (event attributed to task ${task.taskId} by ${e.attribution})` : ' (the event could not be attributed to any task)'}.`,
        taskId: task.taskId,
        evidence: [e],
        joinKeys: { credential_id: id, ...(agent ? { agent_id: agent } : {}), ...(e.workload_id ? { workload_id: e.workload_id } : {}) },
        metrics: { long_term_pattern: longTerm ? 1 : 0, unattributed: task.taskId ? 0 : 1 },
        tags: RULE_TAGS['long-lived-credential'],
        dedupKey: key,
      }),
    );
  }

  private checkShared(cs: CredState, id: string, e: TimelineEvent, agent: string, cfg: CredentialLifecycleConfig, out: Finding[]): void {
    const sc = cfg['shared-credential'];
    if (!sc.enabled || (e.type === EVENT_TYPE.credentialIssued && !sc.count_minting) || matchesAnyGlob(sc.ignore_credentials, id)) return;
    let ref: EvidenceEvent | undefined;
    if (agent && !cs.agents.has(agent) && cs.agents.size < MAX_USERS_PER_CREDENTIAL) cs.agents.set(agent, (ref ??= evidenceCopy(e)));
    const unit = sc.follow_delegations ? this.rootTask(e.task_id) : e.task_id;
    if (isRealTaskId(unit) && !cs.tasks.has(unit) && cs.tasks.size < MAX_USERS_PER_CREDENTIAL) cs.tasks.set(unit, (ref ??= evidenceCopy(e)));
    const over: Array<{ what: 'agents' | 'tasks'; users: Map<string, EvidenceEvent>; max: number }> = [];
    if (cs.agents.size > sc.max_agents && !cs.reported.has(`${id}|shared|agents`)) over.push({ what: 'agents', users: cs.agents, max: sc.max_agents });
    if (cs.tasks.size > sc.max_tasks && !cs.reported.has(`${id}|shared|tasks`)) over.push({ what: 'tasks', users: cs.tasks, max: sc.max_tasks });
    for (const o of over) {
      const key = `${id}|shared|${o.what}`;
      cs.reported.add(key);
      out.push(
        makeFinding(CREDENTIAL_LIFECYCLE_META, {
          rule: 'shared-credential',
          severity: sc.severity,
          title: `Credential ${id} used by ${o.users.size} ${o.what} (max ${o.max})`,
          summary: `Credential ${id} was used by ${o.what} ${[...o.users.keys()].join(', ')}; the policy allows ${o.max}.`,
          taskId: e.task_id || cs.taskId,
          evidence: uniqueById([...o.users.values(), e]).slice(0, 20),
          joinKeys: { credential_id: id },
          metrics: { [o.what]: o.users.size, [`max_${o.what}`]: o.max },
          tags: RULE_TAGS['shared-credential'],
          dedupKey: key,
        }),
      );
    }
  }
}

/** The credential-lifecycle detector. */
export const credentialLifecycleDetector: Detector<CredentialLifecycleConfig> = {
  meta: CREDENTIAL_LIFECYCLE_META,
  configSchema: CredentialLifecycleConfigSchema,
  create: (configFor) => new CredentialLifecycleInstance(configFor),
  fixtures: CREDENTIAL_LIFECYCLE_FIXTURES,
};
