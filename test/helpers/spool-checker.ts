// The live-traffic checker (issue #9, "How it must be proved"): after the
// writer (examples/cyrus-writer.ts) has stopped and its replica replayer has
// caught up, hold both spools to the writer's journal:
//
//   - every cyrus.index / cyrus.expunge parses (the project's IndexReader);
//   - every record the journal says should exist is there exactly once, in
//     the file the journal says (delivered: cyrus.index; expunged: moved to
//     cyrus.expunge), records the journal never touched are where they were
//     before the traffic (the baseline), and no record is there that should
//     not be;
//   - flags the journal set are the flags on disk; a delivered message file
//     holds the bytes the journal hashed;
//   - an upgraded mailbox (one the caller names) is at version 10 with GUID =
//     SHA1(message file) for every record of index and expunge, and each of
//     its files is byte for byte what the project's converter makes of it
//     (convertIndex to 10 with SHA1 GUIDs: a correct v10 file is a fixed
//     point, so any stray byte — a spare, a count, a MODSEQ 0 — shows); in any v10
//     file a GUID that is not old-style (NULL or padded, which Cyrus itself
//     still writes) is the SHA1 of its file; cyrus.expunge has the index's
//     version;
//   - master and replica hold the same (uid, GUID) lists per mailbox;
//   - the replayer replayed every master op, and neither side journaled a
//     failed op.
//
// Each problem names the mailbox, the side and the UID.

import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { type JournalEntry, type OpEntry, opsOf } from "../../examples/cyrus-writer/journal.js";
import { isOldStyleGuid, NULL_GUID } from "../../src/cyrus/guid.js";
import { IndexReader } from "../../src/cyrus/index-file.js";
import { expectedV10 } from "./apply-harness.js";

export type Side = "master" | "replica";
const SIDES: readonly Side[] = ["master", "replica"];

/** Where the spools are: test/helpers/apply-harness.ts's TestPair fits. */
export interface SpoolLayout {
  names: readonly string[];
  mailboxDir(side: Side, name: string): string;
}

export interface DiskRecord {
  uid: number;
  /** v10: the GUID; v7–v9: the UUID padded with 8 zero bytes; v6: the NULL GUID. */
  guid: Buffer;
  flags: number;
}

export interface DiskMailbox {
  indexMinor: number;
  expungeMinor?: number;
  index: DiskRecord[];
  expunge: DiskRecord[];
}

export interface Problem {
  mailbox: string;
  side?: Side;
  uid?: number;
  message: string;
  /** The mailbox should have been upgraded and was not (nothing lost, just not done). */
  notUpgraded?: true;
}

async function readFileRecords(file: string, kind: "index" | "expunge") {
  const reader = await IndexReader.open(file, { kind });
  try {
    const out: DiskRecord[] = [];
    for await (const r of reader.records()) {
      const guid = r.get("guid") as Buffer | undefined;
      const uuid = r.get("uuid") as Buffer | undefined;
      out.push({
        uid: r.get("uid") as number,
        guid: guid ?? (uuid ? Buffer.concat([uuid, Buffer.alloc(8)]) : NULL_GUID),
        flags: r.get("systemFlags") as number,
      });
    }
    return { minor: reader.header.minorVersion, records: out };
  } finally {
    await reader.close();
  }
}

/** A mailbox's records as on disk now. Throws (naming the file) when a file does not parse. */
export async function readDiskMailbox(dir: string): Promise<DiskMailbox> {
  const index = await readFileRecords(path.join(dir, "cyrus.index"), "index");
  const expungeFile = path.join(dir, "cyrus.expunge");
  const expunge =
    existsSync(expungeFile) && readFileSync(expungeFile).length > 0
      ? await readFileRecords(expungeFile, "expunge")
      : undefined;
  return {
    indexMinor: index.minor,
    ...(expunge ? { expungeMinor: expunge.minor } : {}),
    index: index.records,
    expunge: expunge?.records ?? [],
  };
}

