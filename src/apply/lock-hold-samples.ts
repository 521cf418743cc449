// Lock hold samples per side as a histogram (value → how many), and their
// nearest-rank percentiles: apply's engine (its report) and progress add one
// per mailbox attempt, status one per done mailbox of the index — a million
// for a large pair, in a few thousand distinct values, so memory does not
// grow with the pair. The one nearest-rank definition lives here.

export type LockSide = "master" | "replica";

export interface Percentiles {
  /** How many samples. */
  n: number;
  p50: number;
  p99: number;
  max: number;
}

/** p50 / p99 / max of lock holds in ms, over `count` mailbox attempts (apply's report). */
export interface HoldStats {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile of sorted samples (p in 0..1); undefined when empty. */
export function percentile(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[nearestRank(sorted.length, p) - 1];
}

/** The 1-based rank of the p-th percentile of n samples. */
function nearestRank(n: number, p: number): number {
  return Math.min(n, Math.max(1, Math.ceil(p * n)));
}

/**
 * Collects lock hold samples per side, as a histogram (value → how many):
 * the nearest-rank percentiles of a histogram are those of the samples.
 */
export class LockHoldSamples {
  readonly #samples: Record<LockSide, Map<number, number>> = {
    master: new Map(),
    replica: new Map(),
  };

  add(lockHeldMs: Partial<Record<LockSide, number>> | undefined): void {
    if (!lockHeldMs) return;
    for (const side of ["master", "replica"] as const) {
      const ms = lockHeldMs[side];
      if (typeof ms === "number" && Number.isFinite(ms))
        this.#samples[side].set(ms, (this.#samples[side].get(ms) ?? 0) + 1);
    }
  }

  /** Per side with samples: how many, p50, p99, max. */
  percentiles(): Partial<Record<LockSide, Percentiles>> {
    const out: Partial<Record<LockSide, Percentiles>> = {};
    for (const side of ["master", "replica"] as const) {
      const sorted = [...this.#samples[side]].sort((a, b) => a[0] - b[0]);
      const n = sorted.reduce((sum, [, count]) => sum + count, 0);
      if (n === 0) continue;
      out[side] = {
        n,
        p50: rankOf(sorted, n, 0.5),
        p99: rankOf(sorted, n, 0.99),
        max: sorted[sorted.length - 1]?.[0] ?? 0,
      };
    }
    return out;
  }

  /** apply's report: both sides, zeros for a side without samples. */
  holdStats(): Record<LockSide, HoldStats> {
    const p = this.percentiles();
    const of = (s: Percentiles | undefined): HoldStats =>
      s ? { count: s.n, p50: s.p50, p99: s.p99, max: s.max } : { count: 0, p50: 0, p99: 0, max: 0 };
    return { master: of(p.master), replica: of(p.replica) };
  }
}

/** The nearest-rank percentile of a sorted histogram of n samples. */
function rankOf(sorted: readonly [number, number][], n: number, p: number): number {
  const rank = nearestRank(n, p);
  let seen = 0;
  for (const [value, count] of sorted) {
    seen += count;
    if (seen >= rank) return value;
  }
  return sorted[sorted.length - 1]?.[0] ?? 0;
}
