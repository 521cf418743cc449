// Classic POSIX record locks, exactly as Cyrus 2.3's lib/lock_fcntl.c takes
// them (cyrus-2.3-spool.md 9.1): fcntl(F_SETLKW) with an exclusive F_WRLCK
// over the whole file (SEEK_SET, start 0, len 0), retried on EINTR. Not the
// OFD locks guidup itself takes (src/fsutil/fcntl-lock.ts): the point of the
// test writer is to behave like Cyrus, so guidup's locks are tested against
// the kind of lock Cyrus holds.
//
// The call blocks the whole process while it waits, as it blocks a Cyrus
// process: the writer is a process of its own for that reason.
//
// Classic locks belong to the process and the inode: closing ANY fd of a
// locked file drops the process's lock on it (9.4). Code holding these locks
// reads and writes only through the locked fd and never opens the file again.

import { closeSync, fstatSync, openSync, statSync } from "node:fs";
import { createRequire } from "node:module";

// <asm-generic/fcntl.h> on x86-64 and arm64.
const F_GETLK = 5;
const F_SETLK = 6;
const F_SETLKW = 7;
const F_WRLCK = 1;
const F_UNLCK = 2;
// struct flock (LP64): short l_type; short l_whence; pad; off_t l_start; off_t l_len; pid_t l_pid.
const FLOCK_SIZE = 32;
const FLOCK_PID = 24;
const EINTR = 4;
const EAGAIN = 11;
const EACCES = 13;

interface Native {
  fcntl(fd: number, cmd: number, flock: Buffer): number;
  errno(): number;
}

let native: Native | undefined;

function bind(): Native {
  if (native !== undefined) return native;
  if (process.platform !== "linux") throw new Error("posix-lock: Linux only");
  const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
  let libc: ReturnType<typeof koffi.load>;
  try {
    libc = koffi.load("libc.so.6");
  } catch {
    libc = koffi.load(null);
  }
  const fcntl = libc.func("int fcntl(int fd, int cmd, ...)");
  native = {
    fcntl: (fd, cmd, flock) => fcntl(fd, cmd, "void *", flock) as number,
    errno: () => koffi.errno(),
  };
  return native;
}

function flock(type: number): Buffer {
  const b = Buffer.alloc(FLOCK_SIZE);
  b.writeInt16LE(type, 0);
  return b;
}

/** lock_blocking: F_SETLKW, F_WRLCK, whole file; waits as long as it takes. */
export function lockBlocking(fd: number): void {
  const n = bind();
  for (;;) {
    if (n.fcntl(fd, F_SETLKW, flock(F_WRLCK)) === 0) return;
    const err = n.errno();
    if (err === EINTR) continue;
    throw new Error(`fcntl(F_SETLKW) failed: errno ${err}`);
  }
}

/** lock_nonblocking: one F_SETLK; false when another process holds a conflicting lock. */
export function lockNonBlocking(fd: number): boolean {
  const n = bind();
  for (;;) {
    if (n.fcntl(fd, F_SETLK, flock(F_WRLCK)) === 0) return true;
    const err = n.errno();
    if (err === EINTR) continue;
    if (err === EAGAIN || err === EACCES) return false;
    throw new Error(`fcntl(F_SETLK) failed: errno ${err}`);
  }
}

export function unlock(fd: number): void {
  bind().fcntl(fd, F_SETLK, flock(F_UNLCK));
}

/** The pid of a process whose lock would block ours (-1: an OFD lock), or null. */
export function holderPid(fd: number): number | null {
  const b = flock(F_WRLCK);
  if (bind().fcntl(fd, F_GETLK, b) === -1) return null;
  if (b.readInt16LE(0) === F_UNLCK) return null;
  return b.readInt32LE(FLOCK_PID);
}

/** A file locked (or, ignoring locks, merely opened) by lockReopen. */
export interface LockedFile {
  fd: number;
  path: string;
  /** Milliseconds spent in F_SETLKW, over every round. */
  waitMs: number;
  /** Times the file had been replaced (renamed over) while we waited, so we re-opened it. */
  reopened: number;
}

/**
 * lock_reopen (9.1): open `path` O_RDWR, F_SETLKW, then compare the fd's
 * inode with the one the path names now; when the file was renamed over
 * while we waited (guidup's swap does exactly that), close the stale fd and
 * lock the new file. `ignoreLocks` opens without locking: the broken writer
 * the checker must catch. `openedFd`: the file opened earlier (Cyrus opens a
 * mailbox's index before it locks its header); it becomes ours.
 */
export function lockReopen(path: string, ignoreLocks: boolean, openedFd?: number): LockedFile {
  let waitMs = 0;
  let reopened = 0;
  let preOpened = openedFd;
  for (;;) {
    const fd = preOpened ?? openSync(path, "r+");
    preOpened = undefined;
    if (ignoreLocks) return { fd, path, waitMs, reopened };
    const t0 = performance.now();
    try {
      lockBlocking(fd);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    waitMs += performance.now() - t0;
    const held = fstatSync(fd);
    let now: ReturnType<typeof statSync> | undefined;
    try {
      now = statSync(path);
    } catch {
      now = undefined;
    }
    if (now !== undefined && now.ino === held.ino && now.dev === held.dev)
      return { fd, path, waitMs, reopened };
    // Replaced (or gone) while we waited: closing drops our lock on the old inode.
    closeSync(fd);
    reopened++;
    if (now === undefined) throw new Error(`${path} vanished while waiting for its lock`);
  }
}

/** Unlocks (when locked) and closes. */
export function release(file: LockedFile, ignoreLocks: boolean): void {
  if (!ignoreLocks) unlock(file.fd);
  closeSync(file.fd);
}