/** UID lists per mailbox and side, taken before the traffic starts. */
export type Baseline = Record<Side, Map<string, { index: number[]; expunge: number[] }>>;

export async function takeBaseline(layout: SpoolLayout): Promise<Baseline> {
  const out = { master: new Map(), replica: new Map() } as Baseline;
  for (const side of SIDES)
    for (const name of layout.names) {
      const m = await readDiskMailbox(layout.mailboxDir(side, name));
      out[side].set(name, {
        index: m.index.map((r) => r.uid),
        expunge: m.expunge.map((r) => r.uid),
      });
    }
  return out;
}

function counts<T>(items: Iterable<T>): Map<T, number> {
  const m = new Map<T, number>();
  for (const u of items) m.set(u, (m.get(u) ?? 0) + 1);
  return m;
}

const sha1Hex = (b: Buffer) => createHash("sha1").update(b).digest("hex");

/** What the journal says a mailbox must hold, starting from the baseline. */
interface Expected {
  index: Map<number, number>;
  expunge: Map<number, number>;
  sha1: Map<number, string>;
  flags: Map<number, number>;
}

function expectedOf(
  name: string,
  base: { index: number[]; expunge: number[] },
  ops: readonly OpEntry[],
  problems: Problem[],
): Expected {
  const e: Expected = {
    index: counts(base.index),
    expunge: counts(base.expunge),
    sha1: new Map(),
    flags: new Map(),
  };
  for (const op of ops) {
    if (op.op === "deliver") {
      if (e.index.has(op.uid) || e.sha1.has(op.uid) || e.expunge.has(op.uid))
        problems.push({
          mailbox: name,
          side: "master",
          uid: op.uid,
          message: `journal: uid ${op.uid} delivered again (seq ${op.seq}) though it already existed: an earlier append was lost and its UID reused`,
        });
      e.index.set(op.uid, 1);
      e.sha1.set(op.uid, op.sha1);
    } else if (op.op === "expunge") {
      for (const u of op.uids) {
        const n = e.index.get(u) ?? 0;
        if (n === 0)
          problems.push({
            mailbox: name,
            side: "master",
            uid: u,
            message: `journal: expunged uid ${u} (seq ${op.seq}) that should not have been in cyrus.index`,
          });
        if (n <= 1) e.index.delete(u);
        else e.index.set(u, n - 1);
        e.expunge.set(u, (e.expunge.get(u) ?? 0) + 1);
      }
    } else e.flags.set(op.uid, op.flags);
  }
  return e;
}

function compareCounts(
  name: string,
  side: Side,
  file: string,
  expected: Map<number, number>,
  actual: Map<number, number>,
  problems: Problem[],
): void {
  const uids = [...new Set([...expected.keys(), ...actual.keys()])].sort((a, b) => a - b);
  for (const uid of uids) {
    const want = expected.get(uid) ?? 0;
    const got = actual.get(uid) ?? 0;
    if (want !== got)
      problems.push({
        mailbox: name,
        side,
        uid,
        message:
          got === 0
            ? `uid ${uid} missing from ${file} (the journal says it is there${want > 1 ? ` ${want} times` : ""})`
            : want === 0
              ? `uid ${uid} is in ${file} ${got === 1 ? "once" : `${got} times`}; the journal says it is not there`
              : `uid ${uid} is in ${file} ${got} times; the journal says ${want}`,
      });
  }
}

/**
 * Checks both spools against the baseline and the journals. `replica` is the
 * replayer's journal, or undefined when there is no replica traffic (then the
 * replica is held to the master's journal all the same).
 */
