// guidup diff OLD NEW [--json]: what changed between two plans of the same
// pair — header fields, entries added, removed or changed. Reads only. Both
// plans are validated first. Exit code 1 when they differ, as diff(1) does.

import { ExitCode, UsageError } from "../errors.js";
import { diffPlanStreams, hasDifferences, renderPlanDiff } from "../plan/diff.js";
import { openPlan } from "../plan/plan-stream.js";
import { parseCommandArgs } from "./args.js";
import type { Io } from "./io.js";

const HELP = `usage: guidup diff OLD NEW [--json]

Compares two plans of the same pair: changed header fields (tool, target,
hosts, summary), then mailboxes added (+), removed (-) and changed (~), for
the planned and the skipped lists. id and created always differ and are not
reported.
  --json  the differences as one JSON object
Exit codes: 0 no differences, 1 the plans differ, 2 unreadable or invalid
plan, or plans of different pairs.
`;

export async function run(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandArgs("diff", args, {
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  const [oldFile, newFile] = positionals;
  if (oldFile === undefined || newFile === undefined || positionals.length > 2)
    throw new UsageError("expected two plan files, OLD and NEW (see guidup diff --help)");
  const oldPlan = await openPlan(oldFile);
  const newPlan = await openPlan(newFile);
  const diff = await diffPlanStreams(oldPlan, newPlan, { old: oldFile, new: newFile });
  if (values.json) io.out(`${JSON.stringify(diff, null, 2)}\n`);
  else io.out(renderPlanDiff(diff));
  return hasDifferences(diff) ? ExitCode.failed : ExitCode.ok;
}
