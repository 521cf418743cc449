// Lock hold percentiles, from the per-mailbox results' `lockHeldMs` (first
// lock to last unlock, per side, of the last attempt): what apply's progress
// and report and `status` print, so an operator sees how long Cyrus waited.

export type LockSide = "master" | "replica";

export interface Percentiles {
  /** How many samples. */
  n: number;
  p50: number;
  p99: number;
}

/** Nearest-rank percentile of sorted samples (p in 0..1); undefined when empty. */
export function percentile(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  const rank = Math.max(1, Math.ceil(p * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

/** Collects lock hold samples per side. */
export class LockHoldSamples {
  readonly #samples: Record<LockSide, number[]> = { master: [], replica: [] };

  add(lockHeldMs: Partial<Record<LockSide, number>> | undefined): void {
    if (!lockHeldMs) return;
    for (const side of ["master", "replica"] as const) {
      const ms = lockHeldMs[side];
      if (typeof ms === "number" && Number.isFinite(ms)) this.#samples[side].push(ms);
    }
  }

  percentiles(): Partial<Record<LockSide, Percentiles>> {
    const out: Partial<Record<LockSide, Percentiles>> = {};
    for (const side of ["master", "replica"] as const) {
      const sorted = [...this.#samples[side]].sort((a, b) => a - b);
      const p50 = percentile(sorted, 0.5);
      const p99 = percentile(sorted, 0.99);
      if (p50 !== undefined && p99 !== undefined) out[side] = { n: sorted.length, p50, p99 };
    }
    return out;
  }
}

/** "lock hold p50/p99: master 3/9 ms, replica 2/8 ms", or "" without samples. */
export function formatLockHold(p: Partial<Record<LockSide, Percentiles>>): string {
  const parts = (["master", "replica"] as const)
    .filter((s) => p[s] !== undefined)
    .map((s) => `${s} ${Math.round(p[s]!.p50)}/${Math.round(p[s]!.p99)} ms`);
  return parts.length > 0 ? `lock hold p50/p99: ${parts.join(", ")}` : "";
}
