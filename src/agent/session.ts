// One agent session's mailbox work: the cut-over protocol (design: README
// "Safety rules", and the comment below), over at most one mailbox at a time:
//
//   idle ──prepare──► prepared ──lock(stage)──► locked/staged ──commit/rollback──► idle
//
// prepare — outside any lock: read cyrus.index and cyrus.expunge whole,
//   decide the GUIDs (sha1 cache or hashing: a `<uid>.` file never changes
//   once Cyrus wrote it), convert both files and write the results to
//   guidup-private temporary names (`cyrus.index.guidup-<pid>`, never Cyrus's
//   `.NEW`, which Cyrus writes under its own lock), fsync them. Keep the exact
//   input bytes (or, above KEEP_BYTES_MAX, their SHA1) and the conversion.
// lock(stage) — take the locks in Cyrus's order, read both files again
//   through the locked descriptors, and compare the BYTES (never mtime or
//   size: a flag change rewrites a record in place) with what prepare read:
//     identical    → the prepared files are the conversion of what is there
//                    now: nothing is left but the rename (path `prepared`);
//     appended     → the records prepare saw are an unchanged prefix (and
//                    cyrus.expunge unchanged): parse, scan and convert only
//                    the new records, continue prepare's digests and planned
//                    set, rewrite the header (`appended`; #appendedIndex);
//     otherwise    → convert under the lock, reusing prepare's GUIDs by UID
//                    and hashing only UIDs prepare did not see (`reconverted`).
// commit — rename the staged files over cyrus.expunge then cyrus.index, fsync
//   the directories, unlock in reverse order. rollback — unlink, unlock.
//
// Why an unlocked read is safe to convert from: Cyrus changes these files
// only under its exclusive lock, by rewriting cyrus.index in place or by
// renaming a complete `.NEW` over it. Prepare's read may be torn (half an old
// write, half a new one), and its conversion may then be garbage — but it is
// never used unless the locked read is byte for byte equal to it. The locked
// read sees one consistent state (no writer holds the lock), so equality
// means prepare's bytes ARE that consistent state, and a deterministic
// conversion of equal bytes gives equal output: the prepared file is exactly
// the conversion of the current content. A torn read that differs anywhere
// fails the comparison and takes the `reconverted` path. A prepared file is
// never renamed without the locks and this comparison; a leftover of a dead
// agent (its pid in the name) is removed by the next prepare, and is harmless
// meanwhile because only the process that wrote it may rename it.
//
// A request out of order is refused with code "out-of-order" and changes
// nothing. Locks are Linux OFD fcntl locks, which conflict with Cyrus 2.3's
// classic fcntl locks, taken in Cyrus's order cyrus.header → cyrus.index →
// cyrus.expunge and released in reverse. cyrus.cache is never locked: pop3d
// holds it for whole sessions (trap 14), and the upgrade does not touch it.

import { createHash, type Hash } from "node:crypto";
import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import { PAIR_BYTES } from "../cyrus/convert.js";
import { writableFormat } from "../cyrus/formats/index.js";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import { fileAccessError, parseIndexHeader, UnsupportedVersionError } from "../cyrus/index-file.js";
import { CyrusFormatError, ERRORS, type ErrorCode, GuidupError, UsageError } from "../errors.js";
import { fsyncDirSync } from "../fsutil/atomic-file.js";
import { type FileLock, lockFile } from "../fsutil/fcntl-lock.js";
import type {
  CutoverPath,
  MailboxRef,
  MailboxScan,
  PlannedSetFacts,
  Requests,
  StageArgs,
  Staged,
  UpgradeCounts,
} from "../protocol/messages.js";
import { resolveGuids } from "./guid-resolver.js";
import { HashPool } from "./hash-pool.js";
import {
  type Converted,
  convertFileBytes,
  digestOf,
  type FileBytes,
  type FileScan,
  parseFileBytes,
  readAllFd,
  recordsOf,
  scanFileBytes,
} from "./index-bytes.js";
import { type MailboxFiles, mailboxFiles, tmpOwner } from "./mailbox-files.js";
import { type GuidNeed, readMailbox, readMailboxSync } from "./mailbox-scan.js";
import { plannedSet } from "./planned-set.js";
import { readSha1Cache, readSha1CacheSync, Sha1Cache, writeSha1Cache } from "./sha1-cache.js";

/** Under the lock, up to this many unseen UIDs are hashed without reading the sha1 cache. */
const FEW_NEW_UIDS = 64;

/** Above this many bytes a prepared input is kept as its SHA1 only (no `appended` path). */
export const KEEP_BYTES_MAX = 64 << 20;

/** A request that does not fit the session's state. */
export class OutOfOrderError extends GuidupError {
  override readonly code: ErrorCode = ERRORS.outOfOrder.code;
}

/** cyrus.expunge's version or geometry disagrees with cyrus.index. */
export class InconsistentMailboxError extends GuidupError {
  override readonly code: ErrorCode = ERRORS.inconsistent.code;
}

type Kind = "index" | "expunge";

/** One file as read (absent: no file, or a 0-byte cyrus.expunge left alone). */
interface FileState {
  fb?: FileBytes;
  scan?: FileScan;
}

