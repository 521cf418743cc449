// guidup verify --inventory FILE [--pair NAME] | --plan PLAN: checks that the
// upgrade is complete and correct on both sides of each pair (or of the
// plan's mailboxes), and prints a summary with the problems by mailbox.
// The pair operation is src/apply/verify-pair.ts; this file parses the
// options, picks the pairs and renders the reports (human or JSON).

import { nameFilter } from "../apply/glob.js";
import { listMailboxes } from "../apply/scan-pair.js";
import {
  VERIFY_KINDS,
  type VerifyJob,
  type VerifyReport,
  verifyJob,
} from "../apply/verify-pair.js";
import { TARGET_MINOR } from "../cyrus/formats/index.js";
import { ExitCode, UsageError } from "../errors.js";
import type { HostConnection } from "../transport/types.js";
import { parseIntOption } from "./args.js";
import {
  HOST_KEY_FLAGS,
  type HostKeyOptions,
  hostKeyOptions,
  INVENTORY_FLAGS,
  type InventoryOptions,
  inventoryOptions,
  JSON_FLAG,
  pairsFor,
  parseFlags,
} from "./flag-groups.js";
import type { Io } from "./io.js";
import { agentLogger, withHostKeyPolicy } from "./pairs.js";
import { openPlanArg, requireOnlyMatches } from "./plan-arg.js";
import { withProgress } from "./progress.js";
import { chooseView, jsonView, type Views } from "./view.js";

const HELP = `usage: guidup verify --inventory FILE [--pair NAME] | --plan PLAN
                     [--only GLOB]… [--sample N] [--target-version N]
                     [--details] [--json] [--accept-new-host-keys]

For every mailbox of each pair: both sides at the target version, no
old-style GUIDs left, master and replica (uid, GUID) lists identical, and each
GUID equal to the SHA1 of its message file. Reads only. Prints a summary per
pair (mailboxes per result), then each problem, by mailbox name.
  --plan PLAN    only the mailboxes that plan upgrades, on the hosts it names
                 (no inventory needed; the target is the plan's)
  --only GLOB    only mailboxes matching GLOB (repeatable; * and ?)
  --sample N     hash only N random records per mailbox and side
  --details      also list each problem of a mailbox, not only its first
Exit codes: 0 everything holds, 1 something does not (listed), 2 bad input.
`;

export interface VerifyOptions extends HostKeyOptions {
  /** The pairs of an inventory, or (exclusive) the hosts and mailboxes of a plan. */
  from: ({ kind: "inventory" } & InventoryOptions) | { kind: "plan"; plan: string };
  only: string[];
  sample: number | undefined;
  target: number | undefined;
  details: boolean;
  json: boolean;
}

export function parseVerifyOptions(args: string[]): VerifyOptions | "help" {
  const values = parseFlags("verify", args, {
    ...INVENTORY_FLAGS,
    ...HOST_KEY_FLAGS,
    ...JSON_FLAG,
    plan: { type: "string" },
    only: { type: "string", multiple: true },
    sample: { type: "string" },
    "target-version": { type: "string" },
    details: { type: "boolean" },
  });
  if (values.help) return "help";
  if (values.plan !== undefined && (values.inventory !== undefined || values.pair !== undefined))
    throw new UsageError(
      "--plan takes the hosts and mailboxes from the plan: give --plan alone, or --inventory (and --pair) without it",
    );
  if (!values.inventory && values.plan === undefined)
    throw new UsageError("--inventory FILE or --plan PLAN is required (see guidup verify --help)");
  return {
    from:
      values.plan !== undefined
        ? { kind: "plan", plan: values.plan }
        : { kind: "inventory", ...inventoryOptions("verify", values) },
    ...hostKeyOptions(values),
    only: values.only ?? [],
    sample: values.sample ? parseIntOption(values.sample, "sample", 1) : undefined,
    target: values["target-version"]
      ? parseIntOption(values["target-version"], "target-version", 6, 10)
      : undefined,
    details: values.details === true,
    json: values.json === true,
  };
}

/** What guidup verify found, per pair. */
export interface VerifyResult {
  ok: boolean;
  pairs: ({ pair: string } & VerifyReport)[];
}

