// Where an apply of one plan stands, from its state files alone (no host is
// contacted): counts by phase, lock hold percentiles of the done mailboxes,
// the mailboxes that need a person, and whether an apply holds the state
// directory right now. `guidup status PLAN...` renders one per plan.

import { closeSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ExitCode } from "../errors.js";
import { lockHolderPid } from "../fsutil/fcntl-lock.js";
import type { Plan } from "../plan/model.js";
import { holdStats } from "./engine.js";
import { nameFilter } from "./glob.js";
import { ATTENTION_PHASES, type MailboxState, PHASES, type Phase } from "./state.js";
import { StateStore, stateDirFor } from "./state-store.js";

export interface AttentionEntry {
  name: string;
  phase: Phase;
  step?: string;
  error?: string;
  attempts: number;
}

export type LockSide = "master" | "replica";

export interface PairStatus {
  plan: string;
  pair: string;
  /** Who holds the state directory's lock (a running apply), or null. */
  running: string | null;
  /** Planned mailboxes (matching --only). */
  total: number;
  counts: Record<Phase, number>;
  lockHoldMs: Partial<Record<LockSide, { n: number; p50: number; p99: number }>>;
  /** How many done mailboxes took each cut-over path (issue #15). */
  paths: Partial<Record<NonNullable<MailboxState["path"]>, number>>;
  /** Those that need a person, and those in progress, by name. */
  mailboxes: AttentionEntry[];
}

export async function pairStatus(
  planPath: string,
  plan: Plan,
  only: readonly string[],
): Promise<PairStatus> {
  const keep = nameFilter(only, []);
  const holds: Record<LockSide, number[]> = { master: [], replica: [] };
  const store = new StateStore(stateDirFor(planPath), plan.id);
  const counts = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  const attention: AttentionEntry[] = [];
  const paths: PairStatus["paths"] = {};
  const planned = new Set(plan.mailboxes.filter((m) => keep(m.name)).map((m) => m.name));
  const seen = new Set<string>();
  for await (const st of store.all()) {
    if (!planned.has(st.name)) continue;
    seen.add(st.name);
    counts[st.phase]++;
    if (st.phase === "done")
      for (const side of ["master", "replica"] as const) {
        const ms = st.lockHeldMs?.[side];
        if (typeof ms === "number" && Number.isFinite(ms)) holds[side].push(ms);
      }
    if (st.phase === "done" && st.path) paths[st.path] = (paths[st.path] ?? 0) + 1;
    if (ATTENTION_PHASES.has(st.phase) || st.phase === "in-progress") {
      attention.push({
        name: st.name,
        phase: st.phase,
        attempts: st.attempts,
        ...(st.step ? { step: st.step } : {}),
        ...(st.lastError ? { error: st.lastError.message } : {}),
      });
    }
  }
  counts.pending += planned.size - seen.size;
  attention.sort((a, b) => (a.name < b.name ? -1 : 1));
  const lockHoldMs: PairStatus["lockHoldMs"] = {};
  for (const side of ["master", "replica"] as const) {
    const s = holdStats(holds[side]);
    if (s.count > 0) lockHoldMs[side] = { n: s.count, p50: s.p50, p99: s.p99 };
  }
  return {
    plan: planPath,
    pair: plan.pair,
    running: runningApply(store.dir) ?? null,
    total: planned.size,
    counts,
    lockHoldMs,
    paths,
    mailboxes: attention,
  };
}

/** Like apply's: 3 when a mailbox is replica-ahead, 4 when others need a person. */
export function statusExitCode(counts: Record<Phase, number>): ExitCode {
  if (counts["replica-ahead"] > 0) return ExitCode.replicaAhead;
  for (const p of PHASES)
    if (ATTENTION_PHASES.has(p) && p !== "lagging" && counts[p] > 0) return ExitCode.incomplete;
  // Like apply: a replica still catching up is work left, not a failure.
  if (counts.lagging > 0) return ExitCode.failed;
  return ExitCode.ok;
}

/**
 * Who holds the state directory's lock (a running apply of this plan), from
 * its .owner note; undefined when nobody does. Only asks the kernel (F_OFD_GETLK):
 * taking the lock, even briefly, could turn away an apply starting just then.
 */
function runningApply(stateDir: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(join(stateDir, ".lock"), "r");
  } catch {
    return undefined; // no apply has run
  }
  try {
    if (lockHolderPid(fd) === null) return undefined;
  } finally {
    closeSync(fd);
  }
  try {
    return readFileSync(join(stateDir, ".owner"), "utf8").trim() || "holder unknown";
  } catch {
    return "holder unknown";
  }
}
