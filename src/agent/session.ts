// One agent session's mailbox work: the seed's LOCK / UPGRADE / COMMIT /
// ROLLBACK, as a state machine over at most one mailbox at a time:
//
//   idle ──lock──► locked ──upgrade──► upgraded ──commit/rollback──► idle
//                    └───────────────rollback────────────────────────┘
//
// A request out of order is refused with code "out-of-order" and changes
// nothing. Locks are Linux OFD fcntl locks, which conflict with Cyrus 2.3's
// classic fcntl locks, taken in Cyrus's order cyrus.header → cyrus.index →
// cyrus.expunge and released in reverse. cyrus.cache is never locked: pop3d
// holds it for whole sessions (trap 14), and the upgrade does not touch it.

import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  openSync,
  renameSync,
  statSync,
  unlinkSync,
} from "node:fs";
import { convertIndex } from "../cyrus/convert.js";
import { writableFormat } from "../cyrus/formats/index.js";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import { fileAccessError, IndexReader, UnsupportedVersionError } from "../cyrus/index-file.js";
import { CyrusFormatError, GuidupError, UsageError } from "../errors.js";
import type { MailboxRef, MailboxScan, Requests, UpgradeCounts } from "../protocol/messages.js";
import { type FileLock, lockFile } from "./fcntl-lock.js";
import { type ResolvedGuids, resolveGuids } from "./guid-resolver.js";
import type { HashPool } from "./hash-pool.js";
import { type MailboxFiles, mailboxFiles } from "./mailbox-files.js";
import { type GuidNeed, type MailboxRead, readMailbox } from "./mailbox-scan.js";
import { readSha1Cache, type Sha1Cache, writeSha1Cache } from "./sha1-cache.js";

// The per-mailbox file calls are synchronous behind promise-returning names:
// an agent serves one request at a time, and every async fs call is a round
// trip through libuv's thread pool, measured as most of an agent's CPU per
// mailbox. Rejections keep the shape callers expect (awaited errors).
const sync =
  <A extends unknown[], R>(fn: (...args: A) => R) =>
  async (...args: A): Promise<R> =>
    fn(...args);
const open = sync(openSync);
const close = sync(closeSync);
const fsync = sync(fsyncSync);
const fchown = sync(fchownSync);
const fchmod = sync(fchmodSync);
const fstat = sync((fd: number) => fstatSync(fd));
const rename = sync(renameSync);
const stat = sync((path: string) => statSync(path));
const unlink = sync(unlinkSync);

/** A request that does not fit the session's state. */
export class OutOfOrderError extends GuidupError {
  override readonly code: string = "out-of-order";
}

/** The locked mailbox no longer matches the plan's fingerprint. */
export class StaleMailboxError extends GuidupError {
  override readonly code: string = "stale";
}

/** cyrus.expunge's version or geometry disagrees with cyrus.index. */
export class InconsistentMailboxError extends GuidupError {
  override readonly code: string = "inconsistent";
}

interface Locked {
  files: MailboxFiles;
  locks: FileLock[];
  header: FileLock;
  index: FileLock;
  expunge?: FileLock;
  read: MailboxRead;
  lockedAt: number;
  /** .NEW files written by upgrade, in commit order (expunge first). */
  written: { from: string; to: string }[];
  upgraded: boolean;
  /** GUIDs decided by prepare, valid because the fingerprint did not change. */
  prepared?: Prepared;
}

/**
 * What `prepare` decided for a mailbox, outside the locks. Safe to use under
 * the locks only when the fingerprint (UID lists and GUID bytes of index and
 * expunge) is unchanged: Cyrus 2.3 never rewrites a `<uid>.` file in place,
 * and replaces one only in a replica's sync conflict, which also rewrites
 * that record's GUID (spool doc 5.5, 8.3) — so an unchanged fingerprint means
 * the same message files behind the same records.
 */
