// Real OFD locks against a real foreign process taking classic POSIX locks the
// way Cyrus 2.3 does (test/helpers/foreign-locker.py). No mocks: what matters
// is how the kernel treats the two kinds of lock together.

import { mkdtemp, open, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileAccessError } from "../../src/errors.js";
import {
  type FileLock,
  LockTimeoutError,
  lockFile,
  lockHolderPid,
  tryLockFile,
} from "../../src/fsutil/fcntl-lock.js";
import { ForeignLocker } from "../helpers/agent-process.js";
import { untilBlockedOnLock, untilOpen } from "../helpers/proc-wait.js";

let dir: string;
let file: string;
const cleanup: Array<() => Promise<unknown>> = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-lock-"));
  file = join(dir, "cyrus.index");
  await writeFile(file, "old index");
});

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

function track<T extends ForeignLocker | FileLock>(x: T): T {
  cleanup.push(() => (x instanceof ForeignLocker ? x.kill() : x.unlock()));
  return x;
}

/** Replaces `file` by rename, as Cyrus commits an upgraded index. */
async function replaceByRename(path: string, content: string): Promise<bigint> {
  const next = `${path}.NEW`;
  await writeFile(next, content);
  await rename(next, path);
  return (await stat(path, { bigint: true })).ino;
}

