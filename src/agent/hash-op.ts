// The `hash` op: fill the sha1 caches of many mailboxes ahead of the upgrade
// (the seed's step a), so that each mailbox is locked only briefly later.
// Reads index and expunge without locks (as imapd does), hashes every
// old-style record's message file that has no valid cache entry, and saves
// each mailbox's cache atomically — also every SAVE_EVERY files of a large
// mailbox — so an interrupted run loses little and a rerun skips what is done.

import { stat } from "node:fs/promises";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import { GuidupError } from "../errors.js";
import type { MailboxRef, Requests } from "../protocol/messages.js";
import { HashPool, isHashFailure } from "./hash-pool.js";
import { mailboxFiles } from "./mailbox-files.js";
import { type GuidNeed, readMailbox } from "./mailbox-scan.js";
import { isEntryValidFor, readSha1Cache, type Sha1Cache, writeSha1Cache } from "./sha1-cache.js";

const SAVE_EVERY = 2000;
/** Mailboxes hashed at once by one `hash` request. */
const MAILBOXES_IN_FLIGHT = 4;

type HashResult = Requests["hash"]["result"];

export interface HashProgress {
  mailboxesDone: number;
  mailboxes: number;
  files: number;
  bytes: number;
  alreadyCached: number;
}

export async function hashMailboxes(
  conf: ImapdConf,
  refs: readonly MailboxRef[],
  options: {
    maxBytesPerSec?: number;
    lowPriority?: boolean;
    workers?: number;
    signal?: AbortSignal;
  },
  onProgress: (p: HashProgress) => void,
): Promise<HashResult> {
  const pool = new HashPool({
    ...(options.maxBytesPerSec ? { maxBytesPerSec: options.maxBytesPerSec } : {}),
    ...(options.lowPriority ? { lowPriority: true } : {}),
    ...(options.workers ? { workers: options.workers } : {}),
  });
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
  try {
    // Several mailboxes in flight, one shared pool: the workers never wait at
    // a mailbox boundary (reading an index, saving a cache) for lack of work.
    let next = 0;
    const lane = async () => {
      while (next < refs.length && !options.signal?.aborted) {
        const ref = refs[next++]!;
        try {
          await hashOneMailbox(conf, ref, pool, result, options.signal, () =>
            onProgress(progress()),
          );
        } catch (err) {
          if (!(err instanceof GuidupError)) throw err;
          result.failed.push({ mailbox: ref.name, reason: err.message });
        }
        result.mailboxes++;
        onProgress(progress());
      }
    };
    await Promise.all(Array.from({ length: MAILBOXES_IN_FLIGHT }, lane));
  } finally {
    await pool.close();
  }
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
  const expungeExists = await stat(files.expunge).then(
    (s) => s.size > 0,
    () => false,
  );
  const read = await readMailbox(
    files.name,
    { path: files.index, kind: "index" },
    expungeExists ? { path: files.expunge, kind: "expunge" } : undefined,
  );
  const needs = new Map<number, GuidNeed>();
  for (const n of [...read.index.needs, ...(read.expunge?.needs ?? [])]) {
    if (!needs.has(n.uid)) needs.set(n.uid, n);
  }
  if (needs.size === 0) return;
  const { cache } = await readSha1Cache(files.sha1s);
  const todo: GuidNeed[] = [];
  for (const need of needs.values()) {
    const entry = cache.lookup(need.uid, need.size);
    if (entry?.origin === "local") {
      const st = await stat(files.messageFile(need.uid), { bigint: true }).catch(() => undefined);
      if (st && isEntryValidFor(entry, st)) {
        result.alreadyCached++;
        continue;
      }
    }
    todo.push(need);
  }
  if (todo.length === 0) return;
  const indexStat = await stat(files.index);
  const owner = { uid: indexStat.uid, gid: indexStat.gid, mode: indexStat.mode };
  const save = (c: Sha1Cache) => writeSha1Cache(files.sha1s, c, owner);
  let sinceSave = 0;
  // Keep the pool busy: a window of files in flight, results in any order.
  const window = 16;
  let next = 0;
  const worker = async () => {
    while (next < todo.length && !signal?.aborted) {
      const need = todo[next++]!;
      const r = await pool.hash({ path: files.messageFile(need.uid) });
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
      if (++sinceSave >= SAVE_EVERY) {
        sinceSave = 0;
        await save(cache);
      }
      tick();
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  await save(cache);
}
