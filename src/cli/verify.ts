// guidup verify --inventory FILE [--pair NAME] [--sample N]: checks that the
// upgrade is complete and correct on both sides of each pair.

import { type VerifyReport, verifyPair } from "../apply/verify-pair.js";
import { TARGET_MINOR } from "../cyrus/formats/index.js";
import { ExitCode, UsageError } from "../errors.js";
import { loadInventory } from "../plan/inventory.js";
import { listMailboxes } from "../plan/scan-pair.js";
import { connectHosts } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { parseCommandArgs, parseIntOption } from "./args.js";
import type { Io } from "./io.js";
import { agentLogger, pairsToRun, withHostKeyPolicy } from "./pairs.js";
import { withProgress } from "./progress.js";

const HELP = `usage: guidup verify --inventory FILE [--pair NAME] [--sample N]
                     [--target-version N] [--json] [--accept-new-host-keys]

For every mailbox of each pair: both sides at the target version, no
old-style GUIDs left, master and replica (uid, GUID) lists identical, and each
GUID equal to the SHA1 of its message file (--sample N hashes only N random
records per mailbox and side). Reads only.
Exit codes: 0 everything holds, 1 something does not (listed), 2 bad input.
`;

export async function run(args: string[], io: Io): Promise<number> {
  const { values } = parseCommandArgs(
    "verify",
    args,
    {
      inventory: { type: "string", short: "i" },
      pair: { type: "string" },
      sample: { type: "string" },
      "target-version": { type: "string" },
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
  if (!values.inventory) throw new UsageError("--inventory FILE is required");
  const sample = values.sample ? parseIntOption(values.sample, "sample", 1) : undefined;
  const target = values["target-version"]
    ? parseIntOption(values["target-version"], "target-version", 6, 10)
    : TARGET_MINOR;
  const inventory = await loadInventory(values.inventory);
  const pairs = pairsToRun(inventory.pairs, values.pair).map((p) =>
    withHostKeyPolicy(p, values["accept-new-host-keys"] === true),
  );
  const clientOptions = { onLog: agentLogger(io) };
  const reports = await withProgress(
    io,
    pairs.map((pair) => ({
      title: `verify ${pair.name}`,
      run: async (update: (t: string) => void): Promise<VerifyReport> => {
        const [master, replica] = (await connectHosts([pair.master, pair.replica])) as [
          HostConnection,
          HostConnection,
        ];
        try {
          const list = await listMailboxes(pair.mailboxes, master, clientOptions);
          const done = { master: 0, replica: 0 };
          return await verifyPair({
            master,
            replica,
            mailboxes: list.mailboxes,
            target,
            ...(sample !== undefined ? { sample } : {}),
            clientOptions,
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
    const pair = pairs[i]!.name;
    if (report.problems.length > 0) ok = false;
    json.push({ pair, ...report });
    if (values.json) return;
    io.out(
      `verify ${pair}: ${report.mailboxes} mailboxes, ${report.recordsChecked.master} + ${report.recordsChecked.replica} records hashed: ${report.problems.length === 0 ? "OK" : `${report.problems.length} problem(s)`}\n`,
    );
    for (const p of report.problems) io.out(`  ${p.name}: ${p.problem}\n`);
  });
  if (values.json) io.out(`${JSON.stringify({ ok, pairs: json }, null, 2)}\n`);
  return ok ? ExitCode.ok : ExitCode.failed;
}
