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
import { type IndexHeader, type IndexReader, READ_CHUNK_BYTES } from "./index-file.js";

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
  /** Whether the record's GUID is old-style (NULL or a padded UUID). */
  readonly oldStyle: boolean;
  /**
   * The record's GUID as 20 bytes (v7–v9 UUID padded, NULL before v7): a
   * read-only view into a buffer the converter never reuses. Made only when
   * asked for: a Buffer view per record is most of the cost of a small object.
   */
  readonly sourceGuid: Buffer;
}

class RecordRequest implements GuidRequest {
  constructor(
    readonly msgno: number,
    readonly uid: number,
    readonly size: number,
    readonly oldStyle: boolean,
    private readonly pairs: Buffer,
    private readonly at: number,
  ) {}
  get sourceGuid(): Buffer {
    return this.pairs.subarray(this.at, this.at + GUID_SIZE);
  }
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
  srcWords?: Uint32Array,
  outWords?: Uint32Array,
): void {
  const slot = plan.sourceGuid;
  const size = slot ? slot.size : 0;
  if (srcWords && outWords) {
    const s = at >> 2;
    const o = outAt >> 2;
    outWords[o] = srcWords[s] as number;
    const g = slot ? s + (slot.offset >> 2) : 0;
    for (let k = 0; k < size >> 2; k++) outWords[o + 1 + k] = srcWords[g + k] as number;
    for (let k = 1 + (size >> 2); k < PAIR_BYTES >> 2; k++) outWords[o + k] = 0;
    return;
  }
  copyBytes(src, at, out, outAt, 4);
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

/** 32-bit word views of a buffer, when it is 4-byte aligned (chunk buffers are). */
function words(buf: Buffer): Uint32Array | undefined {
  return buf.byteOffset % 4 === 0 && buf.length % 4 === 0
    ? new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4)
    : undefined;
}

/**
 * Converts one record from `src@srcAt` into `dst@dstAt`, its GUID taken from
 * `guid@guidAt` (20 bytes). `srcWords`/`dstWords` are optional 32-bit views
 * of src and dst: every field offset and size of every version is a multiple
 * of 4, so runs move as whole words, a quarter of the work of bytes.
 */
export function convertRecord(
  plan: RecordPlan,
  src: Buffer,
  srcAt: number,
  dst: Buffer,
  dstAt: number,
  guid: Uint8Array,
  guidAt = 0,
  srcWords?: Uint32Array,
  dstWords?: Uint32Array,
  /** 32-bit view of `guid` (from its byteOffset), when `guid` is 4-byte aligned. */
  guidWords?: Uint32Array,
): void {
  if (srcWords && dstWords) {
    const s = srcAt >> 2;
    const d = dstAt >> 2;
    for (const run of plan.copies) {
      const from = s + (run.src >> 2);
      const to = d + (run.dst >> 2);
      for (let k = 0, n = run.len >> 2; k < n; k++) dstWords[to + k] = srcWords[from + k] as number;
    }
  } else {
    for (const run of plan.copies) copyBytes(src, srcAt + run.src, dst, dstAt + run.dst, run.len);
  }
  for (const fill of plan.fills) copyBytes(fill.bytes, 0, dst, dstAt + fill.dst, fill.bytes.length);
  const slot = plan.targetGuid;
  if (slot) {
    if (slot.size === GUID_SIZE) {
      if (dstWords && guidWords !== undefined && ((guid.byteOffset + guidAt) & 3) === 0) {
        const g = guidAt >> 2;
        const d = (dstAt + slot.offset) >> 2;
        for (let k = 0; k < 5; k++) dstWords[d + k] = guidWords[g + k] as number;
      } else copyBytes(guid, guidAt, dst, dstAt + slot.offset, GUID_SIZE);
    } else {
      const g = Buffer.from(guid.buffer, guid.byteOffset + guidAt, GUID_SIZE);
      copyBytes(storedGuid(plan, g), 0, dst, dstAt + slot.offset, slot.size);
    }
  }
  const fix = plan.modseqZeroFix;
  if (fix !== undefined && dstWords) {
    const w = (dstAt + fix) >> 2;
    if (dstWords[w] === 0 && dstWords[w + 1] === 0) dst[dstAt + fix + 7] = 1;
  } else if (fix !== undefined) {
    let zero = true;
    for (let k = 0; k < 8; k++) if (dst[dstAt + fix + k] !== 0) zero = false;
    if (zero) dst[dstAt + fix + 7] = 1;
  }
}

