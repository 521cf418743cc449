// Lock hold samples per side as a histogram (value → how many), and their
// nearest-rank percentiles (the same as engine.ts percentile over the
// samples): apply's progress adds one per mailbox, status one per done
// mailbox of the index — a million for a large pair, in a few thousand
// distinct values.

export type LockSide = "master" | "replica";

export interface Percentiles {
  /** How many samples. */
  n: number;
  p50: number;
  p99: number;
}

/**
 * Collects lock hold samples per side, as a histogram (value → how many):
 * status adds one a done mailbox, a million of them for a large pair, and
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

  percentiles(): Partial<Record<LockSide, Percentiles>> {
    const out: Partial<Record<LockSide, Percentiles>> = {};
    for (const side of ["master", "replica"] as const) {
      const sorted = [...this.#samples[side]].sort((a, b) => a[0] - b[0]);
      const n = sorted.reduce((sum, [, count]) => sum + count, 0);
      if (n === 0) continue;
      out[side] = { n, p50: rankOf(sorted, n, 0.5), p99: rankOf(sorted, n, 0.99) };
    }
    return out;
  }
}

/** The nearest-rank percentile (as engine.ts percentile) of a sorted histogram of n samples. */
function rankOf(sorted: readonly [number, number][], n: number, p: number): number {
  const rank = Math.min(n, Math.max(1, Math.ceil(p * n)));
  let seen = 0;
  for (const [value, count] of sorted) {
    seen += count;
    if (seen >= rank) return value;
  }
  return sorted[sorted.length - 1]?.[0] ?? 0;
}
