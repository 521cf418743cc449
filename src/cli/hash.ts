// guidup hash --inventory FILE [--pair NAME] [--side replica|master|both]
// The seed's step (a): precompute the SHA1 of every message behind an
// old-style GUID, days ahead, so each mailbox is locked only briefly during
// apply. The pair operation is src/apply/hash-pair.ts; this file parses the
// options, wires Ctrl-C and progress, and renders the totals (human or JSON).

import { type HashSideOptions, type HashTotals, hashPairSide } from "../apply/hash-pair.js";
import { ExitCode, UsageError } from "../errors.js";
import type { PairSpec } from "../plan/inventory.js";
import { timelineMark } from "../timeline.js";
import { parseMaxRate } from "./args.js";
import {
  JSON_FLAG,
  PAIR_FLAGS,
  type PairOptions,
  pairOptions,
  pairsFor,
  parseFlags,
} from "./flag-groups.js";
import { installInterrupts } from "./interrupts.js";
import type { Io } from "./io.js";
import { agentLogger } from "./pairs.js";
import { withProgress } from "./progress.js";
import { chooseView, jsonView, type Views } from "./view.js";

const HELP = `usage: guidup hash --inventory FILE [--pair NAME] [--side replica|master|both]
                   [--max-rate MB/s] [--workers N] [--json] [--accept-new-host-keys]

Fills each mailbox's sha1 cache (cyrus.sha1s) on the chosen side (default:
replica) with the SHA1 of every message whose GUID is old-style, in parallel on
the host's cores. Interrupted and run again, it skips what is cached and valid.
Hash both sides (--side both): apply then finds each side's SHA1s in its own
cache. (apply --relay-cache can instead give a master without a cache the
replica's; it is off by default, see guidup apply --help.)
Ctrl-C (or SIGINT/SIGTERM): the agents stop and save what they hashed.
  --max-rate MB/s   limit the reading rate per host, to run beside live traffic
  --workers N       hashing threads per host (default: one per core of the host)
Exit codes: 0 done, 1 some message files could not be read (listed), 2 bad
input, 130 interrupted (the caches keep what was hashed).
`;

export interface HashOptions extends PairOptions, HashSideOptions {
  side: "replica" | "master" | "both";
  json: boolean;
}

export function parseHashOptions(args: string[]): HashOptions | "help" {
  const values = parseFlags("hash", args, {
    ...PAIR_FLAGS,
    ...JSON_FLAG,
    side: { type: "string" },
    "max-rate": { type: "string" },
    workers: { type: "string" },
  });
  if (values.help) return "help";
  const pair = pairOptions("hash", values);
  const side = values.side ?? "replica";
  if (side !== "replica" && side !== "master" && side !== "both")
    throw new UsageError(`--side must be replica, master or both, not "${side}"`);
  const maxBytesPerSec = parseMaxRate(values["max-rate"]);
  let workers: number | undefined;
  if (values.workers !== undefined) {
    workers = Number(values.workers);
    if (!Number.isInteger(workers) || workers < 1 || workers > 256)
      throw new UsageError(`--workers: "${values.workers}" is not a whole number from 1 to 256`);
  }
  return {
    ...pair,
    side,
    maxBytesPerSec,
    workers,
    json: values.json === true,
  };
}

/** What guidup hash did: per host and side, and whether Ctrl-C cut it short. */
export interface HashResult {
  interrupted: boolean;
  hosts: HashTotals[];
}

export const HASH_VIEWS: Views<HashResult> = {
  human: {
    render(io, { interrupted, hosts }) {
      for (const t of hosts) {
        io.out(
          `${t.host} (${t.side}): ${t.scanned} mailboxes: hashed ${t.hashed} files (${mb(t.hashedBytes)} MB, ${(t.hashedBytes / 1048576 / Math.max(t.seconds, 0.001)).toFixed(1)} MB/s), ${t.alreadyCached} already cached, ${t.failed.length} unreadable${interrupted ? " (interrupted)" : ""}\n`,
        );
        for (const f of t.failed.slice(0, 50))
          io.out(`  ${f.mailbox}${f.uid ? ` uid ${f.uid}` : ""}: ${f.reason}\n`);
        if (t.failed.length > 50)
          io.out(`  … and ${t.failed.length - 50} more (--json lists all)\n`);
      }
    },
  },
  json: jsonView((r) => r),
};

export async function run(args: string[], io: Io): Promise<number> {
  const options = parseHashOptions(args);
  if (options === "help") {
    io.out(HELP);
    return ExitCode.ok;
  }
  const pairs = await pairsFor(options);
  timelineMark("inventory read");
  let say = io.err;
  const interrupts = installInterrupts(() => say, io, {
    first: (sig) => `${sig}: stopping; the agents save what they hashed (a rerun skips it)…`,
    second: (sig) => `${sig} again: already stopping; the agents are saving their caches…`,
  });
  const abort = { signal: interrupts.stop };
  const jobs: { pair: PairSpec; side: "master" | "replica" }[] = [];
  for (const pair of pairs) {
    if (options.side !== "master") jobs.push({ pair, side: "replica" });
    if (options.side !== "replica") jobs.push({ pair, side: "master" });
  }
  let totals: HashTotals[];
  try {
    totals = await withProgress(
      io,
      jobs.map((job) => ({
        title: `hash ${job.pair.name} ${job.side}`,
        run: (update: (t: string) => void, viewIo: Io) =>
          hashPairSide(
            job.pair,
            job.side,
            options,
            { onLog: agentLogger(viewIo) },
            abort.signal,
            update,
          ),
      })),
      (view) => {
        say = (t) => view.notice(t);
      },
    );
  } finally {
    say = io.err;
    interrupts.uninstall();
  }
  const failed = totals.reduce((n, t) => n + t.failed.length, 0);
  chooseView(options.json, HASH_VIEWS).render(io, {
    interrupted: abort.signal.aborted,
    hosts: totals,
  });
  if (abort.signal.aborted) {
    io.err(
      `interrupted: the caches keep what was hashed; run guidup hash ${args.map(quoteArg).join(" ")} again to finish\n`,
    );
    return ExitCode.interrupted;
  }
  return failed > 0 ? ExitCode.failed : ExitCode.ok;
}

function quoteArg(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

function mb(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}
