// What a reviewer reads first: a plan summarised (counts by action and
// reason, per-host totals, the largest mailboxes), then its entries. Pure:
// reviewPlan computes, the render functions only format.
//
// Counts are computed from the entries, not taken from the plan's summary
// (display only, and a hand edit may have left it behind); where the two
// disagree the review says so.

import { TARGET_MINOR } from "../cyrus/formats/index.js";
import type { HostSpec } from "../host-spec.js";
import {
  type Action,
  type Plan,
  type PlanHeader,
  type PlannedMailbox,
  type SideFacts,
  SKIP_REASONS,
  type SkippedMailbox,
  type SkipReason,
} from "./model.js";

export interface HostTotals {
  /** How the plan reaches the host. */
  label: string;
  /** Index plus expunge records of the planned mailboxes. */
  records: number;
  oldStyleGuids: number;
  /** Bytes of message files behind the old-style GUIDs. */
  oldStyleBytes: number;
  /** Old-style records the sha1 cache already covers. */
  cached: number;
  /** Planned mailboxes per index minor version now ("9" → 120). */
  indexVersions: Record<string, number>;
}

export interface LargeMailbox {
  name: string;
  /** Of the larger side: index plus expunge records. */
  records: number;
  oldStyleGuids: number;
  oldStyleBytes: number;
  actions: Action[];
}

export interface PlanReview {
  pair: string;
  id: string;
  created: string;
  tool: string;
  target: number;
  /** The target is below the upgrade's version: a downgrade, which drops GUIDs. */
  downgrade: boolean;
  toApply: number;
  upToDate: number;
  skipped: number;
  byAction: Record<Action, number>;
  bySkipReason: Partial<Record<SkipReason, number>>;
  hosts: { master: HostTotals; replica: HostTotals };
  /** Up to LARGEST_COUNT, largest first. */
  largest: LargeMailbox[];
  /** Where the plan's summary disagrees with its entries, one line each. */
  summaryMismatches: string[];
  /** Made from the header's summary alone (show --summary): no largest, cache or versions. */
  fromHeader?: boolean;
}

export const LARGEST_COUNT = 10;

/** Which plan a review is of: from the header, whether the entries are read or not. */
function reviewIdentity(header: PlanHeader) {
  return {
    pair: header.pair,
    id: header.id,
    created: header.created,
    tool: header.tool,
    target: header.target,
    downgrade: header.target < TARGET_MINOR,
  } satisfies Partial<PlanReview>;
}

export function reviewPlan(plan: Plan): PlanReview {
  const builder = new ReviewBuilder(plan);
  for (const m of plan.mailboxes) builder.add(m);
  for (const sk of plan.skipped) builder.skip(sk);
  return builder.review();
}

/**
 * reviewPlan entry by entry, for a plan read as a stream: holds the counts
 * and the LARGEST_COUNT largest mailboxes, never the entries.
 */
export class ReviewBuilder {
  readonly #review: PlanReview;
  #largest: LargeMailbox[] = [];

