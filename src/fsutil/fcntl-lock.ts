// Whole-file fcntl locks that exclude a Cyrus 2.3 built with fcntl locking
// (cyrus-2.3-spool.md §9). Node has no lock API, so libc's fcntl is called
// through koffi.
//
// We take Linux open-file-description (OFD) locks, not classic POSIX locks:
// - they conflict with the classic F_SETLK/F_SETLKW locks Cyrus takes, so the
//   exclusion is the same as Cyrus's own (§9.4);
// - they belong to the open file description, not the process, so closing some
//   other fd on the same file (fs.readFile, a scan, a hash) does not silently
//   drop them — the classic-lock pitfall of §9.4;
// - two descriptions in this process conflict with each other, so the agent
//   cannot lock one mailbox file twice by mistake.
// Only the non-blocking F_OFD_SETLK is used: F_OFD_SETLKW would block the
// event loop, so waiting is a poll with a short backoff.
//
// Every fd opened here is O_CLOEXEC (libuv's default): an OFD lock lives as long
// as any fd on its description, so an inherited fd would outlive unlock().

import {
  type BigIntStats,
  closeSync,
  constants as fsConstants,
  fstatSync,
  openSync,
  statSync,
} from "node:fs";
import { createRequire } from "node:module";
import { endianness, constants as osConstants } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import {
  ERRORS,
  type ErrorCode,
  errorMessage,
  FileAccessError,
  GuidupError,
  InternalError,
} from "../errors.js";

/** Waiting for a lock took longer than the caller allowed. */
export class LockTimeoutError extends GuidupError {
  readonly code: ErrorCode = ERRORS.lockTimeout.code;
}

/** This machine cannot take OFD fcntl locks (platform, koffi, or kernel < 3.15). */
export class LockUnavailableError extends GuidupError {
  readonly code: ErrorCode = ERRORS.lockUnavailable.code;
}

/** A held lock. The fd is ours: read through it, never close it yourself. */
export interface FileLock {
  readonly path: string;
  /** Valid until unlock(). */
  readonly fd: number;
  /** Inode of the locked file; a bigint when it comes from lockFile/tryLockFile. */
  readonly ino: bigint | number;
  /** Releases the lock and closes the fd. Idempotent: later calls return the first call's promise. */
  unlock(): Promise<void>;
}

/**
 * 'rw' (default): open O_RDWR, exclusive F_WRLCK — what Cyrus takes on mailbox files.
 * 'ro': open O_RDONLY, shared F_RDLCK (an fd opened read-only cannot hold a write lock).
 * A shared lock still excludes Cyrus's writers, but not other shared holders.
 */
export type LockMode = "rw" | "ro";

export interface LockOptions {
  /** How long to wait for the lock; 0 = one attempt; Infinity = until aborted. */
  timeoutMs: number;
  mode?: LockMode;
  /** Aborting rejects with signal.reason and closes the fd. */
  signal?: AbortSignal;
}

/**
 * Opens `path` and waits up to `timeoutMs` for a whole-file lock on it.
 *
 * After the lock is granted, the inode of the fd is compared with the inode
 * the path names now. If the file was replaced by a rename while we waited,
 * the old description is closed and the new file locked instead (Cyrus's
 * lock_reopen). Throws LockTimeoutError, FileAccessError (path missing or
 * unreadable, also when it vanished while we waited), LockUnavailableError.
 */
export async function lockFile(path: string, opts: LockOptions): Promise<FileLock> {
  const { timeoutMs, mode = "rw", signal } = opts;
  if (!(timeoutMs >= 0)) {
    throw new InternalError(`lockFile: timeoutMs must be >= 0, got ${timeoutMs}`);
  }
  const native = loadNative();
  const deadline = performance.now() + timeoutMs;
  signal?.throwIfAborted();
  for (;;) {
    const handle = await openForLock(path, mode);
    let held: FileLock | null = null;
    try {
      let delayMs = 2;
      while (!setLock(native, handle.fd, lockTypeOf(mode), path)) {
        const leftMs = deadline - performance.now();
        if (leftMs <= 0) {
          throw new LockTimeoutError(
            `timed out after ${timeoutMs} ms waiting for the lock on ${path}${holderText(handle.fd)}`,
            { path, timeoutMs },
          );
        }
        try {
          await sleep(Math.min(delayMs, leftMs), undefined, signal ? { signal } : undefined);
        } catch (err) {
          // timers/promises wraps the reason in an AbortError; callers expect the reason itself.
          if (signal?.aborted) throw signal.reason;
          throw err;
        }
        delayMs = Math.min(delayMs * 2, 50);
      }
      signal?.throwIfAborted();
      const ino = await currentInode(handle, path);
      // null: replaced while we waited; close (dropping the stale lock) and lock the new file.
      if (ino !== null) held = new HeldLock(path, handle, ino, native);
    } finally {
      if (held === null) await release(native, handle);
    }
    if (held !== null) return held;
  }
}

