// guidup status PLAN [--json]: where an apply of PLAN stands, from its state
// directory alone (no host is contacted): the index of phases
// (src/apply/state-journal.ts), and the state files of those that need a
// person.

import { closeSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { nameFilter } from "../apply/glob.js";
import { ATTENTION_PHASES, PHASES, type Phase } from "../apply/state.js";
import { nameKey } from "../apply/state-journal.js";
import { StateStore, stateDirFor } from "../apply/state-store.js";
import { ExitCode, UsageError } from "../errors.js";
import { lockHolderPid } from "../fsutil/fcntl-lock.js";
import { parseCommandArgs } from "./args.js";
import type { Io } from "./io.js";
import { formatLockHold, LockHoldSamples } from "./lock-hold.js";
import { openPlanArg, requireOnlyMatchesIn } from "./plan-arg.js";

const HELP = `usage: guidup status PLAN [--only GLOB]… [--json]

Says whether an apply of the plan is running (and whose), counts the plan's
mailboxes by phase (pending, in-progress, done, replica-ahead, failed,
diverged, stale, skipped), gives the lock hold p50/p99 per side of the done
ones (from their state), and lists those that need a person, with their last
errors. Reads the state files only.
  --only GLOB  only mailboxes matching GLOB (repeatable; * and ?)
  --json       {"plan", "running": owner or null, "counts": {phase: n},
               "lockHoldMs": {side: {n, p50, p99}}, "mailboxes": [{"name", "phase", …}]}
Exit codes: 0 nothing needs a person (work may be left: see the counts),
1 only lagging mailboxes (the replica had not caught up: apply again later),
2 bad input, 3 a mailbox is replica-ahead (run guidup apply PLAN: it repairs
those first), 4 mailboxes are failed, diverged or stale (listed).
`;

export async function run(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandArgs("status", args, {
    only: { type: "string", multiple: true },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  const planPath = positionals[0];
  if (!planPath || positionals.length > 1)
    throw new UsageError("status takes one PLAN file (see guidup status --help)");
  const plan = await openPlanArg(planPath, "status");
  const only = values.only ?? [];
  await requireOnlyMatchesIn(only, plan.names(), planPath);
  const keep = nameFilter(only, []);
  const lockHold = new LockHoldSamples();
  const store = new StateStore(stateDirFor(planPath), plan.header.id);
  const running = runningApply(store.dir);
  // From the state directory's index (the journal), not a read of every
  // state file; rebuilt from the files when an apply died with it open.
  const { index, rebuilt } = await store.loadIndex(running !== undefined);
  if (rebuilt)
    io.err(
      `${store.dir}: index rebuilt from the state files (missing, or an apply ended without closing it)\n`,
    );
  const counts = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  const attention: {
    name: string;
    phase: Phase;
    step?: string;
    error?: string;
    attempts: number;
  }[] = [];
  const needsLook: string[] = [];
  let total = 0;
  let planned = 0;
  for await (const name of plan.names()) {
    total++;
    if (!keep(name)) continue;
    planned++;
    const st = index.get(nameKey(name));
    if (!st) {
      counts.pending++;
      continue;
    }
    counts[st.phase]++;
    if (st.phase === "done") lockHold.add(st.lockHeldMs);
    if (ATTENTION_PHASES.has(st.phase) || st.phase === "in-progress") needsLook.push(name);
  }
  // Only those a person should look at are read, for their step and error.
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
  const percentiles = lockHold.percentiles();
  const code = exitCodeFor(counts);
  if (values.json) {
    io.out(
      `${JSON.stringify({ plan: planPath, pair: plan.header.pair, running: running ?? null, total: planned, counts, lockHoldMs: percentiles, mailboxes: attention }, null, 2)}\n`,
    );
    return code;
  }
  const of = only.length > 0 ? ` of ${total}, matching --only` : "";
  io.out(`${planPath} (pair ${plan.header.pair}, ${planned} planned mailboxes${of})\n`);
  if (running) io.out(`  an apply of this plan is running: ${running}\n`);
  for (const p of PHASES) if (counts[p] > 0) io.out(`  ${p.padEnd(13)} ${counts[p]}\n`);
  const locks = formatLockHold(percentiles);
  if (locks) io.out(`  ${locks} (of ${percentiles.master?.n ?? 0} done)\n`);
  if (attention.length > 0) {
    io.out("\nneed attention:\n");
    for (const a of attention)
      io.out(
        `  ${a.phase.padEnd(13)} ${a.name}${a.step ? ` [${a.step}]` : ""}: ${a.error ?? ""}\n`,
      );
  }
  if (code === ExitCode.replicaAhead)
    io.out(`\nreplica-ahead mailboxes: run guidup apply ${planPath} (it repairs them first)\n`);
  else if (code === ExitCode.incomplete)
    io.out(
      `\nlook at the errors above; then guidup apply ${planPath} retries them (stale ones need a new plan, or --allow-drift)\n`,
    );
  return code;
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

/** Like apply's: 3 when a mailbox is replica-ahead, 4 when others need a person. */
function exitCodeFor(counts: Record<Phase, number>): number {
  if (counts["replica-ahead"] > 0) return ExitCode.replicaAhead;
  for (const p of PHASES)
    if (ATTENTION_PHASES.has(p) && p !== "lagging" && counts[p] > 0) return ExitCode.incomplete;
  // Like apply: a replica still catching up is work left, not a failure.
  if (counts.lagging > 0) return ExitCode.failed;
  return ExitCode.ok;
}
