import type { z } from 'zod';
import {
  EVENT_TYPE,
  type Attribution,
  type CanonicalEvent,
  type CredentialBinding,
  type TimelineEvent,
} from '../../shared/event.ts';
import type { CorrelatorConfigSchema } from '../../shared/config.ts';
import { BoundedMap } from '../../shared/lru.ts';

/** Correlator settings (see `correlator` in the config reference). */
export type CorrelatorConfig = z.infer<typeof CorrelatorConfigSchema>;

/**
 * The correlation state machine: resolves every canonical event to a task and binds issued
 * credentials to tasks. Pure (no I/O): the stage around it feeds events in and writes out what it
 * returns, so it is tested directly and behaves the same in embedded and Kafka mode.
 *
 * Resolution order for an event: the task it states itself (agent events, session tags) ->
 * the credential it used (bindings) -> a request id a resolved span also carried -> its trace ->
 * its workload identity when exactly one task is open for it. Credential issuance binds the new
 * credential to the task found from: session tags/metadata -> the parent credential (role
 * chaining) -> request id -> trace -> the STS role session name -> a synthetic session task.
 * Events that resolve nowhere wait (bounded, for a grace period of event time, with a wall-clock
 * bound), then are emitted unattributed with the reason.
 */

/** Where an input event came from on the bus, so the stage knows when its offset is safe to commit. */
export interface SourcePosition {
  topic: string;
  partition: number;
  offset: string;
}

/** An event handed to the correlator, with its bus position. */
export interface CorrelatorInput {
  event: CanonicalEvent;
  position?: SourcePosition;
}

/** What a call to the correlator produced. */
export interface CorrelatorOutput {
  /** Resolved (or finally unattributed) events, ready to store and publish. */
  events: TimelineEvent[];
  /** New or changed credential bindings. */
  bindings: CredentialBinding[];
  /** Positions of inputs that are now fully handled (resolved or emitted unattributed). */
  done: SourcePosition[];
  /** Tasks that closed (end + linger, or idle). */
  closedTasks: string[];
}

interface TaskState {
  agentId: string;
  workloadId: string;
  lastTime: number;
  endedAt: number;
}

interface Pending {
  event: CanonicalEvent;
  position?: SourcePosition;
  wallArrived: number;
  /** Already resolved or expired (lazy deletion from the key indexes). */
  done: boolean;
}

/** Counters exposed as metrics. */
export interface CorrelatorStats {
  resolved: Record<Attribution, number>;
  pendingEvicted: number;
  pendingExpired: number;
  /** Pending events let go because their partition moved to another instance (it handles them). */
  pendingReleased: number;
  tasksClosed: number;
  tasksEvicted: number;
  bindingsEvicted: number;
  joinKeysEvicted: number;
  lateEvents: number;
}

const SYNTHETIC_SESSION_PREFIX = 'session:';

/** The correlator. */
export class Correlator {
  private readonly openTasks: BoundedMap<string, TaskState>;
  /** Recently closed tasks, so late events are marked late rather than reopening them. */
  private readonly closedTasks: BoundedMap<string, number>;
  private readonly bindings: BoundedMap<string, CredentialBinding>;
  private readonly traceTask: BoundedMap<string, string>;
  private readonly requestTask: BoundedMap<string, string>;
  /** workload id -> open task ids seen with that workload. */
  private readonly workloadTasks: BoundedMap<string, Set<string>>;
  /** Unresolved events in arrival order, plus indexes by the keys that could resolve them. */
  private pending: Pending[] = [];
  private pendingHead = 0;
  private pendingLive = 0;
  private readonly pendingByKey = new Map<string, Pending[]>();
  /** Highest event time seen (epoch ms). */
  private maxEventTime = 0;
  /**
   * Highest event time per source partition and when it last delivered (wall clock). The
   * watermark is the minimum over active sources, so a topic read ahead of another (the bus reads
   * topics in turn) cannot expire events whose join is still coming on the slower one.
   */
  private readonly sources = new Map<string, { max: number; lastWall: number }>();
  readonly stats: CorrelatorStats = {
    resolved: { direct: 0, trace: 0, credential: 0, request: 0, workload: 0, session: 0, unattributed: 0 },
    pendingEvicted: 0,
    pendingExpired: 0,
    pendingReleased: 0,
    tasksClosed: 0,
    tasksEvicted: 0,
    bindingsEvicted: 0,
    joinKeysEvicted: 0,
    lateEvents: 0,
  };

