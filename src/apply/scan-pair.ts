// Scanning both sides of a pair for `guidup plan`: get the mailbox list from
// the master, then scan every mailbox on master and replica with a few
// agents per host, in batches. Reads only; takes no locks. Here beside the
// engine, not in plan/: a plan is data, and scanning talks to hosts.

import { readFile } from "node:fs/promises";
import { parseMailboxList } from "../cyrus/mailbox-list.js";
import { FileAccessError } from "../errors.js";
import type { MailboxRef, MailboxScan } from "../protocol/messages.js";
import { AgentClient, type AgentClientOptions } from "../transport/agent-client.js";
import type { HostConnection } from "../transport/types.js";

/** Where the mailbox list comes from (inventory `mailboxes:`). */
export type MailboxSource = { command: string } | { file: string } | { discover: true };

/** Mailboxes (and invalid entries) per discover page: ~50 bytes each on the wire. */
export const DISCOVER_PAGE = 10_000;

/** Names per scan request: small enough for steady progress, big enough to amortise round trips. */
export const SCAN_BATCH = 200;
/** Agents per host while scanning (each is one SSH channel). */
export const SCAN_AGENTS = 4;

export interface PairScan {
  mailboxes: MailboxRef[];
  excluded: { name: string; reason: string }[];
  invalid: { name: string; reason: string }[];
  master: Map<string, MailboxScan>;
  replica: Map<string, MailboxScan>;
}

export interface ScanProgress {
  side: "master" | "replica";
  done: number;
  total: number;
}

/**
 * The mailbox list, with the entries that are not local mailboxes
 * (`excluded`) and those whose names Cyrus would not accept (`invalid`).
 * `acceptSuspicious`: read a list even when most lines are not names.
 */
export async function listMailboxes(
  source: MailboxSource,
  master: HostConnection,
  clientOptions: AgentClientOptions,
  acceptSuspicious = false,
): Promise<Omit<PairScan, "master" | "replica">> {
  if ("file" in source) {
    let text: string;
    try {
      text = await readFile(source.file, "utf8");
    } catch (err) {
      throw new FileAccessError(`mailbox list ${source.file}: ${(err as Error).message}`);
    }
    return parseMailboxList(text, source.file, { acceptSuspicious });
  }
  if ("discover" in source) {
    // In pages: one reply of a million names would be ~50 MB on one line,
    // near the framing's cap (plan itself never holds the list:
    // mailbox-listing.ts).
    const mailboxes: MailboxRef[] = [];
    const invalid: { name: string; reason: string }[] = [];
    for await (const page of discoverPages(master, clientOptions)) {
      mailboxes.push(...page.mailboxes);
      invalid.push(...page.invalid);
    }
    return { mailboxes, excluded: [], invalid };
  }
  const { stdout } = await master.runCommand(source.command);
  return parseMailboxList(stdout, `${master.host}: ${source.command}`, { acceptSuspicious });
}

/**
 * The master's discovery, a page at a time, from one agent started for it;
 * invalid entries' reasons name the host. An agent that predates paging
 * answers everything in its first page.
 */
export async function* discoverPages(
  master: HostConnection,
  clientOptions: AgentClientOptions,
  size = DISCOVER_PAGE,
): AsyncGenerator<{
  host: string;
  mailboxes: MailboxRef[];
  invalid: { name: string; reason: string }[];
}> {
  const agent = await AgentClient.start(master, clientOptions);
  try {
    for (let from = 0; ; from += size) {
      const page = await agent.request("discover", { page: { from, size } });
      yield {
        host: agent.host,
        mailboxes: page.mailboxes,
        invalid: (page.invalid ?? []).map((i) => ({
          name: i.name,
          reason: `${agent.host}: ${i.reason}`,
        })),
      };
      if (page.more !== true) return;
    }
  } finally {
    await agent.close();
  }
}

/**
 * Scans of one side through SCAN_AGENTS agents started once and kept for
 * every call of scan (guidup plan scans its list a window at a time).
 */
export class SideScanner {
  private constructor(
    readonly side: "master" | "replica",
    readonly agents: AgentClient[],
  ) {}

  static async start(
    conn: HostConnection,
    side: "master" | "replica",
    clientOptions: AgentClientOptions,
    agents = SCAN_AGENTS,
  ): Promise<SideScanner> {
    const started = await Promise.allSettled(
      Array.from({ length: Math.max(1, agents) }, () => AgentClient.start(conn, clientOptions)),
    );
    const ok = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = started.find((r) => r.status === "rejected");
    if (failed) {
      await Promise.all(ok.map((a) => a.close()));
      throw (failed as PromiseRejectedResult).reason;
    }
    return new SideScanner(side, ok);
  }

  async scan(
    mailboxes: readonly MailboxRef[],
    onProgress: (p: ScanProgress) => void,
  ): Promise<Map<string, MailboxScan>> {
    const results = new Map<string, MailboxScan>();
    let next = 0;
    await Promise.all(
      this.agents.map(async (agent) => {
        while (next < mailboxes.length) {
          const batch = mailboxes.slice(next, next + SCAN_BATCH);
          next += SCAN_BATCH;
          const { mailboxes: scans } = await agent.request("scan", { mailboxes: batch });
          for (const s of scans) results.set(s.name, s);
          onProgress({ side: this.side, done: results.size, total: mailboxes.length });
        }
      }),
    );
    return results;
  }

  async close(): Promise<void> {
    await Promise.all(this.agents.map((a) => a.close()));
  }
}

export async function scanSide(
  conn: HostConnection,
  side: "master" | "replica",
  mailboxes: readonly MailboxRef[],
  clientOptions: AgentClientOptions,
  onProgress: (p: ScanProgress) => void,
): Promise<Map<string, MailboxScan>> {
  const results = new Map<string, MailboxScan>();
  let nextBatch = 0;
  const batches: MailboxRef[][] = [];
  for (let i = 0; i < mailboxes.length; i += SCAN_BATCH)
    batches.push(mailboxes.slice(i, i + SCAN_BATCH));
  const agents = Math.max(1, Math.min(SCAN_AGENTS, batches.length));
  await Promise.all(
    Array.from({ length: agents }, async () => {
      const agent = await AgentClient.start(conn, clientOptions);
      try {
        while (nextBatch < batches.length) {
          const batch = batches[nextBatch++]!;
          const { mailboxes: scans } = await agent.request("scan", { mailboxes: batch });
          for (const s of scans) results.set(s.name, s);
          onProgress({ side, done: results.size, total: mailboxes.length });
        }
      } finally {
        await agent.close();
      }
    }),
  );
  return results;
}