/**
 * One non-blocking attempt: the lock, or null when someone holds it.
 * Like lockFile, re-locks if the path was replaced (a bounded number of times;
 * a file replaced that often counts as busy).
 */
export async function tryLockFile(
  path: string,
  opts: { mode?: LockMode } = {},
): Promise<FileLock | null> {
  const mode = opts.mode ?? "rw";
  const native = loadNative();
  for (let round = 0; round < 5; round++) {
    const handle = await openForLock(path, mode);
    let held: FileLock | null = null;
    try {
      if (!setLock(native, handle.fd, lockTypeOf(mode), path)) return null;
      const ino = await currentInode(handle, path);
      if (ino !== null) held = new HeldLock(path, handle, ino, native);
    } finally {
      if (held === null) await release(native, handle);
    }
    if (held !== null) return held;
  }
  return null;
}

/**
 * Who holds a lock that would block an exclusive lock on `fd`'s file, for
 * error messages: the pid of a classic POSIX lock holder (Cyrus), -1 when the
 * holder is an OFD lock (the kernel does not say whose), null when nothing
 * conflicts or the query failed. Locks on `fd`'s own description never count.
 */
export function lockHolderPid(fd: number): number | null {
  const native = loadNative();
  const flock = makeFlock(F_WRLCK);
  if (native.fcntl(fd, F_OFD_GETLK, flock) === -1) return null;
  if (flock.readInt16LE(FLOCK_TYPE) === F_UNLCK) return null;
  return flock.readInt32LE(FLOCK_PID);
}

// ---- internals ----

// <fcntl.h> / <asm-generic/fcntl.h>; the same numbers on every Linux arch we allow.
const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;

// struct flock on LP64 Linux (x86-64 and arm64 both use the generic layout):
// short l_type; short l_whence; [4 pad] off_t l_start; off_t l_len; pid_t l_pid; [4 pad].
const FLOCK_SIZE = 32;
const FLOCK_TYPE = 0;
const FLOCK_PID = 24;
// l_whence (SEEK_SET), l_start, l_len = 0: the whole file including future growth,
// as Cyrus locks. l_pid must be 0 for OFD commands. Buffer.alloc zeroes them all.

const errno = osConstants.errno;

interface Native {
  /** fcntl(fd, cmd, &flock); -1 and errno() on failure. */
  fcntl(fd: number, cmd: number, flock: Buffer): number;
  /** errno of the last failed call; read it before anything else runs. */
  errno(): number;
}

let native: Native | undefined;
let nativeError: LockUnavailableError | undefined;

/** Binds fcntl on first use, so commands that never lock work without koffi. */
function loadNative(): Native {
  if (native !== undefined) return native;
  if (nativeError !== undefined) throw nativeError;
  try {
    native = bindNative();
    return native;
  } catch (err) {
    nativeError =
      err instanceof LockUnavailableError
        ? err
        : new LockUnavailableError(`fcntl locks unavailable: ${errorMessage(err)}`);
    throw nativeError;
  }
}

function bindNative(): Native {
  const { platform, arch } = process;
  if (platform !== "linux" || (arch !== "x64" && arch !== "arm64") || endianness() !== "LE") {
    throw new LockUnavailableError(
      `fcntl locks unavailable: ${platform}/${arch} is not supported (needs Linux on x64 or arm64)`,
    );
  }
  let koffi: typeof import("koffi");
  try {
    koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
  } catch (err) {
    throw new LockUnavailableError(
      `fcntl locks unavailable: cannot load koffi or its native binary: ${errorMessage(err)}`,
    );
  }
  let libc: ReturnType<typeof koffi.load>;
  try {
    libc = koffi.load("libc.so.6");
  } catch {
    // Not glibc (musl names it differently): fcntl is in the process's global symbols anyway.
    libc = koffi.load(null);
  }
  // fcntl is variadic; declaring it so makes koffi follow the variadic calling convention.
  const fcntl = libc.func("int fcntl(int fd, int cmd, ...)");
  return {
    fcntl: (fd, cmd, flock) => fcntl(fd, cmd, "void *", flock) as number,
    // koffi.errno() reads the thread's errno; nothing between the call and this read touches it.
    errno: () => koffi.errno(),
  };
}

