// The "planned set" of one side of a mailbox: what a plan entry promises
// about the records that existed when it was made, checkable cheaply under
// the locks (issue #9, "drift that matters").
//
// It is a SHA1 over the (uid, GUID) pairs of cyrus.index ∪ cyrus.expunge
// whose UID is ≤ a given LAST_UID, sorted by UID, each UID once (a UID in
// both files counts once, with its cyrus.index GUID), where an old-style GUID
// (NULL or padded UUID) counts as 20 zero bytes. So:
//   - appends (UIDs above LAST_UID) do not change it;
//   - an expunge (a record moving from cyrus.index to cyrus.expunge) and a
//     flag or modseq change do not change it;
//   - an unplanned UID ≤ LAST_UID, a vanished UID, or a changed SHA1 GUID
//     does; so does an old-style GUID replaced by an SHA1 one by anybody
//     else than this apply (a side this apply already finished is checked
//     against the other side instead, never against the plan).
// Expunge clean-up (records leaving cyrus.expunge for good) removes UIDs and
// so changes the digest; the record count then says "fewer than planned",
// which the controller tolerates with the weaker checks it documents.

import { createHash } from "node:crypto";
import { PAIR_BYTES } from "../cyrus/convert.js";
import { isOldStyleGuid } from "../cyrus/guid.js";

export interface PlannedSet {
  /** The LAST_UID the set was cut at. */
  upTo: number;
  /** Distinct UIDs ≤ upTo in index ∪ expunge. */
  records: number;
  /** SHA1 hex, see above. */
  digest: string;
  /** cyrus.index records with UID ≤ upTo (the rest are appends). */
  indexUpTo: number;
  /** cyrus.index records with UID > upTo: appended since. */
  appended: number;
}

/**
 * `indexPairs` are cyrus.index's (uid, GUID) pairs in file order (UIDs
 * ascending, checked by the reader); `expungePairs` cyrus.expunge's, in any
 * order, possibly repeating a UID.
 */
export function plannedSet(
  indexPairs: Buffer,
  expungePairs: Buffer | undefined,
  upTo: number,
): PlannedSet {
  const indexCount = indexPairs.length / PAIR_BYTES;
  let indexUpTo = 0;
  while (indexUpTo < indexCount && indexPairs.readUInt32BE(indexUpTo * PAIR_BYTES) <= upTo)
    indexUpTo++;
  // Expunge records ≤ upTo that cyrus.index does not hold, sorted, unique.
  const extra: number[] = [];
  if (expungePairs) {
    const inIndex = new Set<number>();
    for (let i = 0; i < indexUpTo; i++) inIndex.add(indexPairs.readUInt32BE(i * PAIR_BYTES));
    const seen = new Set<number>();
    for (let i = 0; i < expungePairs.length / PAIR_BYTES; i++) {
      const uid = expungePairs.readUInt32BE(i * PAIR_BYTES);
      if (uid > upTo || inIndex.has(uid) || seen.has(uid)) continue;
      seen.add(uid);
      extra.push(i);
    }
    extra.sort(
      (a, b) =>
        expungePairs.readUInt32BE(a * PAIR_BYTES) - expungePairs.readUInt32BE(b * PAIR_BYTES),
    );
  }
  const records = indexUpTo + extra.length;
  const out = Buffer.alloc(records * PAIR_BYTES);
  let o = 0;
  let e = 0;
  const put = (src: Buffer, i: number) => {
    const at = i * PAIR_BYTES;
    // Plain loops: a native Buffer.copy per record costs more than the copy.
    const n = isOldStyleGuid(src, at + 4) ? 4 : PAIR_BYTES;
    for (let k = 0; k < n; k++) out[o + k] = src[at + k] as number;
    o += PAIR_BYTES;
  };
  for (let i = 0; i < indexUpTo; i++) {
    const uid = indexPairs.readUInt32BE(i * PAIR_BYTES);
    while (e < extra.length && expungePairs!.readUInt32BE(extra[e]! * PAIR_BYTES) < uid)
      put(expungePairs!, extra[e++]!);
    put(indexPairs, i);
  }
  while (e < extra.length) put(expungePairs!, extra[e++]!);
  const upToBytes = Buffer.alloc(4);
  upToBytes.writeUInt32BE(upTo >>> 0);
  return {
    upTo,
    records,
    digest: createHash("sha1").update(upToBytes).update(out).digest("hex"),
    indexUpTo,
    appended: indexCount - indexUpTo,
  };
}
