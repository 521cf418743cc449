// A test writer that behaves like Cyrus 2.3 under live traffic: a separate
// process taking CLASSIC POSIX fcntl locks (F_SETLKW, not OFD) in Cyrus's
// order cyrus.header → cyrus.index → cyrus.expunge with the inode re-check
// after each, re-reading the index header under the lock and writing at the
// version the file has now (cyrus-writer/mailbox-ops.ts). Used by the live
// tests (test/live) and the live-traffic benchmark (bench/live-traffic.ts).
//
//   cyrus-writer run    --config IMAPD.CONF --mailboxes FILE --journal J
//                       [--rate 40] [--duration SECONDS (0: until SIGTERM)]
//                       [--seed 1] [--mix deliver=5,flag=3,expunge=2]
//                       [--ignore-locks] [--focus-file F [--focus-share 0.5]]
//       The master's traffic: at RATE ops/s, a seeded random op on a seeded
//       random mailbox of FILE (one name per line, or `ctl_mboxlist -d` form).
//       With --focus-file, that share of the ops goes to the names F lists
//       now (re-read before each op; empty or missing: no focus), so a
//       benchmark can aim the traffic at the mailboxes apply is working on.
//   cyrus-writer replay --config REPLICA.CONF --from J --journal J2
//                       [--delay-ms 500] [--ignore-locks]
//       Rolling replication: follows the master's journal J and applies each
//       op to the replica DELAY ms after the master committed it (same UID,
//       same message bytes, same flags); exits after the master's end line.
//   cyrus-writer once   --config IMAPD.CONF --mailbox NAME --op deliver|expunge|flag
//                       --journal J [--seed 1] [--uids 3,4 | --uid N --flags F]
//                       [--ignore-locks]
//       One op, journaled like `run` (start, op, end), so `replay` can copy it.
//
// Journal lines: see cyrus-writer/journal.ts. SIGTERM (or SIGINT) stops `run`
// after the op in progress; the journal then ends with {"kind":"end"}.
// Exit codes: 0 done, 2 bad arguments, 1 anything else.

import {
  appendFileSync,
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
} from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type ImapdConf, readImapdConf } from "../src/cyrus/imapd-conf.js";
import { Prng } from "../src/spoolgen/prng.js";
import {
  type JournalEntry,
  OP_NAMES,
  type OpEntry,
  type OpName,
  parseJournal,
  type Side,
} from "./cyrus-writer/journal.js";
import {
  type DeliverResult,
  deliver,
  type ExpungeResult,
  expunge,
  type FlagResult,
  type MailboxFiles,
  mailboxFiles,
  OpRefused,
  setFlags,
} from "./cyrus-writer/mailbox-ops.js";

class UsageError extends Error {}

function journalLine(file: string, e: JournalEntry): void {
  appendFileSync(file, `${JSON.stringify(e)}\n`);
}

function parseMix(text: string): [OpName, number][] {
  const mix: [OpName, number][] = [];
  for (const part of text.split(",")) {
    const [name, weight] = part.split("=");
    if (!OP_NAMES.includes(name as OpName) || !(Number(weight) >= 0))
      throw new UsageError(`--mix: bad entry "${part}" (want deliver=N,flag=N,expunge=N)`);
    mix.push([name as OpName, Number(weight)]);
  }
  return mix;
}

function readMailboxNames(file: string): string[] {
  return readFileSync(file, "utf8")
    .split("\n")
    .map((l) => l.split("\t")[0]?.trim() ?? "")
    .filter((n) => n !== "");
}

type Result = DeliverResult | ExpungeResult | FlagResult;

interface Attempt {
  op: OpName;
  mailbox: string;
  run: (files: MailboxFiles) => Result;
}

/**
 * Runs one op and journals it (or its refusal/failure). Returns the entry
 * written for a successful op.
 */
function perform(
  conf: ImapdConf,
  journal: string,
  side: Side,
  seq: number,
  a: Attempt,
): OpEntry | undefined {
  const t0 = Date.now();
  try {
    const r = a.run(mailboxFiles(conf, a.mailbox));
    const e = { kind: "op", side, seq, t: Date.now(), t0, mailbox: a.mailbox, op: a.op, ...r };
    journalLine(journal, e as OpEntry);
    return e as OpEntry;
  } catch (err) {
    journalLine(journal, {
      kind: "error",
      side,
      seq,
      t: Date.now(),
      mailbox: a.mailbox,
      op: a.op,
      message: (err as Error).message,
      refused: err instanceof OpRefused,
    });
    return undefined;
  }
}

