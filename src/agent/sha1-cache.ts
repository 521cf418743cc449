// The sha1 cache: `cyrus.sha1s` in a mailbox's meta directory, next to
// cyrus.index. Owned by guidup only (Cyrus never reads it); it holds SHA1s of
// message files computed ahead of time (`guidup hash`, days before apply) so
// that the locked UPGRADE step mostly looks GUIDs up instead of reading mail.
//
// File layout (version 1; all integers big-endian, like Cyrus's own files):
//
//   offset  size  field
//   0       8     magic "GUIDUPS1"
//   8       4     u32 version (1)
//   12      4     u32 count: number of entries
//   16      48×n  entries, sorted by (uid, size), no two with the same (uid, size)
//   16+48n  20    SHA1 of bytes 0 .. 16+48n (everything before the trailer)
//
//   entry (48 bytes):
//   0       4     u32 uid (never 0: Cyrus UIDs start at 1)
//   4       4     u32 size: the message file's length (Cyrus 2.3 SIZE is a u32)
//   8       20    SHA1 of the whole message file = the v10 GUID
//   28      8     u64 inode of the file that was hashed (0 for relayed entries)
//   36      8     u64 mtime of that file in nanoseconds (0 for relayed entries)
//   44      1     u8 origin: 0 = hashed on this host, 1 = relayed from the other host
//   45      3     zero padding (keeps entries a multiple of 4 and spare for later)
//
// The trailer checksum exists because the file is trusted to produce GUIDs
// that end up in both indexes: a torn or bit-flipped file must read as
// "no cache" (the upgrade then hashes the files), never as wrong GUIDs.
//
// KEY RULE: a stale entry must never be used.
// - A local entry (origin 0) is valid only while the message file's current
//   (inode, mtimeNs, size) equal the entry's. Keying on (uid, size) alone is
//   not enough: on a replica, sync can REPLACE `<uid>.` with different content
//   for the same UID (spool doc 5.5, trap 16) by link/unlink — a new inode.
//   ctime is deliberately not part of the identity: hard-linking the same
//   message into another mailbox (COPY, multi-recipient delivery) changes the
//   inode's ctime without changing a byte.
// - A relayed entry (origin 1) was computed on the other host of the pair and
//   carries no file identity that means anything here. It matches by
//   (uid, size) only, so the caller must verify a sample of relayed entries by
//   hashing (chooseVerificationSample); the agent's upgrade discards every
//   relayed entry of a mailbox when any sampled one mismatches.

