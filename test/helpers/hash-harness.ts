// Helpers for the hash / sha1-cache / relay proofs (test/apply/hash-cache.test.ts)
// and the demo test: guidup as a child process that can be interrupted like
// Ctrl-C does it (SIGINT to the whole process group), the old-style message
// files of a side counted straight from its indexes, the cache files on disk,
// the apply state files, and expected (uid, GUID) digests computed from a
// side's own message files. Pairs and inventories come from pair-fixtures.ts.

import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { mailboxFiles } from "../../src/agent/mailbox-files.js";
import { readMailbox } from "../../src/agent/mailbox-scan.js";
import { readSha1Cache } from "../../src/agent/sha1-cache.js";
import type { MailboxState } from "../../src/apply/state.js";
import { isOldStyleGuid } from "../../src/cyrus/guid.js";
import { readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { IndexReader } from "../../src/cyrus/index-file.js";
import { DIST_MAIN } from "./pair-fixtures.js";

/** A running `node dist/src/cli/main.js …`, leader of its own process group. */
export interface CliChild {
  child: ChildProcess;
  /** Everything printed so far. */
  out: () => string;
  err: () => string;
  /** Exit code (or 128 + signal number style: null code → -1) once it has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGINT to the whole group: the controller and the local agents it started, as a terminal's Ctrl-C. */
  interruptGroup: () => void;
  /** SIGKILL to the whole group (cleanup after a failed assertion). */
  killGroup: () => void;
}

export function spawnCli(argv: string[], opts: { cwd?: string } = {}): CliChild {
  const child = spawn(process.execPath, [DIST_MAIN, ...argv], {
    cwd: opts.cwd ?? process.cwd(),
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => {
    out += s;
  });
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    err += s;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
  const signalGroup = (sig: NodeJS.Signals) => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  return {
    child,
    out: () => out,
    err: () => err,
    exited,
    interruptGroup: () => signalGroup("SIGINT"),
    killGroup: () => signalGroup("SIGKILL"),
  };
}

/** Polls `check` every `everyMs` until it returns true; throws after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  everyMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Every file under `root` whose name starts with `cyrus.sha1s` (temp files of a torn write included). */
export async function findCacheFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.startsWith("cyrus.sha1s")) out.push(p);
    }
  };
  await walk(root);
  return out.sort();
}

/** Entries of every valid cyrus.sha1s under `root`; a corrupt one throws. */
export async function cacheEntryTotal(root: string): Promise<number> {
  let n = 0;
  for (const f of await findCacheFiles(root)) {
    if (path.basename(f) !== "cyrus.sha1s") throw new Error(`leftover cache temp file ${f}`);
    const { cache, problem } = await readSha1Cache(f);
    if (problem) throw new Error(problem);
    n += cache.size;
  }
  return n;
}

/**
 * Old-style message files of one side, straight from its indexes: per
 * mailbox, the distinct UIDs whose record in cyrus.index or cyrus.expunge has
 * an old-style GUID (a UID in both files is one file).
 */
export async function distinctOldStyle(
  imapdConf: string,
  names: readonly string[],
): Promise<{ total: number; perMailbox: Map<string, number[]> }> {
  const conf = await readImapdConf(imapdConf);
  const perMailbox = new Map<string, number[]>();
  let total = 0;
  for (const name of names) {
    const files = mailboxFiles(conf, { name });
    const hasExpunge = await readFile(files.expunge).then(
      (b) => b.length > 0,
      () => false,
    );
    const read = await readMailbox(
      name,
      { path: files.index, kind: "index" },
      hasExpunge ? { path: files.expunge, kind: "expunge" } : undefined,
    );
    const uids = [
      ...new Set([...read.index.needs, ...(read.expunge?.needs ?? [])].map((n) => n.uid)),
    ].sort((a, b) => a - b);
    if (uids.length > 0) perMailbox.set(name, uids);
    total += uids.length;
  }
  return { total, perMailbox };
}

/** Every state file of a plan (`<plan>.state/**.json`). */
export async function readStates(planPath: string): Promise<MailboxState[]> {
  const out: MailboxState[] = [];
  const walk = async (dir: string) => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith(".json"))
        out.push(JSON.parse(await readFile(p, "utf8")) as MailboxState);
    }
  };
  await walk(`${planPath}.state`);
  return out;
}

export function sha1Hex(data: Buffer): string {
  return createHash("sha1").update(data).digest("hex");
}

/** The GUID (hex) each record of a side's cyrus.index holds now, by UID. */
export async function indexGuids(imapdConf: string, mailbox: string): Promise<Map<number, string>> {
  const conf = await readImapdConf(imapdConf);
  const reader = await IndexReader.open(mailboxFiles(conf, { name: mailbox }).index, {
    kind: "index",
  });
  const out = new Map<number, string>();
  try {
    for await (const rec of reader.records()) {
      const guid = rec.get("guid");
      out.set(
        rec.get("uid") as number,
        guid instanceof Uint8Array ? Buffer.from(guid).toString("hex") : "",
      );
    }
  } finally {
    await reader.close();
  }
  return out;
}

/**
 * The (uid, GUID) digest of a side's cyrus.index after a correct upgrade,
 * computed independently of guidup's agent: SHA1 over (u32 uid, 20-byte GUID)
 * in file order, each old-style GUID replaced by the SHA1 of THIS side's
 * message file, SHA1 GUIDs kept.
 */
export async function expectedGuidDigest(imapdConf: string, mailbox: string): Promise<string> {
  const conf = await readImapdConf(imapdConf);
  const files = mailboxFiles(conf, { name: mailbox });
  const reader = await IndexReader.open(files.index, { kind: "index" });
  const digest = createHash("sha1");
  try {
    for await (const rec of reader.records()) {
      const uid = rec.get("uid") as number;
      const stored = rec.get("guid");
      const guid =
        stored instanceof Uint8Array && !isOldStyleGuid(stored)
          ? Buffer.from(stored)
          : createHash("sha1")
              .update(await readFile(files.messageFile(uid)))
              .digest();
      const pair = Buffer.alloc(24);
      pair.writeUInt32BE(uid, 0);
      guid.copy(pair, 4);
      digest.update(pair);
    }
  } finally {
    await reader.close();
  }
  return digest.digest("hex");
}