/** The master side's choice of op, all from one seeded PRNG. */
function masterAttempt(
  prng: Prng,
  names: readonly string[],
  mix: [OpName, number][],
  seed: number,
  ignoreLocks: boolean,
): Attempt {
  const mailbox = prng.pick(names);
  const op = prng.weighted(mix);
  const choice = prng.fork();
  switch (op) {
    case "deliver":
      return { op, mailbox, run: (f) => deliver(f, mailbox, { seed, ignoreLocks }) };
    case "expunge":
      return {
        op,
        mailbox,
        run: (f) =>
          expunge(f, {
            ignoreLocks,
            // One or two records, always leaving one: mailboxes stay non-empty.
            pick: (uids) =>
              choice.shuffle([...uids]).slice(0, Math.min(choice.int(1, 2), uids.length - 1)),
          }),
      };
    case "flag":
      return {
        op,
        mailbox,
        run: (f) =>
          setFlags(f, {
            ignoreLocks,
            pick: (records) => {
              if (records.length === 0) return undefined;
              const r = choice.pick(records);
              return { uid: r.uid, flags: r.flags ^ (choice.chance(0.5) ? 1 : 2) };
            },
          }),
      };
  }
}

let stopping = false;
for (const sig of ["SIGTERM", "SIGINT"] as const)
  process.on(sig, () => {
    stopping = true;
  });

