// guidup show PLAN: what a reviewer reads before apply — counts by action and
// skip reason, per-host totals, the largest mailboxes; a downgrade plan is
// marked as one. Entries only on request (--entries) or through a filter
// (--only, --action, --min-records, --skipped). Reads only. The plan is
// validated first: a hand edit that breaks the schema is refused with
// file:line:column.

import { nameFilter } from "../apply/glob.js";
import { ExitCode, UsageError } from "../errors.js";
import type { Action } from "../plan/model.js";
import {
  type EntryFilter,
  filterEntries,
  planJson,
  renderPlanEntries,
  renderPlanSummary,
} from "../plan/show.js";
import { parseCommandArgs, parseIntOption } from "./args.js";
import type { Io } from "./io.js";
import { readPlanArg, requireOnlyMatches } from "./plan-arg.js";

const HELP = `usage: guidup show PLAN [--entries] [--only GLOB]… [--action version|guid]
                   [--min-records N] [--skipped] [--json]

Summarises a plan for review: mailboxes to apply by action, skipped ones by
reason, per-host totals (records, old-style GUIDs, bytes to hash, cache
coverage) and the largest mailboxes. A downgrade plan (target below 10) is
marked: it drops GUIDs. Then, on request, one line per entry:
  --entries          every entry (planned, then skipped)
  --only GLOB        entries whose name matches GLOB (repeatable; * and ?)
  --action A         planned entries with action A (version or guid)
  --min-records N    planned entries with at least N records on a side
  --skipped          skipped entries only
  --json             {"review": {...}, "plan": {...}} instead of text (the whole plan)
Exit codes: 0 ok, 2 unreadable or invalid plan, or a filter that matches nothing.
`;

const ACTIONS: readonly Action[] = ["version", "guid"];

export async function run(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandArgs("show", args, {
    entries: { type: "boolean" },
    only: { type: "string", multiple: true },
    action: { type: "string" },
    "min-records": { type: "string" },
    skipped: { type: "boolean" },
    json: { type: "boolean" },
    // The summary alone was --summary; it is now the default.
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
  const action = values.action;
  if (action !== undefined && !ACTIONS.includes(action as Action))
    throw new UsageError(`--action ${action}: give version or guid`);
  const plan = await readPlanArg(file, "show");
  if (values.json) {
    io.out(`${JSON.stringify(planJson(plan), null, 2)}\n`);
    return ExitCode.ok;
  }
  const only = values.only ?? [];
  requireOnlyMatches(
    only,
    [...plan.mailboxes, ...plan.skipped].map((m) => m.name),
    file,
  );
  const filter: EntryFilter = {
    ...(only.length > 0 ? { name: nameFilter(only, []) } : {}),
    ...(action !== undefined ? { action: action as Action } : {}),
    ...(values["min-records"] !== undefined
      ? { minRecords: parseIntOption(values["min-records"], "min-records", 0) }
      : {}),
    ...(values.skipped ? { skippedOnly: true } : {}),
  };
  const listing = values.entries === true || Object.keys(filter).length > 0;
  io.out(renderPlanSummary(plan));
  if (!listing) {
    io.out(
      `\nentries: guidup show ${file} --entries, or filtered: --only GLOB, --action version|guid, --min-records N, --skipped\n`,
    );
    return ExitCode.ok;
  }
  const kept = filterEntries(plan, filter);
  io.out(
    `\n${kept.mailboxes.length} planned and ${kept.skipped.length} skipped entries${Object.keys(filter).length > 0 ? " match" : ""}:\n`,
  );
  for (const line of renderPlanEntries(plan, filter)) {
    io.out(`${line}\n`);
    await io.drained();
  }
  return ExitCode.ok;
}