  constructor(private readonly cfg: CorrelatorConfig) {
    this.openTasks = new BoundedMap(cfg.maxOpenTasks, (id) => {
      this.stats.tasksEvicted++;
      this.closedTasks.set(id, this.maxEventTime);
    });
    this.closedTasks = new BoundedMap(Math.max(1000, Math.floor(cfg.maxOpenTasks / 4)));
    this.bindings = new BoundedMap(cfg.maxBindings, () => this.stats.bindingsEvicted++);
    this.traceTask = new BoundedMap(cfg.maxJoinKeys, () => this.stats.joinKeysEvicted++);
    this.requestTask = new BoundedMap(cfg.maxJoinKeys, () => this.stats.joinKeysEvicted++);
    this.workloadTasks = new BoundedMap(cfg.maxJoinKeys, () => this.stats.joinKeysEvicted++);
  }

  /** Number of unresolved events waiting. */
  get pendingCount(): number {
    return this.pendingLive;
  }

  get openTaskCount(): number {
    return this.openTasks.size;
  }

  get bindingCount(): number {
    return this.bindings.size;
  }

  /** Loads bindings known from storage or the bindings topic (another instance's work). */
  loadBindings(rows: Iterable<CredentialBinding>): CorrelatorOutput {
    const out = emptyOutput();
    for (const b of rows) {
      const cur = this.bindings.peek(b.credential_id);
      if (!cur || b.issued_at >= cur.issued_at || b.revoked_at > cur.revoked_at) this.bindings.set(b.credential_id, b);
      this.wakeKey(`cred:${b.credential_id}`, out, Date.now());
    }
    return out;
  }

  /** Looks up the binding of a credential (for tests and the API). */
  binding(credentialId: string): CredentialBinding | undefined {
    return this.bindings.peek(credentialId);
  }

  /**
   * Processes a batch of events. Explicit task ids in the batch are learned first, so a child span
   * that arrives in the same request as its root resolves to the root's task.
   */
  ingest(inputs: readonly CorrelatorInput[], now = Date.now()): CorrelatorOutput {
    const out = emptyOutput();
    const wall = Date.now();
    for (const { event, position } of inputs) {
      if (event.time > this.maxEventTime) this.maxEventTime = event.time;
      const key = position ? `${position.topic}/${position.partition}` : '';
      const src = this.sources.get(key);
      if (!src) this.sources.set(key, { max: event.time, lastWall: wall });
      else {
        if (event.time > src.max) src.max = event.time;
        src.lastWall = wall;
      }
      if (event.task_id && event.trace_id && event.source === 'agent') this.traceTask.set(event.trace_id, event.task_id);
    }
    for (const input of inputs) this.process(input, out, now);
    return out;
  }

  /**
   * Expires what has waited long enough: pending events past their grace (event time or wall
   * clock) become unattributed; tasks past end+linger or idle close. `flushAll` expires everything
   * (end of a replay, shutdown of a drained stream).
   */
  tick(now = Date.now(), flushAll = false): CorrelatorOutput {
    const out = emptyOutput();
    const watermark = this.watermark();
    const horizon = watermark - this.cfg.graceMs;
    while (this.pendingHead < this.pending.length) {
      const p = this.pending[this.pendingHead] as Pending;
      if (!p.done) {
        const expired = flushAll || p.event.time < horizon || now - p.wallArrived > this.cfg.graceWallMs;
        if (!expired) {
          // Arrival order approximates event order; an older entry further back is caught on a later tick.
          break;
        }
        this.stats.pendingExpired++;
        this.expire(p, out, now, 'no binding, request id, trace or workload joined it within the grace period');
      }
      this.pendingHead++;
    }
    this.compactPending();
    for (const [id, t] of [...this.openTasks.entries()]) {
      const endDue = t.endedAt > 0 && watermark > t.endedAt + this.cfg.taskLingerMs;
      const idleDue = watermark > t.lastTime + this.cfg.taskIdleMs;
      if (flushAll || endDue || idleDue) {
        this.openTasks.delete(id);
        this.closedTasks.set(id, t.lastTime);
        this.forgetWorkloadTask(t.workloadId, id);
        this.stats.tasksClosed++;
        out.closedTasks.push(id);
      }
    }
    return out;
  }

  /** Event-time watermark: the minimum of the active sources' highest event times. */
  watermark(): number {
    const wall = Date.now();
    let min = Number.POSITIVE_INFINITY;
    for (const s of this.sources.values()) if (wall - s.lastWall <= this.cfg.sourceIdleMs && s.max < min) min = s.max;
    return Number.isFinite(min) ? min : this.maxEventTime;
  }