function lockTypeOf(mode: LockMode): number {
  return mode === "ro" ? F_RDLCK : F_WRLCK;
}

function makeFlock(type: number): Buffer {
  const flock = Buffer.alloc(FLOCK_SIZE);
  flock.writeInt16LE(type, FLOCK_TYPE);
  return flock;
}

/** One F_OFD_SETLK: true when granted, false when someone else holds a conflicting lock. */
function setLock(native: Native, fd: number, type: number, path: string): boolean {
  for (;;) {
    if (native.fcntl(fd, F_OFD_SETLK, makeFlock(type)) === 0) return true;
    const err = native.errno();
    if (err === errno.EAGAIN || err === errno.EACCES) return false;
    if (err === errno.EINTR) continue;
    if (err === errno.EINVAL) {
      nativeError = new LockUnavailableError(
        "fcntl locks unavailable: the kernel refused F_OFD_SETLK (open file description locks need Linux >= 3.15)",
      );
      throw nativeError;
    }
    throw new FileAccessError(`cannot lock ${path}: fcntl failed with ${errnoName(err)}`, {
      path,
      errno: errnoName(err),
    });
  }
}

/**
 * A plain fd. Opening, stat-ing and closing are synchronous: they are quick,
 * and as async calls each would be a round trip through libuv's thread pool,
 * three files per mailbox and side (measured in the apply benchmark).
 */
interface FileHandle {
  readonly fd: number;
  stat(opts: { bigint: true }): Promise<BigIntStats>;
  close(): Promise<void>;
}

function handleFor(fd: number): FileHandle {
  return {
    fd,
    stat: async () => fstatSync(fd, { bigint: true }),
    close: async () => closeSync(fd),
  };
}

async function openForLock(path: string, mode: LockMode): Promise<FileHandle> {
  const flags = mode === "ro" ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
  try {
    return handleFor(openSync(path, flags));
  } catch (err) {
    throw accessError(`cannot open ${path} to lock it`, path, err);
  }
}

/**
 * The inode `handle` and `path` share, or null when the path now names another
 * file (replaced by rename while we waited for the lock).
 */
async function currentInode(handle: FileHandle, path: string): Promise<bigint | null> {
  const held = await handle.stat({ bigint: true });
  let now: BigIntStats;
  try {
    now = statSync(path, { bigint: true });
  } catch (err) {
    throw accessError(`${path} vanished while waiting for its lock`, path, err);
  }
  return held.ino === now.ino && held.dev === now.dev ? held.ino : null;
}

/** Unlocks explicitly (cheap, and correct even if the fd were ever dup'ed), then closes. */
async function release(native: Native, handle: FileHandle): Promise<void> {
  native.fcntl(handle.fd, F_OFD_SETLK, makeFlock(F_UNLCK));
  await handle.close();
}

class HeldLock implements FileLock {
  readonly path: string;
  readonly fd: number;
  readonly ino: bigint;
  readonly #handle: FileHandle;
  readonly #native: Native;
  #released: Promise<void> | undefined;
  constructor(path: string, handle: FileHandle, ino: bigint, native: Native) {
    this.path = path;
    this.fd = handle.fd;
    this.ino = ino;
    this.#handle = handle;
    this.#native = native;
  }
  unlock(): Promise<void> {
    this.#released ??= release(this.#native, this.#handle);
    return this.#released;
  }
}

function holderText(fd: number): string {
  const pid = lockHolderPid(fd);
  if (pid === null) return "";
  return pid > 0 ? ` (held by pid ${pid})` : " (held by an open-file-description lock)";
}

function accessError(what: string, path: string, err: unknown): FileAccessError {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return new FileAccessError(`${what}: ${code ?? errorMessage(err)}`, { path, errno: code });
}

function errnoName(n: number): string {
  const name = Object.entries(errno).find(([, v]) => v === n)?.[0];
  return name ?? `errno ${n}`;
}