/** One file's staged conversion. */
interface StagedFile {
  path: CutoverPath;
  /** Undefined when the file needs no work. */
  converted?: Converted;
  /** Whether `converted` is on disk (fsynced) at the temporary name. */
  written: boolean;
}

interface Stage {
  args: StageArgs;
  files: Record<Kind, FileState>;
  staged: Partial<Record<Kind, StagedFile>>;
  check: PlannedSetFacts;
  scan: MailboxScan;
  counts: UpgradeCounts;
  /** GUIDs decided so far, by UID, with the SIZE they were decided for. */
  guids: Map<number, Buffer>;
  sizes: Map<number, number>;
  /** The scan's fingerprint state through cyrus.index (fingerprintThroughIndex). */
  throughIndex: Hash;
}

/** What prepare converted: the input it read, kept for the comparison under the lock. */
interface Prepared extends Stage {
  name: string;
  mailboxFiles: MailboxFiles;
  inputs: Record<Kind, Buffer | string | undefined>;
}

interface Locked {
  files: MailboxFiles;
  locks: FileLock[];
  lockedAt: number;
  /** The files as read through the locked fds (lock without stage). */
  read?: Record<Kind, FileState>;
  stage?: Stage;
}

type Result<K extends keyof Requests> = Requests[K]["result"];

const ORDER: readonly Kind[] = ["expunge", "index"];
const RANK: Record<CutoverPath, number> = {
  unchanged: 0,
  prepared: 1,
  appended: 2,
  reconverted: 3,
};

export class MailboxSession {
  #current: Locked | undefined;
  #prepared: Prepared | undefined;
  /** A rate-limited pool for prepare's hashing (apply --max-rate), made on first use. */
  #rated: { rate: number; pool: HashPool } | undefined;

  constructor(
    private readonly conf: ImapdConf,
    private readonly pool: HashPool,
  ) {}

  get state(): "idle" | "locked" | "upgraded" {
    if (!this.#current) return "idle";
    return this.#current.stage ? "upgraded" : "locked";
  }

  get mailbox(): string | undefined {
    return this.#current?.files.name;
  }

  async prepare(ref: MailboxRef, args: StageArgs): Promise<Result<"prepare">> {
    if (this.#current) {
      throw new OutOfOrderError(
        `prepare ${ref?.name}: this session holds ${this.#current.files.name}; commit or rollback first`,
      );
    }
    const target = targetFormat(args);
    this.#dropPrepared();
    const files = mailboxFiles(this.conf, ref);
    sweepLeftovers(files);
    const loaded = loadUnlocked(files);
    if (!loaded.files)
      return { scan: loaded.scan, needs: 0, computed: 0, fromCache: 0, relayedVerified: 0 };
    const stage = await this.#stage(files, args, target, loaded.files, "prepared");
    await this.#write(files, stage);
    const inputs = {
      index: keepInput(loaded.files.index.fb),
      expunge: keepInput(loaded.files.expunge.fb),
    };
    this.#prepared = Object.assign(stage, { name: files.name, mailboxFiles: files, inputs });
    return {
      scan: stage.scan,
      check: stage.check,
      staged: stagedResult(stage),
      needs: stage.counts.computed + stage.counts.fromCache,
      computed: stage.counts.computed,
      fromCache: stage.counts.fromCache,
      relayedVerified: stage.counts.relayedVerified,
    };
  }

  async lock(ref: MailboxRef, timeoutMs: number, args?: StageArgs): Promise<Result<"lock">> {
    if (this.#current) {
      throw new OutOfOrderError(
        `lock ${ref?.name}: this session already holds ${this.#current.files.name}; commit or rollback first`,
      );
    }
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new UsageError(`lock: timeoutMs must be a non-negative number`);
    }
    const target = args ? targetFormat(args) : undefined;
    const files = mailboxFiles(this.conf, ref);
    const candidate = this.#prepared?.name === files.name ? this.#prepared : undefined;
    const prepared =
      candidate && args && sameStageArgs(candidate.args, args) ? candidate : undefined;
    // A prepared conversion this lock will not use (another mailbox, other
    // stage arguments, a plain lock): its temporary files go now.
    if (this.#prepared && !prepared) this.#dropPrepared();
    const started = Date.now();
    const deadline = started + timeoutMs;
    const remaining = () => Math.max(0, deadline - Date.now());
    const locks: FileLock[] = [];
    try {
      const header = await lockFile(files.header, { timeoutMs: remaining() });
      locks.push(header);
      const index = await lockFile(files.index, { timeoutMs: remaining() });
      locks.push(index);
      let expunge: FileLock | undefined;
      if (existsSync(files.expunge)) {
        expunge = await lockFile(files.expunge, { timeoutMs: remaining() });
        locks.push(expunge);
      }
      const lockedAt = Date.now();
      // Any writer of a .NEW holds the index lock; we hold it now, so a .NEW
      // here is a leftover of a crash (ours or Cyrus's) and is removed.
      const removedStale: string[] = [];
      for (const path of [files.expungeNew, files.indexNew]) {
        try {
          unlinkSync(path);
          removedStale.push(path);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fileAccessError(path, err);
        }
      }
      // Read through the locked fds, never a view taken before the lock.
      const indexBytes = readAllFd(index.fd, files.index);
      const expungeBytes = expunge ? readAllFd(expunge.fd, files.expunge) : undefined;
      const current: Locked = { files, locks: [...locks], lockedAt };
      this.#current = current;
      let result: Result<"lock">;
      if (!args || !target) {
        const read = readFiles(files, indexBytes, expungeBytes);
        current.read = read;
        result = {
          scan: mailboxScan(files.name, read),
          removedStale,
          waitedMs: lockedAt - started,
        };
      } else {
        const stage = prepared
          ? await this.#restage(files, args, target, prepared, indexBytes, expungeBytes)
          : await this.#stage(
              files,
              args,
              target,
              readFiles(files, indexBytes, expungeBytes),
              "reconverted",
            );
        current.stage = stage;
        await this.#write(files, stage);
        result = {
          scan: stage.scan,
          check: stage.check,
          staged: stagedResult(stage),
          removedStale,
          waitedMs: lockedAt - started,
        };
      }
      this.#prepared = undefined;
      return result;
    } catch (err) {
      if (this.#current) {
        await this.rollback({}).catch(() => {});
      } else {
        for (const l of locks.reverse()) await l.unlock().catch(() => {});
      }
      throw err;
    }
  }

