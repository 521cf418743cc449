// Starting and stopping the Cyrus-like writer (examples/cyrus-writer.ts) from
// a test or a benchmark: the master's traffic process and, optionally, the
// replica's replayer, each a real process of its own. The writer must be
// built (npx tsc -p tsconfig.json): it runs from dist/.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { type JournalEntry, opsOf, readJournal } from "./journal.js";

/**
 * dist/examples/cyrus-writer.js, found from here whether this module runs
 * compiled (dist/examples/cyrus-writer/) or from source under vitest
 * (examples/cyrus-writer/).
 */
export const WRITER_JS: string = (() => {
  const here = fileURLToPath(new URL(".", import.meta.url));
  const beside = join(here, "..", "cyrus-writer.js");
  return existsSync(beside)
    ? beside
    : join(here, "..", "..", "dist", "examples", "cyrus-writer.js");
})();

function requireBuilt(): void {
  if (!existsSync(WRITER_JS))
    throw new Error(`${WRITER_JS} is missing: build first (npx tsc -p tsconfig.json)`);
}

export interface TrafficOptions {
  masterConf: string;
  /** With a replica: its imapd.conf; the replayer follows the master's journal. */
  replicaConf?: string;
  /** Mailbox names, one a line (or `ctl_mboxlist -d` form). */
  mailboxesFile: string;
  /** Where the journals go. */
  dir: string;
  rate?: number;
  seed?: number;
  /** e.g. "deliver=5,flag=3,expunge=2" (the default). */
  mix?: string;
  delayMs?: number;
  ignoreLocks?: boolean;
  /** Seconds; default 0 = until stop(). */
  durationS?: number;
  /** A file of mailbox names that gets `focusShare` of the ops (see the writer's --focus-file). */
  focusFile?: string;
  focusShare?: number;
}

export interface Traffic {
  masterJournal: string;
  replicaJournal?: string;
  master: ChildProcess;
  replica?: ChildProcess;
  /** Resolves when every process exited with 0 (rejects otherwise). */
  exited: Promise<void>;
  /** SIGTERM to the master writer; resolves once the replayer has caught up and both exited. */
  stop(): Promise<void>;
  /** SIGKILL to both (cleanup after a failure). */
  kill(): void;
  /** Waits until the master journal holds `n` more ops than it held when called (or at `from`). */
  waitForOps(n: number, timeoutMs?: number): Promise<void>;
  masterEntries(): JournalEntry[];
  replicaEntries(): JournalEntry[];
}

function exitOf(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${what} exited with ${code ?? signal}`)),
    );
  });
}

export function startTraffic(o: TrafficOptions): Traffic {
  requireBuilt();
  const masterJournal = join(o.dir, "master.journal");
  const replicaJournal = o.replicaConf ? join(o.dir, "replica.journal") : undefined;
  const lockArg = o.ignoreLocks ? ["--ignore-locks"] : [];
  const master = spawn(
    process.execPath,
    [
      WRITER_JS,
      "run",
      "--config",
      o.masterConf,
      "--mailboxes",
      o.mailboxesFile,
      "--journal",
      masterJournal,
      "--rate",
      String(o.rate ?? 40),
      "--seed",
      String(o.seed ?? 1),
      "--duration",
      String(o.durationS ?? 0),
      ...(o.mix ? ["--mix", o.mix] : []),
      ...(o.focusFile ? ["--focus-file", o.focusFile] : []),
      ...(o.focusShare !== undefined ? ["--focus-share", String(o.focusShare)] : []),
      ...lockArg,
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  const replica =
    o.replicaConf && replicaJournal
      ? spawn(
          process.execPath,
          [
            WRITER_JS,
            "replay",
            "--config",
            o.replicaConf,
            "--from",
            masterJournal,
            "--journal",
            replicaJournal,
            "--delay-ms",
            String(o.delayMs ?? 500),
            ...lockArg,
          ],
          { stdio: ["ignore", "inherit", "inherit"] },
        )
      : undefined;
  const exited = Promise.all([
    exitOf(master, "cyrus-writer run"),
    ...(replica ? [exitOf(replica, "cyrus-writer replay")] : []),
  ]).then(() => undefined);
  exited.catch(() => {});
  return {
    masterJournal,
    ...(replicaJournal ? { replicaJournal } : {}),
    master,
    ...(replica ? { replica } : {}),
    exited,
    async stop() {
      if (master.exitCode === null && master.signalCode === null) master.kill("SIGTERM");
      await exited;
    },
    kill() {
      master.kill("SIGKILL");
      replica?.kill("SIGKILL");
    },
    async waitForOps(n, timeoutMs = 60_000) {
      const base = opsOf(readJournal(masterJournal)).length;
      const deadline = Date.now() + timeoutMs;
      while (opsOf(readJournal(masterJournal)).length < base + n) {
        if (master.exitCode !== null) throw new Error("cyrus-writer run exited early");
        if (Date.now() > deadline)
          throw new Error(`the writer did not journal ${n} ops within ${timeoutMs} ms`);
        await sleep(50);
      }
    },
    masterEntries: () => readJournal(masterJournal),
    replicaEntries: () => (replicaJournal ? readJournal(replicaJournal) : []),
  };
}

export interface OnceOptions {
  conf: string;
  mailbox: string;
  op: "deliver" | "expunge" | "flag";
  journal: string;
  seed?: number;
  ignoreLocks?: boolean;
  uids?: number[];
  uid?: number;
  flags?: number;
}

/** argv (after node) of `cyrus-writer once …`: also for shell hooks. */
export function onceArgv(o: OnceOptions): string[] {
  return [
    WRITER_JS,
    "once",
    "--config",
    o.conf,
    "--mailbox",
    o.mailbox,
    "--op",
    o.op,
    "--journal",
    o.journal,
    "--seed",
    String(o.seed ?? 1),
    ...(o.ignoreLocks ? ["--ignore-locks"] : []),
    ...(o.uids ? ["--uids", o.uids.join(",")] : []),
    ...(o.uid !== undefined ? ["--uid", String(o.uid)] : []),
    ...(o.flags !== undefined ? ["--flags", String(o.flags)] : []),
  ];
}

/** argv (after node) of `cyrus-writer replay …` with no delay, for a journal that has ended. */
export function replayArgv(
  conf: string,
  from: string,
  journal: string,
  ignoreLocks = false,
): string[] {
  return [
    WRITER_JS,
    "replay",
    "--config",
    conf,
    "--from",
    from,
    "--journal",
    journal,
    "--delay-ms",
    "0",
    ...(ignoreLocks ? ["--ignore-locks"] : []),
  ];
}

/** Runs the writer with `argv` to completion; rejects on a non-zero exit. */
export function runWriter(argv: string[]): Promise<void> {
  requireBuilt();
  const child = spawn(process.execPath, argv, { stdio: ["ignore", "inherit", "inherit"] });
  return exitOf(child, `cyrus-writer ${argv[1]}`);
}