async function runMaster(v: Record<string, string | boolean | undefined>): Promise<void> {
  const conf = await readImapdConf(required(v, "config"));
  const journal = required(v, "journal");
  const names = readMailboxNames(required(v, "mailboxes"));
  if (names.length === 0) throw new UsageError("--mailboxes: no mailbox names in the file");
  const rate = Number(v.rate ?? 40);
  const duration = Number(v.duration ?? 0);
  const seed = Number(v.seed ?? 1);
  if (!(rate > 0) || !(duration >= 0) || !Number.isInteger(seed))
    throw new UsageError("--rate must be > 0, --duration >= 0, --seed an integer");
  const mix = parseMix(String(v.mix ?? "deliver=5,flag=3,expunge=2"));
  const ignoreLocks = v["ignore-locks"] === true;
  const prng = new Prng(seed);
  const focusFile = typeof v["focus-file"] === "string" ? v["focus-file"] : undefined;
  const focusShare = Number(v["focus-share"] ?? 0.5);
  if (!(focusShare >= 0 && focusShare <= 1))
    throw new UsageError("--focus-share must be in [0, 1]");
  const focused = (): readonly string[] => {
    if (focusFile === undefined || !existsSync(focusFile)) return names;
    const focus = readMailboxNames(focusFile);
    return focus.length > 0 && prng.chance(focusShare) ? focus : names;
  };
  journalLine(journal, {
    kind: "start",
    side: "master",
    pid: process.pid,
    t: Date.now(),
    ignoreLocks,
    seed,
    rate,
  });
  const start = performance.now();
  let seq = 0;
  while (!stopping && (duration === 0 || performance.now() - start < duration * 1000)) {
    // A fixed schedule: an op that waited for a lock delays the ones queued behind it.
    const due = start + (seq * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    if (stopping) break;
    seq++;
    perform(conf, journal, "master", seq, masterAttempt(prng, focused(), mix, seed, ignoreLocks));
  }
  journalLine(journal, { kind: "end", side: "master", t: Date.now(), lastSeq: seq });
}

/** Reads the complete lines a growing file gained since `offset`. */
class Follower {
  private offset = 0;
  private tail = "";
  constructor(private readonly file: string) {}
  next(): JournalEntry[] {
    let size: number;
    try {
      size = statSync(this.file).size;
    } catch {
      return [];
    }
    if (size <= this.offset) return [];
    const fd = openSync(this.file, "r");
    try {
      const buf = Buffer.alloc(size - this.offset);
      const n = readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const text = this.tail + buf.subarray(0, n).toString("utf8");
      const cut = text.lastIndexOf("\n") + 1;
      this.tail = text.slice(cut);
      return parseJournal(text.slice(0, cut));
    } finally {
      closeSync(fd);
    }
  }
}

/** The replica's copy of a master op: same UIDs, same bytes, same flags. */
function replicaAttempt(m: OpEntry, seed: number, ignoreLocks: boolean): Attempt {
  switch (m.op) {
    case "deliver":
      return {
        op: m.op,
        mailbox: m.mailbox,
        run: (f) =>
          deliver(f, m.mailbox, { seed, ignoreLocks, uid: m.uid, internalDate: m.internalDate }),
      };
    case "expunge":
      return {
        op: m.op,
        mailbox: m.mailbox,
        run: (f) => expunge(f, { ignoreLocks, uids: m.uids }),
      };
    case "flag":
      return {
        op: m.op,
        mailbox: m.mailbox,
        run: (f) => setFlags(f, { ignoreLocks, uid: m.uid, flags: m.flags }),
      };
  }
}

async function runReplay(v: Record<string, string | boolean | undefined>): Promise<void> {
  const conf = await readImapdConf(required(v, "config"));
  const journal = required(v, "journal");
  const from = new Follower(required(v, "from"));
  const delayMs = Number(v["delay-ms"] ?? 500);
  if (!(delayMs >= 0)) throw new UsageError("--delay-ms must be >= 0");
  const ignoreLocks = v["ignore-locks"] === true;
  let seed: number | undefined;
  let masterPid: number | undefined;
  let lastSeq = 0;
  let started = false;
  for (;;) {
    const batch = from.next();
    let ended = false;
    for (const e of batch) {
      if (e.kind === "start") {
        seed = e.seed;
        masterPid = e.pid;
        if (!started) {
          started = true;
          journalLine(journal, {
            kind: "start",
            side: "replica",
            pid: process.pid,
            t: Date.now(),
            ignoreLocks,
            seed,
            delayMs,
          });
        }
      } else if (e.kind === "end") ended = true;
      else if (e.kind === "op") {
        if (seed === undefined) throw new Error("master journal has an op before its start line");
        const wait = e.t + delayMs - Date.now();
        if (wait > 0) await sleep(wait);
        const r = perform(conf, journal, "replica", e.seq, replicaAttempt(e, seed, ignoreLocks));
        if (r) lastSeq = e.seq;
      }
    }
    if (ended) break;
    if (batch.length === 0) {
      // A master killed before its end line would leave us waiting forever.
      if (masterPid !== undefined && !isAlive(masterPid) && from.next().length === 0) {
        journalLine(journal, { kind: "end", side: "replica", t: Date.now(), lastSeq });
        throw new Error(`the master writer (pid ${masterPid}) is gone without ending its journal`);
      }
      await sleep(20);
    }
  }
  journalLine(journal, { kind: "end", side: "replica", t: Date.now(), lastSeq });
}

async function runOnce(v: Record<string, string | boolean | undefined>): Promise<void> {
  const conf = await readImapdConf(required(v, "config"));
  const journal = required(v, "journal");
  const mailbox = required(v, "mailbox");
  const op = required(v, "op") as OpName;
  if (!OP_NAMES.includes(op))
    throw new UsageError(`--op: ${op} is not one of ${OP_NAMES.join(", ")}`);
  const seed = Number(v.seed ?? 1);
  const ignoreLocks = v["ignore-locks"] === true;
  const prng = new Prng(seed);
  journalLine(journal, {
    kind: "start",
    side: "master",
    pid: process.pid,
    t: Date.now(),
    ignoreLocks,
    seed,
  });
  let attempt: Attempt;
  if (op === "deliver")
    attempt = { op, mailbox, run: (f) => deliver(f, mailbox, { seed, ignoreLocks }) };
  else if (op === "expunge") {
    const uids = v.uids === undefined ? undefined : String(v.uids).split(",").map(Number);
    attempt = {
      op,
      mailbox,
      run: (f) =>
        expunge(f, {
          ignoreLocks,
          ...(uids
            ? { uids }
            : { pick: (all) => prng.shuffle([...all]).slice(0, Math.min(1, all.length - 1)) }),
        }),
    };
  } else {
    const uid = v.uid === undefined ? undefined : Number(v.uid);
    const flags = v.flags === undefined ? undefined : Number(v.flags);
    attempt = {
      op,
      mailbox,
      run: (f) =>
        setFlags(f, {
          ignoreLocks,
          ...(uid !== undefined
            ? { uid, flags: flags ?? 2 }
            : {
                pick: (records) => {
                  if (records.length === 0) return undefined;
                  const r = prng.pick(records);
                  return { uid: r.uid, flags: r.flags ^ 2 };
                },
              }),
        }),
    };
  }
  const done = perform(conf, journal, "master", 1, attempt);
  journalLine(journal, { kind: "end", side: "master", t: Date.now(), lastSeq: done ? 1 : 0 });
  if (!done) process.exitCode = 1;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function required(v: Record<string, string | boolean | undefined>, name: string): string {
  const value = v[name];
  if (typeof value !== "string" || value === "") throw new UsageError(`--${name} is required`);
  return value;
}

export async function main(argv: string[]): Promise<number> {
  const [mode, ...rest] = argv;
  try {
    const { values } = parseArgs({
      args: rest,
      options: {
        config: { type: "string" },
        mailboxes: { type: "string" },
        mailbox: { type: "string" },
        journal: { type: "string" },
        from: { type: "string" },
        rate: { type: "string" },
        duration: { type: "string" },
        seed: { type: "string" },
        mix: { type: "string" },
        op: { type: "string" },
        uid: { type: "string" },
        uids: { type: "string" },
        flags: { type: "string" },
        "delay-ms": { type: "string" },
        "ignore-locks": { type: "boolean" },
        "focus-file": { type: "string" },
        "focus-share": { type: "string" },
      },
    });
    if (mode === "run") await runMaster(values);
    else if (mode === "replay") await runReplay(values);
    else if (mode === "once") await runOnce(values);
    else
      throw new UsageError(
        "usage: cyrus-writer run|replay|once [options] (see the header of examples/cyrus-writer.ts)",
      );
    return process.exitCode === undefined ? 0 : Number(process.exitCode);
  } catch (err) {
    process.stderr.write(`cyrus-writer: ${(err as Error).message}\n`);
    return err instanceof UsageError ||
      (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
      ? 2
      : 1;
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = await main(process.argv.slice(2));
}
