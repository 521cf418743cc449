// Lock hold percentiles, from the per-mailbox results' `lockHeldMs` (first
// lock to last unlock, per side, of the last attempt): what apply's progress
// and report and `status` print, so an operator sees how long Cyrus waited.
// One nearest-rank percentile (apply/engine.ts) serves all of them.

import { holdStats } from "../apply/engine.js";

export { percentile } from "../apply/engine.js";

export type LockSide = "master" | "replica";

export interface Percentiles {
  /** How many samples. */
  n: number;
  p50: number;
  p99: number;
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
      const s = holdStats(this.#samples[side]);
      if (s.count > 0) out[side] = { n: s.count, p50: s.p50, p99: s.p99 };
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