  private process(input: CorrelatorInput, out: CorrelatorOutput, now: number): void {
    const e = input.event;
    if (e.type === EVENT_TYPE.credentialIssued && e.credential) {
      const res = this.bindIssued(e);
      if (res) {
        this.emit(e, res.taskId, res.attribution, res.joinKey, out, now);
        if (input.position) out.done.push(input.position);
        return;
      }
    } else {
      const res = this.resolve(e);
      if (res) {
        this.applyLifecycle(e, res.taskId);
        this.emit(e, res.taskId, res.attribution, res.joinKey, out, now);
        if (input.position) out.done.push(input.position);
        return;
      }
    }
    this.addPending(input, now, out);
  }

  /** Finds the task of a non-issuance event, or null. */
  private resolve(e: CanonicalEvent): { taskId: string; attribution: Attribution; joinKey: string } | null {
    if (e.task_id) return { taskId: e.task_id, attribution: 'direct', joinKey: e.task_id };
    // Revocation / expiry belong to the task of the credential they end, not of whoever revoked it.
    const candidates = e.type === EVENT_TYPE.credentialIssued ? [e.credential_id] : [e.credential?.id, e.credential_id];
    for (const credId of candidates) {
      if (!credId) continue;
      const b = this.bindings.get(credId);
      if (b) return { taskId: b.task_id, attribution: 'credential', joinKey: credId };
    }
    if (e.request_id) {
      const t = this.requestTask.get(e.request_id);
      if (t) return { taskId: t, attribution: 'request', joinKey: e.request_id };
    }
    if (e.trace_id) {
      const t = this.traceTask.get(e.trace_id);
      if (t) return { taskId: t, attribution: 'trace', joinKey: e.trace_id };
      // Agent spans without an explicit task belong to the task named by their trace.
      if (e.source === 'agent') return { taskId: e.trace_id, attribution: 'trace', joinKey: e.trace_id };
    }
    if (e.workload_id) {
      const tasks = this.workloadTasks.get(e.workload_id);
      if (tasks && tasks.size === 1) {
        const [only] = tasks;
        return { taskId: only as string, attribution: 'workload', joinKey: e.workload_id };
      }
    }
    return null;
  }

  /** Binds an issued credential to a task, or returns null when it should wait for more context. */
  private bindIssued(e: CanonicalEvent): { taskId: string; attribution: Attribution; joinKey: string } | null {
    const cred = e.credential;
    if (!cred) return null;
    let taskId: string | undefined;
    let boundBy = '';
    let joinKey = '';
    const tags = cred.tags ?? {};
    for (const k of this.cfg.taskTagKeys) {
      const v = tags[k];
      if (v) {
        taskId = v;
        boundBy = 'tag';
        joinKey = `${k}=${v}`;
        break;
      }
    }
    if (!taskId && e.task_id) {
      taskId = e.task_id;
      boundBy = 'tag';
      joinKey = e.task_id;
    }
    const parentId = cred.parent_id ?? e.credential_id;
    if (!taskId && parentId) {
      const parent = this.bindings.get(parentId);
      if (parent) {
        taskId = parent.task_id;
        boundBy = 'parent';
        joinKey = parentId;
      }
    }
    if (!taskId && e.request_id) {
      const t = this.requestTask.get(e.request_id);
      if (t) {
        taskId = t;
        boundBy = 'request';
        joinKey = e.request_id;
      }
    }
    if (!taskId && e.trace_id) {
      const t = this.traceTask.get(e.trace_id);
      if (t) {
        taskId = t;
        boundBy = 'trace';
        joinKey = e.trace_id;
      }
    }
    if (!taskId && this.cfg.sessionNameIsTask && cred.session_name) {
      taskId = cred.session_name;
      boundBy = 'session_name';
      joinKey = cred.session_name;
    }
    if (!taskId) return null;
    this.recordBinding(e, taskId, boundBy);
    return { taskId, attribution: boundBy === 'tag' ? 'direct' : boundBy === 'parent' ? 'credential' : boundBy === 'session_name' ? 'session' : (boundBy as Attribution), joinKey };
  }

