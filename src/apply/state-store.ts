// Where apply keeps its per-mailbox state: `<plan>.state/`, one JSON file per
// mailbox, fanned out into 256 subdirectories by the first byte of the SHA1 of
// the mailbox name (so a million mailboxes do not share one directory, and a
// 490-byte mailbox name never becomes a file name). Every write is atomic:
// temp file, fsync, rename, fsync of the directory. A `.lock` file held with
// an OFD fcntl lock keeps two applies of one plan apart; it dies with the
// process, so a killed apply never leaves a stale lock behind.

import { createHash } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type FileLock, tryLockFile } from "../agent/fcntl-lock.js";
import { FileAccessError, GuidupError } from "../errors.js";
import { schemaProblems } from "../plan/schema-check.js";
import type { MailboxState } from "./state.js";

export class StateLockedError extends GuidupError {
  readonly code: string = "state-locked";
}

export class StateFileError extends GuidupError {
  readonly code: string = "state-file";
}

export function stateDirFor(planPath: string): string {
  return `${planPath}.state`;
}

function nameHash(name: string): string {
  return createHash("sha1").update(name).digest("hex");
}

export class StateStore {
  #lock: FileLock | undefined;
  readonly #dirsMade = new Set<string>();

  constructor(readonly dir: string) {}

  /** Takes the store's lock; refuses when another apply holds it. */
  async acquire(planId: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const lockPath = join(this.dir, ".lock");
    await writeFile(lockPath, "", { flag: "a" });
    const lock = await tryLockFile(lockPath);
    if (!lock) {
      let who = "";
      try {
        who = (await readFile(join(this.dir, ".owner"), "utf8")).trim();
      } catch {
        // no owner note: say less
      }
      throw new StateLockedError(
        `another guidup apply of this plan is running (${who || "lock held"}); state: ${this.dir}`,
      );
    }
    this.#lock = lock;
    await writeFile(
      join(this.dir, ".owner"),
      `pid ${process.pid}, plan ${planId}, since ${new Date().toISOString()}\n`,
    );
  }

  async release(): Promise<void> {
    await this.#lock?.unlock();
    this.#lock = undefined;
  }

  pathFor(name: string): string {
    const h = nameHash(name);
    return join(this.dir, h.slice(0, 2), `${h}.json`);
  }

  async read(name: string): Promise<MailboxState | undefined> {
    const path = this.pathFor(name);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new FileAccessError(`${path}: ${(err as Error).message}`);
    }
    return parseState(text, path, name);
  }

  /**
   * Writes one state file atomically: temp file, fsync, rename, fsync of the
   * directory. Synchronous on purpose: the file is a few hundred bytes, and
   * each of its eight file-system calls would otherwise be a round trip
   * through libuv's thread pool — measured as the controller's main cost
   * per mailbox. The wait is the fsync, which an async call waits for too.
   */
  async write(state: MailboxState): Promise<void> {
    const path = this.pathFor(state.name);
    const dir = join(path, "..");
    try {
      if (!this.#dirsMade.has(dir)) {
        mkdirSync(dir, { recursive: true });
        this.#dirsMade.add(dir);
      }
      const tmp = `${path}.tmp`;
      const fd = openSync(tmp, "w", 0o644);
      try {
        writeSync(fd, `${JSON.stringify(state, null, 1)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
      const d = openSync(dir, "r");
      try {
        fsyncSync(d);
      } finally {
        closeSync(d);
      }
    } catch (err) {
      throw new FileAccessError(`cannot write state ${path}: ${(err as Error).message}`);
    }
  }

  /** Every state file (for status): one directory at a time, never all names at once in memory twice. */
  async *all(): AsyncGenerator<MailboxState> {
    let subdirs: string[];
    try {
      subdirs = (await readdir(this.dir)).filter((d) => /^[0-9a-f]{2}$/.test(d)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    for (const sub of subdirs) {
      const files = (await readdir(join(this.dir, sub))).filter((f) => f.endsWith(".json")).sort();
      for (const f of files) {
        const path = join(this.dir, sub, f);
        yield parseState(await readFile(path, "utf8"), path);
      }
    }
  }
}

function parseState(text: string, path: string, expectName?: string): MailboxState {
  let obj: MailboxState;
  try {
    obj = JSON.parse(text) as MailboxState;
  } catch {
    throw new StateFileError(
      `${path}: not valid JSON (a state file is written atomically; was it edited?)`,
    );
  }
  const problems = schemaProblems("state", obj);
  if (problems.length > 0 || (expectName !== undefined && obj.name !== expectName)) {
    const why = problems[0]
      ? `${problems[0].pointer || "/"}: ${problems[0].message}`
      : `names ${JSON.stringify(obj.name)}`;
    throw new StateFileError(
      `${path}: not a valid guidup state file (${why}; see schemas/state.schema.json)`,
    );
  }
  return obj;
}
