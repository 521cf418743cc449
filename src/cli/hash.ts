// guidup hash --inventory FILE [--pair NAME] [--side replica|master|both]
// The seed's step (a): precompute the SHA1 of every message behind an
// old-style GUID, days ahead, so each mailbox is locked only briefly during
// apply. Runs on the hosts (the agent's `hash`), resumable, rate-limited.

import { listMailboxes } from "../apply/scan-pair.js";
import { ExitCode, UsageError } from "../errors.js";
import { loadInventory, type PairSpec } from "../plan/inventory.js";
import type { Requests } from "../protocol/messages.js";
import { AgentClient } from "../transport/agent-client.js";
import { connectHost } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { parseCommandArgs } from "./args.js";
import { installInterrupts } from "./interrupts.js";
import type { Io } from "./io.js";
import { agentLogger, pairsToRun, withHostKeyPolicy } from "./pairs.js";
import { withProgress } from "./progress.js";

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

/**
 * Mailboxes per hash request: the agent saves each mailbox's cache as it
 * goes; its workers drain at the end of each request, so requests are big.
 */
const HASH_BATCH = 500;

/**
 * One side's totals: `scanned` every listed mailbox, `mailboxes` those the
 * agent got through, `hashed` the files it hashed; `alreadyCached` counts
 * old-style GUIDs whose SHA1 was cached (and still valid) before this run.
 */
type HashTotals = Requests["hash"]["result"] & {
  host: string;
  side: string;
  seconds: number;
  scanned: number;
};