  private recordBinding(e: CanonicalEvent, taskId: string, boundBy: string): CredentialBinding {
    const cred = e.credential as NonNullable<CanonicalEvent['credential']>;
    const task = this.openTasks.peek(taskId);
    const b: CredentialBinding = {
      credential_id: cred.id,
      kind: cred.kind,
      task_id: taskId,
      agent_id: e.agent_id ?? task?.agentId ?? '',
      workload_id: e.workload_id ?? task?.workloadId ?? '',
      principal: e.principal ?? '',
      subject: cred.subject ?? '',
      session_name: cred.session_name ?? '',
      parent_credential_id: cred.parent_id ?? e.credential_id ?? '',
      issued_at: e.time,
      expires_at: cred.expires_at ?? 0,
      revoked_at: 0,
      src_ip: e.src_ip ?? '',
      host: e.host ?? '',
      event_id: e.event_id,
      bound_by: boundBy,
    };
    this.bindings.set(cred.id, b);
    this.newBindings.push(b);
    return b;
  }

  /** Bindings created while processing the current call; drained into the output by emit/wake. */
  private newBindings: CredentialBinding[] = [];

  /** Revocation and expiry update the binding so later use can be recognised as use-after-revoke. */
  private applyLifecycle(e: CanonicalEvent, taskId: string): void {
    if ((e.type === EVENT_TYPE.credentialRevoked || e.type === EVENT_TYPE.credentialExpired) && e.credential?.id) {
      const b = this.bindings.peek(e.credential.id);
      if (b && b.revoked_at === 0) {
        const updated = { ...b, revoked_at: e.time, event_id: e.event_id };
        this.bindings.set(b.credential_id, updated);
        this.newBindings.push(updated);
      }
    }
    void taskId;
  }

  private emit(e: CanonicalEvent, taskId: string, attribution: Attribution, joinKey: string, out: CorrelatorOutput, now: number): void {
    let late = false;
    let task = this.openTasks.get(taskId);
    if (!task) {
      if (this.closedTasks.has(taskId)) {
        late = true;
        this.stats.lateEvents++;
      } else {
        task = { agentId: '', workloadId: '', lastTime: e.time, endedAt: 0 };
        this.openTasks.set(taskId, task);
      }
    }
    if (task) {
      if (e.time > task.lastTime) task.lastTime = e.time;
      if (!task.agentId && e.agent_id) task.agentId = e.agent_id;
      if (e.source === 'agent' && e.workload_id && !task.workloadId) {
        task.workloadId = e.workload_id;
        let set = this.workloadTasks.get(e.workload_id);
        if (!set) this.workloadTasks.set(e.workload_id, (set = new Set()));
        set.add(taskId);
      }
      if (e.type === EVENT_TYPE.taskEnded) task.endedAt = e.end_time ?? e.time;
    }
    this.stats.resolved[attribution]++;
    out.events.push({
      ...e,
      task_id: taskId,
      attribution,
      join_key: joinKey,
      unattributed_reason: '',
      ingested_at: e.ingested_at ?? now,
      late,
    });
    if (this.newBindings.length > 0) {
      out.bindings.push(...this.newBindings);
      const fresh = this.newBindings;
      this.newBindings = [];
      for (const b of fresh) this.wakeKey(`cred:${b.credential_id}`, out, now);
    }
    // Learn join keys from what just resolved, then let waiting events use them.
    if (e.request_id && !this.requestTask.has(e.request_id)) {
      this.requestTask.set(e.request_id, taskId);
      this.wakeKey(`req:${e.request_id}`, out, now);
    }
    if (e.trace_id && e.source === 'agent' && !this.traceTask.has(e.trace_id)) {
      this.traceTask.set(e.trace_id, taskId);
      this.wakeKey(`trace:${e.trace_id}`, out, now);
    }
    if (e.source === 'agent' && e.workload_id) this.wakeKey(`wl:${e.workload_id}`, out, now);
  }

  private keysOf(e: CanonicalEvent): string[] {
    const keys: string[] = [];
    if (e.credential_id) keys.push(`cred:${e.credential_id}`);
    if (e.credential?.parent_id) keys.push(`cred:${e.credential.parent_id}`);
    if (e.credential?.id && e.type !== EVENT_TYPE.credentialIssued) keys.push(`cred:${e.credential.id}`);
    if (e.request_id) keys.push(`req:${e.request_id}`);
    if (e.trace_id) keys.push(`trace:${e.trace_id}`);
    if (e.workload_id) keys.push(`wl:${e.workload_id}`);
    return keys;
  }

