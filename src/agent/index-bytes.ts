// One index or expunge file held whole in memory: parsed, scanned and
// converted from its bytes. The cut-over (session.ts) needs the exact bytes
// it converted outside the locks, to compare them with what the locked
// descriptors read; converting from those same bytes (not from a second
// read) is what makes "identical bytes ⇒ identical conversion" true.
//
// The conversion rules are src/cyrus/convert.ts's, used through its exported
// per-record pieces (compileRecordPlan, convertHeader, convertRecord,
// writeGuidPair, storedGuid, convertRecordsFast); test/apply/cutover-paths.test.ts checks every
// path byte for byte against convertIndex from scratch.

import { createHash, type Hash } from "node:crypto";
import { fstatSync, readSync } from "node:fs";
import {
  compileRecordPlan,
  convertHeader,
  convertRecord,
  convertRecordsFast,
  PAIR_BYTES,
  storedGuid,
  writeGuidPair,
} from "../cyrus/convert.js";
import type { IndexFormat } from "../cyrus/formats/index.js";
import { GUID_SIZE, isNullGuid, isOldStyleGuid } from "../cyrus/guid.js";
import {
  fileAccessError,
  type IndexHeader,
  type IndexKind,
  parseIndexHeader,
} from "../cyrus/index-file.js";
import { CyrusFormatError } from "../errors.js";
import type { FileFacts } from "../protocol/messages.js";
import type { GuidNeed } from "./mailbox-scan.js";

export interface FileBytes {
  file: string;
  kind: IndexKind;
  bytes: Buffer;
  header: IndexHeader;
}

/** Reads a whole file through an open fd (a locked one: never closed here). */
export function readAllFd(fd: number, file: string): Buffer {
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch (err) {
    throw fileAccessError(file, err);
  }
  const buf = Buffer.allocUnsafe(size);
  let done = 0;
  while (done < size) {
    let n: number;
    try {
      n = readSync(fd, buf, done, size - done, done);
    } catch (err) {
      throw fileAccessError(file, err);
    }
    if (n === 0) break;
    done += n;
  }
  return done === size ? buf : buf.subarray(0, done);
}

/**
 * Parses the header and checks the records' UIDs like IndexReader.chunks does.
 * With `checked`, records [0, checked) are known to be byte for byte a prefix
 * already checked (the appended path): only their last UID is checked again,
 * against this header's LAST_UID (UIDs ascend, so it is their highest).
 */
export function parseFileBytes(
  bytes: Buffer,
  file: string,
  kind: IndexKind,
  checked = 0,
): FileBytes {
  const header = parseIndexHeader(bytes, bytes.length, file);
  const { startOffset, recordSize, exists } = header;
  const lastUid = header.values.get("lastUid") as number;
  const from = kind === "index" ? Math.max(0, Math.min(checked, exists) - 1) : 0;
  let previous = from > 0 ? bytes.readUInt32BE(startOffset + (from - 1) * recordSize) : 0;
  for (let i = from; i < exists; i++) {
    const uid = bytes.readUInt32BE(startOffset + i * recordSize);
    if (uid === 0)
      throw new CyrusFormatError(`${file}: record ${i + 1} has UID 0; run reconstruct`, { file });
    if (kind === "index") {
      if (uid <= previous)
        throw new CyrusFormatError(
          `${file}: record ${i + 1} has UID ${uid} after UID ${previous} (UIDs must ascend); run reconstruct`,
          { file },
        );
      if (uid > lastUid)
        throw new CyrusFormatError(
          `${file}: record ${i + 1} has UID ${uid} above LAST_UID ${lastUid}; run reconstruct`,
          { file },
        );
    }
    previous = uid;
  }
  return { file, kind, bytes, header };
}

/** The records region of a file: [START_OFFSET, START_OFFSET + EXISTS × RECORD_SIZE). */
export function recordsOf(fb: FileBytes): Buffer {
  const { startOffset, recordSize, exists } = fb.header;
  return fb.bytes.subarray(startOffset, startOffset + exists * recordSize);
}

