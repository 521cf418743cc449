// Lock hold percentiles, from the per-mailbox results' `lockHeldMs` (first
// lock to last unlock, per side, of the last attempt): what apply's progress
// and report and `status` print, so an operator sees how long Cyrus waited.
// One nearest-rank percentile (apply/lock-hold-samples.ts) serves all of them.

export {
  LockHoldSamples,
  type LockSide,
  type Percentiles,
  percentile,
} from "../apply/lock-hold-samples.js";

import type { LockSide, Percentiles } from "../apply/lock-hold-samples.js";

/** "lock hold p50/p99: master 3/9 ms, replica 2/8 ms", or "" without samples. */
export function formatLockHold(p: Partial<Record<LockSide, Percentiles>>): string {
  const parts = (["master", "replica"] as const)
    .filter((s) => p[s] !== undefined)
    .map((s) => `${s} ${Math.round(p[s]!.p50)}/${Math.round(p[s]!.p99)} ms`);
  return parts.length > 0 ? `lock hold p50/p99: ${parts.join(", ")}` : "";
}