  private addPending(input: CorrelatorInput, now: number, out: CorrelatorOutput): void {
    const p: Pending = { event: input.event, position: input.position, wallArrived: now, done: false };
    this.pending.push(p);
    this.pendingLive++;
    for (const k of this.keysOf(input.event)) {
      let list = this.pendingByKey.get(k);
      if (!list) this.pendingByKey.set(k, (list = []));
      list.push(p);
    }
    // Bounded: beyond the limit the oldest waiting events are stored unattributed now.
    while (this.pendingLive > this.cfg.maxPending && this.pendingHead < this.pending.length) {
      const oldest = this.pending[this.pendingHead++] as Pending;
      if (oldest.done) continue;
      this.stats.pendingEvicted++;
      this.expire(oldest, out, now, 'pending buffer full (correlator.maxPending)');
    }
    this.compactPending();
  }

  /**
   * Lets go of the pending events read from partitions this instance no longer owns (after a
   * rebalance). Their offsets were never committed, so the partition's new owner reads them again
   * and resolves or expires them; kept here as well, they would expire here too and be stored a
   * second time, possibly under another attribution. Returns how many were released.
   */
  releasePartitions(parts: ReadonlyArray<{ topic: string; partition: number }>): number {
    if (parts.length === 0 || this.pendingLive === 0) return 0;
    const lost = new Set(parts.map((p) => `${p.topic}/${p.partition}`));
    let n = 0;
    for (let i = this.pendingHead; i < this.pending.length; i++) {
      const p = this.pending[i] as Pending;
      if (p.done || !p.position || !lost.has(`${p.position.topic}/${p.position.partition}`)) continue;
      p.done = true;
      this.pendingLive--;
      n++;
    }
    this.stats.pendingReleased += n;
    this.compactPending();
    return n;
  }

  /** Re-tries pending events that were waiting on `key`. */
  private wakeKey(key: string, out: CorrelatorOutput, now: number): void {
    const list = this.pendingByKey.get(key);
    if (!list) return;
    this.pendingByKey.delete(key);
    for (const p of list) {
      if (p.done) continue;
      const e = p.event;
      const res = e.type === EVENT_TYPE.credentialIssued && e.credential ? this.bindIssued(e) : this.resolve(e);
      if (!res) {
        // Still unresolved (e.g. woken by a workload key that is ambiguous): keep waiting on its other keys.
        continue;
      }
      p.done = true;
      this.pendingLive--;
      if (e.type !== EVENT_TYPE.credentialIssued) this.applyLifecycle(e, res.taskId);
      this.emit(e, res.taskId, res.attribution, res.joinKey, out, now);
      if (p.position) out.done.push(p.position);
    }
  }

  private expire(p: Pending, out: CorrelatorOutput, now: number, reason: string): void {
    p.done = true;
    this.pendingLive--;
    const e = p.event;
    if (e.type === EVENT_TYPE.credentialIssued && e.credential) {
      // Nothing tied the credential to a task: it gets a session task of its own, so its later use
      // still groups together (and detectors can see a credential nobody issued to a task).
      const taskId = `${SYNTHETIC_SESSION_PREFIX}${e.credential.id}`;
      this.recordBinding(e, taskId, 'session');
      this.emit(e, taskId, 'session', e.credential.id, out, now);
    } else {
      this.stats.resolved.unattributed++;
      out.events.push({
        ...e,
        task_id: '',
        attribution: 'unattributed',
        join_key: '',
        unattributed_reason: reason,
        ingested_at: e.ingested_at ?? now,
        late: false,
      });
    }
    if (p.position) out.done.push(p.position);
  }

  private forgetWorkloadTask(workloadId: string, taskId: string): void {
    if (!workloadId) return;
    const set = this.workloadTasks.peek(workloadId);
    if (!set) return;
    set.delete(taskId);
    if (set.size === 0) this.workloadTasks.delete(workloadId);
  }

  /** Drops consumed slots from the head of the pending queue and stale index entries. */
  private compactPending(): void {
    if (this.pendingHead > 4096 && this.pendingHead * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
    if (this.pendingLive === 0) {
      if (this.pendingByKey.size > 0) this.pendingByKey.clear();
    } else if (this.pendingByKey.size > 2 * this.pendingLive + 1024) {
      // Index lists keep resolved entries until their key wakes; rebuild so they cannot pile up.
      this.pendingByKey.clear();
      for (let i = this.pendingHead; i < this.pending.length; i++) {
        const p = this.pending[i] as Pending;
        if (p.done) continue;
        for (const k of this.keysOf(p.event)) {
          let list = this.pendingByKey.get(k);
          if (!list) this.pendingByKey.set(k, (list = []));
          list.push(p);
        }
      }
    }
  }
}

function emptyOutput(): CorrelatorOutput {
  return { events: [], bindings: [], done: [], closedTasks: [] };
}
