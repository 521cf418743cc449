// What changed between two plans of the same pair: header fields, and
// mailbox entries added, removed or changed (planned and skipped lists
// apart). Pure. id and created always differ and are not differences.
//
// Both plans must be valid (validatePlan, or read by plan-stream.ts, which
// checks as it goes): their lists are sorted by name, which lets one merge
// walk compare them entry by entry (diffPlanStreams holds no entry but the
// differences).

import { compareNames } from "./build.js";
import type { Plan, PlannedMailbox, SkippedMailbox } from "./model.js";
import { PlanError } from "./plan-file.js";
import type { PlanStream } from "./plan-stream.js";

/** One leaf that differs, by dotted path ("master.index.records"); null = absent. */
export interface FieldChange {
  path: string;
  old: unknown;
  new: unknown;
}

export interface EntryChange {
  name: string;
  fields: FieldChange[];
}

export interface ListDiff<T> {
  added: T[];
  removed: T[];
  changed: EntryChange[];
}

export interface PlanDiff extends ListDiff<PlannedMailbox> {
  pair: string;
  old: { id: string; created: string };
  new: { id: string; created: string };
  /** tool, target, hosts.*, summary.* */
  header: FieldChange[];
  skipped: ListDiff<SkippedMailbox>;
}

/** Compares two plans of one pair. Throws PlanError for plans of different pairs. */
export function diffPlans(
  oldPlan: Plan,
  newPlan: Plan,
  labels: { old: string; new: string } = { old: "the old plan", new: "the new plan" },
): PlanDiff {
  if (oldPlan.pair !== newPlan.pair) {
    throw new PlanError(
      `${labels.old} is for pair ${JSON.stringify(oldPlan.pair)}, ${labels.new} for pair ${JSON.stringify(newPlan.pair)}: diff compares two plans of the same pair`,
    );
  }
  const header = [
    ...fieldChanges("tool", oldPlan.tool, newPlan.tool),
    ...fieldChanges("target", oldPlan.target, newPlan.target),
    ...fieldChanges("hosts", oldPlan.hosts, newPlan.hosts),
    ...fieldChanges("summary", oldPlan.summary, newPlan.summary),
  ];
  return {
    pair: newPlan.pair,
    old: { id: oldPlan.id, created: oldPlan.created },
    new: { id: newPlan.id, created: newPlan.created },
    header,
    ...diffLists(oldPlan.mailboxes, newPlan.mailboxes),
    skipped: diffLists(oldPlan.skipped, newPlan.skipped),
  };
}

/**
 * diffPlans over two plans read as streams: a merge walk of both entry
 * lists (each sorted by name), holding only the differences.
 */
export async function diffPlanStreams(
  oldPlan: PlanStream,
  newPlan: PlanStream,
  labels: { old: string; new: string } = { old: "the old plan", new: "the new plan" },
): Promise<PlanDiff> {
  const headers = diffPlans(
    { ...oldPlan.header, mailboxes: [], skipped: [] },
    { ...newPlan.header, mailboxes: [], skipped: [] },
    labels,
  );
  return {
    ...headers,
    ...(await diffStreams(oldPlan.mailboxes(), newPlan.mailboxes())),
    skipped: await diffStreams(oldPlan.skipped(), newPlan.skipped()),
  };
}

async function diffStreams<T extends { name: string }>(
  a: AsyncIterator<T>,
  b: AsyncIterator<T>,
): Promise<ListDiff<T>> {
  const out: ListDiff<T> = { added: [], removed: [], changed: [] };
  let x = await a.next();
  let y = await b.next();
  while (!x.done || !y.done) {
    const order = x.done ? 1 : y.done ? -1 : compareNames(x.value.name, y.value.name);
    if (order < 0) {
      out.removed.push(x.value as T);
      x = await a.next();
    } else if (order > 0) {
      out.added.push(y.value as T);
      y = await b.next();
    } else {
      const fields = fieldChanges("", x.value, y.value).filter((f) => f.path !== "name");
      if (fields.length > 0) out.changed.push({ name: (x.value as T).name, fields });
      x = await a.next();
      y = await b.next();
    }
  }
  return out;
}