export async function checkSpools(
  layout: SpoolLayout,
  baseline: Baseline,
  master: readonly JournalEntry[],
  replica: readonly JournalEntry[] | undefined,
  opts: { upgraded?: readonly string[] } = {},
): Promise<Problem[]> {
  const upgraded = new Set(opts.upgraded ?? []);
  const problems: Problem[] = [];
  const masterOps = opsOf(master);
  const byMailbox = new Map<string, OpEntry[]>();
  for (const op of masterOps) byMailbox.set(op.mailbox, [...(byMailbox.get(op.mailbox) ?? []), op]);
  for (const [side, entries] of [
    ["master", master],
    ["replica", replica ?? []],
  ] as const)
    for (const e of entries)
      if (e.kind === "error" && !e.refused)
        problems.push({
          mailbox: e.mailbox,
          side,
          message: `writer op ${e.op} (seq ${e.seq}) failed: ${e.message}`,
        });
  if (replica !== undefined) {
    const replayed = new Set(opsOf(replica).map((e) => e.seq));
    for (const op of masterOps)
      if (!replayed.has(op.seq))
        problems.push({
          mailbox: op.mailbox,
          side: "replica",
          ...("uid" in op ? { uid: op.uid } : {}),
          message: `master op seq ${op.seq} (${op.op}) was never replayed on the replica`,
        });
  }

  for (const name of layout.names) {
    const baseM = baseline.master.get(name);
    const baseR = baseline.replica.get(name);
    if (!baseM || !baseR) {
      problems.push({ mailbox: name, message: "not in the baseline" });
      continue;
    }
    if (baseM.index.join() !== baseR.index.join() || baseM.expunge.join() !== baseR.expunge.join())
      problems.push({ mailbox: name, message: "master and replica differed before the traffic" });
    const expected = expectedOf(name, baseM, byMailbox.get(name) ?? [], problems);
    const disk: Partial<Record<Side, DiskMailbox>> = {};
    for (const side of SIDES) {
      const dir = layout.mailboxDir(side, name);
      let m: DiskMailbox;
      try {
        m = await readDiskMailbox(dir);
      } catch (err) {
        problems.push({
          mailbox: name,
          side,
          message: `does not parse: ${(err as Error).message}`,
        });
        continue;
      }
      disk[side] = m;
      compareCounts(
        name,
        side,
        "cyrus.index",
        expected.index,
        counts(m.index.map((r) => r.uid)),
        problems,
      );
      compareCounts(
        name,
        side,
        "cyrus.expunge",
        expected.expunge,
        counts(m.expunge.map((r) => r.uid)),
        problems,
      );
      const all = [...m.index, ...m.expunge];
      for (const [uid, flags] of expected.flags) {
        // The record the journal flagged: in the index, or (expunged since)
        // the last one appended to cyrus.expunge — an older expunged copy of
        // the same UID may sit before it.
        const r = m.index.find((x) => x.uid === uid) ?? m.expunge.findLast((x) => x.uid === uid);
        if (r && r.flags !== flags)
          problems.push({
            mailbox: name,
            side,
            uid,
            message: `uid ${uid} has SYSTEM_FLAGS ${r.flags}; the journal set ${flags}`,
          });
      }
      const fileSha1 = new Map<number, string>();
      const sha1Of = (uid: number): string | undefined => {
        if (!fileSha1.has(uid)) {
          const f = path.join(dir, `${uid}.`);
          if (!existsSync(f)) return undefined;
          fileSha1.set(uid, sha1Hex(readFileSync(f)));
        }
        return fileSha1.get(uid);
      };
      for (const [uid, sha1] of expected.sha1) {
        const got = sha1Of(uid);
        if (got !== sha1)
          problems.push({
            mailbox: name,
            side,
            uid,
            message:
              got === undefined
                ? `message file ${uid}. is missing`
                : `message file ${uid}. is not the one the journal delivered`,
          });
      }
      if (m.expungeMinor !== undefined && m.expungeMinor !== m.indexMinor)
        problems.push({
          mailbox: name,
          side,
          message: `cyrus.expunge is at version ${m.expungeMinor}, cyrus.index at ${m.indexMinor}`,
        });
      if (upgraded.has(name) && m.indexMinor !== 10)
        problems.push({
          mailbox: name,
          side,
          message: `not upgraded: cyrus.index is at version ${m.indexMinor}`,
          notUpgraded: true,
        });
      const oldStyle = m.indexMinor === 10 ? all.filter((r) => isOldStyleGuid(r.guid)) : [];
      if (upgraded.has(name) && oldStyle.length > 0)
        problems.push({
          mailbox: name,
          side,
          uid: (oldStyle[0] as DiskRecord).uid,
          message: `not upgraded: ${oldStyle.length} of ${all.length} records still have old-style GUIDs (uid ${oldStyle
            .slice(0, 5)
            .map((r) => r.uid)
            .join(", ")}${oldStyle.length > 5 ? ", …" : ""})`,
          notUpgraded: true,
        });
      // Only once the GUIDs are done: old-style ones are reported above, once.
      if (upgraded.has(name) && m.indexMinor === 10 && oldStyle.length === 0)
        for (const kind of ["index", "expunge"] as const) {
          const file = path.join(dir, `cyrus.${kind}`);
          if (!existsSync(file) || readFileSync(file).length === 0) continue;
          const now = readFileSync(file);
          const converted = await expectedV10(file, kind, dir);
          if (!now.equals(converted)) {
            let at = 0;
            while (at < now.length && now[at] === converted[at]) at++;
            problems.push({
              mailbox: name,
              side,
              message: `cyrus.${kind} is not what the converter makes of it (first difference at byte ${at} of ${now.length}, converted ${converted.length})`,
            });
          }
        }
      if (m.indexMinor === 10)
        for (const r of all) {
          if (isOldStyleGuid(r.guid)) continue; // reported above for upgraded mailboxes
          const got = sha1Of(r.uid);
          if (got === undefined)
            problems.push({
              mailbox: name,
              side,
              uid: r.uid,
              message: `message file ${r.uid}. is missing`,
            });
          else if (r.guid.toString("hex") !== got)
            problems.push({
              mailbox: name,
              side,
              uid: r.uid,
              message: `uid ${r.uid}: GUID ${r.guid.toString("hex")} is not SHA1 of its message file (${got})`,
            });
        }
    }
    const [m, r] = [disk.master, disk.replica];
    if (m && r) {
      if (m.indexMinor !== r.indexMinor)
        problems.push({
          mailbox: name,
          message: `index version differs: master ${m.indexMinor}, replica ${r.indexMinor}`,
        });
      else
        for (const file of ["index", "expunge"] as const) {
          const key = (x: DiskRecord) => `${x.uid}:${x.guid.toString("hex")}`;
          const mk = counts(m[file].map(key));
          const rk = counts(r[file].map(key));
          const differing = [...new Set([...mk.keys(), ...rk.keys()])].filter(
            (k) => mk.get(k) !== rk.get(k),
          );
          if (differing.length > 0)
            problems.push({
              mailbox: name,
              uid: Number(differing[0]?.split(":")[0]),
              message: `master and replica cyrus.${file} differ in (uid, GUID): ${differing
                .slice(0, 4)
                .map((k) => `${k} (master ${mk.get(k) ?? 0}, replica ${rk.get(k) ?? 0})`)
                .join("; ")}`,
            });
        }
    }
  }
  return problems;
}

/** One line per problem: "user.x master uid 7: …". */
export function describeProblems(problems: readonly Problem[], max = 40): string {
  const lines = problems
    .slice(0, max)
    .map(
      (p) =>
        `${p.mailbox}${p.side ? ` ${p.side}` : ""}${p.uid !== undefined ? ` uid ${p.uid}` : ""}: ${p.message}`,
    );
  if (problems.length > max) lines.push(`… and ${problems.length - max} more`);
  return lines.join("\n");
}
