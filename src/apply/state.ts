// The per-mailbox state apply keeps beside the plan. It is a record of how
// far apply got, not the truth: on a rerun every unfinished mailbox is
// locked on both sides and its real files decide what happens next, so a
// state file that lags behind (a controller killed between a host step and
// the state write) is corrected, never trusted blindly.

import type { ErrorCode } from "../errors.js";
import type { CutoverPath, UpgradeCounts } from "../protocol/messages.js";
import type { DriftCounts } from "./decide.js";

export const PHASES = [
  "pending",
  "in-progress",
  "done",
  "replica-ahead",
  "failed",
  "diverged",
  "stale",
  "skipped",
  "lagging",
] as const;
export type Phase = (typeof PHASES)[number];

/** The step of the two-phase protocol a mailbox was at (for in-progress and errors). */
export const STEPS = [
  "relay-cache",
  "prepare",
  "lock-master",
  "lock-replica",
  "upgrade-master",
  "upgrade-replica",
  "compare",
  "commit-replica",
  "commit-master",
  "repair",
] as const;
export type Step = (typeof STEPS)[number];

/**
 * Codes of a mailbox's lastError that are outcomes of the protocol, not
 * errors thrown (those are ERRORS's codes, src/errors.ts): the entry was
 * refused, a side unreadable or stale, the lists lagging or diverged.
 */
export const OUTCOME_CODES = ["refused", "unreadable", "stale", "lagging", "diverged"] as const;
export type OutcomeCode = (typeof OUTCOME_CODES)[number];

export interface StateError {
  code: ErrorCode | OutcomeCode;
  message: string;
  step?: Step;
  host?: "master" | "replica";
}

export interface MailboxState {
  name: string;
  /** The plan this state belongs to (stamped by the state store; absent in 0.1.0 files). */
  planId?: string;
  phase: Phase;
  step?: Step;
  /** Runs of the protocol for this mailbox (0 for a mailbox found done). */
  attempts: number;
  firstStarted?: string;
  updated: string;
  finished?: string;
  lastError?: StateError;
  /** (uid, GUID) digests of the upgraded indexes, as compared at step 4b. */
  digests?: { master?: string; replica?: string };
  counts?: { master?: UpgradeCounts; replica?: UpgradeCounts };
  /** From first lock to last unlock, per side, of the last attempt. */
  lockHeldMs?: { master?: number; replica?: number };
  /** Waiting for the locks, per side, of the last attempt. */
  lockWaitedMs?: { master?: number; replica?: number };
  /** How the last attempt staged the mailbox: the worst side, and per side. */
  path?: CutoverPath;
  paths?: { master?: CutoverPath; replica?: CutoverPath };
  /** Changes since the plan that did not matter, per side. */
  drift?: { master?: DriftCounts; replica?: DriftCounts };
}

/** Phases after which apply has nothing left to do for a mailbox. */
export const FINAL_PHASES: ReadonlySet<Phase> = new Set(["done", "skipped"]);

/** Phases a person should look at (status lists them). */
export const ATTENTION_PHASES: ReadonlySet<Phase> = new Set([
  "replica-ahead",
  "diverged",
  "failed",
  "stale",
  "lagging",
]);
