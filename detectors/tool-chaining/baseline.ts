import { quantile } from 'simple-statistics';
import { BoundedMap } from '../../shared/lru.ts';
import type { BaselineConfig } from './config.ts';

/**
 * Per-agent baseline of tool-to-tool transitions, learned from the agent's tasks as the stream goes.
 * Transitions join the baseline as they happen, but a task is always judged against the others: its
 * own contributions are subtracted before judging (so history = every other task seen so far).
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

  /**
   * Judges a transition against the agent's history, minus what the judged task itself contributed
   * (`own`: its counts of this transition and of transitions from `from`, and whether it contributed).
   */
  judge(agentId: string, from: string, to: string, own: OwnCounts, cfg: BaselineConfig): TransitionJudgement {
    const b = this.agents.peek(agentId);
    const tasks = (b?.tasks ?? 0) - (own.contributed ? 1 : 0);
    if (!b || tasks < cfg.min_tasks) return { verdict: 'NO_BASELINE', count: 0, fromTotal: 0, probability: 0, rareThreshold: 0, tasks };
    const count = Math.max(0, (b.edges.get(`${from}\u0000${to}`) ?? 0) - own.edge);
    const fromTotal = Math.max(0, (b.fromTotals.get(from) ?? 0) - own.from);
    const probability = fromTotal > 0 ? count / fromTotal : 0;
    const rareThreshold = b.rareThreshold(cfg.rare_quantile, cfg.rare_max_probability);
    let verdict: TransitionVerdict = 'FREQUENT';
    if (count === 0) verdict = fromTotal >= cfg.min_source_count ? 'UNSEEN' : 'NO_BASELINE';
    else if (probability <= rareThreshold) verdict = 'RARE';
    return { verdict, count, fromTotal, probability, rareThreshold, tasks };
  }

  /** Adds one transition of a task; `firstOfTask` counts the task into the agent's history. */
  learn(agentId: string, from: string, to: string, firstOfTask: boolean, cfg: BaselineConfig): void {
    let b = this.agents.get(agentId);
    if (!b) this.agents.set(agentId, (b = new AgentBaseline()));
    if (firstOfTask) b.tasks++;
    b.add(from, to, cfg.max_transitions_per_agent);
  }
}

/** What the judged task itself contributed to the counts. */
export interface OwnCounts {
  edge: number;
  from: number;
  contributed: boolean;
}
