// Reading cyrus.index and cyrus.expunge files (cyrus-2.3-spool.md 1.5).
//
// Version first: the minor version at offset 8 picks the table (a version
// past 10 is called newer only when its header geometry is what that Cyrus
// writes; otherwise the file is corrupt or not an index), then the
// header is checked against it (START_OFFSET, RECORD_SIZE, file length ≥
// START_OFFSET + EXISTS × RECORD_SIZE) before any record is read. Records are
// streamed in large chunks, so a mailbox of a million messages never needs the
// whole file in memory. Reads only, takes no lock: callers that need a stable
// view (the agent's upgrade) open and lock the file first and pass the fd.

import {
  close as closeCb,
  closeSync,
  fstat as fstatCb,
  fstatSync,
  open as openCb,
  openSync,
  read as readCb,
  readSync,
} from "node:fs";
import { promisify } from "node:util";
import { CyrusFormatError, ERRORS, type ErrorCode, FileAccessError } from "../errors.js";
import { decodeFields, type FieldValue } from "./field-codec.js";
import {
  formatFor,
  type HeaderFieldName,
  type IndexFormat,
  OLDEST_READABLE_MINOR,
  type RecordFieldName,
  TARGET_MINOR,
} from "./formats/index.js";

const read = promisify(readCb);
const close = promisify(closeCb);
const fstat = promisify(fstatCb);
const open = promisify(openCb);

/**
 * Bytes of records read per chunk: few syscalls, and little memory in flight
 * (one chunk being converted, one read ahead, one being written).
 */
export const READ_CHUNK_BYTES = 1 << 20;

/** Offsets of the fields that find the format; the same in every version. */
const MINOR_VERSION_AT = 8;
const START_OFFSET_AT = 12;
const RECORD_SIZE_AT = 16;
const EXISTS_AT = 20;
const GEOMETRY_BYTES = 24;
/** Largest header any version has: enough to read before picking a table. */
const MAX_HEADER_BYTES = 96;

export type IndexKind = "index" | "expunge";

/**
 * The first minor a released Cyrus wrote after 10: 2.4.0 wrote 12. Minor 11
 * was FastMail-internal and never released (cyrus-2.3-spool.md 0.1), so it is
 * unknown, not "newer".
 */
const FIRST_NEWER_MINOR = 12;

/**
 * START_OFFSET and RECORD_SIZE of each index version Cyrus 2.4 and later
 * write (the format tables of Cyrus::IndexFile, versions 12–20). A header
 * claiming one of these versions with other geometry is damaged, not newer.
 */
const NEWER_GEOMETRY: ReadonlyMap<number, { startOffset: number; recordSize: number }> = new Map([
  [12, { startOffset: 128, recordSize: 96 }],
  [13, { startOffset: 128, recordSize: 104 }],
  [14, { startOffset: 160, recordSize: 104 }],
  [15, { startOffset: 160, recordSize: 104 }],
  [16, { startOffset: 160, recordSize: 112 }],
  [17, { startOffset: 160, recordSize: 112 }],
  [18, { startOffset: 160, recordSize: 112 }],
  [19, { startOffset: 160, recordSize: 112 }],
  [20, { startOffset: 192, recordSize: 144 }],
]);
const LAST_KNOWN_NEWER_MINOR = 20;
/**
 * Versions past the last known one that a later Cyrus could still have
 * written; anything above is not a version at all (text, a cyrus.header, a
 * message file, overwritten bytes).
 */
const MAX_PLAUSIBLE_MINOR = 99;
/** Geometry a version after 20 could plausibly have: at least v20's, 4-aligned, not absurd. */
const MAX_PLAUSIBLE_SIZE = 4096;

/**
 * A file that is not a Cyrus index at all, or an index whose header is
 * damaged: what to do is the same (look at the file; run reconstruct), and it
 * must never be taken for an index a newer Cyrus wrote.
 */
export class CorruptIndexError extends CyrusFormatError {
  override readonly code: ErrorCode = ERRORS.cyrusCorrupt.code;
}

/**
 * Checks the header of a version guidup does not read before it may be
 * called newer (minor ≥ 12): a known version's exact START_OFFSET and
 * RECORD_SIZE, a later one's plausible geometry, and a file long enough for
 * the records the header counts. Throws CorruptIndexError, else returns.
 */
