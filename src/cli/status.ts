// guidup status PLAN [--json]: where an apply of PLAN stands, from its state
// files alone (no host is contacted).

import { holdStats } from "../apply/engine.js";
import { ATTENTION_PHASES, PHASES, type Phase } from "../apply/state.js";
import { StateStore, stateDirFor } from "../apply/state-store.js";
import { ExitCode, UsageError } from "../errors.js";
import { readPlan } from "../plan/plan-file.js";
import { parseCommandArgs } from "./args.js";
import type { Io } from "./io.js";

const HELP = `usage: guidup status PLAN [--json]

Counts the plan's mailboxes by phase (pending, in-progress, done,
replica-ahead, failed, diverged, stale, skipped, lagging), the master's and
replica's lock hold p50/p99/max over each mailbox's last attempt, and lists
those that need a person, with their last errors. --json prints
{"plan", "counts": {phase: n}, "lockHold": {master, replica}, "mailboxes": [{"name", "phase", …}]}.
Exit codes: 0 read, 2 bad input.
`;

export async function run(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandArgs("status", args, {
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  const planPath = positionals[0];
  if (!planPath || positionals.length > 1) throw new UsageError("status takes one PLAN file");
  const plan = await readPlan(planPath);
  const store = new StateStore(stateDirFor(planPath));
  const counts = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  const attention: {
    name: string;
    phase: Phase;
    step?: string;
    error?: string;
    attempts: number;
  }[] = [];
  const holds: Record<"master" | "replica", number[]> = { master: [], replica: [] };
  const planned = new Set(plan.mailboxes.map((m) => m.name));
  const seen = new Set<string>();
  for await (const st of store.all()) {
    if (!planned.has(st.name)) continue;
    seen.add(st.name);
    counts[st.phase]++;
    for (const side of ["master", "replica"] as const) {
      const held = st.lockHeldMs?.[side];
      if (held !== undefined) holds[side].push(held);
    }
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
  counts.pending += plan.mailboxes.length - seen.size;
  attention.sort((a, b) => (a.name < b.name ? -1 : 1));
  // Each mailbox's last attempt, per side (state files keep no history).
  const lockHold = { master: holdStats(holds.master), replica: holdStats(holds.replica) };
  if (values.json) {
    io.out(
      `${JSON.stringify({ plan: planPath, pair: plan.pair, total: plan.mailboxes.length, counts, lockHold, mailboxes: attention }, null, 2)}\n`,
    );
    return ExitCode.ok;
  }
  io.out(`${planPath} (pair ${plan.pair}, ${plan.mailboxes.length} planned mailboxes)\n`);
  for (const p of PHASES) if (counts[p] > 0) io.out(`  ${p.padEnd(13)} ${counts[p]}\n`);
  for (const side of ["master", "replica"] as const) {
    const h = lockHold[side];
    if (h.count > 0)
      io.out(
        `  lock hold ${side}: p50 ${h.p50} ms, p99 ${h.p99} ms, max ${h.max} ms (${h.count})\n`,
      );
  }
  if (attention.length > 0) {
    io.out("\nneed attention:\n");
    for (const a of attention)
      io.out(
        `  ${a.phase.padEnd(13)} ${a.name}${a.step ? ` [${a.step}]` : ""}: ${a.error ?? ""}\n`,
      );
  }
  return ExitCode.ok;
}