import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  fchmodSync,
  fchownSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { open, readFile, rename, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import {
  ERRORS,
  type ErrorCode,
  errorMessage,
  FileAccessError,
  GuidupError,
  InternalError,
} from "../errors.js";

export const SHA1_CACHE_FILE = "cyrus.sha1s";

const MAGIC = Buffer.from("GUIDUPS1", "latin1");
const VERSION = 1;
const HEADER_SIZE = 16;
const ENTRY_SIZE = 48;
const SHA1_SIZE = 20;
const TRAILER_SIZE = SHA1_SIZE;
const ORIGIN_LOCAL = 0;
const ORIGIN_RELAYED = 1;
const U32_MAX = 0xffff_ffff;
const U64_MAX = (1n << 64n) - 1n;

/** A sha1 cache file that is not what guidup writes (torn, corrupt, foreign). */
export class CacheFormatError extends GuidupError {
  readonly code: ErrorCode = ERRORS.cacheFormat.code;
}

export interface Sha1CacheEntry {
  uid: number;
  /** Length of the message file in bytes. */
  size: number;
  /** 20 raw SHA1 bytes. */
  sha1: Buffer;
  /** Inode of the file hashed; 0n for relayed entries. */
  ino: bigint;
  /** mtime of the file hashed, in nanoseconds; 0n for relayed entries. */
  mtimeNs: bigint;
  origin: "local" | "relayed";
}

/** Orders by (uid, size): the file's sort order and the lookup key. */
function compareKey(aUid: number, aSize: number, b: Sha1CacheEntry): number {
  if (aUid !== b.uid) return aUid < b.uid ? -1 : 1;
  if (aSize !== b.size) return aSize < b.size ? -1 : 1;
  return 0;
}

function checkEntry(e: Sha1CacheEntry): void {
  const bad = (why: string) => new InternalError(`invalid sha1 cache entry: ${why}`);
  if (!Number.isInteger(e.uid) || e.uid < 1 || e.uid > U32_MAX) throw bad(`uid ${e.uid}`);
  if (!Number.isInteger(e.size) || e.size < 0 || e.size > U32_MAX) throw bad(`size ${e.size}`);
  if (!(e.sha1 instanceof Uint8Array) || e.sha1.length !== SHA1_SIZE) throw bad("sha1 length");
  if (e.ino < 0n || e.ino > U64_MAX) throw bad(`ino ${e.ino}`);
  if (e.mtimeNs < 0n || e.mtimeNs > U64_MAX) throw bad(`mtimeNs ${e.mtimeNs}`);
  if (e.origin !== "local" && e.origin !== "relayed") throw bad(`origin ${String(e.origin)}`);
}

/** A private copy, so callers cannot change an entry behind the cache's back. */
function copyEntry(e: Sha1CacheEntry): Sha1CacheEntry {
  return {
    uid: e.uid,
    size: e.size,
    sha1: Buffer.from(e.sha1),
    ino: e.ino,
    mtimeNs: e.mtimeNs,
    origin: e.origin,
  };
}

export class Sha1Cache {
  /** Sorted by (uid, size), unique on (uid, size). */
  #entries: Sha1CacheEntry[];

  private constructor(entries: Sha1CacheEntry[]) {
    this.#entries = entries;
  }

  static empty(): Sha1Cache {
    return new Sha1Cache([]);
  }

  /**
   * Parses a whole `cyrus.sha1s` file. Throws CacheFormatError (naming `file`)
   * for anything that is not exactly what encode() writes: the cache is only
   * a shortcut, so anything doubtful is rejected rather than repaired.
   */
  static decode(buf: Buffer, file: string): Sha1Cache {
    const fail = (why: string) => new CacheFormatError(`${file}: ${why}`, { file });
    if (buf.length < HEADER_SIZE + TRAILER_SIZE) {
      throw fail(`too short (${buf.length} bytes)`);
    }
    if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) throw fail("bad magic");
    const version = buf.readUInt32BE(8);
    if (version !== VERSION) throw fail(`unsupported version ${version}`);
    const count = buf.readUInt32BE(12);
    const expected = HEADER_SIZE + count * ENTRY_SIZE + TRAILER_SIZE;
    if (buf.length !== expected) {
      throw fail(`length ${buf.length} does not match ${count} entries (${expected} bytes)`);
    }
    const bodyEnd = buf.length - TRAILER_SIZE;
    const sum = createHash("sha1").update(buf.subarray(0, bodyEnd)).digest();
    if (!sum.equals(buf.subarray(bodyEnd))) throw fail("checksum mismatch");

    const entries: Sha1CacheEntry[] = new Array(count);
    let prev: Sha1CacheEntry | undefined;
    for (let i = 0; i < count; i++) {
      const o = HEADER_SIZE + i * ENTRY_SIZE;
      const uid = buf.readUInt32BE(o);
      const size = buf.readUInt32BE(o + 4);
      const originByte = buf.readUInt8(o + 44);
      if (uid === 0) throw fail(`entry ${i}: uid 0`);
      if (originByte !== ORIGIN_LOCAL && originByte !== ORIGIN_RELAYED) {
        throw fail(`entry ${i}: unknown origin ${originByte}`);
      }
      if (buf[o + 45] !== 0 || buf[o + 46] !== 0 || buf[o + 47] !== 0) {
        throw fail(`entry ${i}: non-zero padding`);
      }
      if (prev !== undefined && compareKey(uid, size, prev) <= 0) {
        throw fail(`entry ${i}: not sorted by (uid, size) or duplicate`);
      }
      const entry: Sha1CacheEntry = {
        uid,
        size,
        sha1: Buffer.from(buf.subarray(o + 8, o + 28)),
        ino: buf.readBigUInt64BE(o + 28),
        mtimeNs: buf.readBigUInt64BE(o + 36),
        origin: originByte === ORIGIN_LOCAL ? "local" : "relayed",
      };
      entries[i] = entry;
      prev = entry;
    }
    return new Sha1Cache(entries);
  }

  encode(): Buffer {
    const n = this.#entries.length;
    const buf = Buffer.alloc(HEADER_SIZE + n * ENTRY_SIZE + TRAILER_SIZE);
    MAGIC.copy(buf, 0);
    buf.writeUInt32BE(VERSION, 8);
    buf.writeUInt32BE(n, 12);
    for (let i = 0; i < n; i++) {
      const e = this.#entries[i]!;
      const o = HEADER_SIZE + i * ENTRY_SIZE;
      buf.writeUInt32BE(e.uid, o);
      buf.writeUInt32BE(e.size, o + 4);
      e.sha1.copy(buf, o + 8);
      buf.writeBigUInt64BE(e.ino, o + 28);
      buf.writeBigUInt64BE(e.mtimeNs, o + 36);
      buf.writeUInt8(e.origin === "local" ? ORIGIN_LOCAL : ORIGIN_RELAYED, o + 44);
      // bytes 45..47 stay zero (Buffer.alloc)
    }
    const bodyEnd = buf.length - TRAILER_SIZE;
    createHash("sha1").update(buf.subarray(0, bodyEnd)).digest().copy(buf, bodyEnd);
    return buf;
  }

  get size(): number {
    return this.#entries.length;
  }

  /** Index of the first entry whose key is >= (uid, size). */
  #lowerBound(uid: number, size: number): number {
    let lo = 0;
    let hi = this.#entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareKey(uid, size, this.#entries[mid]!) > 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * The entry for (uid, size), by binary search. Finding one is not enough to
   * use it: a local entry must pass isEntryValidFor() against the file's
   * current fstat, a relayed one must survive sample verification. The entry
   * returned is the cache's own object: do not modify it.
   */
  lookup(uid: number, size: number): Sha1CacheEntry | undefined {
    const i = this.#lowerBound(uid, size);
    const e = this.#entries[i];
    return e !== undefined && compareKey(uid, size, e) === 0 ? e : undefined;
  }

  /**
   * Adds or replaces the entry for (entry.uid, entry.size). A local entry also
   * drops the other *local* entries of that uid: one host has one file per
   * uid in a mailbox, so a local entry of another size describes a file that
   * no longer exists. Relayed entries of other sizes stay (they describe the
   * other host's file and are only ever matched by size).
   */
  set(entry: Sha1CacheEntry): void {
    checkEntry(entry);
    const e = copyEntry(entry);
    const list = this.#entries;
    const last = list[list.length - 1];
    // Fast path: hashing proceeds in uid order, so most inserts append.
    if (last === undefined || compareKey(e.uid, e.size, last) > 0) {
      if (e.origin === "local") this.#dropLocalOfUid(e.uid, list.length);
      list.push(e);
      return;
    }
    let i = this.#lowerBound(e.uid, e.size);
    const cur = list[i];
    if (cur !== undefined && compareKey(e.uid, e.size, cur) === 0) list[i] = e;
    else list.splice(i, 0, e);
    if (e.origin === "local") {
      // Remove other local entries with this uid, before and after position i.
      let j = i - 1;
      while (j >= 0 && list[j]!.uid === e.uid) {
        if (list[j]!.origin === "local") {
          list.splice(j, 1);
          i--;
        }
        j--;
      }
      j = i + 1;
      while (j < list.length && list[j]!.uid === e.uid) {
        if (list[j]!.origin === "local") list.splice(j, 1);
        else j++;
      }
    }
  }

  /** Removes local entries of `uid` that sit right before index `end`. */
  #dropLocalOfUid(uid: number, end: number): void {
    const list = this.#entries;
    for (let j = end - 1; j >= 0 && list[j]!.uid === uid; j--) {
      if (list[j]!.origin === "local") list.splice(j, 1);
    }
  }

  /** Removes the entry for (uid, size); true when there was one. */
  delete(uid: number, size: number): boolean {
    const i = this.#lowerBound(uid, size);
    const e = this.#entries[i];
    if (e === undefined || compareKey(uid, size, e) !== 0) return false;
    this.#entries.splice(i, 1);
    return true;
  }

  /** Entries in file order, (uid, size) ascending. Do not modify them. */
  *entries(): Iterable<Sha1CacheEntry> {
    yield* this.#entries;
  }

  /**
   * What `cache-put` on the other host stores: the same hashes marked relayed,
   * with inode and mtime zeroed because they describe files on this host and
   * mean nothing over there.
   */
  relayedCopy(): Sha1Cache {
    return new Sha1Cache(
      this.#entries.map((e) => ({
        uid: e.uid,
        size: e.size,
        sha1: Buffer.from(e.sha1),
        ino: 0n,
        mtimeNs: 0n,
        origin: "relayed" as const,
      })),
    );
  }

  /**
   * Adds `other`'s entries to this cache (in place; returns this). On the same
   * (uid, size) a local entry here is kept over a relayed one from `other`
   * (it can be checked against the file's identity, a relayed one only by
   * sampling); otherwise `other`'s entry wins as the newer information.
   */
  merge(other: Sha1Cache): this {
    const a = this.#entries;
    const b = other.#entries;
    const out: Sha1CacheEntry[] = [];
    let i = 0;
    let j = 0;
    while (i < a.length || j < b.length) {
      const x = a[i];
      const y = b[j];
      if (y === undefined) {
        out.push(x!);
        i++;
      } else if (x === undefined) {
        out.push(copyEntry(y));
        j++;
      } else {
        const c = compareKey(x.uid, x.size, y);
        if (c < 0) {
          out.push(x);
          i++;
        } else if (c > 0) {
          out.push(copyEntry(y));
          j++;
        } else {
          out.push(x.origin === "local" && y.origin === "relayed" ? x : copyEntry(y));
          i++;
          j++;
        }
      }
    }
    // A local entry from `other` may have made another local entry of the
    // same uid (other size) obsolete, as set() would have.
    this.#entries = out;
    this.#dropDuplicateLocals();
    return this;
  }

  /**
   * Keeps at most one local entry per uid, the one with the newest mtime: an
   * older one describes a file this host no longer has. Happens only when a
   * merged-in cache holds local entries (normally caches arrive relayed).
   */
  #dropDuplicateLocals(): void {
    const list = this.#entries;
    const out: Sha1CacheEntry[] = [];
    let k = 0;
    while (k < list.length) {
      const uid = list[k]!.uid;
      let end = k;
      let best: Sha1CacheEntry | undefined;
      for (; end < list.length && list[end]!.uid === uid; end++) {
        const e = list[end]!;
        if (e.origin === "local" && (best === undefined || e.mtimeNs >= best.mtimeNs)) best = e;
      }
      for (let m = k; m < end; m++) {
        const e = list[m]!;
        if (e.origin === "relayed" || e === best) out.push(e);
      }
      k = end;
    }
    this.#entries = out;
  }
}