/**
 * A RecordPlan in 32-bit words, for the fast path of convertIndex: every
 * field offset and size of every version is a multiple of 4, so a record
 * converts as a few runs of word copies. Only for targets with a 20-byte
 * GUID slot (v10); downgrades take the general path.
 */
interface WordPlan {
  srcWords: number;
  dstWords: number;
  /** (source word, target word, length in words) triples. */
  copies: Int32Array;
  /** (target word, constant) pairs, the constant as the word's native value. */
  fillAt: Int32Array;
  fillValue: Uint32Array;
  /** Source GUID slot: word offset and length in words (5 GUID, 3 UUID), or -1 and 0. */
  srcGuid: number;
  srcGuidWords: number;
  /** Target GUID slot (5 words). */
  dstGuid: number;
  /** Target MODSEQ word offset when 0 must become 1, else -1. */
  modseqFix: number;
}

function wordPlan(plan: RecordPlan): WordPlan | undefined {
  const t = plan.targetGuid;
  if (t === undefined || t.size !== GUID_SIZE) return undefined;
  const copies: number[] = [];
  for (const run of plan.copies) copies.push(run.src >> 2, run.dst >> 2, run.len >> 2);
  const fillAt: number[] = [];
  const fillValue: number[] = [];
  const word = new Uint8Array(4);
  const view = new Uint32Array(word.buffer);
  for (const fill of plan.fills) {
    for (let k = 0; k < fill.bytes.length; k += 4) {
      word.set(fill.bytes.subarray(k, k + 4));
      fillAt.push((fill.dst + k) >> 2);
      fillValue.push(view[0] as number);
    }
  }
  return {
    srcWords: plan.source.recordSize >> 2,
    dstWords: plan.target.recordSize >> 2,
    copies: Int32Array.from(copies),
    fillAt: Int32Array.from(fillAt),
    fillValue: Uint32Array.from(fillValue),
    srcGuid: plan.sourceGuid ? plan.sourceGuid.offset >> 2 : -1,
    srcGuidWords: plan.sourceGuid ? plan.sourceGuid.size >> 2 : 0,
    dstGuid: t.offset >> 2,
    modseqFix: plan.modseqZeroFix === undefined ? -1 : plan.modseqZeroFix >> 2,
  };
}

/**
 * Converts `count` records of a chunk, word by word (the fast path): the
 * target records into `dst`, the (uid, stored GUID) pairs of the digest into
 * `pairs`. The GUID of record i is `decided[i]` when given (guidFor's
 * answers), else `table.get(uid)` for an old-style source GUID, else the
 * source's. Returns how many stored GUIDs differ from the source's.
 */
