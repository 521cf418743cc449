// The `hash` op: fill the sha1 caches of many mailboxes ahead of the upgrade
// (the seed's step a), so that each mailbox is locked only briefly later.
// Reads index and expunge without locks (as imapd does), hashes every
// old-style record's message file that has no valid cache entry, and saves
// each mailbox's cache atomically once — and every SAVE_EVERY files of a
// large mailbox — so an interrupted run loses little and a rerun skips what
// is done.
//
// Speed (issue 12): most mail is a few kB, so the cost is per file and per
// mailbox, not per byte. A mailbox's files go to the pool all at once (the
// pool batches them to its workers), several mailboxes are in flight so the
// workers never wait at a mailbox boundary, the per-file checks are
// synchronous stats, the pool lives across requests (the CLI sends mailboxes
// in batches; starting worker threads per request cost more than hashing a
// batch of small mail), and caches are written without fsync (see
// writeSha1Cache: a lost or torn cache is hashed again, never trusted).

import { statSync } from "node:fs";
import { GUID_SIZE, isOldStyleGuid } from "../cyrus/guid.js";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import { IndexReader, UnsupportedVersionError } from "../cyrus/index-file.js";
import { FileAccessError, GuidupError } from "../errors.js";
import type { MailboxRef, Requests } from "../protocol/messages.js";
import { timelineMark } from "../timeline.js";
import { type HashResult as FileHashResult, HashPool, isHashFailure } from "./hash-pool.js";
import { type MailboxFiles, mailboxFiles } from "./mailbox-files.js";
import type { GuidNeed } from "./mailbox-scan.js";
import { isEntryValidFor, readSha1CacheSync, writeSha1Cache } from "./sha1-cache.js";

const SAVE_EVERY = 2000;
/** Mailboxes hashed at once by one `hash` request: enough to keep the workers fed. */
const MAILBOXES_IN_FLIGHT = 8;

type HashResult = Requests["hash"]["result"];

export interface HashProgress {
  mailboxesDone: number;
  mailboxes: number;
  files: number;
  bytes: number;
  alreadyCached: number;
}

export interface HashOptions {
  maxBytesPerSec?: number;
  lowPriority?: boolean;
  /** Hashing threads; default one per core. */
  workers?: number;
  signal?: AbortSignal;
}

/**
 * The pool of the last request, kept for the next one with the same
 * settings. Its idle workers are unref'd: they keep no process alive.
 */
let shared: { key: string; pool: HashPool } | undefined;

function poolFor(options: HashOptions): HashPool {
  const key = `${options.maxBytesPerSec ?? 0}/${options.lowPriority === true}/${options.workers ?? 0}`;
  if (shared?.key === key) return shared.pool;
  void shared?.pool.close();
  const pool = new HashPool({
    // This agent only hashes: its main thread takes files while the workers boot.
    hashWhileStarting: true,
    ...(options.maxBytesPerSec ? { maxBytesPerSec: options.maxBytesPerSec } : {}),
    ...(options.lowPriority ? { lowPriority: true } : {}),
    ...(options.workers ? { workers: options.workers } : {}),
  });
  shared = { key, pool };
  return pool;
}

export async function hashMailboxes(
  conf: ImapdConf,
  refs: readonly MailboxRef[],
  options: HashOptions,
  onProgress: (p: HashProgress) => void,
): Promise<HashResult> {
  const pool = poolFor(options);
  const result: HashResult = {
    mailboxes: 0,
    hashed: 0,
    hashedBytes: 0,
    alreadyCached: 0,
    failed: [],
  };
  const progress = (): HashProgress => ({
    mailboxesDone: result.mailboxes,
    mailboxes: refs.length,
    files: result.hashed,
    bytes: result.hashedBytes,
    alreadyCached: result.alreadyCached,
  });
  // Several mailboxes in flight, one shared pool: the workers never wait at
  // a mailbox boundary (reading an index, saving a cache) for lack of work.
  let next = 0;
  const lane = async () => {
    while (next < refs.length && !options.signal?.aborted) {
      const ref = refs[next++]!;
      try {
        await hashOneMailbox(conf, ref, pool, result, options.signal, () => onProgress(progress()));
      } catch (err) {
        if (!(err instanceof GuidupError)) throw err;
        result.failed.push({ mailbox: ref.name, reason: err.message });
      }
      result.mailboxes++;
      onProgress(progress());
    }
  };
  timelineMark("agent: hash op starts");
  await Promise.all(Array.from({ length: MAILBOXES_IN_FLIGHT }, lane));
  timelineMark("agent: hash op done");
  return result;
}