export interface FileScan {
  facts: FileFacts;
  needs: GuidNeed[];
  /** Source (uid, GUID as 20 bytes) pairs in file order. */
  pairs: Buffer;
  uidsDigest: string;
  guidDigest: string;
  /** The two digests' SHA1 states, not finalised: an appended tail continues them. */
  running: { uids: Hash; pairs: Hash };
}

/**
 * Scans every record of `fb`; with `prefix`, the scan of a file whose first
 * `prefix.facts.records` records are byte for byte the ones `prefix` scanned
 * (the appended path): only the records past them are read, the rest of the
 * scan continues `prefix`'s (its pairs, needs, counts and digest states), and
 * the header's facts are this header's.
 */
export function scanFileBytes(fb: FileBytes, prefix?: FileScan): FileScan {
  const { format, values, exists, startOffset, recordSize } = fb.header;
  const from = prefix ? prefix.facts.records : 0;
  if (from > exists) throw new RangeError(`a prefix of ${from} records, the file has ${exists}`);
  const plan = compileRecordPlan(format, format);
  const n = exists - from;
  const pairs = Buffer.alloc(n * PAIR_BYTES);
  const uids = Buffer.alloc(n * 4);
  const needs: GuidNeed[] = [];
  let oldStyle = 0;
  let nullGuids = 0;
  let oldStyleBytes = 0;
  const srcWords = startOffset % 4 === 0 && recordSize % 4 === 0 ? words(fb.bytes) : undefined;
  const pairWords = words(pairs);
  const b = fb.bytes;
  for (let i = 0; i < n; i++) {
    const at = startOffset + (from + i) * recordSize;
    const o = i * PAIR_BYTES;
    writeGuidPair(plan, b, at, pairs, o, srcWords, pairWords);
    uids[i * 4] = pairs[o] as number;
    uids[i * 4 + 1] = pairs[o + 1] as number;
    uids[i * 4 + 2] = pairs[o + 2] as number;
    uids[i * 4 + 3] = pairs[o + 3] as number;
    if (isOldStyleGuid(pairs, o + 4)) {
      const size = b.readUInt32BE(at + 12);
      oldStyle++;
      oldStyleBytes += size;
      needs.push({ uid: b.readUInt32BE(at), size });
      if (isNullGuid(pairs, o + 4)) nullGuids++;
    }
  }
  const highestModseq = values.get("highestModseq");
  const running = {
    uids: (prefix ? prefix.running.uids.copy() : createHash("sha1")).update(uids),
    pairs: (prefix ? prefix.running.pairs.copy() : createHash("sha1")).update(pairs),
  };
  const p = prefix?.facts;
  return {
    facts: {
      minor: format.minor,
      records: exists,
      oldStyle: (p?.oldStyle ?? 0) + oldStyle,
      nullGuids: (p?.nullGuids ?? 0) + nullGuids,
      oldStyleBytes: (p?.oldStyleBytes ?? 0) + oldStyleBytes,
      lastUid: values.get("lastUid") as number,
      uidValidity: values.get("uidValidity") as number,
      ...(highestModseq === undefined ? {} : { highestModseq: String(highestModseq) }),
    },
    needs: prefix ? [...prefix.needs, ...needs] : needs,
    pairs: prefix ? Buffer.concat([prefix.pairs, pairs]) : pairs,
    uidsDigest: running.uids.copy().digest("hex"),
    guidDigest: running.pairs.copy().digest("hex"),
    running,
  };
}

/** A file converted to the target version, in memory. */
export interface Converted {
  target: IndexFormat;
  header: Buffer;
  /** Converted records, in file order, in pieces (prefix, then appended tails). */
  records: Buffer[];
  /** (uid, stored GUID) pairs of the converted records, in file order, in pieces. */
  pairs: Buffer[];
  /** SHA1 over `pairs`, not finalised: an appended tail continues it. */
  pairsHash: Hash;
  /** Source records converted (the prefix an appended tail continues). */
  count: number;
  guidsChanged: number;
}

export function digestOf(c: Converted): string {
  return c.pairsHash.copy().digest("hex");
}

/**
 * Converts records [from, EXISTS) of `fb` to `target`; old-style GUIDs take
 * their value from `guids` when it has their UID (SHA1 GUIDs are kept).
 * With `prefix`, the result continues it (the appended path).
 */