function convertChunkWords(
  wp: WordPlan,
  src: Buffer,
  src32: Uint32Array,
  dst: Buffer,
  dst32: Uint32Array,
  pairs: Buffer,
  pairs32: Uint32Array,
  count: number,
  decided: readonly (Buffer | undefined)[] | undefined,
  table: ReadonlyMap<number, Buffer> | undefined,
  cursor: TableCursor | undefined,
): number {
  const tableGuids = cursor?.table.guids;
  // The table's GUIDs as words when they are 4-byte aligned (they usually are).
  const tableWords =
    tableGuids !== undefined && (tableGuids.byteOffset & 3) === 0
      ? new Uint32Array(tableGuids.buffer, tableGuids.byteOffset, tableGuids.length >> 2)
      : undefined;
  const { srcWords, dstWords, copies, fillAt, fillValue, srcGuid, srcGuidWords, dstGuid } = wp;
  const modseqFix = wp.modseqFix;
  const nCopies = copies.length;
  const nFills = fillAt.length;
  let changed = 0;
  for (let i = 0; i < count; i++) {
    const s = i * srcWords;
    const d = i * dstWords;
    const p = i * (PAIR_BYTES >> 2);
    for (let c = 0; c < nCopies; c += 3) {
      const from = s + (copies[c] as number);
      const to = d + (copies[c + 1] as number);
      const n = copies[c + 2] as number;
      for (let k = 0; k < n; k++) dst32[to + k] = src32[from + k] as number;
    }
    for (let f = 0; f < nFills; f++) dst32[d + (fillAt[f] as number)] = fillValue[f] as number;
    // The source GUID as 20 bytes: a v7–v9 UUID is padded with zeros.
    let g0 = 0;
    let g1 = 0;
    let g2 = 0;
    let g3 = 0;
    let g4 = 0;
    if (srcGuidWords > 0) {
      const g = s + srcGuid;
      g0 = src32[g] as number;
      g1 = src32[g + 1] as number;
      g2 = src32[g + 2] as number;
      if (srcGuidWords === 5) {
        g3 = src32[g + 3] as number;
        g4 = src32[g + 4] as number;
      }
    }
    let chosen: Buffer | undefined;
    let row = -1;
    if (decided !== undefined) chosen = decided[i];
    else if ((table !== undefined || cursor !== undefined) && g3 === 0 && g4 === 0) {
      const at = s << 2;
      const uid =
        (src[at] as number) * 0x1000000 +
        (((src[at + 1] as number) << 16) |
          ((src[at + 2] as number) << 8) |
          (src[at + 3] as number));
      if (table !== undefined) chosen = table.get(uid);
      else row = (cursor as TableCursor).find(uid);
    }
    pairs32[p] = src32[s] as number;
    const gd = d + dstGuid;
    if (row >= 0) {
      if (tableWords !== undefined) {
        const from = row * 5;
        for (let k = 0; k < 5; k++) {
          const w = tableWords[from + k] as number;
          dst32[gd + k] = w;
          pairs32[p + 1 + k] = w;
        }
      } else {
        const g = tableGuids as Uint8Array;
        const from = row * GUID_SIZE;
        copyBytes(g, from, dst, gd << 2, GUID_SIZE);
        copyBytes(g, from, pairs, (p + 1) << 2, GUID_SIZE);
      }
      if (
        dst32[gd] !== g0 ||
        dst32[gd + 1] !== g1 ||
        dst32[gd + 2] !== g2 ||
        dst32[gd + 3] !== g3 ||
        dst32[gd + 4] !== g4
      )
        changed++;
    } else if (chosen === undefined) {
      dst32[gd] = g0;
      dst32[gd + 1] = g1;
      dst32[gd + 2] = g2;
      dst32[gd + 3] = g3;
      dst32[gd + 4] = g4;
      pairs32[p + 1] = g0;
      pairs32[p + 2] = g1;
      pairs32[p + 3] = g2;
      pairs32[p + 4] = g3;
      pairs32[p + 5] = g4;
    } else {
      if (chosen.length !== GUID_SIZE) throw new RangeError(`GUID of ${chosen.length} bytes`);
      // TypedArray set: one builtin call, cheaper than a loop over a buffer
      // object seen for the first time.
      dst.set(chosen, gd << 2);
      pairs.set(chosen, (p + 1) << 2);
      if (
        dst32[gd] !== g0 ||
        dst32[gd + 1] !== g1 ||
        dst32[gd + 2] !== g2 ||
        dst32[gd + 3] !== g3 ||
        dst32[gd + 4] !== g4
      )
        changed++;
    }
    if (modseqFix >= 0) {
      const w = d + modseqFix;
      if (dst32[w] === 0 && dst32[w + 1] === 0) dst[(w << 2) + 7] = 1;
    }
  }
  return changed;
}

