// The plan: what `guidup plan` found and what `guidup apply` will do, as plain
// data. Written as YAML for review (plan-file.ts), checked against
// schemas/plan.schema.json when read back. Field comments say who relies on
// each field.

import type { HostSpec } from "../host-spec.js";
import type { FileFacts } from "../protocol/messages.js";

/**
 * Version of the plan file format guidup writes: a header, then one line per
 * entry (src/plan/plan-stream.ts), so that a plan of a million mailboxes is
 * read entry by entry in flat memory.
 */
export const PLAN_FORMAT = "guidup-plan/3";

/** guidup-plan/2: the same fields, entries as block mappings; still read (whole, in memory). */
export const PLAN_FORMAT_V2 = "guidup-plan/2";

export type PlanFormat = typeof PLAN_FORMAT | typeof PLAN_FORMAT_V2;

/** Formats this guidup recognises but cannot apply: refused with "plan again". */
export const OLD_PLAN_FORMATS: readonly string[] = ["guidup-plan/1"];

/** What apply does to a planned mailbox, in the order plans write them. */
export const ACTIONS = ["version", "guid"] as const;
export type Action = (typeof ACTIONS)[number];

/** Why plan left a mailbox out, in the order plans, show and the schema list them. */
export const SKIP_REASONS = [
  "missing-on-master",
  "missing-on-replica",
  "uids-differ",
  "newer-than-target",
  "unreadable",
  "corrupt",
  "invalid-name",
  "excluded",
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

/** One side of a planned mailbox, as scanned. */
export interface SideFacts {
  index: FileFacts;
  expunge?: FileFacts;
  /** Everything the plan saw (versions, UIDVALIDITY, UIDs, GUID bytes): apply --exact-plan re-checks it. */
  fingerprint: string;
  /**
   * The planned (uid, GUID) set (src/agent/planned-set.ts) cut at
   * index.lastUid: apply's default drift check. Appends, expunges, flag
   * changes leave it alone; an unplanned UID or a changed SHA1 GUID does not.
   */
  planned: { records: number; digest: string };
  /** Old-style records with a sha1-cache entry (display: how warm the cache is). */
  cached?: number;
}

export interface PlannedMailbox {
  name: string;
  /** From the mailbox list; absent = the host's defaultpartition. */
  partition?: string;
  /** What apply will change: the index version, old-style GUIDs, or both. */
  actions: Action[];
  master: SideFacts;
  replica: SideFacts;
}

export interface SkippedMailbox {
  name: string;
  reason: SkipReason;
  /** One line for the reviewer, naming the side and file where it applies. */
  detail: string;
}

export interface PlanSummary {
  /** Mailboxes in the list. Display only: apply never reads the summary. */
  mailboxes: number;
  toApply: number;
  upToDate: number;
  skipped: number;
  byAction: Record<Action, number>;
  bySkipReason: Partial<Record<SkipReason, number>>;
  records: { master: number; replica: number };
  oldStyleGuids: { master: number; replica: number };
  /** Bytes of message files the upgrade must hash where no cache helps. */
  bytesToHash: { master: number; replica: number };
}

/**
 * How to reach one host: the inventory's entry as the scan used it (paths
 * expanded). Kept in the plan so that apply reaches exactly the hosts that
 * were scanned, whatever the inventory says by then.
 */
export type PlanHost = HostSpec;

export interface Plan {
  format: PlanFormat;
  /** Unique per plan; names the state directory's lock owner. */
  id: string;
  /** ISO time. Only id and created differ between two plans of the same spools. */
  created: string;
  tool: string;
  pair: string;
  target: number;
  hosts: { master: PlanHost; replica: PlanHost };
  summary: PlanSummary;
  /**
   * guidup-plan/3, written by this guidup on: the SHA-256 (hex) of the file's
   * bytes after its "mailboxes:" line, as guidup wrote them (every entry
   * checked against the schema as it was written). When the file still
   * matches it, apply's first run skips its check of every entry before the
   * first mailbox (src/plan/plan-stream.ts namesAndBody); an edited plan, or
   * one without it, is checked entry by entry first. Nothing else reads it.
   */
  bodySha256?: string;
  /** Sorted by name. Apply works through these in this order. */
  mailboxes: PlannedMailbox[];
  /** Sorted by name. Apply never touches these. */
  skipped: SkippedMailbox[];
}

/** Everything of a plan but its entries: what `show` summarises and the first line of apply needs. */
export type PlanHeader = Omit<Plan, "mailboxes" | "skipped">;