export function convertFileBytes(
  fb: FileBytes,
  target: IndexFormat,
  guids: ReadonlyMap<number, Buffer> | undefined,
  prefix?: Converted,
): Converted {
  const { format, exists, startOffset, recordSize } = fb.header;
  const from = prefix ? prefix.count : 0;
  const plan = compileRecordPlan(format, target);
  const n = exists - from;
  const begin = startOffset + from * recordSize;
  // The codec's word-by-word path (about ten times faster for a large file);
  // record by record below when it does not apply.
  const fast = convertRecordsFast(plan, fb.bytes.subarray(begin, begin + n * recordSize), n, guids);
  if (fast !== undefined) {
    const pairsHash = prefix ? prefix.pairsHash.copy() : createHash("sha1");
    pairsHash.update(fast.pairs);
    return {
      target,
      header: convertHeader(fb.header, target),
      records: prefix ? [...prefix.records, fast.records] : [fast.records],
      pairs: prefix ? [...prefix.pairs, fast.pairs] : [fast.pairs],
      pairsHash,
      count: exists,
      guidsChanged: (prefix?.guidsChanged ?? 0) + fast.guidsChanged,
    };
  }
  const dstSize = target.recordSize;
  const out = Buffer.alloc(n * dstSize);
  const srcWords = startOffset % 4 === 0 && recordSize % 4 === 0 ? words(fb.bytes) : undefined;
  const dstWords = words(out);
  // The source (uid, GUID) pairs, then per record the GUID it gets: the
  // stored pairs start as a copy and only chosen GUIDs are written over.
  const src = Buffer.alloc(n * PAIR_BYTES);
  const srcPairWords = words(src);
  for (let i = 0; i < n; i++)
    writeGuidPair(
      plan,
      fb.bytes,
      startOffset + (from + i) * recordSize,
      src,
      i * PAIR_BYTES,
      srcWords,
      srcPairWords,
    );
  const stored = Buffer.from(src);
  let guidsChanged = prefix?.guidsChanged ?? 0;
  const toGuid = plan.targetGuid?.size === GUID_SIZE;
  for (let i = 0; i < n; i++) {
    const at = startOffset + (from + i) * recordSize;
    const o = i * PAIR_BYTES;
    let chosen: Buffer | undefined;
    if (guids && isOldStyleGuid(src, o + 4)) chosen = guids.get(fb.bytes.readUInt32BE(at));
    if (chosen !== undefined && chosen.length !== GUID_SIZE)
      throw new RangeError(`GUID of ${chosen.length} bytes`);
    convertRecord(
      plan,
      fb.bytes,
      at,
      out,
      i * dstSize,
      chosen ?? src,
      chosen ? 0 : o + 4,
      srcWords,
      dstWords,
      chosen ? undefined : srcPairWords,
    );
    if (toGuid) {
      if (chosen) {
        let same = true;
        for (let k = 0; k < GUID_SIZE; k++) {
          const c = chosen[k] as number;
          if (c !== src[o + 4 + k]) same = false;
          stored[o + 4 + k] = c;
        }
        if (!same) guidsChanged++;
      }
    } else {
      const sourceGuid = src.subarray(o + 4, o + PAIR_BYTES);
      const g = storedGuid(plan, chosen ?? sourceGuid);
      if (!g.equals(sourceGuid)) {
        guidsChanged++;
        g.copy(stored, o + 4, 0, GUID_SIZE);
      }
    }
  }
  const pairsHash = prefix ? prefix.pairsHash.copy() : createHash("sha1");
  pairsHash.update(stored);
  return {
    target,
    header: convertHeader(fb.header, target),
    records: prefix ? [...prefix.records, out] : [out],
    pairs: prefix ? [...prefix.pairs, stored] : [stored],
    pairsHash,
    count: exists,
    guidsChanged,
  };
}

/** A 32-bit view of a buffer from its start, when aligned (whole-word record copies). */
function words(buf: Buffer): Uint32Array | undefined {
  return buf.byteOffset % 4 === 0 && buf.length % 4 === 0
    ? new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4)
    : undefined;
}