  /**
   * Stages now, under the lock, from what the lock read: the `reconverted`
   * path without a prepare (tools and tests; apply stages in its lock).
   */
  async upgrade(args: Requests["upgrade"]["args"]): Promise<Result<"upgrade">> {
    const cur = this.#current;
    if (!cur?.read || cur.stage) {
      throw new OutOfOrderError(
        `upgrade: needs a locked mailbox not staged yet, but the session is ${this.state}${cur ? ` (${cur.files.name})` : ""}`,
      );
    }
    const stageArgs: StageArgs = {
      target: args?.target,
      guids: args?.guids ?? args?.target === 10,
      ...(args?.verifySample !== undefined ? { verifySample: args.verifySample } : {}),
    };
    const target = targetFormat(stageArgs);
    const stage = await this.#stage(cur.files, stageArgs, target, cur.read, "reconverted");
    await this.#write(cur.files, stage);
    cur.stage = stage;
    const staged = stagedResult(stage);
    const ec = stage.staged.expunge?.converted;
    const expungeDigest = ec ? digestOf(ec) : stage.files.expunge.scan?.guidDigest;
    return {
      changed: staged.changed,
      counts: staged.counts,
      guidDigest: staged.guidDigest,
      ...(expungeDigest !== undefined ? { expungeDigest } : {}),
    };
  }

  async commit(): Promise<Result<"commit">> {
    const cur = this.#current;
    if (!cur?.stage) {
      throw new OutOfOrderError(
        `commit: needs a locked and staged mailbox, but the session is ${this.state}${cur ? ` (${cur.files.name})` : ""}`,
      );
    }
    const renamed: string[] = [];
    // cyrus.expunge first: an interrupted commit leaves the expunge at the
    // target and the index not, a state every reader accepts (Cyrus 2.3
    // reads cyrus.expunge by its own header) and the next apply finishes.
    for (const kind of ORDER) {
      const sf = cur.stage.staged[kind];
      if (!sf?.written) continue;
      const to = kind === "index" ? cur.files.index : cur.files.expunge;
      try {
        renameSync(tmpPath(cur.files, kind), to);
      } catch (err) {
        throw fileAccessError(to, err);
      }
      sf.written = false;
      renamed.push(to);
    }
    for (const dir of cur.files.commitDirs) fsyncDirSync(dir);
    const lockHeldMs = await this.#unlock(cur);
    return { renamed, lockHeldMs };
  }

  async rollback(args: Requests["rollback"]["args"]): Promise<Result<"rollback">> {
    const cur = this.#current;
    if (!cur) throw new OutOfOrderError("rollback: no mailbox is locked in this session");
    const pairs =
      args?.pairs && cur.stage ? indexPairsAfter(cur.stage).toString("base64") : undefined;
    let removed: string[];
    try {
      removed = cur.stage ? removeWritten(cur.files, cur.stage) : [];
    } finally {
      // Even when a file cannot be removed (the next prepare sweeps it), the
      // mailbox is released: a session never keeps locks after rollback.
      await this.#unlock(cur);
    }
    return { removed, lockHeldMs: Date.now() - cur.lockedAt, ...(pairs ? { pairs } : {}) };
  }

