// buildPlan: from the scans of both sides to the plan. Pure and
// deterministic: the same scans give the same plan except id and created.

import { InternalError } from "../errors.js";
import type { FileFacts, MailboxRef, MailboxScan } from "../protocol/messages.js";
import {
  type Action,
  PLAN_FORMAT,
  type Plan,
  type PlanHost,
  type PlannedMailbox,
  type PlanSummary,
  type SideFacts,
  type SkippedMailbox,
} from "./model.js";
import type { PlanWriter } from "./plan-stream.js";

export interface BuildPlanInput {
  id: string;
  created: string;
  tool: string;
  pair: string;
  target: number;
  hosts: { master: PlanHost; replica: PlanHost };
  /** The mailbox list (from the master), names unique. */
  mailboxes: readonly MailboxRef[];
  /** Entries of the list that are not local mailboxes (remote, reserved, …). */
  excluded?: readonly { name: string; reason: string }[];
  /** Names (or directories) Cyrus would not accept, with where and why: skipped as invalid-name. */
  invalid?: readonly { name: string; reason: string }[];
  master: ReadonlyMap<string, MailboxScan>;
  replica: ReadonlyMap<string, MailboxScan>;
}

type Decision =
  | { kind: "apply"; entry: PlannedMailbox }
  | { kind: "skip"; entry: SkippedMailbox }
  | { kind: "done" };

export function buildPlan(input: BuildPlanInput): Plan {
  const mailboxes: PlannedMailbox[] = [];
  const skipped: SkippedMailbox[] = [];
  let upToDate = 0;
  for (const ref of [...input.mailboxes].sort((a, b) => compareNames(a.name, b.name))) {
    const d = decide(ref, input.master.get(ref.name), input.replica.get(ref.name), input.target);
    if (d.kind === "apply") mailboxes.push(d.entry);
    else if (d.kind === "skip") skipped.push(d.entry);
    else upToDate++;
  }
  for (const ex of input.excluded ?? []) {
    skipped.push({ name: ex.name, reason: "excluded", detail: ex.reason });
  }
  const invalid = new Map((input.invalid ?? []).map((i) => [i.name, i.reason]));
  for (const [name, reason] of invalid)
    skipped.push({ name, reason: "invalid-name", detail: reason });
  skipped.sort((a, b) => compareNames(a.name, b.name));
  return {
    format: PLAN_FORMAT,
    id: input.id,
    created: input.created,
    tool: input.tool,
    pair: input.pair,
    target: input.target,
    hosts: input.hosts,
    summary: summarize(
      input.mailboxes.length + (input.excluded?.length ?? 0) + invalid.size,
      mailboxes,
      skipped,
      upToDate,
    ),
    mailboxes,
    skipped,
  };
}

/**
 * Names scanned (per side) and turned into entries at a time by
 * writePlanStreaming. Two windows are held (one written while the next is
 * scanned). 1,600 is two rounds of the scanning agents (4 per side, 200
 * names a request), so no agent waits at a window's end for a lone last
 * batch; and a window's scans now die young: with 5,000 they lived long
 * enough to be promoted to V8's old space and die there (at 100,000
 * mailboxes, plan peak RSS 166–176 → 163 MiB, the same plan).
 */
export const PLAN_WINDOW = 1_600;

/** A list already in compareNames order, names unique, read once (mailbox-listing.ts). */
export interface SortedMailboxes {
  inOrder: AsyncIterable<MailboxRef>;
}

type Skips =
  | readonly { name: string; reason: string }[]
  | AsyncIterable<{ name: string; reason: string }>;

export interface StreamingPlanInput {
  target: number;
  /** The mailbox list: names unique, any order in an array (sorted here), or already sorted. */
  mailboxes: readonly MailboxRef[] | SortedMailboxes;
  /** Entries of the list that are not local mailboxes. */
  excluded?: Skips;
  /** Names Cyrus would not accept (unique when not an array). */
  invalid?: Skips;
  /** Names per window (default PLAN_WINDOW). */
  window?: number;
  /** Scans both sides of some mailboxes (a window of the sorted list). */
  scan: (window: readonly MailboxRef[]) => Promise<{
    master: ReadonlyMap<string, MailboxScan>;
    replica: ReadonlyMap<string, MailboxScan>;
  }>;
}

/** Per side: mailboxes the scan found missing, and the first of them. */
export type MissingCounts = Record<"master" | "replica", { count: number; example?: MailboxScan }>;

