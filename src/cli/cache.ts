// guidup cache clean --inventory FILE [--pair NAME] [--plan FILE] [--force]
// The seed's last step: remove guidup's cyrus.sha1s files from both sides
// once the upgrade is over. The pair operation is src/apply/cache-clean.ts;
// this file parses the options and says what happened.

import { dirname, join } from "node:path";
import { cleanPairCaches, newestPlan, planProgress } from "../apply/cache-clean.js";
import { ExitCode, UsageError } from "../errors.js";
import { PAIR_FLAGS, type PairOptions, pairOptions, pairsFor, parseFlags } from "./flag-groups.js";
import type { Io } from "./io.js";
import { agentLogger } from "./pairs.js";

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

export interface CacheCleanOptions extends PairOptions {
  /** The plan to check (default: the pair's newest in plansDir). */
  plan: string | undefined;
  plansDir: string;
  force: boolean;
}

export function parseCacheCleanOptions(args: string[]): CacheCleanOptions | "help" {
  const values = parseFlags("cache clean", args, {
    ...PAIR_FLAGS,
    plan: { type: "string" },
    "plans-dir": { type: "string" },
    force: { type: "boolean" },
  });
  if (values.help) return "help";
  const pair = pairOptions("cache clean", values);
  return {
    ...pair,
    plan: values.plan,
    // Next to the inventory, not the current directory: where guidup plan writes.
    plansDir: values["plans-dir"] ?? join(dirname(pair.inventory), "plans"),
    force: values.force === true,
  };
}

export async function run(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === "--help" || sub === "-h" || sub === undefined) {
    io.out(HELP);
    return sub === undefined ? ExitCode.badInput : ExitCode.ok;
  }
  if (sub !== "clean") throw new UsageError(`unknown cache subcommand "${sub}" (have: clean)`);
  const options = parseCacheCleanOptions(rest);
  if (options === "help") {
    io.out(HELP);
    return ExitCode.ok;
  }
  const { plansDir } = options;
  let refused = false;
  for (const pair of await pairsFor(options)) {
    if (options.force) io.err(`cache clean ${pair.name}: --force: no plan checked\n`);
    else {
      const path = options.plan ?? (await newestPlan(pair.name, plansDir));
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
    const removed = await cleanPairCaches(pair, { onLog: agentLogger(io) });
    io.out(
      `cache clean ${pair.name}: removed ${removed.master} cache file(s) on the master, ${removed.replica} on the replica\n`,
    );
  }
  return refused ? ExitCode.failed : ExitCode.ok;
}
