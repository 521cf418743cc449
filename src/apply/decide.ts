// What apply does with one mailbox once both sides are locked and staged: a
// pure function of (plan entry, master's locked facts, replica's locked
// facts, target, drift mode). No I/O here; mailbox-run.ts carries the
// decision out, test/apply/decide.test.ts walks every combination.
//
//   done            both sides at the target with equal (uid, GUID) lists
//   upgrade         neither done, staged lists equal: commit replica, then master
//   repair          one side done, the other's staged list equals it: commit that side
//   stale           the plan's decision may be wrong (see driftOf)
//   compare-lists   the lists disagree: fetch them to tell `lagging` (replication
//                   has not caught up: retry later) from `diverged` (same UID,
//                   different GUID: a person must look)
//
// Drift that does not matter (issue #9): appends above the plan's LAST_UID,
// expunges (cyrus.index → cyrus.expunge), expunge clean-up, flag and modseq
// changes — applied as planned, and counted. Drift that matters — stale:
// UIDVALIDITY changed, an index or expunge version moved other than to the
// target, LAST_UID went down (it never does: an edited plan), an entry whose
// own figures contradict each other (inconsistentSide: e.g. LAST_UID edited
// below the record count), the planned
// (uid, GUID) set changed (an unplanned UID ≤ LAST_UID, or a planned
// record's SHA1 GUID changed), the mailbox vanished. After clean-up removed
// records the set digest cannot match; then fewer records than planned are
// accepted and what is still checked is UIDVALIDITY, versions and LAST_UID
// (and, as always, master against replica before anything is committed).

import type { Action, PlannedMailbox, SideFacts } from "../plan/model.js";
import type { MailboxScan, PlannedSetFacts, Staged } from "../protocol/messages.js";
import type { Side } from "./lanes.js";

/** contract: the default (issue #9); exact: any change is stale; any: no check. */
export type DriftMode = "contract" | "exact" | "any";

/** One side as its lock answer describes it. */
export interface SideNow {
  scan: MailboxScan;
  check?: PlannedSetFacts;
  staged?: Staged;
}

/** What changed since the plan without mattering (state file and report). */
export interface DriftCounts {
  appended: number;
  expunged: number;
  cleanedUp: number;
}

export type Decision =
  | { kind: "done" }
  | { kind: "upgrade" }
  | { kind: "repair"; side: Side }
  | { kind: "stale"; side?: Side; field: string; message: string }
  | { kind: "compare-lists"; ahead?: Side };

const SIDES: readonly Side[] = ["master", "replica"];

/**
 * Why one side's planned facts cannot all be true of one scan; undefined when
 * they can. A plan entry is what `guidup plan` saw: the records of
 * cyrus.index all have distinct UIDs ≤ its LAST_UID, and the planned set is
 * cyrus.index ∪ cyrus.expunge cut at that LAST_UID, so it holds every
 * cyrus.index record and no more than both files together. An entry that
 * breaks this was edited (e.g. LAST_UID lowered, which would otherwise pass
 * records above the new value as appends and the missing ones as expunge
 * clean-up); it is refused, never read as drift. (An edit that keeps these
 * relations — LAST_UID lowered but still ≥ the record count — cannot be
 * told from appends and clean-up by the plan's figures alone; the digest
 * still differs, and master and replica must still agree before anything is
 * committed.)
 */
export function inconsistentSide(side: Side, f: SideFacts): string | undefined {
  const { index, expunge, planned } = f;
  const where = `the ${side}'s entry`;
  if (index.records > index.lastUid)
    return `${where} says cyrus.index has ${index.records} records but LAST_UID ${index.lastUid} (UIDs are distinct and at most LAST_UID): LAST_UID was edited down?`;
  if (planned.records > index.lastUid)
    return `${where} plans ${planned.records} records at or below LAST_UID ${index.lastUid}: more than there are UIDs (LAST_UID edited down?)`;
  if (planned.records < index.records)
    return `${where} plans ${planned.records} records but cyrus.index has ${index.records}, all at or below LAST_UID ${index.lastUid}`;
  if (planned.records > index.records + (expunge?.records ?? 0))
    return `${where} plans ${planned.records} records, more than cyrus.index and cyrus.expunge hold (${index.records} + ${expunge?.records ?? 0})`;
  for (const [name, x] of [
    ["cyrus.index", index],
    ["cyrus.expunge", expunge],
  ] as const)
    if (x && (x.oldStyle > x.records || x.nullGuids > x.oldStyle))
      return `${where} says ${name} has ${x.oldStyle} old-style GUIDs (${x.nullGuids} NULL) in ${x.records} records`;
  return undefined;
}