  constructor(readonly header: PlanHeader) {
    this.#review = {
      ...reviewIdentity(header),
      toApply: 0,
      upToDate: header.summary.upToDate,
      skipped: 0,
      byAction: { version: 0, guid: 0 },
      bySkipReason: {},
      hosts: {
        master: emptyTotals(header.hosts.master),
        replica: emptyTotals(header.hosts.replica),
      },
      largest: [],
      summaryMismatches: [],
    };
  }

  add(m: PlannedMailbox): void {
    const r = this.#review;
    r.toApply++;
    for (const a of m.actions) r.byAction[a]++;
    addToTotals(r.hosts.master, m.master);
    addToTotals(r.hosts.replica, m.replica);
    this.#largest.push(largeOf(m));
    if (this.#largest.length >= LARGEST_COUNT * 64) this.#largest = largestFirst(this.#largest);
  }

  skip(sk: SkippedMailbox): void {
    this.#review.skipped++;
    this.#review.bySkipReason[sk.reason] = (this.#review.bySkipReason[sk.reason] ?? 0) + 1;
  }

  review(): PlanReview {
    const r = { ...this.#review, largest: largestFirst(this.#largest) };
    r.summaryMismatches = summaryMismatches(this.header, r);
    return r;
  }
}

/**
 * A review from the header alone (show --summary): the plan's own summary,
 * read in well under a second at any size; what only the entries tell
 * (largest mailboxes, cache coverage, index versions) is left out.
 */
export function reviewHeader(header: PlanHeader): PlanReview {
  const s = header.summary;
  const totals = (side: "master" | "replica"): HostTotals => ({
    ...emptyTotals(header.hosts[side]),
    records: s.records[side],
    oldStyleGuids: s.oldStyleGuids[side],
    oldStyleBytes: s.bytesToHash[side],
  });
  return {
    ...reviewIdentity(header),
    toApply: s.toApply,
    upToDate: s.upToDate,
    skipped: s.skipped,
    byAction: { ...s.byAction },
    bySkipReason: { ...s.bySkipReason },
    hosts: { master: totals("master"), replica: totals("replica") },
    largest: [],
    summaryMismatches: [],
    fromHeader: true,
  };
}

/** What `guidup show --json` prints: the review, then the plan itself. */
export function planJson(plan: Plan): { review: PlanReview; plan: Plan } {
  return { review: reviewPlan(plan), plan };
}

export function hostLabel(host: HostSpec): string {
  if (host.transport === "local") return `local ${host.config}`;
  const user = host.user ? `${host.user}@` : "";
  const port = host.port && host.port !== 22 ? `:${host.port}` : "";
  return `${user}${host.host}${port} ${host.config}`;
}

function emptyTotals(host: HostSpec): HostTotals {
  return {
    label: hostLabel(host),
    records: 0,
    oldStyleGuids: 0,
    oldStyleBytes: 0,
    cached: 0,
    indexVersions: {},
  };
}

function addToTotals(totals: HostTotals, facts: SideFacts): void {
  for (const f of [facts.index, facts.expunge]) {
    if (!f) continue;
    totals.records += f.records;
    totals.oldStyleGuids += f.oldStyle;
    totals.oldStyleBytes += f.oldStyleBytes;
  }
  totals.cached += facts.cached ?? 0;
  const v = String(facts.index.minor);
  totals.indexVersions[v] = (totals.indexVersions[v] ?? 0) + 1;
}

function sideSize(facts: SideFacts): { records: number; oldStyle: number; oldStyleBytes: number } {
  const out = { records: 0, oldStyle: 0, oldStyleBytes: 0 };
  for (const f of [facts.index, facts.expunge]) {
    if (!f) continue;
    out.records += f.records;
    out.oldStyle += f.oldStyle;
    out.oldStyleBytes += f.oldStyleBytes;
  }
  return out;
}

function largeOf(m: PlannedMailbox): LargeMailbox {
  const a = sideSize(m.master);
  const b = sideSize(m.replica);
  return {
    name: m.name,
    records: Math.max(a.records, b.records),
    oldStyleGuids: Math.max(a.oldStyle, b.oldStyle),
    oldStyleBytes: Math.max(a.oldStyleBytes, b.oldStyleBytes),
    actions: m.actions,
  };
}

/** The mailboxes that hold their locks longest: most records, then most bytes to hash. */
function largestFirst(all: LargeMailbox[]): LargeMailbox[] {
  all.sort(
    (x, y) =>
      y.records - x.records ||
      y.oldStyleBytes - x.oldStyleBytes ||
      (x.name < y.name ? -1 : x.name > y.name ? 1 : 0),
  );
  return all.slice(0, LARGEST_COUNT);
}

function summaryMismatches(header: PlanHeader, review: PlanReview): string[] {
  const s = header.summary;
  const out: string[] = [];
  const check = (what: string, said: number, found: number) => {
    if (said !== found) out.push(`${what}: the summary says ${said}, the entries give ${found}`);
  };
  check("to apply", s.toApply, review.toApply);
  check("skipped", s.skipped, review.skipped);
  check("action version", s.byAction.version, review.byAction.version);
  check("action guid", s.byAction.guid, review.byAction.guid);
  for (const r of SKIP_REASONS)
    check(`skipped ${r}`, s.bySkipReason[r] ?? 0, review.bySkipReason[r] ?? 0);
  check("master records", s.records.master, review.hosts.master.records);
  check("replica records", s.records.replica, review.hosts.replica.records);
  return out;
}

// --- text ----------------------------------------------------------------------

/** 1234567 → "1,234,567" (fixed grouping, whatever the locale). */
export function formatCount(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** Columns padded to their widest cell; "r" columns right-aligned (numbers). */
function table(rows: string[][], align: readonly ("l" | "r")[]): string[] {
  const widths: number[] = [];
  for (const row of rows)
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  return rows.map((row) =>
    `  ${row
      .map((cell, i) =>
        align[i] === "r" ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0),
      )
      .join("  ")}`.trimEnd(),
  );
}

function counts(entries: [string, number][]): string {
  const shown = entries.filter(([, n]) => n > 0).map(([k, n]) => `${k} ${formatCount(n)}`);
  return shown.length > 0 ? shown.join(", ") : "none";
}

/** The review as text: what to read before the entries. */
export function renderPlanSummary(plan: Plan): string {
  return renderReview(reviewPlan(plan));
}

export function renderReview(r: PlanReview): string {
  const lines = r.downgrade
    ? [
        `DOWNGRADE plan ${r.id} for pair ${r.pair}: target index version ${r.target}, below ${TARGET_MINOR}`,
        `  it DROPS GUIDs: each SHA1 GUID becomes the NULL UUID${r.target < 7 ? " (version 6 has no GUID at all: every GUID goes)" : ""}; UUIDs padded to GUIDs are given back`,
      ]
    : [`plan ${r.id} for pair ${r.pair}: target index version ${r.target}`];
  lines.push(
    `  created ${r.created} by guidup ${r.tool}`,
    `  master   ${r.hosts.master.label}`,
    `  replica  ${r.hosts.replica.label}`,
    "",
    `mailboxes: ${formatCount(r.toApply)} to apply, ${formatCount(r.skipped)} skipped, ${formatCount(r.upToDate)} up to date`,
    `  actions: ${counts([
      ["version", r.byAction.version],
      ["guid", r.byAction.guid],
    ])}`,
    `  skipped: ${counts(SKIP_REASONS.map((k) => [k, r.bySkipReason[k] ?? 0]))}`,
  );
  if (r.summaryMismatches.length > 0) {
    lines.push("  note: the plan's summary disagrees with its entries (edited by hand?):");
    for (const m of r.summaryMismatches) lines.push(`    ${m}`);
  }
  const versions = (t: HostTotals) =>
    Object.entries(t.indexVersions)
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([v, n]) => `v${v} ×${formatCount(n)}`)
      .join(", ") || "-";
  const m = r.hosts.master;
  const p = r.hosts.replica;
  lines.push(
    "",
    `per host (planned mailboxes${r.fromHeader ? ", from the plan's summary" : ""})`,
    ...table(
      [
        ["", "master", "replica"],
        ["records", formatCount(m.records), formatCount(p.records)],
        ["old-style GUIDs", formatCount(m.oldStyleGuids), formatCount(p.oldStyleGuids)],
        ["their message bytes", formatBytes(m.oldStyleBytes), formatBytes(p.oldStyleBytes)],
        ...(r.fromHeader ? [] : [["sha1-cached", formatCount(m.cached), formatCount(p.cached)]]),
      ],
      ["l", "r", "r"],
    ),
    ...(r.fromHeader
      ? []
      : [`  index versions now: master ${versions(m)}; replica ${versions(p)}`]),
  );
  if (r.largest.length > 0) {
    lines.push(
      "",
      `largest mailboxes (longest locks), ${r.largest.length} of ${formatCount(r.toApply)}`,
      ...table(
        [
          ["records", "old-style", "bytes", "actions", "name"],
          ...r.largest.map((l) => [
            formatCount(l.records),
            formatCount(l.oldStyleGuids),
            formatBytes(l.oldStyleBytes),
            l.actions.join(","),
            l.name,
          ]),
        ],
        ["r", "r", "r", "l", "l"],
      ),
    );
  }
  return `${lines.join("\n")}\n`;
}

/** Which entries to list; every given condition must hold. */
export interface EntryFilter {
  /** Mailbox names to list (planned and skipped). */
  name?: (name: string) => boolean;
  /** Planned entries with this action (skipped entries are then left out). */
  action?: Action;
  /** Planned entries with at least this many records on the larger side (skipped left out). */
  minRecords?: number;
  /** Skipped entries only. */
  skippedOnly?: boolean;
}

/** The planned and skipped entries the filter keeps, each in plan order. */
export function filterEntries(
  plan: Plan,
  filter: EntryFilter = {},
): { mailboxes: PlannedMailbox[]; skipped: Plan["skipped"] } {
  const name = filter.name ?? (() => true);
  const plannedOnly = filter.action !== undefined || filter.minRecords !== undefined;
  const mailboxes = filter.skippedOnly
    ? []
    : plan.mailboxes.filter(
        (m) =>
          name(m.name) &&
          (filter.action === undefined || m.actions.includes(filter.action)) &&
          (filter.minRecords === undefined ||
            Math.max(sideSize(m.master).records, sideSize(m.replica).records) >= filter.minRecords),
      );
  const skipped = plannedOnly ? [] : plan.skipped.filter((s) => name(s.name));
  return { mailboxes, skipped };
}

/** Whether the filter keeps a planned entry. */
export function keepsPlanned(filter: EntryFilter, m: PlannedMailbox): boolean {
  return (
    !filter.skippedOnly &&
    (filter.name ?? (() => true))(m.name) &&
    (filter.action === undefined || m.actions.includes(filter.action)) &&
    (filter.minRecords === undefined ||
      Math.max(sideSize(m.master).records, sideSize(m.replica).records) >= filter.minRecords)
  );
}

/** Whether the filter keeps a skipped entry. */
export function keepsSkipped(filter: EntryFilter, sk: SkippedMailbox): boolean {
  const plannedOnly = filter.action !== undefined || filter.minRecords !== undefined;
  return !plannedOnly && (filter.name ?? (() => true))(sk.name);
}

export const PLANNED_HEADING =
  "to apply (actions, index version master/replica, records, old-style, cached):";
export const SKIPPED_HEADING = "skipped (reason: detail):";

export function renderPlanned(m: PlannedMailbox): string {
  const a = sideSize(m.master);
  const b = sideSize(m.replica);
  const part = m.partition ? ` (${m.partition})` : "";
  return `  ${m.actions.join(",").padEnd(12)} ${m.name}${part}  v${m.master.index.minor}/v${m.replica.index.minor}  records ${a.records}/${b.records}  old-style ${a.oldStyle}/${b.oldStyle}  cached ${m.master.cached ?? 0}/${m.replica.cached ?? 0}`;
}

export function renderSkippedEntry(sk: SkippedMailbox): string {
  return `  ${sk.reason.padEnd(18)} ${sk.name}: ${sk.detail}`;
}

/** One line per entry the filter keeps: planned mailboxes, then skipped ones (each in plan order). */
export function* renderPlanEntries(plan: Plan, filter: EntryFilter = {}): Generator<string> {
  const kept = filterEntries(plan, filter);
  if (kept.mailboxes.length > 0) yield PLANNED_HEADING;
  for (const m of kept.mailboxes) yield renderPlanned(m);
  if (kept.skipped.length > 0) yield SKIPPED_HEADING;
  for (const sk of kept.skipped) yield renderSkippedEntry(sk);
}
