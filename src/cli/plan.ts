// guidup plan --inventory FILE [--pair NAME] [--out FILE] [--target-version N]
// Scans master and replica of each pair and writes one plan per pair.

import { randomBytes } from "node:crypto";
import { stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { MailboxListing } from "../apply/mailbox-listing.js";
import { SCAN_AGENTS, SCAN_BATCH, type ScanProgress, SideScanner } from "../apply/scan-pair.js";
import { setStateAside, stateDirFor } from "../apply/state-store.js";
import { formatFor, TARGET_MINOR, WRITABLE_MINORS } from "../cyrus/formats/index.js";
import { ExitCode, UsageError } from "../errors.js";
import type { HostSpec } from "../host-spec.js";
import { writePlanStreaming } from "../plan/build.js";
import type { PairSpec } from "../plan/inventory.js";
import type { PlanSummary } from "../plan/model.js";
import { PlanWriter } from "../plan/plan-stream.js";
import { lackingFromCounts, SuspiciousInputError } from "../plan/sanity.js";
import { connectHosts } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { TOOL_VERSION } from "../version.js";
import { parseIntOption } from "./args.js";
import { PAIR_FLAGS, type PairOptions, pairOptions, pairsFor, parseFlags } from "./flag-groups.js";
import type { Io } from "./io.js";
import { agentLogger } from "./pairs.js";
import { withProgress } from "./progress.js";

const HELP = `usage: guidup plan --inventory FILE [--pair NAME] [--out FILE] [--overwrite]
                   [--target-version N] [--skip-sanity-checks]
                   [--accept-new-host-keys]

Scans master and replica of each pair (no locks, reads only) and writes a plan:
which mailboxes need a version upgrade and/or new GUIDs, with fingerprints that
apply re-checks. Review it with guidup show / guidup diff, then guidup apply it.
  --inventory FILE        the pairs (see examples/inventory.yaml)
  --pair NAME             only this pair (default: every pair)
  --out FILE              where to write the plan (one pair only); default
                          plans/<plan id>.yaml next to the inventory
                          (the id: <pair>-<UTC time>-<random>). An existing
                          file is never replaced without --overwrite
  --overwrite             replace an existing plan file; its apply state
                          (FILE.state/) is moved aside to FILE.state.<old id>
  --target-version N      10 (default), or 6..9 to plan a downgrade
  --skip-sanity-checks    plan even when a side lacks most of the listed
                          mailboxes or most list lines are not mailbox names
  --accept-new-host-keys  record unknown SSH host keys instead of refusing them
Exit codes: 0 plan written, 2 bad input (inventory, host unreachable, host key,
an existing --out file, a missing partition root, a suspicious list or side).
`;

export interface PlanOptions extends PairOptions {
  /** Where to write the plan (one pair only); default plans/<id>.yaml next to the inventory. */
  out: string | undefined;
  overwrite: boolean;
  target: number;
  skipSanityChecks: boolean;
}

export function parsePlanOptions(args: string[]): PlanOptions | "help" {
  const values = parseFlags("plan", args, {
    ...PAIR_FLAGS,
    out: { type: "string", short: "o" },
    "target-version": { type: "string" },
    overwrite: { type: "boolean" },
    "skip-sanity-checks": { type: "boolean" },
  });
  if (values.help) return "help";
  const pair = pairOptions("plan", values);
  const target = values["target-version"]
    ? parseIntOption(values["target-version"], "target-version", 6, 10)
    : TARGET_MINOR;
  if (!WRITABLE_MINORS.includes(target) || !formatFor(target)) {
    throw new UsageError(`--target-version ${target}: guidup writes versions 6..10`);
  }
  return {
    ...pair,
    out: values.out,
    overwrite: values.overwrite === true,
    target,
    skipSanityChecks: values["skip-sanity-checks"] === true,
  };
}

export async function run(args: string[], io: Io): Promise<number> {
  const options = parsePlanOptions(args);
  if (options === "help") {
    io.out(HELP);
    return ExitCode.ok;
  }
  keepHeapNearLiveSet();
  const { target, overwrite } = options;
  const pairs = await pairsFor(options);
  if (options.out && pairs.length > 1)
    throw new UsageError("--out needs --pair when the inventory has several pairs");
  // Refused before any host is contacted; checked again before writing.
  if (options.out) await refuseExistingPlan(options.out, overwrite);

  // Each plan is written as its pair is scanned (a window of mailboxes at a
  // time), named by its id, in plans/ next to the inventory (where cache
  // clean looks) unless --out, whatever the current directory.
  const written = await withProgress(
    io,
    pairs.map((pair) => ({
      title: `plan ${pair.name}`,
      run: (update: (t: string) => void) =>
        planPair(pair, target, update, io, options.skipSanityChecks, {
          path: (id) => options.out ?? join(dirname(options.inventory), "plans", `${id}.yaml`),
          beforeCommit: async (out) => {
            await refuseExistingPlan(out, overwrite);
            if (overwrite) {
              const aside = await setStateAside(out);
              if (aside) io.out(`${out}: the replaced plan's apply state was moved to ${aside}\n`);
            }
          },
        }),
    })),
  );
  for (const { out, pair, summary: s } of written) {
    io.out(
      `${out}: pair ${pair}, ${s.mailboxes} mailboxes: ${s.toApply} to apply (version ${s.byAction.version}, guid ${s.byAction.guid}), ${s.upToDate} up to date, ${s.skipped} skipped\n`,
    );
  }
  return ExitCode.ok;
}

/**
 * plan holds little (a sort batch, two windows; 12–33 MB live after a full
 * collection at any N) but allocates fast, and V8 on a big machine lets its
 * old space grow to 4× what survived the last full collection before
 * marking again: the peak RSS was that ceiling, not the live set (sorting a
 * million-name list: 223 MiB peak for ≤ 33 MB live). 1.5× keeps the peak
 * near the live set (132 MiB there) for a little more GC time (6.2 → 7.3 s
 * CPU). The flag is read at each collection (heap growing factor), so
 * setting it once the VM runs takes effect; the heap's size limit cannot be
 * changed that way.
 */
function keepHeapNearLiveSet(): void {
  setFlagsFromString("--heap-growing-percent=50");
}

/**
 * A plan file is a reviewed contract and its state a record of what was done
 * under it: writing a new plan over it silently would hand the old plan's
 * progress to the new one. Refuses an existing file unless --overwrite.
 */
async function refuseExistingPlan(out: string, overwrite: boolean): Promise<void> {
  if (overwrite || !(await pathExists(out))) return;
  const state = stateDirFor(out);
  const hasState = await pathExists(state);
  throw new UsageError(
    `${out} exists${hasState ? ` and has apply state (${state})` : ""}; write the new plan elsewhere (--out), or replace it with --overwrite${hasState ? " (the old state is then moved aside)" : ""}`,
    { file: out },
  );
}

async function pathExists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

interface PlanOutput {
  /** Where the plan of this id goes. */
  path: (id: string) => string;
  /** Just before the plan replaces anything at `out`: refuse, set old state aside. */
  beforeCommit: (out: string) => Promise<void>;
}

async function planPair(
  pair: PairSpec,
  target: number,
  update: (t: string) => void,
  io: Io,
  skipSanityChecks: boolean,
  output: PlanOutput,
): Promise<{ out: string; pair: string; summary: PlanSummary }> {
  const clientOptions = { onLog: agentLogger(io) };
  update("connecting");
  // Both or neither: a side left connected after the other failed would keep
  // the process alive after the error was reported.
  const [master, replica] = (await connectHosts([pair.master, pair.replica])) as [
    HostConnection,
    HostConnection,
  ];
  try {
    update("listing mailboxes on the master");
    // Sorted into temporary files and read a window at a time: the
    // controller never holds the whole list.
    const list = await MailboxListing.open(pair.mailboxes, master, clientOptions, {
      acceptSuspicious: skipSanityChecks,
    });
    try {
      return await planListed(pair, target, update, skipSanityChecks, output, list, {
        master,
        replica,
        clientOptions,
      });
    } finally {
      await list.close();
    }
  } finally {
    await Promise.all([master.close(), replica.close()]);
  }
}

/** The scans of a listed pair into its plan, window after window. */
async function planListed(
  pair: PairSpec,
  target: number,
  update: (t: string) => void,
  skipSanityChecks: boolean,
  output: PlanOutput,
  list: MailboxListing,
  hosts: {
    master: HostConnection;
    replica: HostConnection;
    clientOptions: { onLog: ReturnType<typeof agentLogger> };
  },
): Promise<{ out: string; pair: string; summary: PlanSummary }> {
  const { master, replica, clientOptions } = hosts;
  const done = { master: 0, replica: 0 };
  const total = list.count;
  const show = () =>
    update(`scanned master ${done.master}/${total}, replica ${done.replica}/${total}`);
  show();
  const created = new Date().toISOString();
  const id = `${pair.name}-${created.replace(/[-:.]/g, "").slice(0, 15)}Z-${randomBytes(3).toString("hex")}`;
  const out = output.path(id);
  const writer = await PlanWriter.create(out, {
    id,
    created,
    tool: TOOL_VERSION,
    pair: pair.name,
    target,
    hosts: { master: planHost(pair.master), replica: planHost(pair.replica) },
  });
  // The scanning agents live for the whole list, not one window.
  const scanners: SideScanner[] = [];
  try {
    for (const side of ["master", "replica"] as const)
      scanners.push(
        await SideScanner.start(
          side === "master" ? master : replica,
          side,
          clientOptions,
          // As many as the list has batches, up to SCAN_AGENTS.
          Math.min(SCAN_AGENTS, Math.ceil(total / SCAN_BATCH)),
        ),
      );
    const [masterScanner, replicaScanner] = scanners as [SideScanner, SideScanner];
    const counts = await writePlanStreaming(
      {
        target,
        mailboxes: { inOrder: list.mailboxes() },
        excluded: list.excluded(),
        invalid: list.invalid(),
        scan: async (window) => {
          // Windows overlap (the next is scanned while one is written):
          // each adds what it scanned since its last report.
          const seen = { master: 0, replica: 0 };
          const progress = (p: ScanProgress) => {
            done[p.side] += p.done - seen[p.side];
            seen[p.side] = p.done;
            show();
          };
          const [m, r] = await Promise.all([
            masterScanner.scan(window, progress),
            replicaScanner.scan(window, progress),
          ]);
          return { master: m, replica: r };
        },
      },
      writer,
    );
    await Promise.all(scanners.splice(0).map((sc) => sc.close()));
    const lacking = lackingFromCounts(list.count, [
      { side: "master", host: master.host, ...counts.missing.master },
      { side: "replica", host: replica.host, ...counts.missing.replica },
    ]);
    if (lacking.length > 0 && !skipSanityChecks) {
      throw new SuspiciousInputError(
        `pair ${pair.name}: ${lacking.join("; ")} No plan written; fix the inventory, or plan with --skip-sanity-checks if this is really so`,
        { pair: pair.name },
      );
    }
    await output.beforeCommit(out);
    const summary = await writer.commit({
      mailboxes: counts.mailboxes,
      upToDate: counts.upToDate,
    });
    return { out, pair: pair.name, summary };
  } catch (err) {
    await writer.abort();
    throw err;
  } finally {
    await Promise.all(scanners.map((sc) => sc.close()));
  }
}

/**
 * A host as the plan records it: --accept-new-host-keys was this run's
 * decision about unknown keys, not part of how to reach the host; apply must
 * not inherit it from the plan.
 */
function planHost(host: HostSpec): HostSpec {
  if (host.transport === "local" || host.acceptNewHostKeys === undefined) return host;
  const { acceptNewHostKeys: _accept, ...rest } = host;
  return rest;
}
