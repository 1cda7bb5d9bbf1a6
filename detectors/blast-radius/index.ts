import { matchesAnyGlob } from '../../shared/glob.ts';
import { EVENT_TYPE, type TimelineEvent } from '../../shared/event.ts';
import type { Finding, Severity } from '../../shared/finding.ts';
import { contentHash } from '../../shared/ids.ts';
import { BoundedMap, ClosingMap } from '../../shared/lru.ts';
import { ACTION_CAPABILITIES, nameTokens, type Capability, type ToolCatalog } from '../catalog/tool-catalog.ts';
import type { Detector, DetectorInstance, DetectorMeta, TaskView } from '../detector.ts';
import { evidenceCopy, makeFinding, type EvidenceEvent } from '../finding-builder.ts';
import { BlastRadiusConfigSchema, type BlastRadiusConfig } from './config.ts';
import { BLAST_RADIUS_FIXTURES } from './fixtures.ts';
import { rewriteIdentity } from '../identity-rewrites.ts';

/**
 * Blast radius: how much a task (and, across tasks, an identity) has reached within a rolling
 * window of event time, as a policy-weighted score of
 *
 * - distinct resources touched (not counting refused actions),
 * - distinct sensitive data classes (`secret`, `pii`, `financial`, ...),
 * - distinct state-changing operations (successful non-read actions: CloudTrail's `readOnly` when
 *   present, else the tool catalog's capabilities for tool calls, else the action's verb),
 *   with extra weight for tool capabilities such as `spends_money`,
 * - distinct privileged (admin / IAM) state-changing actions.
 *
 * The score escalates through three levels: `notify` (medium), `approval_required` (high) and
 * `contain` (critical). Each level is reported once per task / identity (deterministic finding id),
 * when the score first crosses it; a jump over several levels reports the highest. Every finding
 * lists each contribution in its metrics and summary.
 */

export { BlastRadiusConfigSchema, type BlastRadiusConfig } from './config.ts';

/** Metadata of the blast-radius detector. */
export const BLAST_RADIUS_META: DetectorMeta = {
  id: 'blast-radius',
  title: 'Blast radius',
  description:
    'Per task and per identity, the distinct resources, sensitive data classes, state-changing and privileged actions reached in a rolling window, weighted by policy; escalates notify -> approval_required -> contain.',
  defaultSeverity: 'high',
  tags: ['owasp-agentic:T2', 'owasp-agentic:T3', 'maestro:L3', 'maestro:L4', 'nist-ai-rmf:MANAGE-2.4', 'nist-ai-rmf:MEASURE-2.7'],
  falsePositives: [
    'Batch and migration jobs that legitimately touch many resources: raise the identity thresholds for their agents or workloads.',
    'Administrative agents whose purpose is IAM changes: per-agent overrides of weights.privileged.',
  ],
  rules: {
    'task-blast-radius': "A task's weighted reach crossed notify / approval_required / contain.",
    'identity-blast-radius': "An identity's weighted reach across tasks crossed notify / approval_required / contain.",
  },
};

/** Response levels, lowest first, with their finding severities. */
export const BLAST_RADIUS_LEVELS = [
  { level: 'notify', key: 'notify', severity: 'medium' },
  { level: 'approval_required', key: 'approval', severity: 'high' },
  { level: 'contain', key: 'contain', severity: 'critical' },
] as const satisfies ReadonlyArray<{ level: string; key: 'notify' | 'approval' | 'contain'; severity: Severity }>;

/** One distinct thing a scope reached: when last (event time) and the event that first showed it. */
interface Item {
  time: number;
  event: EvidenceEvent;
}

/**
 * A scope's category before its first item: shared by every scope, so a scope pays only for what it
 * reached (five empty maps were ~450 B per scope, and most tasks reach two or three categories).
 * Never written to: {@link BlastRadiusInstance} swaps in a map of the scope's own at the first item,
 * and a write that got here anyway throws instead of leaking items into every scope.
 */
class NoItems<V> extends BoundedMap<string, V> {
  constructor() {
    super(1);
  }

