// Where an apply of one plan stands, from its state directory alone (no host
// is contacted; the index of phases, state-journal.ts, and the state files of
// those that need a person): counts by phase, lock hold percentiles of the done mailboxes,
// the mailboxes that need a person, and whether an apply holds the state
// directory right now. `guidup status PLAN...` renders one per plan.

import { closeSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ExitCode } from "../errors.js";
import { lockHolderPid } from "../fsutil/fcntl-lock.js";
import type { PlanStream } from "../plan/plan-stream.js";
import { nameFilter } from "./glob.js";
import { LockHoldSamples, type LockSide, type Percentiles } from "./lock-hold-samples.js";
import { ATTENTION_PHASES, type MailboxState, PHASES, type Phase } from "./state.js";
import { nameKey } from "./state-journal.js";
import { StateStore, stateDirFor } from "./state-store.js";

export interface AttentionEntry {
  name: string;
  phase: Phase;
  step?: string;
  error?: string;
  attempts: number;
}

export interface PairStatus {
  plan: string;
  pair: string;
  /** Who holds the state directory's lock (a running apply), or null. */
  running: string | null;
  /** Planned mailboxes (matching --only). */
  total: number;
  counts: Record<Phase, number>;
  lockHoldMs: Partial<Record<LockSide, Percentiles>>;
  /** How many done mailboxes took each cut-over path (issue #15). */
  paths: Partial<Record<NonNullable<MailboxState["path"]>, number>>;
  /** Those that need a person, and those in progress, by name. */
  mailboxes: AttentionEntry[];
}

export interface PairStatusRead {
  status: PairStatus;
  /** The plan's mailboxes, before --only. */
  all: number;
}

export async function pairStatus(
  planPath: string,
  plan: PlanStream,
  only: readonly string[],
  /** Told when the index had to be rebuilt from the state files. */
  note: (message: string) => void = () => {},
): Promise<PairStatusRead> {
  const keep = nameFilter(only, []);
  const holds = new LockHoldSamples();
  const store = new StateStore(stateDirFor(planPath), plan.header.id);
  const running = runningApply(store.dir);
  // From the state directory's index (the journal), not a read of every
  // state file; rebuilt from the files when an apply died with it open.
  const { index, rebuilt } = await store.loadIndex(running !== undefined);
  if (rebuilt)
    note(
      `${store.dir}: index rebuilt from the state files (missing, or an apply ended without closing it)`,
    );
  const counts = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  const paths: PairStatus["paths"] = {};
  const needsLook: string[] = [];
  let planned = 0;
  let all = 0;
  for await (const name of plan.names()) {
    all++;
    if (!keep(name)) continue;
    planned++;
    const st = index.get(nameKey(name));
    if (!st) {
      counts.pending++;
      continue;
    }
    counts[st.phase]++;
    if (st.phase === "done") {
      holds.add(st.lockHeldMs);
      if (st.path) paths[st.path] = (paths[st.path] ?? 0) + 1;
    }
    if (ATTENTION_PHASES.has(st.phase) || st.phase === "in-progress") needsLook.push(name);
  }
  // Only those a person should look at are read, for their step and error.
  const attention: AttentionEntry[] = [];
  for (const name of needsLook) {
    const st = await store.read(name);
    if (!st) continue;
    attention.push({
      name: st.name,
      phase: st.phase,
      attempts: st.attempts,
      ...(st.step ? { step: st.step } : {}),
      ...(st.lastError ? { error: st.lastError.message } : {}),
    });
  }
  attention.sort((a, b) => (a.name < b.name ? -1 : 1));
  const status: PairStatus = {
    plan: planPath,
    pair: plan.header.pair,
    running: running ?? null,
    total: planned,
    counts,
    lockHoldMs: holds.percentiles(),
    paths,
    mailboxes: attention,
  };
  return { status, all };
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