/**
 * True when a *local* entry still describes the message file as it is now:
 * same inode, same mtime to the nanosecond, same size. `fileStat` must come
 * from a bigint stat of the file (ideally fstat of the fd about to be used).
 * Relayed entries always return false here: they have no identity on this
 * host and are trusted only through sample verification.
 */
export function isEntryValidFor(
  entry: Sha1CacheEntry,
  fileStat: { ino: bigint; mtimeNs: bigint; size: bigint | number },
): boolean {
  if (entry.origin !== "local") return false;
  return (
    entry.ino === fileStat.ino &&
    entry.mtimeNs === fileStat.mtimeNs &&
    BigInt(entry.size) === BigInt(fileStat.size)
  );
}

/**
 * Picks `count` distinct uids out of `uids` (all of them when count >= the
 * number of distinct uids), returned ascending. The choice depends only on
 * the set of uids and `seed`: the same inputs give the same sample (the
 * agent can report and reproduce it), while without the seed nobody — in
 * particular a relayed cache that happens to be right only on "popular"
 * uids such as the first or last ones — can predict which uids get checked.
 * Use a fresh random seed (or one tied to the run) per verification.
 *
 * Method: partial Fisher–Yates shuffle over the sorted distinct uids, driven
 * by a SHA-256 counter-mode stream keyed by the seed.
 */