  override set(): void {
    throw new Error('blast-radius: write to the shared empty category');
  }
}

const NO_ITEMS = new NoItems<Item>();
/** The same object, typed for the capabilities category (a map's value type is invariant). */
const NO_CAPABILITY_ITEMS = NO_ITEMS as unknown as BoundedMap<string, Item & { capability: Capability }>;

type Category = 'resources' | 'dataClasses' | 'changes' | 'privileged' | 'capabilities';

/** What one task or identity has reached in the window. */
interface ScopeState {
  resources: BoundedMap<string, Item>;
  dataClasses: BoundedMap<string, Item>;
  changes: BoundedMap<string, Item>;
  privileged: BoundedMap<string, Item>;
  /** Keyed `capability|operation`. */
  capabilities: BoundedMap<string, Item & { capability: Capability }>;
  /** Levels already reported; created at the first (most scopes never report one). */
  emitted: Set<string> | undefined;
}

/** What one event contributes. */
interface Contribution {
  resources: string[];
  dataClasses: string[];
  change?: string;
  privileged?: string;
  capabilities: Capability[];
}

/** Counters of what the detector's bounded state evicted. */
export interface BlastRadiusStats {
  scopesEvicted: number;
  itemsEvicted: number;
}

/** Score breakdown. */
export interface ScoreBreakdown {
  score: number;
  metrics: Record<string, number>;
  parts: string[];
}



function taskAgent(task: TaskView): string {
  for (const e of task.events) if (e.agent_id) return e.agent_id;
  return '';
}

/** The verb of an action: `s3:GetObject` -> `get`, `dynamodb:BatchGetItem` -> `get`, `k8s:get` -> `get`. */
function verbOf(action: string): string | undefined {
  const name = action.includes(':') ? action.slice(action.indexOf(':') + 1) : action;
  const tokens = nameTokens(name);
  return tokens[0] === 'batch' ? tokens[1] : tokens[0];
}

/** The detector instance; exported for tests that inspect its bounded state. */
export class BlastRadiusInstance implements DetectorInstance {
  /** Open tasks' and identities' scopes (`max_scopes`) and, for late events, closed tasks' (`max_closed_tasks`). */
  private readonly scopes: ClosingMap<string, ScopeState>;
  private itemsEvicted = 0;
  private readonly maxItems: number;

  constructor(
    private readonly configFor: (agentId: string) => BlastRadiusConfig,
    private readonly catalog: ToolCatalog,
  ) {
    // Sizes come from the base policy: state is shared by all agents.
    const base = configFor('');
    this.scopes = new ClosingMap(base.max_scopes, base.max_closed_tasks);
    this.maxItems = base.max_items_per_scope;
  }

  /** Eviction counts of the detector's bounded state. */
  get stats(): BlastRadiusStats {
    return { scopesEvicted: this.scopes.evicted, itemsEvicted: this.itemsEvicted };
  }

  stateEvictions(): Readonly<Record<string, number>> {
    return { max_scopes: this.scopes.evicted, max_items_per_scope: this.itemsEvicted };
  }

  /** Scopes scored at the moment. */
  get scopeCount(): number {
    return this.scopes.size;
  }

  onEvent(e: TimelineEvent, task: TaskView): Finding[] {
    const out: Finding[] = [];
    const taskCfg = this.configFor(e.agent_id ?? taskAgent(task));
    if (task.taskId && taskCfg.task.enabled) {
      const c = this.contribution(e, taskCfg);
      this.score(['task', task.taskId].join(':'), e, c, taskCfg, 'task', task.taskId, out);
    }
    const idCfg = e.agent_id ? this.configFor(e.agent_id) : taskCfg;
    if (idCfg.identity.enabled && idCfg.identity.sources.includes(e.source)) {
      const raw = e.workload_id ?? e.principal;
      if (raw) {
        const identity = rewriteIdentity(raw, idCfg.identity.identity_rewrites);
        this.score(['identity', identity].join(':'), e, this.contribution(e, idCfg), idCfg, 'identity', identity, out);
      }
    }
    return out;
  }

