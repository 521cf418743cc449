// Replacing a file so that a reader, or a crash at any point, sees either the
// whole old content or the whole new content, never a mix and never a
// truncated file. What "replace" means here (the contract every caller relies
// on):
//
// - The new content goes to a temporary file in the SAME directory as the
//   target (rename is atomic only within one file system), named
//   `.<name>.tmp-<pid>-<random>` and created exclusively (O_EXCL), so two
//   writers never share a temp file and a reader globbing for the real name
//   never sees it.
// - The temp file is fsynced before the rename: otherwise a crash after the
//   rename could leave the new name pointing at data not yet on disk.
// - rename(2) over the target is the commit point: before it the old file is
//   intact, after it the new one is.
// - The directory is fsynced after the rename, so the new directory entry
//   itself survives a power loss; until then the rename may be undone by a
//   crash (the old file comes back, which is still a whole file).
// - On an error before the commit point the temp file is removed and the
//   target is untouched. A crash (kill -9, power loss) before the commit
//   point can leave a `.<name>.tmp-*` file behind: it is never read, and any
//   later write of the same target uses a new name, so a leftover is only
//   litter that an operator (or the owning module) may delete.
// - Not atomic against a concurrent writer of the same target: the last
//   rename wins. Callers that care hold a lock (see fcntl-lock.ts).
//
// Like Terraform's `replacefile`, on Linux; there is no Windows branch.

import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { type FileHandle, open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** The temp name for a replacement of `path`: same directory, hidden, unique. */
export function tempPathFor(path: string): string {
  return join(
    dirname(path),
    `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`,
  );
}

/** Whether `name` (a directory entry) is a temp file left by replaceFile of some file. */
export function isReplaceTemp(name: string): boolean {
  return /^\..+\.tmp-\d+-[0-9a-f]{8}$/.test(name);
}

/**
 * Replaces `path` with `data` (see the contract at the top of this file).
 * Synchronous on purpose, for small files written often (apply's state): each
 * file-system call of an async version is a round trip through libuv's thread
 * pool, and the wait is the fsync either way. The new file gets `mode`
 * (default 0644, filtered by the umask).
 */
export function replaceFileSync(
  path: string,
  data: string | Uint8Array,
  options: { mode?: number } = {},
): void {
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, "wx", options.mode ?? 0o644);
  try {
    try {
      writeSync(fd, typeof data === "string" ? Buffer.from(data, "utf8") : data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone or never renamed; the original error is what matters
    }
    throw err;
  }
  fsyncDirSync(dirname(path));
}

/**
 * Replaces `path` with what `fill` writes into the open temp file (for
 * content written in pieces, or with its owner and bits set through the
 * handle). Same contract as replaceFileSync; the handle must not be closed by
 * `fill`.
 */
export async function replaceFile(
  path: string,
  fill: (file: FileHandle) => Promise<void>,
  options: { mode?: number } = {},
): Promise<void> {
  const tmp = tempPathFor(path);
  const file = await open(tmp, "wx", options.mode ?? 0o644);
  try {
    try {
      await fill(file);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** fsync of a directory: makes the entries created, renamed or removed in it durable. */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Async fsyncDirSync. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