async function hashOneMailbox(
  conf: ImapdConf,
  ref: MailboxRef,
  pool: HashPool,
  result: HashResult,
  signal: AbortSignal | undefined,
  tick: () => void,
): Promise<void> {
  const files = mailboxFiles(conf, ref);
  let needs: Map<number, GuidNeed>;
  try {
    needs = readNeedsSync(files);
  } catch (err) {
    // Nothing to hash: written by Cyrus 2.4+ (past the upgrade), or gone
    // since the list was made (the plan reports both).
    if (err instanceof UnsupportedVersionError && err.newer) return;
    if (
      err instanceof FileAccessError &&
      err.detail?.errno === "ENOENT" &&
      err.detail.file === files.index
    )
      return;
    throw err;
  }
  if (needs.size === 0) return;
  const { cache } = readSha1CacheSync(files.sha1s);
  const todo: GuidNeed[] = [];
  for (const need of needs.values()) {
    const entry = cache.lookup(need.uid, need.size);
    if (entry?.origin === "local") {
      let st: ReturnType<typeof statSync> | undefined;
      try {
        st = statSync(files.messageFile(need.uid), { bigint: true });
      } catch {
        st = undefined;
      }
      if (st && isEntryValidFor(entry, st)) {
        result.alreadyCached++;
        continue;
      }
    }
    todo.push(need);
  }
  if (todo.length === 0) return;
  const indexStat = statSync(files.index);
  const owner = { uid: indexStat.uid, gid: indexStat.gid, mode: indexStat.mode };
  for (let from = 0; from < todo.length && !signal?.aborted; from += SAVE_EVERY) {
    const group = todo.slice(from, from + SAVE_EVERY);
    // The whole group at once: the pool batches it to the workers. On abort,
    // files not started are dropped and what was hashed is still saved.
    const settled = await Promise.allSettled(
      group.map((need) => pool.hash({ path: files.messageFile(need.uid) }, signal)),
    );
    let added = 0;
    for (let i = 0; i < group.length; i++) {
      const s = settled[i]!;
      if (s.status === "rejected") {
        if (signal?.aborted) continue;
        throw s.reason;
      }
      const r: FileHashResult = s.value;
      const need = group[i]!;
      if (isHashFailure(r)) {
        result.failed.push({ mailbox: files.name, uid: need.uid, reason: `${r.path}: ${r.error}` });
        continue;
      }
      cache.set({
        uid: need.uid,
        size: r.size,
        sha1: r.sha1,
        ino: r.ino,
        mtimeNs: r.mtimeNs,
        origin: "local",
      });
      result.hashed++;
      result.hashedBytes += r.size;
      added++;
    }
    if (added > 0 && result.hashed === added) timelineMark("agent: first cache written");
    if (added > 0) await writeSha1Cache(files.sha1s, cache, owner, { durable: false });
    tick();
  }
}

/**
 * The old-style records of index and expunge by UID (the index's first),
 * read with synchronous calls: hash needs neither the digests nor the
 * fingerprint a scan computes, and for mail of a few kB the four thread-pool
 * round trips of an asynchronous open, fstat, read and close per file cost
 * more than the reading. The files are checked as a scan checks them (header,
 * UIDs), with the same errors. An empty or missing expunge file is none.
 */
function readNeedsSync(files: MailboxFiles): Map<number, GuidNeed> {
  const needs = new Map<number, GuidNeed>();
  addNeedsSync(files.index, "index", needs);
  let expungeSize = 0;
  try {
    expungeSize = statSync(files.expunge, { throwIfNoEntry: false })?.size ?? 0;
  } catch {
    // Unreadable as a whole: read as absent, as the scan does.
  }
  if (expungeSize > 0) addNeedsSync(files.expunge, "expunge", needs);
  return needs;
}

function addNeedsSync(path: string, kind: "index" | "expunge", needs: Map<number, GuidNeed>): void {
  const reader = IndexReader.openSync(path, { kind });
  try {
    // Where the record keeps its GUID: only a full 20-byte GUID (v10) can be
    // new-style; a v7–v9 UUID or no GUID field (v6) is always old-style.
    const guid = reader.header.format.recordField("guid");
    const guidAt = guid?.size === GUID_SIZE ? guid.offset : -1;
    for (const chunk of reader.chunksSync()) {
      for (let i = 0; i < chunk.count; i++) {
        const at = i * chunk.recordSize;
        if (guidAt >= 0 && !isOldStyleGuid(chunk.buf, at + guidAt)) continue;
        const uid = chunk.buf.readUInt32BE(at);
        if (!needs.has(uid)) needs.set(uid, { uid, size: chunk.buf.readUInt32BE(at + 12) });
      }
    }
  } finally {
    reader.closeSync();
  }
}