interface Prepared {
  name: string;
  fingerprint: string;
  resolved: ResolvedGuids;
}

type Result<K extends keyof Requests> = Requests[K]["result"];

export class MailboxSession {
  #current: Locked | undefined;
  #prepared: Prepared | undefined;

  constructor(
    private readonly conf: ImapdConf,
    private readonly pool: HashPool,
  ) {}

  get state(): "idle" | "locked" | "upgraded" {
    if (!this.#current) return "idle";
    return this.#current.upgraded ? "upgraded" : "locked";
  }

  get mailbox(): string | undefined {
    return this.#current?.files.name;
  }

  async prepare(ref: MailboxRef, verifySample: number | undefined): Promise<Result<"prepare">> {
    if (this.#current) {
      throw new OutOfOrderError(
        `prepare ${ref?.name}: this session holds ${this.#current.files.name}; commit or rollback first`,
      );
    }
    this.#prepared = undefined;
    const files = mailboxFiles(this.conf, ref);
    const { read } = await loadMailbox(files);
    // Unreadable or missing: nothing to prepare; lock reports the problem.
    if (!read) return { needs: 0, computed: 0, fromCache: 0, relayedVerified: 0 };
    const needs = [...read.index.needs, ...(read.expunge?.needs ?? [])];
    const resolved = await this.#resolve(files, needs, verifySample);
    this.#prepared = { name: files.name, fingerprint: read.scan.fingerprint!, resolved };
    return {
      fingerprint: read.scan.fingerprint!,
      needs: needs.length,
      computed: resolved.computed,
      fromCache: resolved.fromCache,
      relayedVerified: resolved.relayedVerified,
    };
  }

  async lock(ref: MailboxRef, timeoutMs: number): Promise<Result<"lock">> {
    if (this.#current) {
      throw new OutOfOrderError(
        `lock ${ref?.name}: this session already holds ${this.#current.files.name}; commit or rollback first`,
      );
    }
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new UsageError(`lock: timeoutMs must be a non-negative number`);
    }
    const files = mailboxFiles(this.conf, ref);
    const started = Date.now();
    const deadline = started + timeoutMs;
    const remaining = () => Math.max(0, deadline - Date.now());
    const locks: FileLock[] = [];
    const release = async () => {
      for (const l of locks.reverse()) await l.unlock().catch(() => {});
    };
    try {
      const header = await lockFile(files.header, { timeoutMs: remaining() });
      locks.push(header);
      const index = await lockFile(files.index, { timeoutMs: remaining() });
      locks.push(index);
      let expunge: FileLock | undefined;
      if (await exists(files.expunge)) {
        expunge = await lockFile(files.expunge, { timeoutMs: remaining() });
        locks.push(expunge);
      }
      const waitedMs = Date.now() - started;
      // Any writer of a .NEW holds the index lock; we hold it now, so a .NEW
      // here is a leftover of a crash (ours or Cyrus's) and is removed.
      const removedStale: string[] = [];
      for (const path of [files.expungeNew, files.indexNew]) {
        try {
          await unlink(path);
          removedStale.push(path);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fileAccessError(path, err);
        }
      }
      // Read through the locked fds, never a view taken before the lock.
      const expungeSource = expunge && (await nonEmpty(expunge.fd));
      const readLocked = (collectNeeds: boolean) =>
        readMailbox(
          files.name,
          { path: files.index, fd: index.fd, kind: "index" },
          expungeSource ? { path: files.expunge, fd: expunge!.fd, kind: "expunge" } : undefined,
          collectNeeds,
        );
      // With prepared GUIDs for this mailbox the per-record needs are not
      // wanted; should the fingerprint show a change, read again for them.
      const expectPrepared = this.#prepared?.name === files.name;
      let read = await readLocked(!expectPrepared);
      const prepared =
        expectPrepared && this.#prepared?.fingerprint === read.scan.fingerprint
          ? this.#prepared
          : undefined;
      if (expectPrepared && !prepared) read = await readLocked(true);
      this.#prepared = undefined;
      this.#current = {
        ...(prepared ? { prepared } : {}),
        files,
        locks: [...locks],
        header,
        index,
        ...(expunge ? { expunge } : {}),
        read,
        lockedAt: started + waitedMs,
        written: [],
        upgraded: false,
      };
      return { scan: read.scan, removedStale, waitedMs, prepared: prepared !== undefined };
    } catch (err) {
      await release();
      throw err;
    }
  }

  async upgrade(args: Requests["upgrade"]["args"]): Promise<Result<"upgrade">> {
    const cur = this.#requireState("upgrade", "locked");
    const target = writableFormat(args.target);
    if (!target) throw new UsageError(`upgrade: target version ${args.target} is not one of 6..10`);
    const { read, files } = cur;
    if (args.expectFingerprint !== undefined && args.expectFingerprint !== read.scan.fingerprint) {
      throw new StaleMailboxError(
        `${files.name}: changed since the plan was made (fingerprint differs); run guidup plan again`,
        { mailbox: files.name },
      );
    }
    const indexMinor = read.index.facts.minor;
    const expungeMinor = read.expunge?.facts.minor;
    // A crash between commit's two renames leaves cyrus.expunge at the target
    // and cyrus.index not (commit renames expunge first): accept that state.
    if (
      expungeMinor !== undefined &&
      expungeMinor !== indexMinor &&
      expungeMinor !== target.minor
    ) {
      throw new InconsistentMailboxError(
        `${files.expunge}: version ${expungeMinor} disagrees with cyrus.index version ${indexMinor}; run reconstruct`,
        { mailbox: files.name },
      );
    }
    const wantsGuids = target.minor === 10;
    const needs = wantsGuids ? [...read.index.needs, ...(read.expunge?.needs ?? [])] : [];
    const indexNeedsWork =
      indexMinor !== target.minor || (wantsGuids && read.index.facts.oldStyle > 0);
    const expungeNeedsWork =
      read.expunge !== undefined &&
      (expungeMinor !== target.minor || (wantsGuids && read.expunge.facts.oldStyle > 0));
    const counts: UpgradeCounts = {
      records: read.index.facts.records,
      expungeRecords: read.expunge?.facts.records ?? 0,
      computed: 0,
      fromCache: 0,
      relayedVerified: 0,
      kept: read.index.facts.records - read.index.facts.oldStyle,
    };
    if (!indexNeedsWork && !expungeNeedsWork) {
      cur.upgraded = true;
      return {
        changed: false,
        counts,
        guidDigest: read.index.guidDigest,
        ...(read.expunge ? { expungeDigest: read.expunge.guidDigest } : {}),
      };
    }

    // Prepared outside the locks if possible; else decided now, under them.
    const resolved =
      cur.prepared?.resolved ?? (await this.#resolve(files, needs, args.verifySample));
    counts.computed = resolved.computed;
    counts.fromCache = resolved.fromCache;
    counts.relayedVerified = resolved.relayedVerified;

    // Only old-style GUIDs are replaced (the converter's `guids` option); an
    // SHA1 GUID already there is kept.
    const guids = wantsGuids ? resolved.guids : undefined;
    let expungeDigest: string | undefined;
    try {
      // Expunge first, in the order commit renames them.
      if (expungeNeedsWork && cur.expunge) {
        const r = await this.#writeNew(
          cur.expunge,
          files.expunge,
          files.expungeNew,
          "expunge",
          target,
          guids,
        );
        cur.written.push({ from: files.expungeNew, to: files.expunge });
        expungeDigest = r.digest.toString("hex");
      } else if (read.expunge) {
        expungeDigest = read.expunge.guidDigest;
      }
      let guidDigest = read.index.guidDigest;
      if (indexNeedsWork) {
        const r = await this.#writeNew(
          cur.index,
          files.index,
          files.indexNew,
          "index",
          target,
          guids,
        );
        cur.written.push({ from: files.indexNew, to: files.index });
        guidDigest = r.digest.toString("hex");
      }
      cur.upgraded = true;
      return {
        changed: true,
        counts,
        guidDigest,
        ...(expungeDigest !== undefined ? { expungeDigest } : {}),
      };
    } catch (err) {
      await this.#removeWritten(cur);
      throw err;
    }
  }

  async commit(): Promise<Result<"commit">> {
    const cur = this.#requireState("commit", "upgraded");
    const renamed: string[] = [];
    for (const { from, to } of cur.written) {
      try {
        await rename(from, to);
      } catch (err) {
        throw fileAccessError(to, err);
      }
      renamed.push(to);
    }
    for (const dir of cur.files.commitDirs) await fsyncDir(dir);
    cur.written = [];
    const lockHeldMs = await this.#unlock(cur);
    return { renamed, lockHeldMs };
  }

  async rollback(): Promise<Result<"rollback">> {
    const cur = this.#current;
    if (!cur) throw new OutOfOrderError("rollback: no mailbox is locked in this session");
    let removed: string[];
    try {
      removed = await this.#removeWritten(cur);
    } finally {
      // Even when a .NEW file cannot be removed (the next lock removes it),
      // the mailbox is released: a session never keeps locks after rollback.
      await this.#unlock(cur);
    }
    return { removed, lockHeldMs: Date.now() - cur.lockedAt };
  }

  /** For stdin end / connection loss: undo whatever is in progress. */
  async abandon(): Promise<void> {
    if (this.#current) await this.rollback();
  }

  async status(ref: MailboxRef | undefined): Promise<Result<"status">> {
    const session = this.state;
    const out: Result<"status"> = { session, ...(this.mailbox ? { mailbox: this.mailbox } : {}) };
    if (this.#current) out.newFiles = this.#current.written.map((w) => w.from);
    if (ref) {
      const files = mailboxFiles(this.conf, ref);
      out.scan = await scanMailboxFiles(files);
      const present: string[] = [];
      for (const p of [files.indexNew, files.expungeNew]) if (await exists(p)) present.push(p);
      out.newFiles = present;
    }
    return out;
  }

  /** Decides the GUIDs of old-style records (cache, else hashing) and saves fresh hashes. */
  async #resolve(
    files: MailboxFiles,
    needs: GuidNeed[],
    verifySample: number | undefined,
  ): Promise<ResolvedGuids> {
    if (needs.length === 0) {
      return { guids: new Map(), computed: 0, fromCache: 0, relayedVerified: 0, fresh: [] };
    }
    const { cache } = await readSha1Cache(files.sha1s);
    const resolved = await resolveGuids({
      mailbox: files.name,
      needs,
      cache,
      pool: this.pool,
      messageFile: files.messageFile,
      ...(verifySample !== undefined ? { verifySample } : {}),
    });
    if (resolved.fresh.length > 0) await this.#saveFresh(files, cache, resolved.fresh);
    return resolved;
  }

  #requireState(op: string, want: "locked" | "upgraded"): Locked {
    const cur = this.#current;
    if (!cur || this.state !== want) {
      throw new OutOfOrderError(
        `${op}: needs ${want === "upgraded" ? "an" : "a"} ${want} mailbox, but the session is ${this.state}${cur ? ` (${cur.files.name})` : ""}`,
      );
    }
    return cur;
  }

  async #writeNew(
    lock: FileLock,
    path: string,
    newPath: string,
    kind: "index" | "expunge",
    target: NonNullable<ReturnType<typeof writableFormat>>,
    guids: ReadonlyMap<number, Buffer> | undefined,
  ) {
    const original = await fstat(lock.fd);
    const reader = await IndexReader.fromFd(lock.fd, path, { kind });
    let fd: number;
    try {
      fd = await open(newPath, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (err) {
      throw fileAccessError(newPath, err);
    }
    try {
      // The .NEW file replaces the original: same owner, group and mode.
      await fchown(fd, original.uid, original.gid);
      await fchmod(fd, original.mode & 0o7777);
      const result = await convertIndex(reader, fd, { target, ...(guids ? { guids } : {}) });
      await fsync(fd);
      return result;
    } catch (err) {
      await unlink(newPath).catch(() => {});
      throw err instanceof GuidupError ? err : fileAccessError(newPath, err);
    } finally {
      await close(fd);
    }
  }

  async #removeWritten(cur: Locked): Promise<string[]> {
    const removed: string[] = [];
    for (const { from } of cur.written) {
      try {
        await unlink(from);
        removed.push(from);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fileAccessError(from, err);
      }
    }
    cur.written = [];
    return removed;
  }

  async #unlock(cur: Locked): Promise<number> {
    for (const l of [...cur.locks].reverse()) await l.unlock();
    this.#current = undefined;
    return Date.now() - cur.lockedAt;
  }

  async #saveFresh(
    files: MailboxFiles,
    cache: Sha1Cache,
    fresh: Parameters<Sha1Cache["set"]>[0][],
  ) {
    // Best effort: a cache that cannot be written only costs a re-hash later.
    try {
      for (const e of fresh) cache.set(e);
      const st = await stat(files.index);
      await writeSha1Cache(files.sha1s, cache, { uid: st.uid, gid: st.gid, mode: st.mode });
    } catch {
      // ignored on purpose, see above
    }
  }
}