  /** For stdin end / connection loss: undo whatever is in progress. */
  async abandon(): Promise<void> {
    this.#dropPrepared();
    try {
      if (this.#current) await this.rollback({});
    } finally {
      await this.#rated?.pool.close();
      this.#rated = undefined;
    }
  }

  async #ratedPool(rate: number): Promise<HashPool> {
    if (this.#rated?.rate === rate) return this.#rated.pool;
    await this.#rated?.pool.close();
    this.#rated = { rate, pool: new HashPool({ maxBytesPerSec: rate }) };
    return this.#rated.pool;
  }

  async status(ref: MailboxRef | undefined): Promise<Result<"status">> {
    const session = this.state;
    const out: Result<"status"> = { session, ...(this.mailbox ? { mailbox: this.mailbox } : {}) };
    if (this.#current)
      out.newFiles = ORDER.filter((k) => this.#current?.stage?.staged[k]?.written).map((k) =>
        tmpPath(this.#current!.files, k),
      );
    if (ref) {
      const files = mailboxFiles(this.conf, ref);
      out.scan = await scanMailboxFiles(files);
      const present: string[] = [];
      for (const p of [files.indexNew, files.expungeNew, files.indexTmp, files.expungeTmp])
        if (existsSync(p)) present.push(p);
      out.newFiles = present;
    }
    return out;
  }

  /** Stages from scratch (no prepared conversion to reuse, or prepare itself). */
  async #stage(
    files: MailboxFiles,
    args: StageArgs,
    target: ReturnType<typeof targetFormat>,
    read: Record<Kind, FileState>,
    path: CutoverPath,
  ): Promise<Stage> {
    checkConsistent(files, read, target.minor);
    const stage = newStage(files, args, read);
    await this.#resolveMissing(files, stage, args, false);
    for (const kind of ["index", "expunge"] as const) {
      const fs = read[kind];
      if (!fs.fb || !fs.scan) continue;
      stage.staged[kind] = needsWork(fs.scan, args, target.minor)
        ? {
            path,
            converted: convertFileBytes(fs.fb, target, args.guids ? stage.guids : undefined),
            written: false,
          }
        : { path: "unchanged", written: false };
    }
    return stage;
  }

  /** Under the lock, with a prepared conversion: compare, and reuse what is equal. */
  async #restage(
    files: MailboxFiles,
    args: StageArgs,
    target: ReturnType<typeof targetFormat>,
    prepared: Prepared,
    indexBytes: Buffer,
    expungeBytes: Buffer | undefined,
  ): Promise<Stage> {
    const now = { index: indexBytes, expunge: nonEmptyBytes(expungeBytes) };
    const same = (kind: Kind) => sameInput(prepared.inputs[kind], now[kind]);
    if (same("index") && same("expunge")) return prepared; // the prepared path: only the swap is left
    if (same("expunge")) {
      const appended = await this.#appendedIndex(files, args, target, prepared, indexBytes);
      if (appended) return appended;
    }
    const read = readFiles(files, indexBytes, expungeBytes);
    checkConsistent(files, read, target.minor);
    const stage = newStage(files, args, read);
    for (const [uid, g] of prepared.guids) stage.guids.set(uid, g);
    for (const [uid, n] of prepared.sizes) stage.sizes.set(uid, n);
    await this.#resolveMissing(files, stage, args, true);
    for (const kind of ["index", "expunge"] as const) {
      const fs = read[kind];
      if (!fs.fb || !fs.scan) continue;
      if (!needsWork(fs.scan, args, target.minor)) {
        stage.staged[kind] = { path: "unchanged", written: false };
        continue;
      }
      const before = prepared.staged[kind];
      if (same(kind) && before?.converted) {
        // This file did not change: its prepared conversion stands.
        stage.staged[kind] = { ...before };
        before.written = false; // ownership moves to the new stage
        continue;
      }
      const prevInput = prepared.inputs[kind];
      const prefix = before?.converted;
      if (
        prefix &&
        Buffer.isBuffer(prevInput) &&
        appendedTo(prepared.files[kind].fb, fs.fb) &&
        prefix.count < fs.fb.header.exists
      ) {
        const converted = convertFileBytes(
          fs.fb,
          target,
          args.guids ? stage.guids : undefined,
          prefix,
        );
        // The temporary file holds the prefix: rewrite the header, append the tail.
        appendToTmp(files, kind, before, converted);
        before.written = false;
        stage.staged[kind] = { path: "appended", converted, written: true };
        continue;
      }
      stage.staged[kind] = {
        path: "reconverted",
        converted: convertFileBytes(fs.fb, target, args.guids ? stage.guids : undefined),
        written: false,
      };
    }
    // Prepared files no longer wanted (reconverted over, or a file now unchanged).
    removeWritten(files, prepared);
    return stage;
  }

  /**
   * The `appended` path without re-reading what prepare already did: only
   * cyrus.index changed, and only by records appended past the ones prepare
   * converted (cyrus.expunge is byte for byte prepare's). Undefined when that
   * is not the case; the caller then takes the general path.
   *
   * What is compared, and why that suffices (the torn-read argument of the
   * top of this file, for a prefix): the locked bytes are one consistent
   * state. Their header must give the same version, START_OFFSET and
   * RECORD_SIZE as prepare's, and the records region prepare converted
   * (EXISTS × RECORD_SIZE bytes from START_OFFSET) must be byte for byte
   * equal to the same region of the locked bytes. Everything prepare derived
   * from a record — its (uid, GUID) pair, whether it needs a GUID, its
   * converted bytes — is a function of that record's bytes and the version
   * alone, so for an equal region it is exactly what the locked content
   * gives, however torn prepare's read was elsewhere (its header included:
   * nothing of prepare's header is reused; the facts, the converted header
   * and the LAST_UID check are this header's). Only the records past the
   * prefix are parsed, scanned and converted here; the planned set is
   * prepare's when every new UID is above the plan's LAST_UID (appends do not
   * change it, planned-set.ts), and the fingerprint continues prepare's SHA1
   * state (same version and UIDVALIDITY). Any other difference falls back to
   * the general path, which re-reads everything.
   */
  async #appendedIndex(
    files: MailboxFiles,
    args: StageArgs,
    target: ReturnType<typeof targetFormat>,
    prepared: Prepared,
    indexBytes: Buffer,
  ): Promise<Stage | undefined> {
    const before = prepared.files.index;
    const beforeStaged = prepared.staged.index;
    const prefix = beforeStaged?.converted;
    if (!before.fb || !before.scan || !prefix || !beforeStaged.written) return undefined;
    if (args.upTo === undefined || !Buffer.isBuffer(prepared.inputs.index)) return undefined;
    const header = parseIndexHeader(indexBytes, indexBytes.length, files.index);
    const old = before.fb.header;
    if (
      header.format !== old.format ||
      header.startOffset !== old.startOffset ||
      header.recordSize !== old.recordSize ||
      header.exists <= old.exists ||
      header.values.get("uidValidity") !== old.values.get("uidValidity")
    )
      return undefined;
    const region = old.exists * old.recordSize;
    if (
      indexBytes.length < old.startOffset + region ||
      !recordsOf(before.fb).equals(indexBytes.subarray(old.startOffset, old.startOffset + region))
    )
      return undefined;
    const firstNewUid = indexBytes.readUInt32BE(old.startOffset + region);
    if (firstNewUid <= args.upTo) return undefined;
    const fb = parseFileBytes(indexBytes, files.index, "index", old.exists);
    const scan = scanFileBytes(fb, before.scan);
    const read: Record<Kind, FileState> = { index: { fb, scan }, expunge: prepared.files.expunge };
    checkConsistent(files, read, target.minor);
    const tail = fb.header.exists - old.exists;
    const throughIndex = prepared.throughIndex
      .copy()
      .update(scan.pairs.subarray(old.exists * PAIR_BYTES));
    const stage: Stage = {
      args,
      files: read,
      staged: {},
      check: { ...prepared.check, appended: prepared.check.appended + tail },
      scan: mailboxScan(files.name, read, throughIndex),
      throughIndex,
      // As the general path counts: prepare's GUIDs reused by UID are "from
      // cache", what the tail needs is counted by #resolveMissing.
      counts: {
        records: scan.facts.records,
        expungeRecords: prepared.counts.expungeRecords,
        computed: 0,
        fromCache:
          args.guids && args.target === 10
            ? before.scan.needs.length + (prepared.files.expunge.scan?.needs.length ?? 0)
            : 0,
        relayedVerified: 0,
        kept: scan.facts.records - scan.facts.oldStyle,
      },
      // Prepare's decisions move over (prepared is dropped after this).
      guids: prepared.guids,
      sizes: prepared.sizes,
    };
    await this.#resolveMissing(
      files,
      stage,
      args,
      true,
      scan.needs.slice(before.scan.needs.length),
    );
    const converted = convertFileBytes(fb, target, args.guids ? stage.guids : undefined, prefix);
    // The temporary file holds the prefix: rewrite the header, append the tail.
    appendToTmp(files, "index", beforeStaged, converted);
    beforeStaged.written = false;
    stage.staged.index = { path: "appended", converted, written: true };
    const e = prepared.staged.expunge;
    if (e) {
      stage.staged.expunge = { ...e };
      e.written = false; // ownership moves to the new stage
    }
    return stage;
  }

  /**
   * Decides the GUIDs of old-style records not decided yet (cache, else
   * hashing); `only`: just these needs (the appended path: the others were
   * decided by prepare and counted there).
   */
  async #resolveMissing(
    files: MailboxFiles,
    stage: Stage,
    args: StageArgs,
    underLock: boolean,
    only?: GuidNeed[],
  ): Promise<void> {
    if (!args.guids || args.target !== 10) return;
    const needs: GuidNeed[] = [];
    const all = only
      ? [only]
      : (["index", "expunge"] as const).map((kind) => stage.files[kind].scan?.needs ?? []);
    for (const list of all) {
      for (const n of list) {
        // A GUID decided for this UID and size stays right: Cyrus never
        // rewrites a `<uid>.` file in place.
        if (stage.guids.has(n.uid) && stage.sizes.get(n.uid) === n.size) stage.counts.fromCache++;
        else needs.push(n);
      }
    }
    if (needs.length === 0) return;
    // Under the lock, a few UIDs prepare did not see (new mail) are hashed
    // directly: reading a large cyrus.sha1s would cost more than hashing them.
    const skipCache = underLock && needs.length <= FEW_NEW_UIDS;
    const { cache } = skipCache ? { cache: Sha1Cache.empty() } : await readSha1Cache(files.sha1s);
    const rate = underLock ? undefined : args.maxBytesPerSec;
    const resolved = await resolveGuids({
      mailbox: files.name,
      needs,
      cache,
      pool: rate && rate > 0 ? await this.#ratedPool(rate) : this.pool,
      messageFile: files.messageFile,
      ...(args.verifySample !== undefined ? { verifySample: args.verifySample } : {}),
    });
    for (const n of needs) {
      const g = resolved.guids.get(n.uid);
      if (g) {
        stage.guids.set(n.uid, g);
        stage.sizes.set(n.uid, n.size);
      }
    }
    stage.counts.computed += resolved.computed;
    stage.counts.fromCache += resolved.fromCache;
    stage.counts.relayedVerified += resolved.relayedVerified;
    // Never write back a cache that was not read: it would drop every other entry.
    if (resolved.fresh.length > 0 && !skipCache) await saveFresh(files, cache, resolved.fresh);
  }

  /** Writes and fsyncs every staged conversion not on disk yet. */
  async #write(files: MailboxFiles, stage: Stage): Promise<void> {
    try {
      for (const kind of ORDER) {
        const sf = stage.staged[kind];
        if (!sf?.converted || sf.written) continue;
        writeTmp(files, kind, sf.converted);
        sf.written = true;
      }
    } catch (err) {
      removeWritten(files, stage);
      throw err;
    }
  }

  #dropPrepared(): void {
    const p = this.#prepared;
    this.#prepared = undefined;
    if (p) {
      try {
        removeWritten(p.mailboxFiles, p);
      } catch {
        // a leftover is swept by the next prepare
      }
    }
  }

  async #unlock(cur: Locked): Promise<number> {
    for (const l of [...cur.locks].reverse()) await l.unlock();
    this.#current = undefined;
    return Date.now() - cur.lockedAt;
  }
}

