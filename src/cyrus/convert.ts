// Converting an index or expunge file to another minor version, streamed.
//
// The rules are those of Cyrus 2.3.16's mailbox_upgrade_index_work
// (cyrus-2.3-spool.md 3.3, 3.4), expressed as data over the version tables:
//   - a field present in both versions is carried (u32 quota widens to u64);
//   - a field the source lacks takes its default below (HIGHESTMODSEQ 1,
//     CONTENT_LINES "unknown", CACHE_VERSION 0, MODSEQ 1);
//   - MINOR_VERSION, START_OFFSET, RECORD_SIZE come from the target table,
//     spares are always written 0, EXISTS is the number of records written;
//   - upgrading to 10, a MODSEQ of 0 becomes 1 (2.3.13+);
//   - the GUID slot is decided per record by the caller (guidFor); by default
//     the source GUID is kept: a v10 GUID as is, a v7–v9 UUID padded with 8
//     zero bytes, nothing (the NULL GUID) before v7.
// Downgrading (target 6..9) uses the same rules, plus this one for the v7–v9
// UUID slot: a GUID that is itself a padded UUID (bytes 12..19 zero) gives its
// 12 bytes back, so upgrade-then-downgrade is lossless; a SHA1 GUID becomes the
// NULL UUID, because a SHA1 prefix is not a valid 2.3.0–2.3.9 UUID (their byte
// 0 is a schema number) and 2.3.0–2.3.9 treat the NULL UUID as "unknown".
//
// Every other byte of a record is copied unchanged. The 2.3.16 header steps
// that depend on a START_OFFSET below 64 (recounting flags, default options)
// never fire here: guidup reads v4+ only, whose headers are all ≥ 76 bytes.

import { createHash } from "node:crypto";
import { write as writeCb } from "node:fs";
import { promisify } from "node:util";
import { encodeField, type FieldValue } from "./field-codec.js";
import type {
  HeaderFieldName,
  IndexFormat,
  PlacedField,
  RecordFieldName,
} from "./formats/index.js";
import { GUID_SIZE, isOldStyleGuid, UUID_SIZE } from "./guid.js";
import type { IndexHeader, IndexReader } from "./index-file.js";

const write = promisify(writeCb);

/** Values for header fields the source version does not have. */
const HEADER_DEFAULTS: Partial<Record<HeaderFieldName, FieldValue>> = {
  highestModseq: 1n, // 2.3.16 step 2: oldMinor < 8 → HIGHESTMODSEQ = 1
};

/** Values for record fields the source version does not have. */
const RECORD_DEFAULTS: Partial<Record<RecordFieldName, FieldValue>> = {
  contentLines: 0xffffffff, // "unknown": imapd computes it on demand
  cacheVersion: 0,
  modseq: 1n,
};

/** Header fields that are never carried: always written as 0. */
const RESERVED_HEADER_FIELDS: ReadonlySet<HeaderFieldName> = new Set([
  "spare0",
  "spare1",
  "spare2",
  "spare3",
  "spare4",
]);

/** Header fields the target table defines, whatever the source said. */
function geometryValue(
  name: HeaderFieldName,
  target: IndexFormat,
  exists: number,
): FieldValue | undefined {
  switch (name) {
    case "minorVersion":
      return target.minor;
    case "startOffset":
      return target.headerSize;
    case "recordSize":
      return target.recordSize;
    case "exists":
      return exists;
    default:
      return undefined;
  }
}

/** The target header for a converted file. */
export function convertHeader(header: IndexHeader, target: IndexFormat): Buffer {
  const out = Buffer.alloc(target.headerSize);
  for (const field of target.headerFields) {
    const value =
      geometryValue(field.name, target, header.exists) ??
      (RESERVED_HEADER_FIELDS.has(field.name) ? 0 : undefined) ??
      header.values.get(field.name) ??
      HEADER_DEFAULTS[field.name] ??
      0;
    encodeField(field, value, out, 0);
  }
  return out;
}

/** What the converter tells the GUID source about one record. */
export interface GuidRequest {
  /** 1-based record number in the file. */
  readonly msgno: number;
  readonly uid: number;
  /** SIZE of the message, from the record. */
  readonly size: number;
  /**
   * The record's GUID as 20 bytes (v7–v9 UUID padded, NULL before v7): a
   * read-only view into a buffer the converter never reuses.
   */
  readonly sourceGuid: Buffer;
}

/**
 * Decides the GUID of one record: a 20-byte buffer, or undefined to keep the
 * source GUID. May return a promise (hashing a message file); the converter
 * resolves all promises of one chunk together, so hashes run in parallel.
 */
export type GuidSource = (request: GuidRequest) => Buffer | undefined | Promise<Buffer | undefined>;

