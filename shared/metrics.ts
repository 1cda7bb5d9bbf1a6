/**
 * A small Prometheus metrics registry (counters, gauges, histograms with labels) rendered in the
 * text exposition format. Hand-written because the needs are small and it keeps the dependency
 * list to what the design card names.
 */

type Labels = Readonly<Record<string, string>>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  return keys.map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',');
}

abstract class Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly kind: 'counter' | 'gauge' | 'histogram',
  ) {}
  abstract render(): string[];
}

/** Monotonic counter. */
export class Counter extends Metric {
  private readonly values = new Map<string, number>();
  constructor(name: string, help: string) {
    super(name, help, 'counter');
  }
  inc(labels: Labels = {}, n = 1): void {
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + n);
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
  override render(): string[] {
    if (this.values.size === 0) return [`${this.name} 0`];
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`);
  }
}

/** Gauge: set directly, or computed at scrape time by a callback. */
export class Gauge extends Metric {
  private readonly values = new Map<string, number>();
  private collector?: () => Array<[Labels, number]> | number;
  constructor(name: string, help: string) {
    super(name, help, 'gauge');
  }
  set(value: number, labels: Labels = {}): void {
    this.values.set(labelKey(labels), value);
  }
  /** Computes the value(s) at scrape time. */
  collect(fn: () => Array<[Labels, number]> | number): void {
    this.collector = fn;
  }
  override render(): string[] {
    if (this.collector) {
      const v = this.collector();
      if (typeof v === 'number') return [`${this.name} ${v}`];
      return v.map(([l, n]) => `${this.name}${Object.keys(l).length ? `{${labelKey(l)}}` : ''} ${n}`);
    }
    if (this.values.size === 0) return [`${this.name} 0`];
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`);
  }
}

/** Histogram with fixed buckets. */
export class Histogram extends Metric {
  private readonly series = new Map<string, { buckets: number[]; sum: number; count: number }>();
  constructor(
    name: string,
    help: string,
    private readonly bounds: readonly number[],
  ) {
    super(name, help, 'histogram');
  }
  observe(value: number, labels: Labels = {}): void {
    const k = labelKey(labels);
    let s = this.series.get(k);
    if (!s) {
      s = { buckets: this.bounds.map(() => 0), sum: 0, count: 0 };
      this.series.set(k, s);
    }
    for (let i = 0; i < this.bounds.length; i++) if (value <= (this.bounds[i] as number)) s.buckets[i] = (s.buckets[i] as number) + 1;
    s.sum += value;
    s.count += 1;
  }
  override render(): string[] {
    const out: string[] = [];
    for (const [k, s] of this.series) {
      const sep = k ? `${k},` : '';
      this.bounds.forEach((b, i) => out.push(`${this.name}_bucket{${sep}le="${b}"} ${s.buckets[i]}`));
      out.push(`${this.name}_bucket{${sep}le="+Inf"} ${s.count}`);
      out.push(`${this.name}_sum${k ? `{${k}}` : ''} ${s.sum}`);
      out.push(`${this.name}_count${k ? `{${k}}` : ''} ${s.count}`);
    }
    return out;
  }
}

/** A set of metrics exposed together on `/metrics`. */
export class MetricsRegistry {
  private readonly metrics = new Map<string, Metric>();

  private add<M extends Metric>(m: M): M {
    const existing = this.metrics.get(m.name);
    if (existing) {
      if (existing.kind !== m.kind) throw new Error(`metric ${m.name} registered twice with different kinds`);
      return existing as M;
    }
    this.metrics.set(m.name, m);
    return m;
  }

  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help));
  }
  gauge(name: string, help: string): Gauge {
    return this.add(new Gauge(name, help));
  }
  histogram(name: string, help: string, bounds: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, bounds));
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    const lines: string[] = [];
    for (const m of this.metrics.values()) {
      lines.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.kind}`, ...m.render());
    }
    return `${lines.join('\n')}\n`;
  }
}

/**
 * `runtrail_consumer_batch_messages{stage}`: messages per consumed batch. One definition for every
 * consuming stage, so they share buckets and help text.
 */
export function consumerBatchSizes(metrics: MetricsRegistry): Histogram {
  return metrics.histogram('runtrail_consumer_batch_messages', 'Messages per consumed batch, by stage', [1, 10, 50, 100, 500, 1000, 5000, 10000]);
}