// --- helpers -------------------------------------------------------------------

function targetFormat(args: StageArgs) {
  const target = writableFormat(Number(args?.target));
  if (!target) throw new UsageError(`stage: target version ${args?.target} is not one of 6..10`);
  if (args.guids && target.minor !== 10)
    throw new UsageError(`stage: GUIDs can only be written at version 10, not ${target.minor}`);
  return target;
}

function sameStageArgs(a: StageArgs, b: StageArgs): boolean {
  return a.target === b.target && a.guids === b.guids && a.upTo === b.upTo;
}

function needsWork(scan: FileScan, args: StageArgs, targetMinor: number): boolean {
  return scan.facts.minor !== targetMinor || (args.guids && scan.facts.oldStyle > 0);
}

function nonEmptyBytes(b: Buffer | undefined): Buffer | undefined {
  // 2.3.16 treats a 0-byte cyrus.expunge as "write a header now" (a delayed
  // expunge was interrupted between create and header write): not a file to
  // convert, and left as it is.
  return b && b.length > 0 ? b : undefined;
}

function keepInput(fb: FileBytes | undefined): Buffer | string | undefined {
  if (!fb) return undefined;
  return fb.bytes.length > KEEP_BYTES_MAX
    ? createHash("sha1").update(fb.bytes).digest("hex")
    : fb.bytes;
}