/** Scan of one mailbox without locks (the scan op, status). */
export async function scanMailboxFiles(files: MailboxFiles): Promise<MailboxScan> {
  const { scan, read } = await loadMailbox(files);
  if (!read) return scan;
  const needs = [...read.index.needs, ...(read.expunge?.needs ?? [])];
  if (needs.length === 0) return scan;
  // Coverage by key only (no stat per file): a display figure for the plan;
  // the upgrade re-checks each entry before trusting it.
  const { cache } = await readSha1Cache(files.sha1s);
  const cached = needs.filter((n) => cache.lookup(n.uid, n.size) !== undefined).length;
  return { ...scan, cached };
}

/** Reads a mailbox without locks; a problem becomes the scan's status, not an exception. */
async function loadMailbox(
  files: MailboxFiles,
): Promise<{ scan: MailboxScan; read?: MailboxRead }> {
  if (!(await exists(files.index))) {
    return {
      scan: { name: files.name, status: "missing", reason: `${files.index}: no such file` },
    };
  }
  try {
    const hasExpunge = await existsNonEmpty(files.expunge);
    const read = await readMailbox(
      files.name,
      { path: files.index, kind: "index" },
      hasExpunge ? { path: files.expunge, kind: "expunge" } : undefined,
    );
    return { scan: read.scan, read };
  } catch (err) {
    if (err instanceof UnsupportedVersionError && err.newer) {
      return { scan: { name: files.name, status: "newer", reason: err.message } };
    }
    // Damaged or foreign files (run reconstruct) apart from files guidup
    // cannot read (permissions, I/O).
    if (err instanceof CyrusFormatError)
      return { scan: { name: files.name, status: "corrupt", reason: err.message } };
    if (err instanceof GuidupError)
      return { scan: { name: files.name, status: "unreadable", reason: err.message } };
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw fileAccessError(path, err);
  }
}

async function existsNonEmpty(path: string): Promise<boolean> {
  try {
    return (await stat(path)).size > 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw fileAccessError(path, err);
  }
}

/**
 * 2.3.16 treats a 0-byte cyrus.expunge as "write a header now" (a delayed
 * expunge was interrupted between create and header write): not a file to
 * convert, and left as it is.
 */
async function nonEmpty(fd: number): Promise<boolean> {
  return (await fstat(fd)).size > 0;
}

async function fsyncDir(dir: string): Promise<void> {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
