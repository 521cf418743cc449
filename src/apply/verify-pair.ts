// guidup verify's check of one pair: every mailbox at the target on both
// sides, no old-style GUID left, master and replica (uid, GUID) lists
// identical, and every checked GUID equal to the SHA1 of its message file.

import type { HostSpec } from "../host-spec.js";
import type { MailboxRef, MailboxVerify } from "../protocol/messages.js";
import { AgentClient, type AgentClientOptions } from "../transport/agent-client.js";
import { connectHosts } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { isSideDone } from "./mailbox-run.js";

export const VERIFY_BATCH = 50;
const VERIFY_AGENTS = 2;

/** What verify found wrong, by kind (declared once; summaries count by these). */
export const VERIFY_KINDS = [
  "unreadable-mailbox",
  "not-at-target",
  "guid-not-sha1",
  "unreadable-message",
  "sides-differ",
  "invalid-name",
] as const;
export type VerifyKind = (typeof VERIFY_KINDS)[number];

export interface VerifyProblem {
  name: string;
  kind: VerifyKind;
  problem: string;
}

export interface VerifyReport {
  mailboxes: number;
  recordsChecked: { master: number; replica: number };
  /** Sorted by mailbox name (then as found). */
  problems: VerifyProblem[];
  /** Mailboxes per result: "ok", or the kind of their first problem. */
  results: Partial<Record<"ok" | VerifyKind, number>>;
}

async function verifySide(
  conn: HostConnection,
  mailboxes: readonly MailboxRef[],
  sample: number | undefined,
  clientOptions: AgentClientOptions,
  onProgress: (done: number) => void,
  withPairs = false,
): Promise<Map<string, MailboxVerify>> {
  const out = new Map<string, MailboxVerify>();
  const batches: MailboxRef[][] = [];
  for (let i = 0; i < mailboxes.length; i += VERIFY_BATCH)
    batches.push(mailboxes.slice(i, i + VERIFY_BATCH));
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(VERIFY_AGENTS, batches.length)) }, async () => {
      const agent = await AgentClient.start(conn, clientOptions);
      try {
        while (next < batches.length) {
          const batch = batches[next++]!;
          const r = await agent.request("verify", {
            mailboxes: batch,
            ...(sample !== undefined ? { sample } : {}),
            ...(withPairs ? { withPairs } : {}),
          });
          for (const v of r.mailboxes) out.set(v.name, v);
          onProgress(out.size);
        }
      } finally {
        await agent.close();
      }
    }),
  );
  return out;
}

export async function verifyPair(options: {
  master: HostConnection;
  replica: HostConnection;
  mailboxes: readonly MailboxRef[];
  /** Names or directories the mailbox list could not use (invalid names, strays). */
  invalid?: readonly { name: string; reason: string }[];
  target: number;
  sample?: number;
  clientOptions?: AgentClientOptions;
  onProgress?: (side: "master" | "replica", done: number, total: number) => void;
}): Promise<VerifyReport> {
  const total = options.mailboxes.length;
  const [m, r] = await Promise.all(
    (["master", "replica"] as const).map((side) =>
      verifySide(
        side === "master" ? options.master : options.replica,
        options.mailboxes,
        options.sample,
        options.clientOptions ?? {},
        (d) => options.onProgress?.(side, d, total),
      ),
    ),
  );
  const report: VerifyReport = {
    mailboxes: total,
    recordsChecked: { master: 0, replica: 0 },
    problems: [],
    results: {},
  };
  const byName = [...options.mailboxes].sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  // Where the two sides' (uid, GUID) lists differ, ask both for the lists
  // themselves (no hashing): the report names the UIDs to look at.
  const differing = byName.filter((ref) => {
    const mg = m!.get(ref.name)?.scan.guidDigest;
    const rg = r!.get(ref.name)?.scan.guidDigest;
    return mg !== undefined && rg !== undefined && mg !== rg;
  });
  const lists =
    differing.length === 0
      ? undefined
      : await Promise.all(
          (["master", "replica"] as const).map((side) =>
            verifySide(
              side === "master" ? options.master : options.replica,
              differing,
              0,
              options.clientOptions ?? {},
              () => {},
              true,
            ),
          ),
        );
  for (const ref of byName) {
    const sides = { master: m!.get(ref.name), replica: r!.get(ref.name) };
    const found: VerifyProblem[] = [];
    const add = (kind: VerifyKind, problem: string) =>
      found.push({ name: ref.name, kind, problem });
    for (const side of ["master", "replica"] as const) {
      const v = sides[side];
      if (v?.scan.status !== "ok") {
        add("unreadable-mailbox", `${side}: ${v?.scan.reason ?? v?.scan.status ?? "not checked"}`);
        continue;
      }
      report.recordsChecked[side] += v.checked;
      if (!isSideDone(v.scan, options.target, ["version", "guid"])) {
        const f = v.scan.index!;
        add(
          "not-at-target",
          `${side}: index version ${f.minor}, ${f.oldStyle + (v.scan.expunge?.oldStyle ?? 0)} old-style GUIDs (target ${options.target})`,
        );
      }
      for (const x of v.mismatches)
        add(
          "guid-not-sha1",
          `${side}: uid ${x.uid}: GUID ${x.stored} is not the SHA1 of its message file (${x.actual})`,
        );
      for (const x of v.unreadable) add("unreadable-message", `${side}: uid ${x.uid}: ${x.reason}`);
    }
    const mg = sides.master?.scan.guidDigest;
    const rg = sides.replica?.scan.guidDigest;
    if (mg && rg && mg !== rg)
      add(
        "sides-differ",
        `master and replica (uid, GUID) lists differ${describeDifference(
          lists?.[0]?.get(ref.name)?.pairs,
          lists?.[1]?.get(ref.name)?.pairs,
        )}`,
      );
    const result = found[0]?.kind ?? "ok";
    report.results[result] = (report.results[result] ?? 0) + 1;
    report.problems.push(...found);
  }
  // What the list could not name is never silently left out (a directory
  // with an invalid name stays unconverted): each is a problem of its own.
  for (const bad of [...(options.invalid ?? [])].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    report.mailboxes++;
    report.results["invalid-name"] = (report.results["invalid-name"] ?? 0) + 1;
    report.problems.push({ name: bad.name, kind: "invalid-name", problem: bad.reason });
  }
  return report;
}