/** Why an entry's actions make no sense for the plan's target and facts; undefined when they do. */
export function refuseActions(entry: PlannedMailbox, target: number): string | undefined {
  for (const side of SIDES) {
    const why = inconsistentSide(side, entry[side]);
    if (why) return `inconsistent plan entry: ${why}`;
  }
  const has = (a: Action) => entry.actions.includes(a);
  const files = SIDES.flatMap((s) =>
    [
      ["cyrus.index", entry[s].index],
      ["cyrus.expunge", entry[s].expunge],
    ].flatMap(([name, f]) =>
      f && typeof f === "object" ? [{ side: s, name: name as string, f }] : [],
    ),
  );
  if (has("guid") && target !== 10)
    return `actions [guid]: GUIDs are only written at version 10, and this plan's target is ${target}`;
  const off = files.find(({ f }) => f.minor !== target);
  if (!has("version") && off)
    return `actions lack "version" but the ${off.side}'s ${off.name} is at version ${off.f.minor}, not ${target}`;
  if (has("version") && !off)
    return `actions [version]: every file is already at version ${target}`;
  if (has("guid") && files.every(({ f }) => f.oldStyle === 0 && f.minor === 10))
    return `actions [guid]: the plan found no old-style GUIDs to replace`;
  return undefined;
}

/** Whether one side is at the target as far as the entry's actions go. */
export function isSideDone(
  scan: MailboxScan | undefined,
  target: number,
  actions: readonly Action[],
): boolean {
  if (scan?.status !== "ok" || !scan.index) return false;
  const guids = actions.includes("guid") && target === 10;
  return [scan.index, scan.expunge]
    .filter((f) => f !== undefined)
    .every((f) => f.minor === target && (!guids || f.oldStyle === 0));
}

/** Whether a commit of ours was interrupted between its renames (cyrus.expunge first). */
function halfCommitted(now: SideNow, target: number): boolean {
  return now.scan.expunge?.minor === target && now.scan.index?.minor !== target;
}

/** The drift of one side against its plan facts: stale (with the field), or counts. */
export function driftOf(
  side: Side,
  planned: SideFacts,
  now: SideNow,
  target: number,
  mode: DriftMode,
): { stale?: { field: string; message: string }; counts: DriftCounts } {
  const counts: DriftCounts = { appended: 0, expunged: 0, cleanedUp: 0 };
  const stale = (field: string, message: string) => ({
    stale: { field, message: `${side} ${field}: ${message}` },
    counts,
  });
  const n = now.scan;
  if (n.status !== "ok" || !n.index)
    return stale("mailbox", `the mailbox is ${n.status} (${n.reason ?? "no cyrus.index"})`);
  if (mode !== "any") {
    const why = inconsistentSide(side, planned);
    if (why)
      return { stale: { field: "entry", message: `inconsistent plan entry: ${why}` }, counts };
  }
  if (now.check) {
    counts.appended = now.check.appended;
    counts.expunged = Math.max(0, planned.index.records - now.check.indexUpTo);
    counts.cleanedUp = Math.max(0, planned.planned.records - now.check.records);
  }
  if (mode === "any") return { counts };
  if (mode === "exact") {
    return n.fingerprint === planned.fingerprint
      ? { counts }
      : stale("fingerprint", "changed since the plan was made (--exact-plan)");
  }
  if (n.index.uidValidity !== planned.index.uidValidity)
    return stale(
      "uidValidity",
      `plan says ${planned.index.uidValidity}, the mailbox has ${n.index.uidValidity} (recreated?)`,
    );
  if (n.index.minor !== planned.index.minor && n.index.minor !== target)
    return stale(
      "index version",
      `plan says ${planned.index.minor}, cyrus.index is at ${n.index.minor}`,
    );
  if (
    planned.expunge &&
    n.expunge &&
    n.expunge.minor !== planned.expunge.minor &&
    n.expunge.minor !== target
  )
    return stale(
      "expunge version",
      `plan says ${planned.expunge.minor}, cyrus.expunge is at ${n.expunge.minor}`,
    );
  if (n.index.lastUid < planned.index.lastUid)
    return stale(
      "lastUid",
      `plan says ${planned.index.lastUid}, cyrus.index says ${n.index.lastUid} (LAST_UID never goes down)`,
    );
  const p = planned.planned;
  const c = now.check;
  if (!p || !c)
    return stale("digest", "no planned (uid, GUID) digest to check against; run guidup plan again");
  if (c.digest === p.digest || halfCommitted(now, target)) return { counts };
  if (c.records < p.records) return { counts }; // expunge clean-up: see the top of this file
  return stale(
    "digest",
    `the (uid, GUID) list up to LAST_UID ${planned.index.lastUid} differs from the plan's (${c.records} records now, ${p.records} planned): a planned record's GUID changed or an unplanned UID appeared`,
  );
}

