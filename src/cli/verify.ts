// guidup verify --inventory FILE [--pair NAME] | --plan PLAN: checks that the
// upgrade is complete and correct on both sides of each pair (or of the
// plan's mailboxes), and prints a summary with the problems by mailbox.

import { nameFilter } from "../apply/glob.js";
import { listMailboxes } from "../apply/scan-pair.js";
import { VERIFY_KINDS, type VerifyReport, verifyPair } from "../apply/verify-pair.js";
import { TARGET_MINOR } from "../cyrus/formats/index.js";
import { ExitCode, UsageError } from "../errors.js";
import { loadInventory } from "../plan/inventory.js";
import type { MailboxRef } from "../protocol/messages.js";
import { connectHosts } from "../transport/index.js";
import type { HostConnection, HostSpec } from "../transport/types.js";
import { parseCommandArgs, parseIntOption } from "./args.js";
import type { Io } from "./io.js";
import { agentLogger, pairsToRun, withHostKeyPolicy } from "./pairs.js";
import { openPlanArg, requireOnlyMatches } from "./plan-arg.js";
import { withProgress } from "./progress.js";

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

/** One pair to verify: its hosts and how to get its mailboxes. */
interface VerifyJob {
  name: string;
  master: HostSpec;
  replica: HostSpec;
  target: number;
  /** The mailboxes to check, and what the list named that cannot be one. */
  mailboxes: (
    master: HostConnection,
  ) => Promise<{ refs: MailboxRef[]; invalid: { name: string; reason: string }[] }>;
}

export async function run(args: string[], io: Io): Promise<number> {
  const { values } = parseCommandArgs(
    "verify",
    args,
    {
      inventory: { type: "string", short: "i" },
      pair: { type: "string" },
      plan: { type: "string" },
      only: { type: "string", multiple: true },
      sample: { type: "string" },
      "target-version": { type: "string" },
      details: { type: "boolean" },
      "accept-new-host-keys": { type: "boolean" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    false,
  );
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  if (values.plan !== undefined && (values.inventory !== undefined || values.pair !== undefined))
    throw new UsageError(
      "--plan takes the hosts and mailboxes from the plan: give --plan alone, or --inventory (and --pair) without it",
    );
  if (!values.inventory && values.plan === undefined)
    throw new UsageError("--inventory FILE or --plan PLAN is required (see guidup verify --help)");
  const sample = values.sample ? parseIntOption(values.sample, "sample", 1) : undefined;
  const targetOption = values["target-version"]
    ? parseIntOption(values["target-version"], "target-version", 6, 10)
    : undefined;
  const only = values.only ?? [];
  const keep = nameFilter(only, []);
  const acceptNew = values["accept-new-host-keys"] === true;
  const clientOptions = { onLog: agentLogger(io) };
  let jobs: VerifyJob[];
  if (values.plan !== undefined) {
    const planPath = values.plan;
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
    const hosts = withHostKeyPolicy(plan.header.hosts, acceptNew);
    jobs = [
      {
        name: plan.header.pair,
        ...hosts,
        target: targetOption ?? plan.header.target,
        mailboxes: async () => ({ refs: refs.filter((r) => keep(r.name)), invalid: [] }),
      },
    ];
  } else {
    const inventory = await loadInventory(values.inventory!);
    jobs = pairsToRun(inventory.pairs, values.pair).map((p) => {
      const pair = withHostKeyPolicy(p, acceptNew);
      return {
        name: pair.name,
        master: pair.master,
        replica: pair.replica,
        target: targetOption ?? TARGET_MINOR,
        mailboxes: async (master: HostConnection) => {
          const list = await listMailboxes(pair.mailboxes, master, clientOptions);
          const names = list.mailboxes.map((m) => m.name);
          requireOnlyMatches(only, names, `pair ${pair.name}'s mailbox list`);
          return {
            refs: list.mailboxes.filter((m) => keep(m.name)),
            invalid: list.invalid.filter((m) => keep(m.name)),
          };
        },
      };
    });
  }
  const reports = await withProgress(
    io,
    jobs.map((job) => ({
      title: `verify ${job.name}`,
      run: async (update: (t: string) => void, viewIo: Io): Promise<VerifyReport> => {
        const [master, replica] = (await connectHosts([job.master, job.replica])) as [
          HostConnection,
          HostConnection,
        ];
        try {
          const { refs: mailboxes, invalid } = await job.mailboxes(master);
          const done = { master: 0, replica: 0 };
          return await verifyPair({
            master,
            replica,
            mailboxes,
            invalid,
            target: job.target,
            ...(sample !== undefined ? { sample } : {}),
            clientOptions: { onLog: agentLogger(viewIo) },
            onProgress: (side, d, total) => {
              done[side] = d;
              update(`master ${done.master}/${total}, replica ${done.replica}/${total}`);
            },
          });
        } finally {
          await Promise.all([master.close(), replica.close()]);
        }
      },
    })),
  );
  let ok = true;
  const json: unknown[] = [];
  reports.forEach((report, i) => {
    const pair = jobs[i]!.name;
    if (report.problems.length > 0) ok = false;
    json.push({ pair, ...report });
    if (!values.json) printPairReport(io, pair, report, values.details === true);
  });
  if (values.json) io.out(`${JSON.stringify({ ok, pairs: json }, null, 2)}\n`);
  return ok ? ExitCode.ok : ExitCode.failed;
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