function checkNewerHeader(head: Buffer, fileSize: number, file: string, minor: number): void {
  if (minor > MAX_PLAUSIBLE_MINOR) {
    const text = JSON.stringify(
      head.subarray(MINOR_VERSION_AT, MINOR_VERSION_AT + 4).toString("latin1"),
    );
    throw new CorruptIndexError(
      `${file}: not a Cyrus index file: its version field (bytes 8–11, ${text}) reads ${minor}, which no Cyrus writes; if this is a mailbox's cyrus.index it is damaged: run reconstruct`,
      { file, minor },
    );
  }
  const startOffset = head.readUInt32BE(START_OFFSET_AT);
  const recordSize = head.readUInt32BE(RECORD_SIZE_AT);
  const known = NEWER_GEOMETRY.get(minor);
  const last = NEWER_GEOMETRY.get(LAST_KNOWN_NEWER_MINOR) as {
    startOffset: number;
    recordSize: number;
  };
  const plausible = (value: number, least: number) =>
    value >= least && value <= MAX_PLAUSIBLE_SIZE && value % 4 === 0;
  const geometryOk = known
    ? startOffset === known.startOffset && recordSize === known.recordSize
    : plausible(startOffset, last.startOffset) && plausible(recordSize, last.recordSize);
  if (!geometryOk) {
    const expected = known
      ? `version ${minor} has start offset ${known.startOffset} and record size ${known.recordSize}`
      : `a version after ${LAST_KNOWN_NEWER_MINOR} would have at least ${last.startOffset} and ${last.recordSize}`;
    throw new CorruptIndexError(
      `${file}: corrupt index header: it says version ${minor} (Cyrus 2.4 or later) with start offset ${startOffset} and record size ${recordSize}, but ${expected}; run reconstruct`,
      { file, minor, startOffset, recordSize },
    );
  }
  // From version 12 on, offset 20 counts every record in the file (NUM_RECORDS).
  const records = head.readUInt32BE(EXISTS_AT);
  const needed = startOffset + records * recordSize;
  if (fileSize < needed) {
    throw new CorruptIndexError(
      `${file}: corrupt index: its version ${minor} header counts ${records} records (${needed} bytes) but the file has ${fileSize} bytes; run reconstruct`,
      { file, minor },
    );
  }
}

/** A minor version guidup does not read: unknown, or written by Cyrus 2.4+. */
export class UnsupportedVersionError extends CyrusFormatError {
  override readonly code: ErrorCode = ERRORS.cyrusVersion.code;
  constructor(
    readonly file: string,
    readonly minor: number,
  ) {
    super(
      minor >= FIRST_NEWER_MINOR
        ? `${file}: index version ${minor} is newer than ${TARGET_MINOR} (written by Cyrus 2.4 or later); guidup leaves it alone`
        : `${file}: unknown index version ${minor} (guidup reads ${OLDEST_READABLE_MINOR}..${TARGET_MINOR}); run reconstruct`,
      { file, minor },
    );
  }
  /** Written by Cyrus 2.4 or later (minor ≥ 12): already past the upgrade. */
  get newer(): boolean {
    return this.minor >= FIRST_NEWER_MINOR;
  }
}

export interface IndexHeader {
  readonly format: IndexFormat;
  readonly minorVersion: number;
  readonly startOffset: number;
  readonly recordSize: number;
  readonly exists: number;
  /** Every header field of this version, by name. */
  readonly values: ReadonlyMap<HeaderFieldName, FieldValue>;
  /** The header bytes as on disk ([0, START_OFFSET)). */
  readonly raw: Buffer;
}

/**
 * Parses and checks a header. `head` holds the first bytes of the file (at
 * least min(fileSize, 96)); `fileSize` is the length of the whole file.
 */
export function parseIndexHeader(head: Buffer, fileSize: number, file: string): IndexHeader {
  if (fileSize === 0) throw new CyrusFormatError(`${file}: empty file (0 bytes)`, { file });
  if (fileSize < GEOMETRY_BYTES || head.length < GEOMETRY_BYTES) {
    throw new CyrusFormatError(`${file}: truncated header (${fileSize} bytes)`, { file });
  }
  const minor = head.readUInt32BE(MINOR_VERSION_AT);
  const format = formatFor(minor);
  if (format === undefined) {
    if (minor >= FIRST_NEWER_MINOR) checkNewerHeader(head, fileSize, file, minor);
    throw new UnsupportedVersionError(file, minor);
  }
  const startOffset = head.readUInt32BE(START_OFFSET_AT);
  const recordSize = head.readUInt32BE(RECORD_SIZE_AT);
  const exists = head.readUInt32BE(EXISTS_AT);
  if (fileSize < format.headerSize || head.length < format.headerSize) {
    throw new CyrusFormatError(
      `${file}: truncated header: ${fileSize} bytes, version ${minor} needs ${format.headerSize}`,
      { file },
    );
  }
  if (startOffset !== format.headerSize) {
    throw new CyrusFormatError(
      `${file}: start offset ${startOffset} does not match version ${minor} (expected ${format.headerSize}); run reconstruct`,
      { file },
    );
  }
  if (recordSize !== format.recordSize) {
    throw new CyrusFormatError(
      `${file}: record size ${recordSize} does not match version ${minor} (expected ${format.recordSize}); run reconstruct`,
      { file },
    );
  }
  const needed = startOffset + exists * recordSize;
  if (fileSize < needed) {
    throw new CyrusFormatError(
      `${file}: truncated: header says ${exists} records (${needed} bytes) but the file has ${fileSize} bytes`,
      { file },
    );
  }
  const raw = Buffer.from(head.subarray(0, startOffset));
  return {
    format,
    minorVersion: minor,
    startOffset,
    recordSize,
    exists,
    values: decodeFields(format.headerFields, raw, 0),
    raw,
  };
}

