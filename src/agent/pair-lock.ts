// The pair lock: only one apply may work on a pair at a time, whichever plan
// and whichever controller machine it comes from. Each host keeps the lock
// itself, as an OFD fcntl write lock on `guidup.lock` in its Cyrus
// configdirectory, held by the agent that took it until that agent ends.
// The kernel drops the lock with the agent's process, so a killed apply
// never leaves a lock that blocks the next one; the holder written into the
// file is then only history (it names the last holder).

import { ftruncateSync, writeSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import { ERRORS, type ErrorCode, FileAccessError, GuidupError, UsageError } from "../errors.js";
import { type FileLock, tryLockFile } from "../fsutil/fcntl-lock.js";
import type { PairLockHolder, PairLockRecord } from "../protocol/messages.js";

export const PAIR_LOCK_FILE = "guidup.lock";

/** Another agent holds this host's pair lock. */
export class PairLockedError extends GuidupError {
  readonly code: ErrorCode = ERRORS.pairLocked.code;
}

/** One line naming a holder, for refusals and status. */
export function describeHolder(h: Partial<PairLockRecord>): string {
  return `plan ${h.plan ?? "?"} (pair ${h.pair ?? "?"}) run by ${h.user ?? "?"} on ${h.controller ?? "?"} (pid ${h.pid ?? "?"}), since ${h.since ?? "?"}`;
}

/** The pair lock of one agent session: taken at most once, released when the session ends. */
export class PairLock {
  #held: { lock: FileLock; lockFile: string; record: PairLockRecord } | undefined;

  async take(
    conf: ImapdConf,
    holder: PairLockHolder,
  ): Promise<{ lockFile: string; holder: PairLockRecord }> {
    if (this.#held) return { lockFile: this.#held.lockFile, holder: this.#held.record };
    if (conf.configDirectory === undefined) {
      throw new UsageError(
        `${conf.file} sets no configdirectory: guidup keeps the pair lock (${PAIR_LOCK_FILE}) there`,
        { file: conf.file },
      );
    }
    const lockFile = join(conf.configDirectory, PAIR_LOCK_FILE);
    try {
      await writeFile(lockFile, "", { flag: "a", mode: 0o644 });
    } catch (err) {
      throw new FileAccessError(
        `cannot create the pair lock ${lockFile} (configdirectory in ${conf.file}): ${(err as Error).message}`,
        { file: lockFile },
      );
    }
    const lock = await tryLockFile(lockFile);
    if (!lock) {
      const holderNow = await readRecord(lockFile);
      throw new PairLockedError(
        `another apply holds the pair lock ${lockFile}: ${holderNow ? describeHolder(holderNow) : "holder not recorded yet"}`,
        { lockFile, ...(holderNow ? { holder: holderNow } : {}) },
      );
    }
    const record: PairLockRecord = {
      ...holder,
      host: hostname(),
      agentPid: process.pid,
      since: new Date().toISOString(),
    };
    // Through the locked fd: only the holder writes the file.
    ftruncateSync(lock.fd, 0);
    writeSync(lock.fd, `${JSON.stringify(record)}\n`, 0);
    this.#held = { lock, lockFile, record };
    return { lockFile, holder: record };
  }

  async release(): Promise<void> {
    const held = this.#held;
    this.#held = undefined;
    await held?.lock.unlock();
  }
}

/** The holder a lock file records, or undefined when it records none (new, or being written). */
async function readRecord(lockFile: string): Promise<Partial<PairLockRecord> | undefined> {
  try {
    const text = (await readFile(lockFile, "utf8")).trim();
    return text === "" ? undefined : (JSON.parse(text) as Partial<PairLockRecord>);
  } catch {
    return undefined;
  }
}
