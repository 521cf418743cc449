// guidup show PLAN [--json]: what a reviewer reads before apply — counts by
// action and skip reason, per-host totals, the largest mailboxes — then one
// line per entry. Reads only. The plan is validated first: a hand edit that
// breaks the schema is refused with file:line:column.

import { ExitCode, UsageError } from "../errors.js";
import { readPlan } from "../plan/plan-file.js";
import { planJson, renderPlanEntries, renderPlanSummary } from "../plan/show.js";
import { parseCommandArgs } from "./args.js";
import type { Io } from "./io.js";

const HELP = `usage: guidup show PLAN [--json] [--summary]

Summarises a plan for review: mailboxes to apply by action, skipped ones by
reason, per-host totals (records, old-style GUIDs, bytes to hash, cache
coverage) and the largest mailboxes; then one line per entry.
  --summary  the summary only, no entries
  --json     {"review": {...}, "plan": {...}} instead of text
Exit codes: 0 ok, 2 unreadable or invalid plan.
`;

export async function run(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandArgs("show", args, {
    json: { type: "boolean" },
    summary: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  const file = positionals[0];
  if (file === undefined || positionals.length > 1)
    throw new UsageError("expected one plan file (see guidup show --help)");
  const plan = await readPlan(file);
  if (values.json) {
    io.out(`${JSON.stringify(planJson(plan), null, 2)}\n`);
    return ExitCode.ok;
  }
  io.out(renderPlanSummary(plan));
  if (!values.summary) {
    io.out("\n");
    for (const line of renderPlanEntries(plan)) {
      io.out(`${line}\n`);
      await io.drained();
    }
  }
  return ExitCode.ok;
}