  /** Classifies what one event reaches. */
  contribution(e: TimelineEvent, cfg: BlastRadiusConfig): Contribution {
    const none: Contribution = { resources: [], dataClasses: [], capabilities: [] };
    if (e.outcome === 'failure' || (e.outcome === 'unknown' && !cfg.count_unknown_outcome)) return none;
    // Lifecycle events describe credentials and tasks, not reach.
    if (e.type === EVENT_TYPE.taskStarted || e.type === EVENT_TYPE.taskEnded || e.type === EVENT_TYPE.credentialRevoked || e.type === EVENT_TYPE.credentialExpired) return none;
    const c: Contribution = { resources: e.resources.map((r) => r.id), dataClasses: [...new Set(e.data_classes)], capabilities: [] };
    if (e.type === EVENT_TYPE.credentialIssued || e.type === EVENT_TYPE.modelCall || e.type === EVENT_TYPE.agentDelegation) return c;

    let changes: boolean;
    let privileged = false;
    const target = e.resources[0]?.id;
    if (e.type === EVENT_TYPE.toolCall && e.tool) {
      const cls = this.catalog.classify(e.tool);
      const acting = [...cls.capabilities].filter((x) => ACTION_CAPABILITIES.has(x));
      changes = acting.length > 0;
      privileged = changes && cls.capabilities.has('admin');
      c.capabilities = acting;
    } else {
      const ro = e.attributes[cfg.read_only_attribute];
      if (typeof ro === 'boolean' || ro === 'true' || ro === 'false') changes = !(ro === true || ro === 'true');
      else {
        const verb = e.action ? verbOf(e.action) : undefined;
        changes = verb === undefined ? false : cfg.write_verbs.includes(verb) ? true : cfg.read_verbs.includes(verb) ? false : cfg.unknown_verbs_change_state;
      }
      privileged =
        changes &&
        ((e.action !== undefined && matchesAnyGlob(cfg.privileged_actions, e.action)) || e.resources.some((r) => matchesAnyGlob(cfg.privileged_resources, r.id) || (r.type !== undefined && matchesAnyGlob(cfg.privileged_resources, r.type))));
    }
    if (!changes) return c;
    const action = e.action ?? (e.tool ? `tool:${e.tool.name}` : e.type);
    // Two sends to different recipients are two changes; the same call repeated is one.
    // Joined, not a template: the key is held per scope item, and a template's result is a
    // concatenated string that keeps a 32 B cons header (and, until hashed, its parts) alive.
    c.change = [action, target ?? (e.tool?.arguments ? contentHash(e.tool.arguments) : '')].join('|');
    // Privilege counts per action: the level of access, not the number of targets.
    if (privileged) c.privileged = action;
    return c;
  }

  private readonly onItemEvicted = (): void => void this.itemsEvicted++;

  /** A closed task's scope leaves the open ones, so finished tasks never push out running ones. */
  onTaskClosed(task: TaskView): Finding[] {
    this.scopes.close(`task:${task.taskId}`);
    return [];
  }

  private state(key: string): ScopeState {
    // A late event of a closed task finds its scope again (reopened).
    let s = this.scopes.get(key);
    if (!s) {
      s = { resources: NO_ITEMS, dataClasses: NO_ITEMS, changes: NO_ITEMS, privileged: NO_ITEMS, capabilities: NO_CAPABILITY_ITEMS, emitted: undefined };
      this.scopes.set(key, s);
    }
    return s;
  }

  /** The scope's own map of a category, created at its first item. */
  private writable<C extends Category>(s: ScopeState, category: C): ScopeState[C] {
    if (s[category] instanceof NoItems) s[category] = new BoundedMap(this.maxItems, this.onItemEvicted) as ScopeState[C];
    return s[category];
  }

