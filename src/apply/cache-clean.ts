// cache clean as a pair operation: which plan of a pair is the newest, how
// much of it is left, and removing guidup's cyrus.sha1s files from every
// listed mailbox on both sides (the agent's cache-clean, in batches).

import { readdir } from "node:fs/promises";
import { join } from "node:path";
import YAML from "yaml";
import { UsageError } from "../errors.js";
import type { PairSpec } from "../plan/inventory.js";
import { readLines } from "../plan/line-reader.js";
import { openPlan } from "../plan/plan-stream.js";
import { AgentClient, type AgentClientOptions } from "../transport/agent-client.js";
import { connectHosts } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { listMailboxes } from "./scan-pair.js";
import { FINAL_PHASES } from "./state.js";
import { StateStore, stateDirFor } from "./state-store.js";

/** Mailboxes per cache-clean request. */
const CLEAN_BATCH = 500;

/** How many of the plan's mailboxes are not done. */
export async function planProgress(
  pair: string,
  path: string,
): Promise<{ total: number; left: number }> {
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

/** The newest plan (by its created time) of the pair in dir, or undefined. */
export async function newestPlan(pair: string, dir: string): Promise<string | undefined> {
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

/** Removes the sha1 cache of every listed mailbox on both sides; the files removed per side. */
export async function cleanPairCaches(
  pair: PairSpec,
  clientOptions: AgentClientOptions,
): Promise<{ master: number; replica: number }> {
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