/**
 * buildPlan into a PlanWriter, a window of PLAN_WINDOW names at a time: the
 * scans of a window are dropped once its entries are written, so the
 * controller holds two windows (one written, the next being scanned), never
 * every scan; a sorted list is read a window at a time too. Returns what
 * commit needs and the sanity check's counts; the caller commits (or
 * aborts) the writer.
 */
export async function writePlanStreaming(
  input: StreamingPlanInput,
  writer: PlanWriter,
): Promise<{ mailboxes: number; upToDate: number; missing: MissingCounts }> {
  const list = input.mailboxes;
  const refs: AsyncIterator<MailboxRef> = (
    "inOrder" in list
      ? list.inOrder
      : inOrderOf([...list].sort((a, b) => compareNames(a.name, b.name)))
  )[Symbol.asyncIterator]();
  let upToDate = 0;
  let listed = 0;
  let last: string | undefined;
  const missing: MissingCounts = { master: { count: 0 }, replica: { count: 0 } };
  const size = input.window ?? PLAN_WINDOW;
  const take = async (): Promise<MailboxRef[]> => {
    const window: MailboxRef[] = [];
    while (window.length < size) {
      const next = await refs.next();
      if (next.done) break;
      // The windows' order is the plan's: a list out of order (or with a
      // name twice) would be caught by the writer only for planned names.
      if (last !== undefined && compareNames(last, next.value.name) >= 0)
        throw new InternalError(
          `mailbox list out of order: ${JSON.stringify(next.value.name)} after ${JSON.stringify(last)}`,
        );
      last = next.value.name;
      window.push(next.value);
    }
    listed += window.length;
    return window;
  };
  // The next window is scanned while this one is written: otherwise both
  // sides' agents sat idle at every window boundary (waiting for the slower
  // side's last batch, then for the controller to write). Two windows' scans
  // are held at most.
  const scanWindow = async () => {
    const window = await take();
    if (window.length === 0) return undefined;
    const scans = input.scan(window);
    // Awaited below; a failure while the previous window is written must not
    // surface as an unhandled rejection first.
    scans.catch(() => {});
    return { window, scans };
  };
  let next = await scanWindow();
  while (next !== undefined) {
    const { window, scans: scanning } = next;
    const scans = await scanning;
    next = window.length === size ? await scanWindow() : undefined;
    for (const ref of window) {
      const m = scans.master.get(ref.name);
      const r = scans.replica.get(ref.name);
      for (const [side, scan] of [
        ["master", m],
        ["replica", r],
      ] as const)
        if (scan?.status === "missing") {
          missing[side].count++;
          missing[side].example ??= scan;
        }
      const d = decide(ref, m, r, input.target);
      if (d.kind === "apply") await writer.add(d.entry);
      else if (d.kind === "skip") await writer.skip(d.entry);
      else upToDate++;
    }
  }
  let skippedListed = 0;
  for await (const ex of input.excluded ?? []) {
    skippedListed++;
    await writer.skip({ name: ex.name, reason: "excluded", detail: ex.reason });
  }
  for await (const i of uniqueInvalid(input.invalid ?? [])) {
    skippedListed++;
    await writer.skip({ name: i.name, reason: "invalid-name", detail: i.reason });
  }
  return { mailboxes: listed + skippedListed, upToDate, missing };
}

/** An array may name a mailbox twice (one entry, the last reason, as buildPlan); a listing's are unique. */
function uniqueInvalid(invalid: Skips): Skips {
  if (!Array.isArray(invalid)) return invalid as AsyncIterable<{ name: string; reason: string }>;
  const byName = new Map(
    (invalid as readonly { name: string; reason: string }[]).map((i) => [i.name, i.reason]),
  );
  return [...byName].map(([name, reason]) => ({ name, reason }));
}

async function* inOrderOf(refs: readonly MailboxRef[]): AsyncGenerator<MailboxRef> {
  yield* refs;
}

/** Code units at which UTF-16 order stops being UTF-8 byte order (surrogates and above). */
const HIGH_UNITS = /[\ud800-\uffff]/;