/** The decision after the locks; `stale` checks only sides not already done. */
export function decide(
  entry: PlannedMailbox,
  now: Record<Side, SideNow>,
  target: number,
  mode: DriftMode,
): Decision {
  const done = {
    master: isSideDone(now.master.scan, target, entry.actions),
    replica: isSideDone(now.replica.scan, target, entry.actions),
  };
  if (done.master && done.replica) {
    return now.master.scan.guidDigest === now.replica.scan.guidDigest
      ? { kind: "done" }
      : { kind: "compare-lists" };
  }
  for (const side of SIDES) {
    if (done[side]) continue;
    const d = driftOf(side, entry[side], now[side], target, mode);
    if (d.stale) return { kind: "stale", side, ...d.stale };
  }
  const after = (side: Side) =>
    done[side] ? now[side].scan.guidDigest : now[side].staged?.guidDigest;
  if (after("master") === undefined || after("master") !== after("replica"))
    return done.master || done.replica
      ? { kind: "compare-lists", ahead: done.master ? "master" : "replica" }
      : { kind: "compare-lists" };
  if (done.replica) return { kind: "repair", side: "master" };
  if (done.master) return { kind: "repair", side: "replica" };
  return { kind: "upgrade" };
}

/** How master's and replica's (uid, GUID) lists differ. */
export interface ListVerdict {
  kind: "lagging" | "diverged";
  message: string;
  /** The first few UIDs that differ (diverged) or are missing/extra (lagging). */
  uids: number[];
}

const PAIR = 24;

function toMap(pairs: Buffer): Map<number, string> {
  const m = new Map<number, string>();
  for (let at = 0; at + PAIR <= pairs.length; at += PAIR)
    m.set(pairs.readUInt32BE(at), pairs.toString("hex", at + 4, at + PAIR));
  return m;
}

function range(uids: number[]): string {
  if (uids.length === 0) return "";
  const sorted = [...uids].sort((a, b) => a - b);
  return sorted.length === 1
    ? `uid ${sorted[0]}`
    : `uid ${sorted[0]}..${sorted[sorted.length - 1]}`;
}

/**
 * Lag is not divergence: the replica lacking UIDs the master has, or still
 * holding UIDs (≤ the master's LAST_UID) the master expunged, is replication
 * not caught up yet; the same UID with different GUIDs, or a replica UID
 * above anything the master ever assigned, is divergence.
 */
export function classifyLists(master: Buffer, replica: Buffer, masterLastUid: number): ListVerdict {
  const m = toMap(master);
  const r = toMap(replica);
  const differ: number[] = [];
  const missing: number[] = [];
  const extra: number[] = [];
  const beyond: number[] = [];
  for (const [uid, g] of m) {
    const rg = r.get(uid);
    if (rg === undefined) missing.push(uid);
    else if (rg !== g) differ.push(uid);
  }
  for (const uid of r.keys()) {
    if (m.has(uid)) continue;
    (uid > masterLastUid ? beyond : extra).push(uid);
  }
  if (differ.length > 0 || beyond.length > 0) {
    const parts: string[] = [];
    if (differ.length > 0)
      parts.push(
        `same UID, different GUID on master and replica: uid ${differ.slice(0, 5).join(", ")}${differ.length > 5 ? ` (${differ.length} in all)` : ""}`,
      );
    if (beyond.length > 0)
      parts.push(`the replica has UIDs the master never assigned (${range(beyond)})`);
    return {
      kind: "diverged",
      message: `${parts.join("; ")}; check those message files on both sides (guidup verify)`,
      uids: [...differ, ...beyond].slice(0, 5),
    };
  }
  const parts: string[] = [];
  if (missing.length > 0)
    parts.push(`replica behind by ${missing.length} UIDs (${range(missing)})`);
  if (extra.length > 0)
    parts.push(`replica still holds ${extra.length} UIDs the master expunged (${range(extra)})`);
  if (parts.length === 0)
    return {
      kind: "diverged",
      message: "the (uid, GUID) digests differ but the lists agree",
      uids: [],
    };
  return {
    kind: "lagging",
    message: `${parts.join("; ")}; waiting for replication`,
    uids: [...missing, ...extra].slice(0, 5),
  };
}