export function chooseVerificationSample(uids: number[], count: number, seed: Buffer): number[] {
  const pool = [...new Set(uids)].sort((a, b) => a - b);
  const k = Math.max(0, Math.min(Math.floor(count), pool.length));
  if (k === pool.length) return pool;
  let block = Buffer.alloc(0);
  let blockPos = 0;
  let counter = 0;
  const ctr = Buffer.alloc(4);
  // 48 random bits per draw: the modulo bias for a range below 2^32 is < 2^-16
  // per draw, irrelevant for choosing which cache entries to double-check.
  const next48 = (): number => {
    if (blockPos + 6 > block.length) {
      ctr.writeUInt32BE(counter++);
      block = createHash("sha256").update(seed).update(ctr).digest();
      blockPos = 0;
    }
    const v = block.readUIntBE(blockPos, 6);
    blockPos += 6;
    return v;
  };
  for (let i = 0; i < k; i++) {
    const j = i + (next48() % (pool.length - i));
    const t = pool[i]!;
    pool[i] = pool[j]!;
    pool[j] = t;
  }
  return pool.slice(0, k).sort((a, b) => a - b);
}

/**
 * Reads a mailbox's sha1 cache. A missing file is an empty cache with no
 * problem (the normal case before `guidup hash`). A corrupt, torn or
 * unreadable one is also an empty cache — never partly trusted — and
 * `problem` says why, naming the file, so scan/hash can report it.
 */