/** A contiguous byte range copied unchanged from source to target record. */
interface CopyRun {
  src: number;
  dst: number;
  len: number;
}

/** The per-record plan for one (source, target) pair, compiled from the tables. */
export interface RecordPlan {
  readonly source: IndexFormat;
  readonly target: IndexFormat;
  readonly copies: readonly CopyRun[];
  /** Constant bytes for target fields the source lacks (their defaults). */
  readonly fills: readonly { dst: number; bytes: Buffer }[];
  /** Where the source keeps its GUID or UUID, if it has one. */
  readonly sourceGuid?: { offset: number; size: number };
  /** Where the target keeps its GUID (20 bytes) or UUID (12 bytes). */
  readonly targetGuid?: { offset: number; size: number };
  /** Target MODSEQ offset, when a MODSEQ of 0 must become 1 (upgrade to 10). */
  readonly modseqZeroFix?: number;
}

function guidSlot(format: IndexFormat): { offset: number; size: number } | undefined {
  const field = format.recordField("guid") ?? format.recordField("uuid");
  return field && { offset: field.offset, size: field.size };
}

export function compileRecordPlan(source: IndexFormat, target: IndexFormat): RecordPlan {
  const copies: CopyRun[] = [];
  const fills: { dst: number; bytes: Buffer }[] = [];
  for (const field of target.recordFields) {
    if (field.name === "guid" || field.name === "uuid") continue;
    const from = source.recordField(field.name) as PlacedField<RecordFieldName> | undefined;
    if (from !== undefined && from.size === field.size) {
      const last = copies[copies.length - 1];
      if (last && last.src + last.len === from.offset && last.dst + last.len === field.offset) {
        last.len += field.size;
      } else {
        copies.push({ src: from.offset, dst: field.offset, len: field.size });
      }
    } else {
      const bytes = Buffer.alloc(target.recordSize);
      encodeField(field, RECORD_DEFAULTS[field.name] ?? 0, bytes, 0);
      fills.push({
        dst: field.offset,
        bytes: bytes.subarray(field.offset, field.offset + field.size),
      });
    }
  }
  const modseq = target.recordField("modseq");
  const upgradingTo10 = target.minor === 10 && source.minor < 10;
  return {
    source,
    target,
    copies,
    fills,
    ...optional("sourceGuid", guidSlot(source)),
    ...optional("targetGuid", guidSlot(target)),
    ...optional(
      "modseqZeroFix",
      upgradingTo10 && source.recordField("modseq") && modseq ? modseq.offset : undefined,
    ),
  };
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

/** The source record's GUID as 20 bytes (a new buffer). */
export function sourceGuidOf(plan: RecordPlan, src: Buffer, at: number): Buffer {
  const guid = Buffer.alloc(GUID_SIZE);
  const slot = plan.sourceGuid;
  if (slot) copyBytes(src, at + slot.offset, guid, 0, slot.size);
  return guid;
}

/** Bytes of one (uid u32 BE, GUID 20 bytes) pair in a digest. */
export const PAIR_BYTES = 4 + GUID_SIZE;

/**
 * Writes the (uid, GUID as 20 bytes) pair of the source record at `src@at`
 * into `out@outAt`: the unit of every (uid, GUID) digest.
 */
export function writeGuidPair(
  plan: RecordPlan,
  src: Buffer,
  at: number,
  out: Buffer,
  outAt: number,
): void {
  copyBytes(src, at, out, outAt, 4);
  const slot = plan.sourceGuid;
  const size = slot ? slot.size : 0;
  if (slot) copyBytes(src, at + slot.offset, out, outAt + 4, size);
  for (let k = 4 + size; k < PAIR_BYTES; k++) out[outAt + k] = 0;
}

/**
 * Copies n bytes with a plain loop. The hot paths move runs of 4–60 bytes a
 * million times; V8 compiles this loop tightly, while a Buffer.copy per run
 * costs a native call each (measured: most of the lock hold time).
 */
function copyBytes(src: Uint8Array, s: number, dst: Uint8Array, d: number, n: number): void {
  for (let k = 0; k < n; k++) dst[d + k] = src[s + k] as number;
}

/** Whether n bytes at a@i and b@j are equal. */
export function sameBytes(a: Uint8Array, i: number, b: Uint8Array, j: number, n: number): boolean {
  for (let k = 0; k < n; k++) if (a[i + k] !== b[j + k]) return false;
  return true;
}

/**
 * What a target record's GUID slot holds for a given 20-byte GUID, as the 20
 * bytes a reader of the target file would see (v7–v9: UUID + 8 zero bytes; v6:
 * NULL). Used for the (uid, guid) digest, so master and replica compare what
 * they will really have on disk.
 */
export function storedGuid(plan: RecordPlan, guid: Buffer): Buffer {
  const slot = plan.targetGuid;
  if (slot === undefined) return NULL_STORED;
  if (slot.size === GUID_SIZE) return guid;
  const stored = Buffer.alloc(GUID_SIZE);
  if (isOldStyleGuid(guid)) copyBytes(guid, 0, stored, 0, UUID_SIZE);
  return stored;
}

const NULL_STORED = Buffer.alloc(GUID_SIZE);

/** Converts one record from `src@srcAt` into `dst@dstAt` with the given GUID. */
export function convertRecord(
  plan: RecordPlan,
  src: Buffer,
  srcAt: number,
  dst: Buffer,
  dstAt: number,
  guid: Buffer,
): void {
  for (const run of plan.copies) copyBytes(src, srcAt + run.src, dst, dstAt + run.dst, run.len);
  for (const fill of plan.fills) copyBytes(fill.bytes, 0, dst, dstAt + fill.dst, fill.bytes.length);
  const slot = plan.targetGuid;
  if (slot) {
    if (slot.size === GUID_SIZE) copyBytes(guid, 0, dst, dstAt + slot.offset, GUID_SIZE);
    else copyBytes(storedGuid(plan, guid), 0, dst, dstAt + slot.offset, slot.size);
  }
  const fix = plan.modseqZeroFix;
  if (fix !== undefined) {
    let zero = true;
    for (let k = 0; k < 8; k++) if (dst[dstAt + fix + k] !== 0) zero = false;
    if (zero) dst[dstAt + fix + 7] = 1;
  }
}

export interface ConvertOptions {
  target: IndexFormat;
  guidFor?: GuidSource;
}

export interface ConvertResult {
  records: number;
  /** Records whose stored GUID differs from the source's. */
  guidsChanged: number;
  bytesWritten: number;
  /**
   * SHA1 over (uid u32 BE, stored GUID 20 bytes) of every record in file
   * order: what master and replica compare before either commits.
   */
  digest: Buffer;
}

/**
 * Streams `reader`'s file into `outFd` (an empty file opened for writing) at
 * the target version. Does not fsync or close `outFd`: the caller owns it.
 */
export async function convertIndex(
  reader: IndexReader,
  outFd: number,
  options: ConvertOptions,
): Promise<ConvertResult> {
  const plan = compileRecordPlan(reader.format, options.target);
  const header = convertHeader(reader.header, options.target);
  const digest = createHash("sha1");
  let position = await writeFully(outFd, header, 0);
  let guidsChanged = 0;
  for await (const chunk of reader.chunks()) {
    const { buf, count, recordSize } = chunk;
    // The source (uid, GUID) pairs of the whole chunk, in one buffer.
    const pairs = Buffer.allocUnsafe(count * PAIR_BYTES);
    for (let i = 0; i < count; i++) writeGuidPair(plan, buf, i * recordSize, pairs, i * PAIR_BYTES);
    const sourceGuid = (i: number) => pairs.subarray(i * PAIR_BYTES + 4, (i + 1) * PAIR_BYTES);
    let guids: (Buffer | undefined)[] | undefined;
    if (options.guidFor) {
      const decided: (Buffer | undefined | Promise<Buffer | undefined>)[] = new Array(count);
      let anyPending = false;
      for (let i = 0; i < count; i++) {
        const at = i * recordSize;
        const result = options.guidFor({
          msgno: chunk.first + i + 1,
          uid: buf.readUInt32BE(at),
          size: buf.readUInt32BE(at + 12),
          sourceGuid: sourceGuid(i),
        });
        if (result instanceof Promise) anyPending = true;
        decided[i] = result;
      }
      guids = anyPending ? await Promise.all(decided) : (decided as (Buffer | undefined)[]);
    }
    const out = Buffer.allocUnsafe(count * plan.target.recordSize);
    // What the digest covers: the uid and the GUID as stored in the target.
    const storedPairs = Buffer.from(pairs);
    for (let i = 0; i < count; i++) {
      const source = sourceGuid(i);
      const guid = guids?.[i] ?? source;
      if (guid.length !== GUID_SIZE) throw new RangeError(`GUID of ${guid.length} bytes`);
      convertRecord(plan, buf, i * recordSize, out, i * plan.target.recordSize, guid);
      const stored = storedGuid(plan, guid);
      if (!sameBytes(stored, 0, pairs, i * PAIR_BYTES + 4, GUID_SIZE)) {
        guidsChanged++;
        copyBytes(stored, 0, storedPairs, i * PAIR_BYTES + 4, GUID_SIZE);
      }
    }
    digest.update(storedPairs);
    position += await writeFully(outFd, out, position);
  }
  return {
    records: reader.header.exists,
    guidsChanged,
    bytesWritten: position,
    digest: digest.digest(),
  };
}

async function writeFully(fd: number, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await write(fd, buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
  return buf.length;
}