describe("lockFile against a foreign classic-lock holder", () => {
  it("times out with LockTimeoutError after roughly timeoutMs, naming path, timeout and holder", async () => {
    const holder = track(await ForeignLocker.hold(file, 30));
    const started = performance.now();
    const err = await lockFile(file, { timeoutMs: 300 }).catch((e: unknown) => e);
    const elapsed = performance.now() - started;
    expect(err).toBeInstanceOf(LockTimeoutError);
    const e = err as LockTimeoutError;
    expect(e.code).toBe("lock-timeout");
    expect(e.message).toContain(file);
    expect(e.message).toContain("300 ms");
    expect(e.message).toContain(`held by pid ${holder.child.pid}`);
    // It waited (never less than asked); no upper bound: the machine may be loaded.
    expect(elapsed).toBeGreaterThanOrEqual(290);
  });

  it("gets the lock once the foreign holder releases before the timeout", async () => {
    const holder = track(await ForeignLocker.hold(file, 0.3));
    const lock = track(await lockFile(file, { timeoutMs: 30_000 }));
    expect(holder.stdout).toContain("released");
    expect(await ForeignLocker.try(file)).toBe("busy");
    await lock.unlock();
  });

  it("excludes the foreign process while held, and lets it in after unlock", async () => {
    const lock = await lockFile(file, { timeoutMs: 1000 });
    expect(lock.path).toBe(file);
    expect(lock.ino).toBe((await stat(file, { bigint: true })).ino);
    expect(await ForeignLocker.try(file)).toBe("busy");
    await lock.unlock();
    expect(await ForeignLocker.try(file)).toBe("acquired");
    // idempotent
    await lock.unlock();
  });

  it("keeps the lock when another fd on the same file is opened and closed", async () => {
    const lock = track(await lockFile(file, { timeoutMs: 1000 }));
    // With a classic POSIX lock, closing any fd on the file would drop it (§9.4).
    expect(await readFile(file, "utf8")).toBe("old index");
    await writeFile(file, "rewritten in place");
    expect(await ForeignLocker.try(file)).toBe("busy");
    await lock.unlock();
  });

  it("lockHolderPid names a classic holder's pid, -1 for an OFD holder, null when free", async () => {
    const probe = await open(file, "r");
    cleanup.push(() => probe.close());
    const holder = track(await ForeignLocker.hold(file, 30));
    expect(lockHolderPid(probe.fd)).toBe(holder.child.pid);
    await holder.kill();
    expect(lockHolderPid(probe.fd)).toBeNull();
    const lock = track(await lockFile(file, { timeoutMs: 1000 }));
    expect(lockHolderPid(probe.fd)).toBe(-1);
    // a description never conflicts with its own lock
    expect(lockHolderPid(lock.fd)).toBeNull();
  });

  it("fails with FileAccessError when the file does not exist", async () => {
    const missing = join(dir, "cyrus.expunge");
    const err = await lockFile(missing, { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileAccessError);
    expect((err as Error).message).toContain(missing);
    expect((err as Error).message).toContain("ENOENT");
  });

  it("fails with FileAccessError when the file vanishes while we wait", async () => {
    const holder = track(await ForeignLocker.hold(file, 30));
    const pending = lockFile(file, { timeoutMs: 30_000 }).catch((e: unknown) => e);
    await untilOpen("self", file);
    await unlink(file);
    await holder.kill();
    const err = await pending;
    expect(err).toBeInstanceOf(FileAccessError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toContain("vanished");
  });

  it("rejects with the abort reason when the signal fires while waiting", async () => {
    track(await ForeignLocker.hold(file, 30));
    const ac = new AbortController();
    const reason = new Error("interrupted");
    const pending = lockFile(file, { timeoutMs: 30_000, signal: ac.signal }).catch(
      (e: unknown) => e,
    );
    await untilOpen("self", file);
    ac.abort(reason);
    expect(await pending).toBe(reason);
  });
});

describe("inode re-check (Cyrus lock_reopen)", () => {
  it("ends up locking the new file when the path is replaced while we wait", async () => {
    const oldIno = (await stat(file, { bigint: true })).ino;
    const holder = track(await ForeignLocker.hold(file, 30));
    const pending = lockFile(file, { timeoutMs: 30_000 });
    // Replace the file only once lockFile has the old one open, so the lock it
    // gets first is on the old inode and only the re-check can move it.
    await untilOpen("self", file);
    const newIno = await replaceByRename(file, "new index");
    expect(newIno).not.toBe(oldIno);
    await holder.kill();
    const lock = track(await pending);
    expect(lock.ino).toBe(newIno);
    expect(lock.ino).toBe((await stat(file, { bigint: true })).ino);
    // the lock is on the file the path names now
    expect(await ForeignLocker.try(file)).toBe("busy");
    await lock.unlock();
    expect(await ForeignLocker.try(file)).toBe("acquired");
  });

  it("a foreign waiter on the old file sees the replacement when we unlock", async () => {
    const lock = track(await lockFile(file, { timeoutMs: 1000 }));
    const waiter = track(new ForeignLocker(["wait", file]));
    const opened = await waiter.line("opened ino=", "stderr");
    expect(BigInt(opened.split("=")[1]!)).toBe(lock.ino);
    // it is blocked in F_SETLKW on the old file once the kernel lists it waiting
    await untilBlockedOnLock(waiter.child.pid!);
    expect(waiter.stdout).toEqual([]);
    const newIno = await replaceByRename(file, "new index");
    await lock.unlock();
    const line = await waiter.line("acquired");
    const m = /^acquired ino=(\d+) pathino=(\d+)$/.exec(line);
    expect(m).not.toBeNull();
    expect(BigInt(m![1]!)).toBe(lock.ino);
    expect(BigInt(m![2]!)).toBe(newIno);
    expect(await waiter.exited).toBe(0);
  });
});

describe("OFD semantics inside one process", () => {
  it("two locks from two open file descriptions of this process conflict", async () => {
    const first = track(await lockFile(file, { timeoutMs: 1000 }));
    expect(await tryLockFile(file)).toBeNull();
    const err = await lockFile(file, { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as Error).message).toContain("open-file-description lock");
    await first.unlock();
    const second = track(await lockFile(file, { timeoutMs: 1000 }));
    expect(second.ino).toBe(first.ino);
  });
});

describe("tryLockFile", () => {
  it("returns null while a foreign process holds the lock, and a lock once it is free", async () => {
    const holder = track(await ForeignLocker.hold(file, 30));
    expect(await tryLockFile(file)).toBeNull();
    await holder.kill();
    const lock = await tryLockFile(file);
    expect(lock).not.toBeNull();
    track(lock!);
    expect(lock!.ino).toBe((await stat(file, { bigint: true })).ino);
    expect(await ForeignLocker.try(file)).toBe("busy");
    await lock!.unlock();
    expect(await ForeignLocker.try(file)).toBe("acquired");
  });

  it("fails with FileAccessError for a missing file", async () => {
    await expect(tryLockFile(join(dir, "nope"))).rejects.toBeInstanceOf(FileAccessError);
  });
});

describe("mode 'ro' (shared lock on a read-only fd)", () => {
  it("waits for a foreign exclusive holder and excludes it while held", async () => {
    const holder = track(await ForeignLocker.hold(file, 30));
    await expect(lockFile(file, { timeoutMs: 100, mode: "ro" })).rejects.toBeInstanceOf(
      LockTimeoutError,
    );
    await holder.kill();
    const shared = track(await lockFile(file, { timeoutMs: 1000, mode: "ro" }));
    expect(await ForeignLocker.try(file)).toBe("busy");
    // shared locks from two descriptions coexist
    const second = await tryLockFile(file, { mode: "ro" });
    expect(second).not.toBeNull();
    track(second!);
    // an exclusive lock of ours conflicts with them
    expect(await tryLockFile(file)).toBeNull();
    await shared.unlock();
    await second!.unlock();
    expect(await ForeignLocker.try(file)).toBe("acquired");
  });
});