export async function readSha1Cache(path: string): Promise<{ cache: Sha1Cache; problem?: string }> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    return unreadCache(path, err);
  }
  return decodeCache(buf, path);
}

/**
 * readSha1Cache with synchronous calls, for thousands of small mailboxes in
 * a row (guidup hash). A missing file, the usual case before the first run,
 * is found without an exception (building one per mailbox was measurable).
 */
export function readSha1CacheSync(path: string): { cache: Sha1Cache; problem?: string } {
  if (!existsSync(path)) return { cache: Sha1Cache.empty() };
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    return unreadCache(path, err);
  }
  return decodeCache(buf, path);
}

function unreadCache(path: string, err: unknown): { cache: Sha1Cache; problem?: string } {
  if ((err as NodeJS.ErrnoException).code === "ENOENT") return { cache: Sha1Cache.empty() };
  return { cache: Sha1Cache.empty(), problem: `${path}: unreadable: ${errorMessage(err)}` };
}

function decodeCache(buf: Buffer, path: string): { cache: Sha1Cache; problem?: string } {
  try {
    return { cache: Sha1Cache.decode(buf, path) };
  } catch (err) {
    if (err instanceof CacheFormatError) {
      return { cache: Sha1Cache.empty(), problem: `${err.message}; ignoring it` };
    }
    throw err;
  }
}