export async function run(args: string[], io: Io): Promise<number> {
  const { values } = parseCommandArgs(
    "hash",
    args,
    {
      inventory: { type: "string", short: "i" },
      pair: { type: "string" },
      side: { type: "string" },
      "max-rate": { type: "string" },
      workers: { type: "string" },
      json: { type: "boolean" },
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
  const side = values.side ?? "replica";
  if (!["replica", "master", "both"].includes(side))
    throw new UsageError(`--side must be replica, master or both, not "${side}"`);
  let maxBytesPerSec: number | undefined;
  if (values["max-rate"] !== undefined) {
    const mb = Number(values["max-rate"]);
    if (!Number.isFinite(mb) || mb <= 0)
      throw new UsageError(`--max-rate: "${values["max-rate"]}" is not a positive number of MB/s`);
    maxBytesPerSec = Math.round(mb * 1024 * 1024);
  }
  let workers: number | undefined;
  if (values.workers !== undefined) {
    workers = Number(values.workers);
    if (!Number.isInteger(workers) || workers < 1 || workers > 256)
      throw new UsageError(`--workers: "${values.workers}" is not a whole number from 1 to 256`);
  }
  const inventory = await loadInventory(values.inventory);
  const pairs = pairsToRun(inventory.pairs, values.pair).map((p) =>
    withHostKeyPolicy(p, values["accept-new-host-keys"] === true),
  );
  let say = io.err;
  const interrupts = installInterrupts(() => say, io, {
    first: (sig) => `${sig}: stopping; the agents save what they hashed (a rerun skips it)…`,
    second: (sig) => `${sig} again: already stopping; the agents are saving their caches…`,
  });
  const abort = { signal: interrupts.stop };
  const jobs: { pair: PairSpec; side: "master" | "replica" }[] = [];
  for (const pair of pairs) {
    if (side !== "master") jobs.push({ pair, side: "replica" });
    if (side !== "replica") jobs.push({ pair, side: "master" });
  }
  let totals: HashTotals[];
  try {
    totals = await withProgress(
      io,
      jobs.map((job) => ({
        title: `hash ${job.pair.name} ${job.side}`,
        run: (update: (t: string) => void, viewIo: Io) =>
          hashSide(viewIo, job.pair, job.side, { maxBytesPerSec, workers }, abort.signal, update),
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
  if (values.json)
    io.out(`${JSON.stringify({ interrupted: abort.signal.aborted, hosts: totals }, null, 2)}\n`);
  else {
    for (const t of totals) {
      io.out(
        `${t.host} (${t.side}): ${t.scanned} mailboxes: hashed ${t.hashed} files (${mb(t.hashedBytes)} MB, ${(t.hashedBytes / 1048576 / Math.max(t.seconds, 0.001)).toFixed(1)} MB/s), ${t.alreadyCached} already cached, ${t.failed.length} unreadable${abort.signal.aborted ? " (interrupted)" : ""}\n`,
      );
      for (const f of t.failed.slice(0, 50))
        io.out(`  ${f.mailbox}${f.uid ? ` uid ${f.uid}` : ""}: ${f.reason}\n`);
      if (t.failed.length > 50) io.out(`  … and ${t.failed.length - 50} more (--json lists all)\n`);
    }
  }
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

async function hashSide(
  io: Io,
  pair: PairSpec,
  side: "master" | "replica",
  { maxBytesPerSec, workers }: { maxBytesPerSec: number | undefined; workers: number | undefined },
  signal: AbortSignal,
  update: (t: string) => void,
): Promise<HashTotals> {
  const clientOptions = { onLog: agentLogger(io) };
  const conns: HostConnection[] = [];
  try {
    update("connecting");
    const master = await connectHost(pair.master);
    conns.push(master);
    const conn = side === "master" ? master : await connectHost(pair.replica);
    if (conn !== master) conns.push(conn);
    const list = await listMailboxes(pair.mailboxes, master, clientOptions);
    // No separate scan: the hash op reads each mailbox's index and cache
    // anyway and skips what is cached, so a scan first would read every
    // mailbox twice (and cost an agent start); for mail of a few kB that
    // was most of the command's time. The ETA is by mailboxes.
    const todo = list.mailboxes;
    const agent = await AgentClient.start(conn, clientOptions);
    const t0 = Date.now();
    const totals: HashTotals = {
      host: conn.host,
      side,
      seconds: 0,
      scanned: list.mailboxes.length,
      mailboxes: 0,
      hashed: 0,
      hashedBytes: 0,
      alreadyCached: 0,
      failed: [],
    };
    try {
      for (let i = 0; i < todo.length && !signal.aborted; i += HASH_BATCH) {
        const base = { ...totals };
        let last: Record<string, number | string> = {};
        const r = await new Promise<Requests["hash"]["result"]>((resolve, reject) => {
          // Closing the agent's stdin makes it stop, save its caches and exit.
          const onAbort = () => void agent.close();
          signal.addEventListener("abort", onAbort, { once: true });
          agent
            .request(
              "hash",
              {
                mailboxes: todo.slice(i, i + HASH_BATCH),
                lowPriority: true,
                ...(maxBytesPerSec ? { maxBytesPerSec } : {}),
                ...(workers ? { workers } : {}),
              },
              (p) => {
                last = p;
                const bytes = base.hashedBytes + Number(p.bytes ?? 0);
                const done = base.mailboxes + Number(p.mailboxesDone ?? 0);
                const secs = (Date.now() - t0) / 1000;
                const rate = bytes / Math.max(secs, 0.001);
                const eta = done > 0 ? Math.round((secs * (todo.length - done)) / done) : undefined;
                update(
                  `${done}/${todo.length} mailboxes · ${base.hashed + Number(p.files ?? 0)} files · ${mb(bytes)} MB · ${(rate / 1048576).toFixed(1)} MB/s · ETA ${eta === undefined ? "?" : `${eta} s`}`,
                );
              },
            )
            .then(resolve, reject)
            .finally(() => signal.removeEventListener("abort", onAbort));
        }).catch((err) => {
          if (signal.aborted) return undefined;
          throw err;
        });
        if (!r) {
          // Interrupted: the agent saved its caches; count what it reported.
          totals.hashed += Number(last.files ?? 0);
          totals.hashedBytes += Number(last.bytes ?? 0);
          totals.alreadyCached += Number(last.alreadyCached ?? 0);
          break;
        }
        totals.mailboxes += r.mailboxes;
        totals.hashed += r.hashed;
        totals.hashedBytes += r.hashedBytes;
        totals.alreadyCached += r.alreadyCached;
        totals.failed.push(...r.failed);
      }
    } finally {
      await agent.close();
    }
    totals.seconds = (Date.now() - t0) / 1000;
    update(
      `${totals.hashed} files, ${mb(totals.hashedBytes)} MB hashed${signal.aborted ? " (interrupted)" : ""}`,
    );
    if (totals.hashed === 0 && totals.failed.length === 0 && !signal.aborted)
      update("nothing to hash: every old-style GUID is cached");
    return totals;
  } finally {
    await Promise.all(conns.map((c) => c.close()));
  }
}