/** The minor version of a header, or undefined if the file is too short to tell. */
export function peekMinorVersion(head: Buffer): number | undefined {
  return head.length >= MINOR_VERSION_AT + 4 ? head.readUInt32BE(MINOR_VERSION_AT) : undefined;
}

export interface OpenOptions {
  /** "index" checks UIDs ascend; "expunge" allows any order and repeats. */
  kind?: IndexKind;
}

/**
 * An open index or expunge file. Opened from a path it owns its fd; opened from
 * an fd (a locked file) it never closes it, because closing any fd of a file
 * can drop the process's fcntl locks on it.
 */
export class IndexReader {
  private constructor(
    readonly file: string,
    readonly fd: number,
    private readonly ownsFd: boolean,
    readonly header: IndexHeader,
    readonly kind: IndexKind,
    readonly fileSize: number,
  ) {}

  static async open(path: string, options: OpenOptions = {}): Promise<IndexReader> {
    let fd: number;
    try {
      fd = await open(path, "r");
    } catch (err) {
      throw fileAccessError(path, err);
    }
    try {
      return await IndexReader.fromFd(fd, path, options, true);
    } catch (err) {
      await close(fd);
      throw err;
    }
  }

  /**
   * open() with synchronous calls, for many small files in a row (guidup
   * hash reads thousands of indexes of a few kB: four thread-pool round trips
   * each cost more than the reads). Close with closeSync().
   */
  static openSync(path: string, options: OpenOptions = {}): IndexReader {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (err) {
      throw fileAccessError(path, err);
    }
    try {
      const size = fstatSync(fd).size;
      const head = Buffer.alloc(Math.min(size, MAX_HEADER_BYTES));
      readFullySync(fd, head, 0, path);
      const header = parseIndexHeader(head, size, path);
      return new IndexReader(path, fd, true, header, options.kind ?? "index", size);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Reads the header through an fd the caller keeps open (and may have locked). */
  static async fromFd(
    fd: number,
    file: string,
    options: OpenOptions = {},
    ownsFd = false,
  ): Promise<IndexReader> {
    const stat = await fstat(fd);
    const head = Buffer.alloc(Math.min(stat.size, MAX_HEADER_BYTES));
    await readFully(fd, head, 0, file);
    const header = parseIndexHeader(head, stat.size, file);
    return new IndexReader(file, fd, ownsFd, header, options.kind ?? "index", stat.size);
  }

  get format(): IndexFormat {
    return this.header.format;
  }

  /**
   * Streams the records in chunks of whole records. Each chunk is a fresh
   * buffer of `n × RECORD_SIZE` bytes. Bytes after EXISTS records (crash
   * leftovers) are not records and are never read. UIDs are checked on the
   * way: non-zero everywhere, strictly ascending and ≤ LAST_UID in cyrus.index
   * (2.3 binary-searches them; a violation needs reconstruct, not a fix).
   *
   * With `reuse`, a chunk's buffer is only valid until the next chunk is
   * asked for: two buffers take turns (one read ahead, one with the caller)
   * instead of a new one per chunk, which for a large file saves the page
   * faults of fresh memory on every chunk (the converter's case: it copies
   * each chunk out before asking for the next).
   */
  async *chunks(chunkBytes = READ_CHUNK_BYTES, reuse = false): AsyncGenerator<RecordChunk> {
    const { startOffset, recordSize, exists } = this.header;
    const perChunk = Math.max(1, Math.floor(chunkBytes / recordSize));
    const check = this.#uidChecker();
    const spare: Buffer[] = [];
    const readChunk = (first: number) => {
      const count = Math.min(perChunk, exists - first);
      const recycled = spare.pop();
      const buf =
        recycled !== undefined && recycled.length >= count * recordSize
          ? recycled.subarray(0, count * recordSize)
          : Buffer.allocUnsafe(count * recordSize);
      return readFully(this.fd, buf, startOffset + first * recordSize, this.file).then(() => buf);
    };
    // Read-ahead: the next chunk is read while the caller works on this one.
    let next: Promise<Buffer> | undefined = exists > 0 ? readChunk(0) : undefined;
    let handedOut: Buffer | undefined;
    for (let first = 0; first < exists; first += perChunk) {
      const count = Math.min(perChunk, exists - first);
      const buf = await (next as Promise<Buffer>);
      // The caller asked for this chunk, so it is done with the previous one.
      if (reuse && handedOut !== undefined) spare.push(handedOut);
      handedOut = buf;
      next = first + perChunk < exists ? readChunk(first + perChunk) : undefined;
      // A read-ahead the caller never asks for must not reject unhandled.
      next?.catch(() => {});
      check(buf, first, count);
      yield { first, count, recordSize, buf };
    }
  }

  /** chunks() with synchronous reads (for a reader from openSync). */
  *chunksSync(chunkBytes = READ_CHUNK_BYTES): Generator<RecordChunk> {
    const { startOffset, recordSize, exists } = this.header;
    const perChunk = Math.max(1, Math.floor(chunkBytes / recordSize));
    const check = this.#uidChecker();
    for (let first = 0; first < exists; first += perChunk) {
      const count = Math.min(perChunk, exists - first);
      const buf = Buffer.allocUnsafe(count * recordSize);
      readFullySync(this.fd, buf, startOffset + first * recordSize, this.file);
      check(buf, first, count);
      yield { first, count, recordSize, buf };
    }
  }

  /**
   * The UID checks of chunks(), fed one chunk after another: non-zero
   * everywhere, strictly ascending and ≤ LAST_UID in cyrus.index (2.3
   * binary-searches them; a violation needs reconstruct, not a fix).
   */
  #uidChecker(): (buf: Buffer, first: number, count: number) => void {
    const { recordSize } = this.header;
    const lastUid = this.header.values.get("lastUid") as number;
    let previousUid = 0;
    return (buf, first, count) => {
      for (let i = 0; i < count; i++) {
        const uid = buf.readUInt32BE(i * recordSize);
        const msgno = first + i + 1;
        if (uid === 0) {
          throw new CyrusFormatError(`${this.file}: record ${msgno} has UID 0; run reconstruct`, {
            file: this.file,
          });
        }
        if (this.kind === "index") {
          if (uid <= previousUid) {
            throw new CyrusFormatError(
              `${this.file}: record ${msgno} has UID ${uid} after UID ${previousUid} (UIDs must ascend); run reconstruct`,
              { file: this.file },
            );
          }
          if (uid > lastUid) {
            throw new CyrusFormatError(
              `${this.file}: record ${msgno} has UID ${uid} above LAST_UID ${lastUid}; run reconstruct`,
              { file: this.file },
            );
          }
        }
        previousUid = uid;
      }
    };
  }

  /** Every record decoded by name: for inspect and tests, not for hot paths. */
  async *records(): AsyncGenerator<IndexRecord> {
    for await (const chunk of this.chunks()) {
      for (let i = 0; i < chunk.count; i++) {
        yield decodeRecord(this.format, chunk.buf, i * chunk.recordSize);
      }
    }
  }

  async close(): Promise<void> {
    if (this.ownsFd) await close(this.fd);
  }

  closeSync(): void {
    if (this.ownsFd) closeSync(this.fd);
  }
}

export interface RecordChunk {
  /** 0-based index of the first record in the file. */
  readonly first: number;
  readonly count: number;
  readonly recordSize: number;
  readonly buf: Buffer;
}

export type IndexRecord = ReadonlyMap<RecordFieldName, FieldValue>;

export function decodeRecord(format: IndexFormat, buf: Buffer, at: number): IndexRecord {
  return decodeFields(format.recordFields, buf, at);
}

/** A file that ended before the bytes its header promised (truncated under us). */
function shrankError(file: string, at: number): CyrusFormatError {
  return new CyrusFormatError(`${file}: file shrank while reading (at byte ${at})`, { file });
}

async function readFully(fd: number, buf: Buffer, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await read(fd, buf, done, buf.length - done, position + done));
    } catch (err) {
      throw fileAccessError(file, err);
    }
    if (bytesRead === 0) throw shrankError(file, position + done);
    done += bytesRead;
  }
}

function readFullySync(fd: number, buf: Buffer, position: number, file: string): void {
  let done = 0;
  while (done < buf.length) {
    let bytesRead: number;
    try {
      bytesRead = readSync(fd, buf, done, buf.length - done, position + done);
    } catch (err) {
      throw fileAccessError(file, err);
    }
    if (bytesRead === 0) throw shrankError(file, position + done);
    done += bytesRead;
  }
}

export function fileAccessError(file: string, err: unknown): FileAccessError {
  const code = (err as NodeJS.ErrnoException).code;
  const what =
    code === "ENOENT"
      ? "no such file"
      : code === "EACCES"
        ? "permission denied"
        : code === "ENOSPC"
          ? "no space left on device"
          : (err as Error).message;
  return new FileAccessError(`${file}: ${what}`, { file, errno: code });
}