export function verifyViews(details: boolean): Views<VerifyResult> {
  return {
    human: {
      render(io, result) {
        for (const { pair, ...report } of result.pairs) printPairReport(io, pair, report, details);
      },
    },
    json: jsonView((r) => r),
  };
}

export async function run(args: string[], io: Io): Promise<number> {
  const options = parseVerifyOptions(args);
  if (options === "help") {
    io.out(HELP);
    return ExitCode.ok;
  }
  const { only, sample } = options;
  const keep = nameFilter(only, []);
  const clientOptions = { onLog: agentLogger(io) };
  let jobs: VerifyJob[];
  if (options.from.kind === "plan") {
    const planPath = options.from.plan;
    const plan = await openPlanArg(planPath, "verify --plan");
    // Names and partitions only (the entries are read one at a time): what
    // verify asks the hosts about, as the mailbox list would give it.
    const refs: { name: string; partition?: string }[] = [];
    for await (const m of plan.mailboxes())
      refs.push({ name: m.name, ...(m.partition ? { partition: m.partition } : {}) });
    requireOnlyMatches(
      only,
      refs.map((r) => r.name),
      planPath,
    );
    const hosts = withHostKeyPolicy(plan.header.hosts, options.acceptNewHostKeys);
    jobs = [
      {
        name: plan.header.pair,
        ...hosts,
        target: options.target ?? plan.header.target,
        mailboxes: async () => ({ refs: refs.filter((r) => keep(r.name)), invalid: [] }),
      },
    ];
  } else {
    jobs = (await pairsFor({ ...options.from, acceptNewHostKeys: options.acceptNewHostKeys })).map(
      (pair) => ({
        name: pair.name,
        master: pair.master,
        replica: pair.replica,
        target: options.target ?? TARGET_MINOR,
        mailboxes: async (master: HostConnection) => {
          const list = await listMailboxes(pair.mailboxes, master, clientOptions);
          const names = list.mailboxes.map((m) => m.name);
          requireOnlyMatches(only, names, `pair ${pair.name}'s mailbox list`);
          return {
            refs: list.mailboxes.filter((m) => keep(m.name)),
            invalid: list.invalid.filter((m) => keep(m.name)),
          };
        },
      }),
    );
  }
  const reports = await withProgress(
    io,
    jobs.map((job) => ({
      title: `verify ${job.name}`,
      run: (update: (t: string) => void, viewIo: Io): Promise<VerifyReport> =>
        verifyJob(job, {
          ...(sample !== undefined ? { sample } : {}),
          clientOptions: { onLog: agentLogger(viewIo) },
          onProgress: (done, total) =>
            update(`master ${done.master}/${total}, replica ${done.replica}/${total}`),
        }),
    })),
  );
  const result: VerifyResult = {
    ok: reports.every((r) => r.problems.length === 0),
    pairs: reports.map((report, i) => ({ pair: jobs[i]!.name, ...report })),
  };
  chooseView(options.json, verifyViews(options.details)).render(io, result);
  return result.ok ? ExitCode.ok : ExitCode.failed;
}

/** The summary line, then per problem mailbox its first problem (all with details). */
function printPairReport(io: Io, pair: string, report: VerifyReport, details: boolean): void {
  const bad = report.mailboxes - (report.results.ok ?? 0);
  const counts = (["ok", ...VERIFY_KINDS] as const)
    .filter((k) => (report.results[k] ?? 0) > 0)
    .map((k) => `${k} ${report.results[k]}`)
    .join(", ");
  io.out(
    `verify ${pair}: ${report.mailboxes} mailboxes, ${report.recordsChecked.master} + ${report.recordsChecked.replica} records hashed: ${bad === 0 ? "OK" : `${bad} with problems (${counts})`}\n`,
  );
  let last: string | undefined;
  let more = 0;
  const flush = () => {
    if (more > 0)
      io.out(`    … and ${more} more problem(s) of this mailbox (--details lists them)\n`);
    more = 0;
  };
  for (const p of report.problems) {
    if (p.name === last && !details) {
      more++;
      continue;
    }
    if (p.name !== last) flush();
    io.out(`  ${p.kind.padEnd(18)} ${p.name}: ${p.problem}\n`);
    last = p.name;
  }
  flush();
}
