// guidup cache clean --inventory FILE [--pair NAME] [--plan FILE] [--force]
// The seed's last step: remove guidup's cyrus.sha1s files from both sides
// once the upgrade is over.

import { readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import YAML from "yaml";
import { listMailboxes } from "../apply/scan-pair.js";
import { FINAL_PHASES } from "../apply/state.js";
import { StateStore, stateDirFor } from "../apply/state-store.js";
import { ExitCode, UsageError } from "../errors.js";
import { loadInventory, type PairSpec } from "../plan/inventory.js";
import { readLines } from "../plan/line-reader.js";
import { openPlan } from "../plan/plan-stream.js";
import { AgentClient } from "../transport/agent-client.js";
import { connectHosts } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { parseCommandArgs } from "./args.js";
import type { Io } from "./io.js";
import { agentLogger, pairsToRun, withHostKeyPolicy } from "./pairs.js";

const HELP = `usage: guidup cache clean --inventory FILE [--pair NAME] [--plan FILE]
                          [--plans-dir DIR] [--force]

Removes guidup's sha1 caches (cyrus.sha1s) from every mailbox on master and
replica, once the pair's upgrade is done: it checks the pair's newest plan in
--plans-dir (default: the plans/ directory next to the inventory, where guidup
plan writes them), or the plan named by --plan, and says which. It refuses
while that plan has mailboxes that are not done, and when it finds no plan of
the pair; --force skips the check.
Exit codes: 0 removed, 1 refused (work remains, or no plan found), 2 bad input.
`;

const CLEAN_BATCH = 500;

export async function run(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === "--help" || sub === "-h" || sub === undefined) {
    io.out(HELP);
    return sub === undefined ? ExitCode.badInput : ExitCode.ok;
  }
  if (sub !== "clean") throw new UsageError(`unknown cache subcommand "${sub}" (have: clean)`);
  const { values } = parseCommandArgs(
    "cache clean",
    rest,
    {
      inventory: { type: "string", short: "i" },
      pair: { type: "string" },
      plan: { type: "string" },
      "plans-dir": { type: "string" },
      force: { type: "boolean" },
      "accept-new-host-keys": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    false,
  );
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  if (!values.inventory) throw new UsageError("--inventory FILE is required");
  const inventory = await loadInventory(values.inventory);
  const pairs = pairsToRun(inventory.pairs, values.pair);
  // Next to the inventory, not the current directory: where guidup plan writes.
  const plansDir = values["plans-dir"] ?? join(dirname(values.inventory), "plans");
  let refused = false;
  for (const pair of pairs) {
    if (values.force) io.err(`cache clean ${pair.name}: --force: no plan checked\n`);
    else {
      const path = values.plan ?? (await newestPlan(pair.name, plansDir));
      if (!path) {
        io.err(
          `cache clean ${pair.name}: refused: found no plan of pair ${pair.name} in ${plansDir}; name it with --plan FILE (or its directory with --plans-dir DIR), or use --force to remove the caches unchecked\n`,
        );
        refused = true;
        continue;
      }
      const check = await planProgress(pair.name, path);
      if (check.left > 0) {
        io.err(
          `cache clean ${pair.name}: refused: ${check.left} mailbox(es) of plan ${path} are not done (${check.total} planned); finish with guidup apply ${path} (or use --force)\n`,
        );
        refused = true;
        continue;
      }
      io.out(`cache clean ${pair.name}: checked plan ${path}: all ${check.total} mailboxes done\n`);
    }
    const removed = await cleanPair(
      withHostKeyPolicy(pair, values["accept-new-host-keys"] === true),
      io,
    );
    io.out(
      `cache clean ${pair.name}: removed ${removed.master} cache file(s) on the master, ${removed.replica} on the replica\n`,
    );
  }
  return refused ? ExitCode.failed : ExitCode.ok;
}

/** How many of the plan's mailboxes are not done. */
async function planProgress(pair: string, path: string): Promise<{ total: number; left: number }> {
  const plan = await openPlan(path);
  if (plan.header.pair !== pair)
    throw new UsageError(
      `${path} is a plan of pair ${plan.header.pair}, not ${pair}; give --pair ${plan.header.pair}, or the plan of ${pair}`,
    );
  const store = new StateStore(stateDirFor(path), plan.header.id);
  // The state directory's index; trusted as an apply that holds it would be
  // (a crashed apply's journal is rebuilt from the files by loadIndex).
  const { index } = await store.loadIndex(false);
  let left = 0;
  let total = 0;
  for await (const name of plan.names()) {
    total++;
    const phase = index.phaseOf(name);
    if (phase === undefined || !FINAL_PHASES.has(phase)) left++;
  }
  return { total, left };
}

async function newestPlan(pair: string, dir: string): Promise<string | undefined> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith(".yaml") || n.endsWith(".yml"));
  } catch {
    return undefined;
  }
  let best: { path: string; created: string } | undefined;
  for (const n of names) {
    const path = join(dir, n);
    try {
      // Only the header is needed to pick the newest plan of the pair.
      const head = YAML.parse(await headerText(path)) as {
        pair?: string;
        created?: string;
      };
      if (
        head?.pair === pair &&
        typeof head.created === "string" &&
        (!best || head.created > best.created)
      ) {
        best = { path, created: head.created };
      }
    } catch {
      // not a plan: ignore
    }
  }
  return best?.path;
}

async function cleanPair(pair: PairSpec, io: Io): Promise<{ master: number; replica: number }> {
  const clientOptions = { onLog: agentLogger(io) };
  const [master, replica] = (await connectHosts([pair.master, pair.replica])) as [
    HostConnection,
    HostConnection,
  ];
  try {
    const list = await listMailboxes(pair.mailboxes, master, clientOptions);
    const out = { master: 0, replica: 0 };
    for (const side of ["master", "replica"] as const) {
      const agent = await AgentClient.start(side === "master" ? master : replica, clientOptions);
      try {
        for (let i = 0; i < list.mailboxes.length; i += CLEAN_BATCH) {
          const r = await agent.request("cache-clean", {
            mailboxes: list.mailboxes.slice(i, i + CLEAN_BATCH),
          });
          out[side] += r.removed;
        }
      } finally {
        await agent.close();
      }
    }
    return out;
  } finally {
    await Promise.all([master.close(), replica.close()]);
  }
}

/** A plan file's lines up to its summary: all newestPlan reads (a plan may be hundreds of MB). */
async function headerText(path: string): Promise<string> {
  const lines: string[] = [];
  for await (const { text } of readLines(path)) {
    if (text.startsWith("summary:") || lines.length > 200) break;
    lines.push(text);
  }
  return lines.join("\n");
}
