import { quantile } from 'simple-statistics';
import { BoundedMap } from '../../shared/lru.ts';
import type { BaselineConfig } from './config.ts';

/**
 * Per-agent baseline of tool-to-tool transitions, learned from the agent's earlier tasks in the
 * stream. A task's own transitions join the baseline only when the task closes (or its state is
 * evicted), so a task is always judged against history, never against itself.
 */

/** The pseudo-tool a task starts from. */
export const TASK_START = '^start';

/** Verdict on one transition. */
export type TransitionVerdict = 'FREQUENT' | 'RARE' | 'UNSEEN' | 'NO_BASELINE';

/** A judged transition, with the numbers behind the verdict. */
export interface TransitionJudgement {
  verdict: TransitionVerdict;
  /** Times this transition was seen in history. */
  count: number;
  /** Times the source tool was followed by anything in history. */
  fromTotal: number;
  /** count / fromTotal (0 when unseen). */
  probability: number;
  /** The agent's RARE threshold on probabilities (quantile, capped). */
  rareThreshold: number;
  /** Tasks of history. */
  tasks: number;
}

class AgentBaseline {
  tasks = 0;
  readonly edges = new Map<string, number>();
  readonly fromTotals = new Map<string, number>();
  /** Transitions not recorded because the per-agent limit was reached. */
  evicted = 0;
  private threshold: { q: number; cap: number; value: number } | undefined;

  add(from: string, to: string, maxEdges: number): void {
    const k = `${from}\u0000${to}`;
    const n = this.edges.get(k);
    if (n === undefined && this.edges.size >= maxEdges) {
      this.evicted++;
      return;
    }
    this.edges.set(k, (n ?? 0) + 1);
    this.fromTotals.set(from, (this.fromTotals.get(from) ?? 0) + 1);
    this.threshold = undefined;
  }

  rareThreshold(q: number, cap: number): number {
    if (this.threshold && this.threshold.q === q && this.threshold.cap === cap) return this.threshold.value;
    const probs: number[] = [];
    for (const [k, n] of this.edges) {
      const from = k.slice(0, k.indexOf('\u0000'));
      probs.push(n / (this.fromTotals.get(from) ?? n));
    }
    const value = probs.length === 0 ? 0 : Math.min(cap, quantile(probs, q));
    this.threshold = { q, cap, value };
    return value;
  }
}

/** Baselines of all agents (bounded LRU). */
export class BaselineStore {
  private readonly agents: BoundedMap<string, AgentBaseline>;

  constructor(maxAgents: number) {
    this.agents = new BoundedMap(maxAgents);
  }

  /** Agents dropped because the store was full. */
  get evictedAgents(): number {
    return this.agents.evicted;
  }

  /** Judges a transition against the agent's history. */
  judge(agentId: string, from: string, to: string, cfg: BaselineConfig): TransitionJudgement {
    const b = this.agents.peek(agentId);
    const tasks = b?.tasks ?? 0;
    if (!b || tasks < cfg.min_tasks) return { verdict: 'NO_BASELINE', count: 0, fromTotal: 0, probability: 0, rareThreshold: 0, tasks };
    const count = b.edges.get(`${from}\u0000${to}`) ?? 0;
    const fromTotal = b.fromTotals.get(from) ?? 0;
    const probability = fromTotal > 0 ? count / fromTotal : 0;
    const rareThreshold = b.rareThreshold(cfg.rare_quantile, cfg.rare_max_probability);
    let verdict: TransitionVerdict = 'FREQUENT';
    if (count === 0) verdict = fromTotal >= cfg.min_source_count ? 'UNSEEN' : 'NO_BASELINE';
    else if (probability <= rareThreshold) verdict = 'RARE';
    return { verdict, count, fromTotal, probability, rareThreshold, tasks };
  }

  /** Adds one finished task's transitions to its agent's history. */
  learn(agentId: string, transitions: ReadonlyArray<readonly [string, string]>, cfg: BaselineConfig): void {
    let b = this.agents.get(agentId);
    if (!b) this.agents.set(agentId, (b = new AgentBaseline()));
    b.tasks++;
    for (const [from, to] of transitions) b.add(from, to, cfg.max_transitions_per_agent);
  }
}