/**
 * Converts `count` whole records held in memory (`src` starts at the first)
 * with the word-by-word fast path convertIndex uses: the target records, the
 * (uid, stored GUID) digest pairs and how many stored GUIDs changed. Old-style
 * GUIDs take their value from `guids` when it has their UID. Undefined when
 * the fast path does not apply (a target without a 20-byte GUID, a buffer
 * not 4-byte aligned): the caller then converts record by record.
 */
export function convertRecordsFast(
  plan: RecordPlan,
  src: Buffer,
  count: number,
  guids: ReadonlyMap<number, Buffer> | undefined,
): { records: Buffer; pairs: Buffer; guidsChanged: number } | undefined {
  const wp = wordPlan(plan);
  const srcWords = words(src);
  if (wp === undefined || srcWords === undefined) return undefined;
  // Every byte of both is written below (as in convertIndex's own buffers).
  const records = Buffer.allocUnsafeSlow(count * plan.target.recordSize);
  const pairs = Buffer.allocUnsafeSlow(count * PAIR_BYTES);
  // A map is packed once and walked in step with the records (see guidTableFromMap).
  const table = guids === undefined ? undefined : guidTableFromMap(guids);
  const guidsChanged = convertChunkWords(
    wp,
    src,
    srcWords,
    records,
    words(records)!,
    pairs,
    words(pairs)!,
    count,
    undefined,
    table === undefined ? guids : undefined,
    table === undefined ? undefined : new TableCursor(table),
  );
  return { records, pairs, guidsChanged };
}

export interface ConvertOptions {
  target: IndexFormat;
  guidFor?: GuidSource;
  /**
   * GUIDs by UID for old-style records only (records with an SHA1 GUID keep
   * it): what the agent's upgrade does, without a callback and a request
   * object per record. Ignored when guidFor is given.
   */
  guids?: ReadonlyMap<number, Buffer>;
  /**
   * The same as `guids`, packed: the fastest way to hand over many GUIDs
   * (no object per GUID to look up and read; for a million records, the
   * map's lookups cost more than the rest of the conversion). Ignored when
   * guidFor or guids is given.
   */
  guidTable?: GuidTable;
}

/**
 * GUIDs by UID, packed: `uids` strictly ascending, `guids` 20 bytes per uid
 * in the same order.
 */
export interface GuidTable {
  readonly uids: Uint32Array;
  readonly guids: Uint8Array;
}

/**
 * The GUIDs of a map as a GuidTable (sorted by uid), or undefined when a
 * value is not 20 bytes (the converter then uses the map, and refuses such a
 * GUID only if a record asks for it). Walking a map in order costs a
 * fraction of looking each record's uid up in it.
 */
export function guidTableFromMap(map: ReadonlyMap<number, Uint8Array>): GuidTable | undefined {
  const n = map.size;
  const uids = new Uint32Array(n);
  const guids = Buffer.allocUnsafeSlow(n * GUID_SIZE);
  let k = 0;
  let sorted = true;
  for (const [uid, guid] of map) {
    if (guid.length !== GUID_SIZE || !Number.isInteger(uid) || uid < 0 || uid > 0xffffffff)
      return undefined;
    if (k > 0 && uid <= (uids[k - 1] as number)) sorted = false;
    uids[k] = uid;
    guids.set(guid, k * GUID_SIZE);
    k++;
  }
  if (sorted) return { uids, guids };
  // (uid, position) as one exactly representable number (uid < 2^32, n < 2^21
  // for any real mailbox; beyond that, keep the map): a numeric sort, no
  // comparator calls.
  if (n >= 1 << 21) return undefined;
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) keys[i] = (uids[i] as number) * 0x200000 + i;
  keys.sort();
  const sortedUids = new Uint32Array(n);
  const sortedGuids = Buffer.allocUnsafeSlow(n * GUID_SIZE);
  for (let i = 0; i < n; i++) {
    const key = keys[i] as number;
    const from = key % 0x200000;
    sortedUids[i] = (key - from) / 0x200000;
    guids.copy(sortedGuids, i * GUID_SIZE, from * GUID_SIZE, from * GUID_SIZE + GUID_SIZE);
  }
  return { uids: sortedUids, guids: sortedGuids };
}

