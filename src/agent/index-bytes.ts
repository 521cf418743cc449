// One index or expunge file held whole in memory: parsed, scanned and
// converted from its bytes. The cut-over (session.ts) needs the exact bytes
// it converted outside the locks, to compare them with what the locked
// descriptors read; converting from those same bytes (not from a second
// read) is what makes "identical bytes ⇒ identical conversion" true.
//
// The conversion rules are src/cyrus/convert.ts's, used through its exported
// per-record pieces (compileRecordPlan, convertHeader, convertRecord,
// writeGuidPair, storedGuid); test/agent/cutover-paths.test.ts checks every
// path byte for byte against convertIndex from scratch.

import { createHash, type Hash } from "node:crypto";
import { fstatSync, readSync } from "node:fs";
import {
  compileRecordPlan,
  convertHeader,
  convertRecord,
  PAIR_BYTES,
  storedGuid,
  writeGuidPair,
} from "../cyrus/convert.js";
import type { IndexFormat } from "../cyrus/formats/index.js";
import { GUID_SIZE, isNullGuid, isOldStyleGuid } from "../cyrus/guid.js";
import { CyrusFormatError } from "../errors.js";
import {
  fileAccessError,
  type IndexHeader,
  type IndexKind,
  parseIndexHeader,
} from "../cyrus/index-file.js";
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

/** Parses the header and checks the records' UIDs like IndexReader.chunks does. */
export function parseFileBytes(bytes: Buffer, file: string, kind: IndexKind): FileBytes {
  const header = parseIndexHeader(bytes, bytes.length, file);
  const { startOffset, recordSize, exists } = header;
  const lastUid = header.values.get("lastUid") as number;
  let previous = 0;
  for (let i = 0; i < exists; i++) {
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
}

export function scanFileBytes(fb: FileBytes): FileScan {
  const { format, values, exists, startOffset, recordSize } = fb.header;
  const plan = compileRecordPlan(format, format);
  const pairs = Buffer.allocUnsafe(exists * PAIR_BYTES);
  const uids = Buffer.allocUnsafe(exists * 4);
  const needs: GuidNeed[] = [];
  let oldStyle = 0;
  let nullGuids = 0;
  let oldStyleBytes = 0;
  for (let i = 0; i < exists; i++) {
    const at = startOffset + i * recordSize;
    writeGuidPair(plan, fb.bytes, at, pairs, i * PAIR_BYTES);
    pairs.copy(uids, i * 4, i * PAIR_BYTES, i * PAIR_BYTES + 4);
    if (isOldStyleGuid(pairs, i * PAIR_BYTES + 4)) {
      const size = fb.bytes.readUInt32BE(at + 12);
      oldStyle++;
      oldStyleBytes += size;
      needs.push({ uid: fb.bytes.readUInt32BE(at), size });
      if (isNullGuid(pairs, i * PAIR_BYTES + 4)) nullGuids++;
    }
  }
  const highestModseq = values.get("highestModseq");
  return {
    facts: {
      minor: format.minor,
      records: exists,
      oldStyle,
      nullGuids,
      oldStyleBytes,
      lastUid: values.get("lastUid") as number,
      uidValidity: values.get("uidValidity") as number,
      ...(highestModseq === undefined ? {} : { highestModseq: String(highestModseq) }),
    },
    needs,
    pairs,
    uidsDigest: createHash("sha1").update(uids).digest("hex"),
    guidDigest: createHash("sha1").update(pairs).digest("hex"),
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
  const dstSize = target.recordSize;
  const out = Buffer.alloc(n * dstSize);
  const srcWords = startOffset % 4 === 0 && recordSize % 4 === 0 ? words(fb.bytes) : undefined;
  const dstWords = words(out);
  const src = Buffer.allocUnsafe(PAIR_BYTES);
  const stored = Buffer.alloc(n * PAIR_BYTES);
  let guidsChanged = prefix?.guidsChanged ?? 0;
  const toGuid = plan.targetGuid?.size === GUID_SIZE;
  for (let i = 0; i < n; i++) {
    const at = startOffset + (from + i) * recordSize;
    writeGuidPair(plan, fb.bytes, at, src, 0);
    let chosen: Buffer | undefined;
    if (guids && isOldStyleGuid(src, 4)) chosen = guids.get(fb.bytes.readUInt32BE(at));
    const g = chosen ?? src;
    convertRecord(plan, fb.bytes, at, out, i * dstSize, g, chosen ? 0 : 4, srcWords, dstWords);
    src.copy(stored, i * PAIR_BYTES, 0, 4);
    const sourceGuid = src.subarray(4, 4 + GUID_SIZE);
    const s = toGuid ? (chosen ?? sourceGuid) : storedGuid(plan, chosen ?? sourceGuid);
    s.copy(stored, i * PAIR_BYTES + 4, 0, GUID_SIZE);
    if (!s.equals(sourceGuid)) guidsChanged++;
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
