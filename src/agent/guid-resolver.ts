// Deciding the SHA1 GUID of every old-style record of a locked mailbox, fast:
// from the sha1 cache where an entry is trustworthy, else by hashing the
// message file. Runs under the mailbox locks, so its speed is the lock hold
// time; hashing runs in parallel on the pool.
//
// Why a relayed cache cannot make both sides agree on a wrong GUID unnoticed:
// a relayed entry (computed on the other host, from the other host's file)
// is keyed by (uid, size) only. Before any relayed entry is used, a random
// sample of them (chosen with a fresh seed, so nobody can predict which) is
// re-hashed here from this host's files; one mismatch and every relayed entry
// of this mailbox is dropped and the files are hashed here. A content
// difference between the sides affecting k of n relayed entries therefore
// escapes only if none of the k is sampled; `guidup verify` (full hash on
// both sides) closes that gap. Local entries are trusted only while the file
// still has the inode, mtime and size they were computed from (trap 16: sync
// replaces a file with a new inode).

import { randomBytes } from "node:crypto";
import { type BigIntStats, statSync } from "node:fs";
import { ERRORS, type ErrorCode, GuidupError } from "../errors.js";
import type { HashPool } from "./hash-pool.js";
import { isHashFailure } from "./hash-pool.js";
import type { GuidNeed } from "./mailbox-scan.js";
import {
  chooseVerificationSample,
  isEntryValidFor,
  type Sha1Cache,
  type Sha1CacheEntry,
} from "./sha1-cache.js";

/** A message file an old-style record needs is missing or unreadable. */
export class MessageFileError extends GuidupError {
  override readonly code: ErrorCode = ERRORS.messageFile.code;
}

/** Relayed entries re-hashed before any is trusted: max(this, 1% of them). */
export const DEFAULT_VERIFY_SAMPLE = 3;

export interface ResolvedGuids {
  /** uid → SHA1 GUID. */
  guids: Map<number, Buffer>;
  computed: number;
  fromCache: number;
  relayedVerified: number;
  /** Local entries for the GUIDs hashed now: worth saving to the cache. */
  fresh: Sha1CacheEntry[];
}

export interface ResolveOptions {
  mailbox: string;
  needs: readonly GuidNeed[];
  cache: Sha1Cache;
  pool: HashPool;
  messageFile: (uid: number) => string;
  verifySample?: number;
}

export async function resolveGuids(options: ResolveOptions): Promise<ResolvedGuids> {
  const { mailbox, cache, pool, messageFile } = options;
  // One GUID per UID: a UID in both index and expunge is the same file.
  const byUid = new Map<number, GuidNeed>();
  for (const need of options.needs) if (!byUid.has(need.uid)) byUid.set(need.uid, need);

  const guids = new Map<number, Buffer>();
  const toHash: GuidNeed[] = [];
  const relayed: [GuidNeed, Sha1CacheEntry][] = [];
  let fromCache = 0;
  // Synchronous stats: one quick call per message, no promise per message.
  for (const need of byUid.values()) {
    const entry = cache.lookup(need.uid, need.size);
    if (entry?.origin === "local") {
      let st: BigIntStats | undefined;
      try {
        st = statSync(messageFile(need.uid), { bigint: true, throwIfNoEntry: false });
      } catch {
        st = undefined; // unreadable: hashing will say why
      }
      if (st && isEntryValidFor(entry, st)) {
        guids.set(need.uid, entry.sha1);
        fromCache++;
        continue;
      }
    } else if (entry?.origin === "relayed") {
      relayed.push([need, entry]);
      continue;
    }
    toHash.push(need);
  }

  const fresh: Sha1CacheEntry[] = [];
  const hashOne = async (need: GuidNeed): Promise<Buffer> => {
    const path = messageFile(need.uid);
    const r = await pool.hash({ path });
    if (isHashFailure(r)) {
      const what =
        r.code === "ENOENT" ? "message file missing" : `message file unreadable (${r.error})`;
      throw new MessageFileError(`${mailbox}: uid ${need.uid}: ${what}: ${path}`, {
        mailbox,
        uid: need.uid,
        path,
      });
    }
    fresh.push({
      uid: need.uid,
      size: r.size,
      sha1: r.sha1,
      ino: r.ino,
      mtimeNs: r.mtimeNs,
      origin: "local",
    });
    return r.sha1;
  };

  let relayedVerified = 0;
  if (relayed.length > 0) {
    const want = Math.max(
      options.verifySample ?? DEFAULT_VERIFY_SAMPLE,
      Math.ceil(relayed.length / 100),
    );
    const sample = new Set(
      chooseVerificationSample(
        relayed.map(([need]) => need.uid),
        want,
        randomBytes(16),
      ),
    );
    const checks = await Promise.all(
      relayed
        .filter(([need]) => sample.has(need.uid))
        .map(async ([need, entry]) => {
          const sha1 = await hashOne(need);
          guids.set(need.uid, sha1);
          return sha1.equals(entry.sha1);
        }),
    );
    relayedVerified = checks.length;
    const trusted = checks.every(Boolean);
    for (const [need, entry] of relayed) {
      if (sample.has(need.uid)) continue;
      if (trusted) {
        guids.set(need.uid, entry.sha1);
        fromCache++;
      } else {
        toHash.push(need);
      }
    }
  }

  await Promise.all(
    toHash.map(async (need) => {
      guids.set(need.uid, await hashOne(need));
    }),
  );
  return { guids, computed: fresh.length, fromCache, relayedVerified, fresh };
}