/** Byte order of the UTF-8 names: stable across locales and machines. */
export function compareNames(a: string, b: string): number {
  // Below U+D800, UTF-16 code unit order is code point order, which is
  // UTF-8 byte order: the plain comparison, without encoding either name.
  if (!HIGH_UNITS.test(a) && !HIGH_UNITS.test(b)) return a < b ? -1 : a > b ? 1 : 0;
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function decide(
  ref: MailboxRef,
  master: MailboxScan | undefined,
  replica: MailboxScan | undefined,
  target: number,
): Decision {
  const skip = (reason: SkippedMailbox["reason"], detail: string): Decision => ({
    kind: "skip",
    entry: { name: ref.name, reason, detail },
  });
  const m = master ?? { name: ref.name, status: "missing" as const, reason: "not scanned" };
  const r = replica ?? { name: ref.name, status: "missing" as const, reason: "not scanned" };
  for (const [side, scan] of [
    ["master", m],
    ["replica", r],
  ] as const) {
    if (scan.status === "invalid-name") return skip("invalid-name", `${side}: ${scan.reason}`);
    if (scan.status === "unreadable" || scan.status === "corrupt")
      return skip(scan.status, `${side}: ${scan.reason}`);
  }
  if (m.status === "missing")
    return skip("missing-on-master", `master: ${m.reason ?? "no cyrus.index"}`);
  if (r.status === "missing")
    return skip("missing-on-replica", `replica: ${r.reason ?? "no cyrus.index"}`);
  for (const [side, scan] of [
    ["master", m],
    ["replica", r],
  ] as const) {
    if (scan.status === "newer") return skip("newer-than-target", `${side}: ${scan.reason}`);
  }
  const mi = m.index as FileFacts;
  const ri = r.index as FileFacts;
  if (mi.records !== ri.records) {
    return skip(
      "uids-differ",
      `master has ${mi.records} records, replica ${ri.records}; let replication catch up, then plan again`,
    );
  }
  if (m.uidsDigest !== r.uidsDigest) {
    return skip(
      "uids-differ",
      `master and replica hold different UIDs (${mi.records} records each); let replication catch up, then plan again`,
    );
  }
  const files = [m.index, m.expunge, r.index, r.expunge].filter(
    (f): f is FileFacts => f !== undefined,
  );
  if (target < 10 && files.some((f) => f.minor < target)) {
    // A downgrade never raises a version; such a mailbox is not what the
    // operator asked guidup to downgrade.
    return skip(
      "newer-than-target",
      `an index below version ${target}: a downgrade does not upgrade`,
    );
  }
  const actions: Action[] = [];
  if (files.some((f) => f.minor !== target)) actions.push("version");
  // Below v10 every record's GUID is old-style, including those appended
  // between plan and apply: an upgrade to 10 gives them SHA1 GUIDs even when
  // the mailbox is empty now.
  if (target === 10 && files.some((f) => f.oldStyle > 0 || f.minor < 10)) actions.push("guid");
  if (actions.length === 0) return { kind: "done" };
  return {
    kind: "apply",
    entry: {
      name: ref.name,
      ...(ref.partition ? { partition: ref.partition } : {}),
      actions,
      master: sideFacts(m),
      replica: sideFacts(r),
    },
  };
}

function sideFacts(scan: MailboxScan): SideFacts {
  return {
    index: scan.index as FileFacts,
    ...(scan.expunge ? { expunge: scan.expunge } : {}),
    fingerprint: scan.fingerprint as string,
    planned: { records: scan.planned?.records ?? 0, digest: scan.planned?.digest ?? "" },
    ...(scan.cached !== undefined ? { cached: scan.cached } : {}),
  };
}

export function summarize(
  total: number,
  mailboxes: readonly PlannedMailbox[],
  skipped: readonly SkippedMailbox[],
  upToDate: number,
): PlanSummary {
  const summary: PlanSummary = {
    mailboxes: total,
    toApply: mailboxes.length,
    upToDate,
    skipped: skipped.length,
    byAction: { version: 0, guid: 0 },
    bySkipReason: {},
    records: { master: 0, replica: 0 },
    oldStyleGuids: { master: 0, replica: 0 },
    bytesToHash: { master: 0, replica: 0 },
  };
  for (const mb of mailboxes) {
    for (const a of mb.actions) summary.byAction[a]++;
    for (const side of ["master", "replica"] as const) {
      const facts = mb[side];
      for (const f of [facts.index, facts.expunge]) {
        if (!f) continue;
        summary.records[side] += f.records;
        summary.oldStyleGuids[side] += f.oldStyle;
        summary.bytesToHash[side] += f.oldStyleBytes;
      }
    }
  }
  for (const s of skipped)
    summary.bySkipReason[s.reason] = (summary.bySkipReason[s.reason] ?? 0) + 1;
  return summary;
}