  private score(key: string, e: TimelineEvent, c: Contribution, cfg: BlastRadiusConfig, scope: 'task' | 'identity', name: string, out: Finding[]): void {
    const hasAny = c.resources.length > 0 || c.dataClasses.length > 0 || c.change !== undefined;
    if (!hasAny && !this.scopes.has(key)) return;
    const s = this.state(key);
    const cutoff = e.time - cfg.window_ms;
    for (const m of [s.resources, s.dataClasses, s.changes, s.privileged, s.capabilities] as Array<BoundedMap<string, Item>>) prune(m, cutoff);
    if (!hasAny) return;
    let ev: EvidenceEvent | undefined;
    const touch = (category: Exclude<Category, 'capabilities'>, k: string) => {
      const cur = s[category].peek(k);
      if (cur) {
        if (e.time > cur.time) s[category].set(k, { ...cur, time: e.time });
        return;
      }
      ev ??= evidenceCopy(e);
      this.writable(s, category).set(k, { time: e.time, event: ev });
    };
    for (const r of c.resources) touch('resources', r);
    for (const d of c.dataClasses) touch('dataClasses', d);
    if (c.change) {
      touch('changes', c.change);
      for (const cap of c.capabilities) {
        if (cfg.weights.capabilities[cap] === undefined) continue;
        const k = [cap, c.change].join('|');
        const cur = s.capabilities.peek(k);
        if (cur) {
          if (e.time > cur.time) s.capabilities.set(k, { ...cur, time: e.time });
          continue;
        }
        ev ??= evidenceCopy(e);
        this.writable(s, 'capabilities').set(k, { time: e.time, event: ev, capability: cap });
      }
    }
    if (c.privileged) touch('privileged', c.privileged);

    const b = breakdown(s, cfg);
    const t = scope === 'task' ? cfg.task : cfg.identity;
    let crossed: (typeof BLAST_RADIUS_LEVELS)[number] | undefined;
    for (const l of BLAST_RADIUS_LEVELS) if (b.score >= t[l.key] && !(s.emitted?.has(l.level) ?? false)) crossed = l;
    if (!crossed) return;
    // Lower levels crossed by the same event are implied by the higher one.
    const emitted = (s.emitted ??= new Set());
    for (const l of BLAST_RADIUS_LEVELS) if (b.score >= t[l.key]) emitted.add(l.level);
    const threshold = t[crossed.key];
    const evidence = topEvidence(s, cfg, e);
    const subject = scope === 'task' ? `task ${name}` : `identity ${name}`;
    out.push(
      makeFinding(BLAST_RADIUS_META, {
        rule: scope === 'task' ? 'task-blast-radius' : 'identity-blast-radius',
        severity: crossed.severity,
        title: `Blast radius of ${subject} reached ${crossed.level} (score ${round(b.score)} >= ${threshold})`,
        summary: `Within ${Math.round(cfg.window_ms / 60_000)} min, ${subject} scored ${round(b.score)} = ${b.parts.join(' + ')}; thresholds notify ${t.notify}, approval ${t.approval}, contain ${t.contain}.`,
        taskId: scope === 'task' ? name : '',
        evidence,
        joinKeys: scope === 'task' ? { task_id: name, level: crossed.level } : { identity: name, level: crossed.level, ...(e.task_id ? { task_id: e.task_id } : {}) },
        windowStart: Math.max(cutoff, Math.min(...evidence.map((x) => x.time))),
        windowEnd: e.time,
        metrics: { ...b.metrics, threshold, notify: t.notify, approval: t.approval, contain: t.contain, window_s: Math.round(cfg.window_ms / 1000) },
        dedupKey: `${key}|${crossed.level}`,
      }),
    );
  }
}