/** How many differing UIDs a report names before it says "…". */
const NAMED_UIDS = 5;

/**
 * ": same uid, other GUID: 12, 15; only on master: 20, 21 (2)" from both
 * sides' (uid, GUID) lists (24 bytes a record, base64); "" without them.
 */
export function describeDifference(master?: string, replica?: string): string {
  if (master === undefined || replica === undefined) return "";
  const read = (b64: string) => {
    const buf = Buffer.from(b64, "base64");
    const map = new Map<number, string>();
    for (let at = 0; at + 24 <= buf.length; at += 24)
      map.set(buf.readUInt32BE(at), buf.toString("hex", at + 4, at + 24));
    return map;
  };
  const m = read(master);
  const r = read(replica);
  const otherGuid: number[] = [];
  const onlyMaster: number[] = [];
  const onlyReplica: number[] = [];
  for (const [uid, guid] of m) {
    const theirs = r.get(uid);
    if (theirs === undefined) onlyMaster.push(uid);
    else if (theirs !== guid) otherGuid.push(uid);
  }
  for (const uid of r.keys()) if (!m.has(uid)) onlyReplica.push(uid);
  const name = (what: string, uids: number[]) => {
    if (uids.length === 0) return [];
    uids.sort((a, b) => a - b);
    const shown = uids.slice(0, NAMED_UIDS).join(", ");
    return [`${what}: uid ${shown}${uids.length > NAMED_UIDS ? ", …" : ""} (${uids.length})`];
  };
  const parts = [
    ...name("same UID, other GUID", otherGuid),
    ...name("only on master", onlyMaster),
    ...name("only on replica", onlyReplica),
  ];
  return parts.length === 0 ? "" : `: ${parts.join("; ")}`;
}

/** One pair to verify: its hosts, its target, and how to get its mailboxes once connected. */
export interface VerifyJob {
  name: string;
  master: HostSpec;
  replica: HostSpec;
  target: number;
  /** The mailboxes to check, and what the list named that cannot be one. */
  mailboxes: (
    master: HostConnection,
  ) => Promise<{ refs: MailboxRef[]; invalid: { name: string; reason: string }[] }>;
}

/** Connects to the job's hosts, verifies its mailboxes, and closes the connections. */
export async function verifyJob(
  job: VerifyJob,
  options: {
    sample?: number;
    clientOptions: AgentClientOptions;
    /** Mailboxes done per side so far, of `total`. */
    onProgress: (done: { master: number; replica: number }, total: number) => void;
  },
): Promise<VerifyReport> {
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
      ...(options.sample !== undefined ? { sample: options.sample } : {}),
      clientOptions: options.clientOptions,
      onProgress: (side, d, total) => {
        done[side] = d;
        options.onProgress(done, total);
      },
    });
  } finally {
    await Promise.all([master.close(), replica.close()]);
  }
}
