// guidup show PLAN: what a reviewer reads before apply — counts by action and
// skip reason, per-host totals, the largest mailboxes; a downgrade plan is
// marked as one. Entries only on request (--entries) or through a filter
// (--only, --action, --min-records, --skipped). Reads only. The plan is
// validated first: a hand edit that breaks the schema is refused with
// file:line:column.

import { globToRegExp, nameFilter } from "../apply/glob.js";
import { ExitCode, UsageError } from "../errors.js";
import type { Action } from "../plan/model.js";
import {
  type EntryFilter,
  keepsPlanned,
  keepsSkipped,
  PLANNED_HEADING,
  planJson,
  ReviewBuilder,
  renderPlanned,
  renderReview,
  renderSkippedEntry,
  reviewHeader,
  SKIPPED_HEADING,
} from "../plan/show.js";
import { parseCommandArgs, parseIntOption } from "./args.js";
import type { Io } from "./io.js";
import { openPlanArg, readPlanArg } from "./plan-arg.js";

const HELP = `usage: guidup show PLAN [--summary] [--entries] [--only GLOB]…
                   [--action version|guid] [--min-records N] [--skipped] [--json]

Summarises a plan for review: mailboxes to apply by action, skipped ones by
reason, per-host totals (records, old-style GUIDs, bytes to hash, cache
coverage) and the largest mailboxes. A downgrade plan (target below 10) is
marked: it drops GUIDs. Then, on request, one line per entry:
  --entries          every entry (planned, then skipped)
  --only GLOB        entries whose name matches GLOB (repeatable; * and ?)
  --action A         planned entries with action A (version or guid)
  --min-records N    planned entries with at least N records on a side
  --skipped          skipped entries only
  --summary          the plan's own summary from its header alone: instant at
                     any size (no largest mailboxes, cache coverage or versions)
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
    // The header's summary only (the default reviews every entry).
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
  if (values.json) {
    // The whole plan, as JSON: held in memory (a tool's input, not a review).
    const plan = await readPlanArg(file, "show");
    io.out(`${JSON.stringify(planJson(plan), null, 2)}\n`);
    return ExitCode.ok;
  }
  const plan = await openPlanArg(file, "show");
  const only = values.only ?? [];
  const filter: EntryFilter = {
    ...(only.length > 0 ? { name: nameFilter(only, []) } : {}),
    ...(action !== undefined ? { action: action as Action } : {}),
    ...(values["min-records"] !== undefined
      ? { minRecords: parseIntOption(values["min-records"], "min-records", 0) }
      : {}),
    ...(values.skipped ? { skippedOnly: true } : {}),
  };
  const listing = values.entries === true || Object.keys(filter).length > 0;
  const hint = `\nentries: guidup show ${file} --entries, or filtered: --only GLOB, --action version|guid, --min-records N, --skipped\n`;
  if (values.summary && !listing) {
    // The header alone: well under a second at any plan size.
    io.out(renderReview(reviewHeader(plan.header)));
    io.out(hint);
    return ExitCode.ok;
  }
  // One pass for the review, the --only check and the counts; a second for the listing.
  const review = new ReviewBuilder(plan.header);
  const unmatched = new Map(only.map((g) => [g, globToRegExp(g)]));
  let names = 0;
  let firstName: string | undefined;
  const seen = (name: string) => {
    names++;
    firstName ??= name;
    for (const [g, re] of unmatched) if (re.test(name)) unmatched.delete(g);
  };
  let keptPlanned = 0;
  let keptSkipped = 0;
  for await (const m of plan.mailboxes()) {
    review.add(m);
    seen(m.name);
    if (listing && keepsPlanned(filter, m)) keptPlanned++;
  }
  for await (const sk of plan.skipped()) {
    review.skip(sk);
    seen(sk.name);
    if (listing && keepsSkipped(filter, sk)) keptSkipped++;
  }
  if (unmatched.size > 0)
    throw new UsageError(
      `--only ${[...unmatched.keys()].map((g) => `'${g}'`).join(", ")} matches none of the ${names} mailboxes of ${file}${firstName !== undefined ? ` (names look like ${firstName})` : ""}; check the pattern: * matches any run of characters, ? one`,
    );
  io.out(renderReview(review.review()));
  if (!listing) {
    io.out(hint);
    return ExitCode.ok;
  }
  io.out(
    `\n${keptPlanned} planned and ${keptSkipped} skipped entries${Object.keys(filter).length > 0 ? " match" : ""}:\n`,
  );
  let heading = false;
  for await (const m of plan.mailboxes()) {
    if (!keepsPlanned(filter, m)) continue;
    if (!heading) io.out(`${PLANNED_HEADING}\n`);
    heading = true;
    io.out(`${renderPlanned(m)}\n`);
    await io.drained();
  }
  heading = false;
  for await (const sk of plan.skipped()) {
    if (!keepsSkipped(filter, sk)) continue;
    if (!heading) io.out(`${SKIPPED_HEADING}\n`);
    heading = true;
    io.out(`${renderSkippedEntry(sk)}\n`);
    await io.drained();
  }
  return ExitCode.ok;
}