export function hasDifferences(d: PlanDiff): boolean {
  return (
    d.header.length > 0 ||
    d.added.length + d.removed.length + d.changed.length > 0 ||
    d.skipped.added.length + d.skipped.removed.length + d.skipped.changed.length > 0
  );
}

function diffLists<T extends { name: string }>(a: readonly T[], b: readonly T[]): ListDiff<T> {
  const out: ListDiff<T> = { added: [], removed: [], changed: [] };
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = a[i];
    const y = b[j];
    const order = x === undefined ? 1 : y === undefined ? -1 : compareNames(x.name, y.name);
    if (order < 0) {
      out.removed.push(x as T);
      i++;
    } else if (order > 0) {
      out.added.push(y as T);
      j++;
    } else {
      const fields = fieldChanges("", x, y).filter((f) => f.path !== "name");
      if (fields.length > 0) out.changed.push({ name: (x as T).name, fields });
      i++;
      j++;
    }
  }
  return out;
}

/** Leaves that differ; lists (actions, a local command) compare as whole values. */
function fieldChanges(path: string, a: unknown, b: unknown): FieldChange[] {
  if (isRecord(a) && isRecord(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
    return keys.flatMap((k) => fieldChanges(path === "" ? k : `${path}.${k}`, a[k], b[k]));
  }
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  return [{ path, old: a ?? null, new: b ?? null }];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// --- text ----------------------------------------------------------------------

function value(v: unknown): string {
  if (v === null) return "(absent)";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function fieldLines(fields: readonly FieldChange[], indent: string): string[] {
  return fields.map((f) => `${indent}${f.path}: ${value(f.old)} → ${value(f.new)}`);
}

function tally(l: ListDiff<unknown>): string {
  return `${l.added.length} added, ${l.removed.length} removed, ${l.changed.length} changed`;
}

/** The diff as text: header changes, then "+", "-" and "~" lines per entry. */
export function renderPlanDiff(d: PlanDiff): string {
  const skippedNow = new Map(d.skipped.added.map((s) => [s.name, s.reason]));
  const skippedBefore = new Map(d.skipped.removed.map((s) => [s.name, s.reason]));
  const lines = [
    `plans of pair ${d.pair}`,
    `  old: ${d.old.id} (created ${d.old.created})`,
    `  new: ${d.new.id} (created ${d.new.created})`,
  ];
  if (!hasDifferences(d)) {
    lines.push("no differences besides id and created");
    return `${lines.join("\n")}\n`;
  }
  if (d.header.length > 0) lines.push("header:", ...fieldLines(d.header, "  "));
  lines.push(`mailboxes to apply: ${tally(d)}`);
  for (const m of d.added) {
    const was = skippedBefore.get(m.name);
    lines.push(`  + ${m.name} [${m.actions.join(", ")}]${was ? ` (was skipped: ${was})` : ""}`);
  }
  for (const m of d.removed) {
    const now = skippedNow.get(m.name);
    lines.push(`  - ${m.name} [${m.actions.join(", ")}]${now ? ` (now skipped: ${now})` : ""}`);
  }
  for (const c of d.changed) lines.push(`  ~ ${c.name}`, ...fieldLines(c.fields, "      "));
  lines.push(`skipped: ${tally(d.skipped)}`);
  for (const s of d.skipped.added) lines.push(`  + ${s.name}: ${s.reason}: ${s.detail}`);
  for (const s of d.skipped.removed) lines.push(`  - ${s.name}: ${s.reason}`);
  for (const c of d.skipped.changed) lines.push(`  ~ ${c.name}`, ...fieldLines(c.fields, "      "));
  return `${lines.join("\n")}\n`;
}