/** Drops items last seen before the window (maps are in recency order, so the stale ones lead). */
function prune(m: BoundedMap<string, Item>, cutoff: number): void {
  const stale: string[] = [];
  for (const [k, v] of m.entries()) {
    if (v.time >= cutoff) break;
    stale.push(k);
  }
  for (const k of stale) m.delete(k);
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** The score and each contribution, as metrics (`resources`, `weight_resources`, `data_class_secret`, ...). */
export function breakdown(s: Pick<ScopeState, 'resources' | 'dataClasses' | 'changes' | 'privileged' | 'capabilities'>, cfg: BlastRadiusConfig): ScoreBreakdown {
  const w = cfg.weights;
  const metrics: Record<string, number> = {};
  const parts: string[] = [];
  const resources = s.resources.size;
  metrics.resources = resources;
  metrics.weight_resources = resources * w.resource;
  if (resources > 0) parts.push(`${resources} resources x ${w.resource} (${round(metrics.weight_resources)})`);
  let classWeight = 0;
  for (const [cls] of s.dataClasses.entries()) {
    const wc = w.data_classes[cls] ?? w.other_data_class;
    metrics[`data_class_${cls}`] = wc;
    classWeight += wc;
    parts.push(`data class ${cls} (${wc})`);
  }
  metrics.data_classes = s.dataClasses.size;
  metrics.weight_data_classes = classWeight;
  metrics.state_changes = s.changes.size;
  metrics.weight_state_changes = s.changes.size * w.state_change;
  if (s.changes.size > 0) parts.push(`${s.changes.size} state-changing actions x ${w.state_change} (${round(metrics.weight_state_changes)})`);
  metrics.privileged_actions = s.privileged.size;
  metrics.weight_privileged = s.privileged.size * w.privileged;
  if (s.privileged.size > 0) parts.push(`${s.privileged.size} privileged actions x ${w.privileged} (${round(metrics.weight_privileged)})`);
  const capCounts = new Map<Capability, number>();
  for (const v of s.capabilities.values()) capCounts.set(v.capability, (capCounts.get(v.capability) ?? 0) + 1);
  let capWeight = 0;
  for (const [cap, n] of capCounts) {
    const wc = (w.capabilities[cap] ?? 0) * n;
    metrics[`capability_${cap}`] = n;
    metrics[`weight_capability_${cap}`] = wc;
    capWeight += wc;
    parts.push(`${n} ${cap} x ${w.capabilities[cap] ?? 0} (${round(wc)})`);
  }
  metrics.weight_capabilities = capWeight;
  const score = metrics.weight_resources + classWeight + metrics.weight_state_changes + metrics.weight_privileged + capWeight;
  metrics.score = round(score);
  return { score, metrics, parts: parts.length > 0 ? parts : ['nothing'] };
}

/** The heaviest contributions' events (privileged, capabilities, data classes, changes, resources), the current event last. */
function topEvidence(s: ScopeState, cfg: BlastRadiusConfig, current: TimelineEvent): EvidenceEvent[] {
  const ranked: Array<{ w: number; e: EvidenceEvent }> = [];
  for (const v of s.privileged.values()) ranked.push({ w: cfg.weights.privileged, e: v.event });
  for (const v of s.capabilities.values()) ranked.push({ w: cfg.weights.capabilities[v.capability] ?? 0, e: v.event });
  for (const [cls, v] of s.dataClasses.entries()) ranked.push({ w: cfg.weights.data_classes[cls] ?? cfg.weights.other_data_class, e: v.event });
  for (const v of s.changes.values()) ranked.push({ w: cfg.weights.state_change, e: v.event });
  for (const v of s.resources.values()) ranked.push({ w: cfg.weights.resource, e: v.event });
  ranked.sort((a, b) => b.w - a.w);
  const seen = new Set<string>([current.event_id]);
  const out: EvidenceEvent[] = [];
  for (const r of ranked) {
    if (out.length >= cfg.max_evidence - 1) break;
    if (seen.has(r.e.event_id)) continue;
    seen.add(r.e.event_id);
    out.push(r.e);
  }
  out.push(evidenceCopy(current));
  return out;
}

/** The blast-radius detector. */
export const blastRadiusDetector: Detector<BlastRadiusConfig> = {
  meta: BLAST_RADIUS_META,
  configSchema: BlastRadiusConfigSchema,
  create: (configFor, ctx) => new BlastRadiusInstance(configFor, ctx.catalog),
  fixtures: BLAST_RADIUS_FIXTURES,
};
