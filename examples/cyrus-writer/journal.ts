// The writer's journal: one JSON object per line, appended (and so visible
// to a reader) as each operation commits. The master writer's journal is
// what the replica replayer follows and what the spool checker holds the
// spools to; both sides' journals carry the lock waits the benchmark reports.

import { existsSync, readFileSync } from "node:fs";

export type Side = "master" | "replica";
export type OpName = "deliver" | "expunge" | "flag";
export const OP_NAMES: readonly OpName[] = ["deliver", "expunge", "flag"];

interface Timed {
  /** Milliseconds waited in F_SETLKW per file. */
  waitMs: { header: number; index: number; expunge?: number };
  holdMs: number;
  /** Files re-opened because they were renamed over while we waited. */
  reopened: string[];
  /** Index minor version the op found and wrote. */
  minor: number;
}

interface OpBase extends Timed {
  kind: "op";
  side: Side;
  /** Master: its own sequence number. Replica: the master op replayed. */
  seq: number;
  /** Epoch milliseconds when the op committed (locks released). */
  t: number;
  /** Epoch milliseconds when the op started (before any lock). */
  t0: number;
  mailbox: string;
}

export interface DeliverEntry extends OpBase {
  op: "deliver";
  uid: number;
  sha1: string;
  size: number;
  internalDate: number;
  uuid?: string;
}

export interface ExpungeEntry extends OpBase {
  op: "expunge";
  uids: number[];
}

export interface FlagEntry extends OpBase {
  op: "flag";
  uid: number;
  flags: number;
}

export type OpEntry = DeliverEntry | ExpungeEntry | FlagEntry;

/** An op the mailbox refused (nothing to expunge) or that failed; nothing was written. */
export interface ErrorEntry {
  kind: "error";
  side: Side;
  seq: number;
  t: number;
  mailbox: string;
  op: OpName;
  message: string;
  /** Refused: a normal "nothing to do"; otherwise the op failed. */
  refused: boolean;
}

export interface StartEntry {
  kind: "start";
  side: Side;
  pid: number;
  t: number;
  ignoreLocks: boolean;
  seed: number;
  rate?: number;
  delayMs?: number;
}

export interface EndEntry {
  kind: "end";
  side: Side;
  t: number;
  /** The last seq done (master) or replayed (replica). */
  lastSeq: number;
}

export type JournalEntry = OpEntry | ErrorEntry | StartEntry | EndEntry;

export function parseJournal(text: string): JournalEntry[] {
  const out: JournalEntry[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    out.push(JSON.parse(line) as JournalEntry);
  }
  return out;
}

/** Every complete line of a journal file ([] when it does not exist yet). */
export function readJournal(file: string): JournalEntry[] {
  if (!existsSync(file)) return [];
  const text = readFileSync(file, "utf8");
  const complete = text.slice(0, text.lastIndexOf("\n") + 1);
  return parseJournal(complete);
}

export function opsOf(entries: readonly JournalEntry[]): OpEntry[] {
  return entries.filter((e): e is OpEntry => e.kind === "op");
}

/** Total F_SETLKW wait of one op, all files. */
export function totalWaitMs(e: OpEntry): number {
  return e.waitMs.header + e.waitMs.index + (e.waitMs.expunge ?? 0);
}

export interface WaitStats {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of the ops' total lock waits, in ms. */
export function waitStats(ops: readonly OpEntry[]): WaitStats {
  const w = ops.map(totalWaitMs).sort((a, b) => a - b);
  const rank = (p: number) =>
    w[Math.min(w.length - 1, Math.max(0, Math.ceil(p * w.length) - 1))] ?? 0;
  return { count: w.length, p50: rank(0.5), p99: rank(0.99), max: w[w.length - 1] ?? 0 };
}