/** Writers of the same path in this process take turns (they share a temp name). */
const writeQueue = new Map<string, Promise<void>>();

export interface WriteOptions {
  /**
   * fsync the new file before the rename and the directory after it
   * (default true): once the call returns, a crash keeps the new cache.
   * `guidup hash` writes thousands of caches and passes false: without the
   * fsyncs a crash may leave the old file, an empty or a torn one, and the
   * checksum makes anything torn read as "no cache" (those files are hashed
   * again), never as wrong GUIDs. Without fsync the write is done with
   * synchronous calls: a few microseconds each for a file of a few kB.
   */
  durable?: boolean;
}

/**
 * Writes the cache atomically: `cyrus.sha1s.tmp.<pid>` in the same directory,
 * (fsync,) rename over `path`, (fsync the directory). Readers see either the
 * old file or the new one, never a mix. `mode` gives the new file's owner,
 * group and permission bits (the agent passes those of cyrus.index so the
 * file looks like the rest of the mailbox); without it the file is created
 * 0600 with the process's owner.
 */
export async function writeSha1Cache(
  path: string,
  cache: Sha1Cache,
  mode?: { uid: number; gid: number; mode: number },
  options: WriteOptions = {},
): Promise<void> {
  const durable = options.durable ?? true;
  const prev = writeQueue.get(path);
  if (!durable && prev === undefined) {
    // Nothing to wait for: write now, synchronously.
    writeNowSync(path, cache.encode(), mode);
    return;
  }
  const run = (prev ?? Promise.resolve())
    .catch(() => {})
    .then(() =>
      durable ? writeNow(path, cache.encode(), mode) : writeNowSync(path, cache.encode(), mode),
    );
  const tail = run.catch(() => {});
  writeQueue.set(path, tail);
  try {
    await run;
  } finally {
    if (writeQueue.get(path) === tail) writeQueue.delete(path);
  }
}

function writeError(path: string, err: unknown): FileAccessError {
  return new FileAccessError(`cannot write ${path}: ${errorMessage(err)}`, {
    file: path,
    errno: (err as NodeJS.ErrnoException).code,
  });
}

/** writeNow without the fsyncs, with synchronous calls. */
function writeNowSync(
  path: string,
  data: Buffer,
  mode: { uid: number; gid: number; mode: number } | undefined,
): void {
  const tmp = `${path}.tmp.${process.pid}`;
  const perm = (mode?.mode ?? 0o600) & 0o7777;
  try {
    // "w" truncates a leftover temp of an earlier, crashed writer with our pid.
    const fd = openSync(tmp, "w", perm);
    try {
      if (mode !== undefined) {
        fchownSync(fd, mode.uid, mode.gid);
        // open()'s mode is filtered by the umask; set the exact bits asked for.
        fchmodSync(fd, perm);
      }
      for (let done = 0; done < data.length; ) done += writeSync(fd, data, done);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // Not there, or the rename happened: nothing to clean up.
    }
    throw writeError(path, err);
  }
}

async function writeNow(
  path: string,
  data: Buffer,
  mode: { uid: number; gid: number; mode: number } | undefined,
): Promise<void> {
  const tmp = `${path}.tmp.${process.pid}`;
  const perm = (mode?.mode ?? 0o600) & 0o7777;
  let renamed = false;
  try {
    // "w" truncates a leftover temp of an earlier, crashed writer with our pid.
    const fh = await open(tmp, "w", perm);
    try {
      if (mode !== undefined) {
        await fh.chown(mode.uid, mode.gid);
        // open()'s mode is filtered by the umask; set the exact bits asked for.
        await fh.chmod(perm);
      }
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    renamed = true;
    const dir = await open(dirname(path), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (err) {
    if (!renamed) await unlink(tmp).catch(() => {});
    throw writeError(path, err);
  }
}