/** Checks a GuidTable's shape once, before any record is converted. */
function checkGuidTable(t: GuidTable): void {
  if (t.guids.length !== t.uids.length * GUID_SIZE)
    throw new RangeError(`guid table: ${t.guids.length} bytes for ${t.uids.length} uids`);
  for (let i = 1; i < t.uids.length; i++) {
    if ((t.uids[i] as number) <= (t.uids[i - 1] as number))
      throw new RangeError("guid table: uids must be strictly ascending");
  }
}

/**
 * Finds uids in a GuidTable. Index files list UIDs ascending, so each
 * lookup first tries the entry after the previous hit; otherwise (expunge
 * files) a binary search.
 */
class TableCursor {
  #next = 0;
  constructor(readonly table: GuidTable) {}
  /** Index of `uid` in the table, or -1. */
  find(uid: number): number {
    const uids = this.table.uids;
    const n = uids.length;
    let j = this.#next;
    if (j < n && uids[j] === uid) {
      this.#next = j + 1;
      return j;
    }
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((uids[mid] as number) < uid) lo = mid + 1;
      else hi = mid;
    }
    j = lo;
    if (j < n && uids[j] === uid) {
      this.#next = j + 1;
      return j;
    }
    return -1;
  }
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
  const toGuid = plan.targetGuid?.size === GUID_SIZE;
  const wp = wordPlan(plan);
  const given =
    !options.guidFor && !options.guids && options.guidTable !== undefined
      ? options.guidTable
      : undefined;
  if (given !== undefined) checkGuidTable(given);
  // The agent passes a map: packed once here, the fast path walks it in step
  // with the records instead of a lookup per record.
  const packed =
    !options.guidFor && options.guids !== undefined && wp !== undefined
      ? guidTableFromMap(options.guids)
      : undefined;
  const table = given ?? packed;
  const cursor = table === undefined ? undefined : new TableCursor(table);
  const mapForFastPath = packed === undefined ? options.guids : undefined;
  // Write-behind: the previous chunk is written while this one converts.
  let pendingWrite: Promise<number> | undefined;
  const outBufs: (Buffer | undefined)[] = [undefined, undefined];
  let storedBuf = Buffer.alloc(0);
  let chunkNo = 0;
  // Each chunk is done with (converted into `out`, its pairs copied) before
  // the next is asked for, so the reader's buffers can take turns.
  for await (const chunk of reader.chunks(READ_CHUNK_BYTES, true)) {
    const { buf, count, recordSize } = chunk;
    const dstSize = plan.target.recordSize;
    const srcWords = words(buf);
    if (wp !== undefined && srcWords !== undefined && !options.guidFor) {
      // Fast path: records and digest pairs straight from the source, word by
      // word, into two output buffers used in turn (one may still be being
      // written) and one pairs buffer (hashed before the next chunk).
      const which = chunkNo++ & 1;
      if ((outBufs[which]?.length ?? 0) < count * dstSize)
        outBufs[which] = Buffer.allocUnsafeSlow(count * dstSize);
      if (storedBuf.length < count * PAIR_BYTES)
        storedBuf = Buffer.allocUnsafeSlow(count * PAIR_BYTES);
      const out = (outBufs[which] as Buffer).subarray(0, count * dstSize);
      const stored = storedBuf.subarray(0, count * PAIR_BYTES);
      guidsChanged += convertChunkWords(
        wp,
        buf,
        srcWords,
        out,
        words(out)!,
        stored,
        words(stored)!,
        count,
        undefined,
        mapForFastPath,
        mapForFastPath === undefined ? cursor : undefined,
      );
      digest.update(stored);
      if (pendingWrite) position += await pendingWrite;
      pendingWrite = writeFully(outFd, out, position);
      continue;
    }
    // The source (uid, GUID) pairs of the whole chunk, in one buffer.
    const pairs = Buffer.allocUnsafe(count * PAIR_BYTES);
    const pairWords = words(pairs);
    for (let i = 0; i < count; i++) {
      writeGuidPair(plan, buf, i * recordSize, pairs, i * PAIR_BYTES, srcWords, pairWords);
    }
    let guids: (Buffer | undefined)[] | undefined;
    if (!options.guidFor && options.guids) {
      const table = options.guids;
      guids = new Array(count);
      for (let i = 0; i < count; i++) {
        if (isOldStyleGuid(pairs, i * PAIR_BYTES + 4))
          guids[i] = table.get(buf.readUInt32BE(i * recordSize));
      }
    } else if (!options.guidFor && cursor !== undefined) {
      const g = cursor.table.guids;
      guids = new Array(count);
      for (let i = 0; i < count; i++) {
        if (!isOldStyleGuid(pairs, i * PAIR_BYTES + 4)) continue;
        const row = cursor.find(buf.readUInt32BE(i * recordSize));
        if (row >= 0) guids[i] = Buffer.from(g.buffer, g.byteOffset + row * GUID_SIZE, GUID_SIZE);
      }
    } else if (options.guidFor) {
      const decided: (Buffer | undefined | Promise<Buffer | undefined>)[] = new Array(count);
      let anyPending = false;
      for (let i = 0; i < count; i++) {
        const at = i * recordSize;
        const guidAt = i * PAIR_BYTES + 4;
        const result = options.guidFor(
          new RecordRequest(
            chunk.first + i + 1,
            buf.readUInt32BE(at),
            buf.readUInt32BE(at + 12),
            isOldStyleGuid(pairs, guidAt),
            pairs,
            guidAt,
          ),
        );
        if (result instanceof Promise) anyPending = true;
        decided[i] = result;
      }
      guids = anyPending ? await Promise.all(decided) : (decided as (Buffer | undefined)[]);
    }
    const out = Buffer.allocUnsafe(count * dstSize);
    const dstWords = words(out);
    if (wp !== undefined && srcWords !== undefined && dstWords !== undefined) {
      // guidFor's answers through the fast path; `pairs` stays as the
      // requests saw it (their sourceGuid views point into it).
      const stored = Buffer.allocUnsafe(count * PAIR_BYTES);
      guidsChanged += convertChunkWords(
        wp,
        buf,
        srcWords,
        out,
        dstWords,
        stored,
        words(stored)!,
        count,
        guids ?? [],
        undefined,
        undefined,
      );
      digest.update(stored);
      if (pendingWrite) position += await pendingWrite;
      pendingWrite = writeFully(outFd, out, position);
      continue;
    }
    // What the digest covers: the uid and the GUID as stored in the target.
    const storedPairs = Buffer.from(pairs);
    for (let i = 0; i < count; i++) {
      const sourceAt = i * PAIR_BYTES + 4;
      const chosen = guids?.[i];
      if (chosen !== undefined && chosen.length !== GUID_SIZE)
        throw new RangeError(`GUID of ${chosen.length} bytes`);
      const g = chosen ?? pairs;
      const gAt = chosen ? 0 : sourceAt;
      // Source GUIDs come from the (aligned) pair buffer; chosen ones are copied bytewise.
      convertRecord(
        plan,
        buf,
        i * recordSize,
        out,
        i * dstSize,
        g,
        gAt,
        srcWords,
        dstWords,
        chosen ? undefined : pairWords,
      );
      if (toGuid) {
        if (chosen && !sameBytes(chosen, 0, pairs, sourceAt, GUID_SIZE)) {
          guidsChanged++;
          copyBytes(chosen, 0, storedPairs, sourceAt, GUID_SIZE);
        }
      } else {
        const stored = storedGuid(plan, chosen ?? pairs.subarray(sourceAt, sourceAt + GUID_SIZE));
        if (!sameBytes(stored, 0, pairs, sourceAt, GUID_SIZE)) {
          guidsChanged++;
          copyBytes(stored, 0, storedPairs, sourceAt, GUID_SIZE);
        }
      }
    }
    digest.update(storedPairs);
    if (pendingWrite) position += await pendingWrite;
    pendingWrite = writeFully(outFd, out, position);
  }
  if (pendingWrite) position += await pendingWrite;
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