function sameInput(kept: Buffer | string | undefined, now: Buffer | undefined): boolean {
  if (kept === undefined || now === undefined) return kept === now;
  if (typeof kept === "string") return createHash("sha1").update(now).digest("hex") === kept;
  return kept.equals(now);
}

/** Whether `now` is `before` with records appended (same version, same records first). */
function appendedTo(before: FileBytes | undefined, now: FileBytes): boolean {
  if (!before) return false;
  if (before.header.format !== now.header.format || before.header.exists > now.header.exists)
    return false;
  const a = recordsOf(before);
  const b = recordsOf(now).subarray(0, a.length);
  return a.equals(b);
}

function readFiles(
  files: MailboxFiles,
  index: Buffer,
  expunge: Buffer | undefined,
): Record<Kind, FileState> {
  const ifb = parseFileBytes(index, files.index, "index");
  const e = nonEmptyBytes(expunge);
  const efb = e ? parseFileBytes(e, files.expunge, "expunge") : undefined;
  return {
    index: { fb: ifb, scan: scanFileBytes(ifb) },
    expunge: efb ? { fb: efb, scan: scanFileBytes(efb) } : {},
  };
}

/** Reads a mailbox without locks; a problem becomes the scan's status. */
function loadUnlocked(files: MailboxFiles): { scan: MailboxScan; files?: Record<Kind, FileState> } {
  let index: Buffer;
  try {
    index = readFileSync(files.index);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      return {
        scan: { name: files.name, status: "missing", reason: `${files.index}: no such file` },
      };
    return {
      scan: {
        name: files.name,
        status: "unreadable",
        reason: fileAccessError(files.index, err).message,
      },
    };
  }
  try {
    let expunge: Buffer | undefined;
    try {
      expunge = readFileSync(files.expunge);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        throw fileAccessError(files.expunge, err);
    }
    const read = readFiles(files, index, expunge);
    return { scan: mailboxScan(files.name, read), files: read };
  } catch (err) {
    if (err instanceof UnsupportedVersionError && err.newer)
      return { scan: { name: files.name, status: "newer", reason: err.message } };
    if (err instanceof GuidupError)
      return { scan: { name: files.name, status: "unreadable", reason: err.message } };
    throw err;
  }
}

/**
 * The fingerprint's SHA1 state through cyrus.index: the mailbox name, then
 * "index", its version and UIDVALIDITY, its (uid, GUID) pairs. Kept by
 * prepare: an appended tail continues it (same version and UIDVALIDITY).
 */
function fingerprintThroughIndex(name: string, index: FileScan): Hash {
  return createHash("sha1")
    .update(name)
    .update("index")
    .update(fileHead(index))
    .update(index.pairs);
}

