// guidup status PLAN... [--json]: where the applies of the plans stand, from
// their state directories alone (no host is contacted). Options → src/apply/
// pair-status.ts per plan → a view (src/cli/views/status.ts).

import { worstExitCode } from "../apply/fleet.js";
import { pairStatus, statusExitCode } from "../apply/pair-status.js";
import { ExitCode } from "../errors.js";
import { parseStatusArgs } from "./arguments/status.js";
import type { Io } from "./io.js";
import { namesOfPlans, openPlanArg, requireOnlyMatchesIn } from "./plan-arg.js";
import { type StatusEntry, statusView } from "./views/status.js";

const HELP = `usage: guidup status PLAN... [--only GLOB]… [--json]

Says whether an apply of each plan is running (and whose), counts the plan's
mailboxes by phase (pending, in-progress, done, replica-ahead, failed,
diverged, stale, skipped), gives the lock hold p50/p99 per side of the done
ones and how many took each cut-over path (from their state), and lists those
that need a person, with their last errors. With several plans (a fleet, one
plan per pair), a block per plan and the fleet's totals. Reads the state
directory only (its journal; every state file when the journal must be
rebuilt); contacts no host.
  --only GLOB  only mailboxes matching GLOB (repeatable; * and ?); with several
               plans it must match a mailbox of at least one of them
  --json       one plan: {"plan", "pair", "running": owner or null, "total",
               "counts": {phase: n}, "lockHoldMs": {side: {n, p50, p99}},
               "paths": {cut-over path: n},
               "mailboxes": [{"name", "phase", …}]}; several plans:
               {"plans": [that, per plan], "fleet": {"plans", "running",
               "total", "counts"}}
Exit codes (several plans: the worst of them, in the order 3, 4, 1, 0):
0 nothing needs a person (work may be left: see the counts),
1 only lagging mailboxes (the replica had not caught up: apply again later),
2 bad input, 3 a mailbox is replica-ahead (run guidup apply PLAN: it repairs
those first), 4 mailboxes are failed, diverged or stale (listed).
`;

export async function run(args: string[], io: Io): Promise<number> {
  const options = parseStatusArgs(args);
  if (options.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  const plans = [];
  for (const path of options.plans) plans.push({ path, plan: await openPlanArg(path, "status") });
  await requireOnlyMatchesIn(
    options.only,
    namesOfPlans(plans.map((p) => p.plan)),
    plans.length === 1 ? options.plans[0]! : `the ${plans.length} plans`,
  );
  const entries: StatusEntry[] = [];
  for (const { path, plan } of plans) {
    const { status, all } = await pairStatus(path, plan, options.only, (m) => io.err(`${m}\n`));
    entries.push({
      status,
      exitCode: statusExitCode(status.counts),
      planned: all,
      filtered: options.only.length > 0,
    });
  }
  statusView(io, options.json).show(entries);
  return worstExitCode(entries.map((e) => e.exitCode));
}
