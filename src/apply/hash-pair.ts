// guidup hash as a pair operation: precompute, on one side of a pair, the
// SHA1 of every message behind an old-style GUID into each mailbox's sha1
// cache (the agent's `hash`), resumable, rate-limited, interruptible.

import type { PairSpec } from "../plan/inventory.js";
import type { Requests } from "../protocol/messages.js";
import { timelineMark } from "../timeline.js";
import { AgentClient, type AgentClientOptions } from "../transport/agent-client.js";
import { connectHost } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { listMailboxes } from "./scan-pair.js";

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
export type HashTotals = Requests["hash"]["result"] & {
  host: string;
  side: string;
  seconds: number;
  scanned: number;
};

/** Limits of the agent's hashing (hash --max-rate, --workers). */
export interface HashSideOptions {
  /** Bytes per second per host; undefined: no limit. */
  maxBytesPerSec: number | undefined;
  /** Hashing threads per host; undefined: one per core of the host. */
  workers: number | undefined;
}

/**
 * Hashes one side of a pair: lists the pair's mailboxes (on the master),
 * then has that side's agent fill their caches, HASH_BATCH mailboxes per
 * request. `update` gets one progress line at a time; an abort closes the
 * agent's stdin (it saves its caches and exits) and returns what it did.
 */
export async function hashPairSide(
  pair: PairSpec,
  side: "master" | "replica",
  { maxBytesPerSec, workers }: HashSideOptions,
  clientOptions: AgentClientOptions,
  signal: AbortSignal,
  update: (t: string) => void,
): Promise<HashTotals> {
  const conns: HostConnection[] = [];
  try {
    update("connecting");
    const master = await connectHost(pair.master);
    conns.push(master);
    const conn = side === "master" ? master : await connectHost(pair.replica);
    if (conn !== master) conns.push(conn);
    timelineMark("connected");
    // The agent starts (a process, over SSH a channel too) while the list is
    // read: neither needs the other until the first request.
    const agentStarting = AgentClient.start(conn, clientOptions);
    // Awaited below; until then a failed start must not count as unhandled.
    agentStarting.catch(() => {});
    let list: Awaited<ReturnType<typeof listMailboxes>>;
    try {
      list = await listMailboxes(pair.mailboxes, master, clientOptions);
    } catch (err) {
      await agentStarting.then(
        (agent) => agent.close(),
        () => {},
      );
      throw err;
    }
    timelineMark("mailbox list read");
    // No separate scan: the hash op reads each mailbox's index and cache
    // anyway and skips what is cached, so a scan first would read every
    // mailbox twice (and cost an agent start); for mail of a few kB that
    // was most of the command's time. The ETA is by mailboxes.
    const todo = list.mailboxes;
    const agent = await agentStarting;
    timelineMark("agent said hello");
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
                if (Object.keys(last).length === 0) timelineMark("first progress");
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
        timelineMark("hash answered");
        totals.mailboxes += r.mailboxes;
        totals.hashed += r.hashed;
        totals.hashedBytes += r.hashedBytes;
        totals.alreadyCached += r.alreadyCached;
        totals.failed.push(...r.failed);
      }
    } finally {
      await agent.close();
      timelineMark("agent closed");
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

function mb(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}