function fileHead(scan: FileScan): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(scan.facts.minor, 0);
  head.writeUInt32BE(scan.facts.uidValidity, 4);
  return head;
}

/** The scan (facts, fingerprint, digests) of files read into memory. */
function mailboxScan(
  name: string,
  read: Record<Kind, FileState>,
  throughIndex: Hash = fingerprintThroughIndex(name, read.index.scan!),
): MailboxScan {
  const fingerprint = throughIndex.copy();
  const e = read.expunge;
  if (e.fb && e.scan) fingerprint.update("expunge").update(fileHead(e.scan)).update(e.scan.pairs);
  const index = read.index.scan!;
  return {
    name,
    status: "ok",
    index: index.facts,
    ...(read.expunge.scan ? { expunge: read.expunge.scan.facts } : {}),
    fingerprint: fingerprint.digest("hex"),
    uidsDigest: index.uidsDigest,
    guidDigest: index.guidDigest,
  };
}

function newStage(files: MailboxFiles, args: StageArgs, read: Record<Kind, FileState>): Stage {
  const index = read.index.scan!;
  const throughIndex = fingerprintThroughIndex(files.name, index);
  return {
    args,
    files: read,
    staged: {},
    check: plannedSet(index.pairs, read.expunge.scan?.pairs, args.upTo ?? index.facts.lastUid),
    scan: mailboxScan(files.name, read, throughIndex),
    throughIndex,
    counts: {
      records: index.facts.records,
      expungeRecords: read.expunge.scan?.facts.records ?? 0,
      computed: 0,
      fromCache: 0,
      relayedVerified: 0,
      kept: index.facts.records - index.facts.oldStyle,
    },
    guids: new Map(),
    sizes: new Map(),
  };
}

/** A crash between commit's two renames leaves cyrus.expunge at the target and cyrus.index not: accepted. */
function checkConsistent(
  files: MailboxFiles,
  read: Record<Kind, FileState>,
  targetMinor: number,
): void {
  const im = read.index.scan?.facts.minor;
  const em = read.expunge.scan?.facts.minor;
  if (em !== undefined && em !== im && em !== targetMinor) {
    throw new InconsistentMailboxError(
      `${files.expunge}: version ${em} disagrees with cyrus.index version ${im}; run reconstruct`,
      { mailbox: files.name },
    );
  }
}

function stagedChanged(stage: Stage): boolean {
  return Object.values(stage.staged).some((s) => s?.converted !== undefined);
}

function stagedResult(stage: Stage): Staged {
  const files: Staged["files"] = { index: stage.staged.index?.path ?? "unchanged" };
  if (stage.staged.expunge) files.expunge = stage.staged.expunge.path;
  const path = [files.index, files.expunge ?? "unchanged"].reduce((a, b) =>
    RANK[a] >= RANK[b] ? a : b,
  );
  const ic = stage.staged.index?.converted;
  return {
    path,
    files,
    changed: stagedChanged(stage),
    guidDigest: ic ? digestOf(ic) : stage.scan.guidDigest!,
    counts: { ...stage.counts },
  };
}

/** cyrus.index's (uid, GUID) pairs as they will be after commit (as they are when unchanged). */
function indexPairsAfter(stage: Stage): Buffer {
  const c = stage.staged.index?.converted;
  return c ? Buffer.concat(c.pairs) : (stage.files.index.scan?.pairs ?? Buffer.alloc(0));
}

function tmpPath(files: MailboxFiles, kind: Kind): string {
  return kind === "index" ? files.indexTmp : files.expungeTmp;
}

/** Writes a conversion to the temporary name: same owner, group and mode as the file it replaces; fsynced. */
function writeTmp(files: MailboxFiles, kind: Kind, c: Converted): void {
  const base = kind === "index" ? files.index : files.expunge;
  const path = tmpPath(files, kind);
  let original: ReturnType<typeof statSync>;
  try {
    original = statSync(base);
  } catch (err) {
    throw fileAccessError(base, err);
  }
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fileAccessError(path, err);
  }
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (err) {
    throw fileAccessError(path, err);
  }
  try {
    fchownSync(fd, original.uid, original.gid);
    fchmodSync(fd, original.mode & 0o7777);
    let at = writeAll(fd, c.header, 0, path);
    for (const part of c.records) at += writeAll(fd, part, at, path);
    fsyncSync(fd);
  } catch (err) {
    try {
      unlinkSync(path);
    } catch {
      // the next prepare sweeps it
    }
    throw err instanceof GuidupError ? err : fileAccessError(path, err);
  } finally {
    closeSync(fd);
  }
}

/** The appended path: the temporary file holds `before`'s conversion; add the tail, rewrite the header. */
function appendToTmp(files: MailboxFiles, kind: Kind, before: StagedFile, after: Converted): void {
  const path = tmpPath(files, kind);
  if (!before.written) {
    writeTmp(files, kind, after);
    return;
  }
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY);
  } catch (err) {
    throw fileAccessError(path, err);
  }
  try {
    const tail = after.records[after.records.length - 1] as Buffer;
    const prefixBytes = after.records.slice(0, -1).reduce((n, b) => n + b.length, 0);
    writeAll(fd, tail, after.header.length + prefixBytes, path);
    writeAll(fd, after.header, 0, path);
    fsyncSync(fd);
  } catch (err) {
    throw err instanceof GuidupError ? err : fileAccessError(path, err);
  } finally {
    closeSync(fd);
  }
}

function writeAll(fd: number, buf: Buffer, position: number, path: string): number {
  let done = 0;
  while (done < buf.length) {
    try {
      done += writeSync(fd, buf, done, buf.length - done, position + done);
    } catch (err) {
      throw fileAccessError(path, err);
    }
  }
  return buf.length;
}

/** Unlinks a stage's written temporary files; returns their paths. */
function removeWritten(files: MailboxFiles, stage: Stage): string[] {
  const removed: string[] = [];
  for (const kind of ORDER) {
    const sf = stage.staged[kind];
    if (!sf?.written) continue;
    const path = tmpPath(files, kind);
    try {
      unlinkSync(path);
      removed.push(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fileAccessError(path, err);
    }
    sf.written = false;
  }
  return removed;
}

/**
 * Removes temporary files of dead guidup agents next to this mailbox's
 * index and expunge (outside the locks: only their dead writer could have
 * renamed them). A live process's file is left alone.
 */
function sweepLeftovers(files: MailboxFiles): void {
  const seen = new Set<string>();
  for (const [dir, base] of [
    [dirname(files.index), "cyrus.index"],
    [dirname(files.expunge), "cyrus.expunge"],
  ] as const) {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      continue;
    }
    for (const entry of entries) {
      const pid = tmpOwner(entry, base);
      if (pid === undefined || seen.has(`${dir}/${entry}`)) continue;
      seen.add(`${dir}/${entry}`);
      if (pid === process.pid || alive(pid)) continue;
      try {
        unlinkSync(`${dir}/${entry}`);
      } catch {
        // best effort
      }
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function saveFresh(
  files: MailboxFiles,
  cache: Sha1Cache,
  fresh: Parameters<Sha1Cache["set"]>[0][],
) {
  // Best effort: a cache that cannot be written only costs a re-hash later.
  try {
    for (const e of fresh) cache.set(e);
    const st = statSync(files.index);
    await writeSha1Cache(files.sha1s, cache, { uid: st.uid, gid: st.gid, mode: st.mode });
  } catch {
    // ignored on purpose, see above
  }
}

function existsSync(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw fileAccessError(path, err);
  }
}

/**
 * Up to this many bytes of index and expunge, a mailbox is scanned with
 * synchronous calls: most mailboxes are a few kB, and then the thread-pool
 * round trips of the asynchronous calls (open, fstat, read, close, each
 * file) cost the agent more than the reads. Bigger ones are read
 * asynchronously so that one large mailbox does not hold up the others of
 * its batch.
 */
const SYNC_SCAN_BYTES = 256 * 1024;

/** Scan of one mailbox without locks (the scan op, status); with the planned set cut at its own LAST_UID. */
export async function scanMailboxFiles(files: MailboxFiles): Promise<MailboxScan> {
  const { scan, read, small } = await loadMailbox(files);
  if (!read) return scan;
  const needs = [...read.index.needs, ...(read.expunge?.needs ?? [])];
  if (needs.length === 0) return scan;
  // Coverage by key only (no stat per file): a display figure for the plan;
  // the upgrade re-checks each entry before trusting it.
  const { cache } = small ? readSha1CacheSync(files.sha1s) : await readSha1Cache(files.sha1s);
  const cached = needs.filter((n) => cache.lookup(n.uid, n.size) !== undefined).length;
  return { ...scan, cached };
}

/** The size of a file, or undefined when there is none (without building an exception). */
function sizeOf(path: string): number | undefined {
  try {
    return statSync(path, { throwIfNoEntry: false })?.size;
  } catch (err) {
    throw fileAccessError(path, err);
  }
}

/** Reads a mailbox without locks; a problem becomes the scan's status, not an exception. */
async function loadMailbox(files: MailboxFiles) {
  const indexSize = sizeOf(files.index);
  if (indexSize === undefined) {
    return {
      scan: {
        name: files.name,
        status: "missing",
        reason: `${files.index}: no such file`,
      } as MailboxScan,
    };
  }
  try {
    const expungeSize = sizeOf(files.expunge) ?? 0;
    const hasExpunge = expungeSize > 0;
    const small = indexSize + expungeSize <= SYNC_SCAN_BYTES;
    const read = small
      ? readMailboxSync(files.name, files.index, hasExpunge ? files.expunge : undefined, true)
      : await readMailbox(
          files.name,
          { path: files.index, kind: "index" },
          hasExpunge ? { path: files.expunge, kind: "expunge" } : undefined,
          true,
          true,
        );
    return { scan: read.scan, read, small };
  } catch (err) {
    if (err instanceof UnsupportedVersionError && err.newer) {
      return { scan: { name: files.name, status: "newer", reason: err.message } as MailboxScan };
    }
    // Damaged or foreign files (run reconstruct) apart from files guidup
    // cannot read (permissions, I/O).
    if (err instanceof CyrusFormatError)
      return {
        scan: { name: files.name, status: "corrupt", reason: err.message } as MailboxScan,
      };
    if (err instanceof GuidupError)
      return {
        scan: { name: files.name, status: "unreadable", reason: err.message } as MailboxScan,
      };
    throw err;
  }
}
