// The three things a Cyrus 2.3 server does to a mailbox's index while it
// serves mail, done the way 2.3.16 does them (cyrus-2.3-spool.md 1, 4, 9):
//
//   deliver   lmtpd/APPEND: header → index locked for the whole append;
//             `<uid>.` written, a cache record appended to cyrus.cache, the
//             record written IN PLACE after the last one, then the header
//             (EXISTS, LAST_UID, LAST_APPENDDATE, QUOTA_MAILBOX_USED,
//             HIGHESTMODSEQ) rewritten in place, fsync.
//   expunge   delayed EXPUNGE: header → index → expunge; the records are
//             appended to cyrus.expunge (created if absent, its header a copy
//             of the index's), then cyrus.index is rewritten through
//             cyrus.index.NEW and renamed over.
//   flag      STORE: SYSTEM_FLAGS (and MODSEQ under CONDSTORE) of one record
//             rewritten in place, with the header's flag counts; the file
//             keeps its size.
//
// Every operation re-reads the index header through the locked fd and writes
// at the version the file has NOW (6..10): guidup may have upgraded it while
// we waited for the lock. The files are opened before the locks are taken,
// as a Cyrus process opens a mailbox before locking it, so a file renamed
// over while we wait is caught by the inode re-check (posix-lock.ts).

import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  openSync,
  readSync,
  renameSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { encodeField, type FieldValue } from "../../src/cyrus/field-codec.js";
import type {
  HeaderFieldName,
  IndexFormat,
  RecordFieldName,
} from "../../src/cyrus/formats/index.js";
import type { ImapdConf } from "../../src/cyrus/imapd-conf.js";
import { type IndexHeader, parseIndexHeader } from "../../src/cyrus/index-file.js";
import { encodeRecord, type RecordValues } from "../../src/cyrus/index-writer.js";
import { mailboxDataDir, mailboxMetaDir } from "../../src/cyrus/mailbox-path.js";
import { buildMessage } from "../../src/spoolgen/messages.js";
import { hashString, Prng } from "../../src/spoolgen/prng.js";
import { type LockedFile, lockReopen, release } from "./posix-lock.js";

export interface MailboxFiles {
  dataDir: string;
  header: string;
  index: string;
  expunge: string;
  cache: string;
}

export function mailboxFiles(conf: ImapdConf, name: string): MailboxFiles {
  const p = conf.defaultPartition;
  const meta = (f: "header" | "index" | "cache" | "expunge") =>
    join(mailboxMetaDir(conf, name, p, f), `cyrus.${f}`);
  return {
    dataDir: mailboxDataDir(conf, name, p),
    header: meta("header"),
    index: meta("index"),
    expunge: meta("expunge"),
    cache: meta("cache"),
  };
}

/** What an operation cost in locks. */
export interface LockTiming {
  /** Milliseconds waited in F_SETLKW per file (0 when locks are ignored). */
  waitMs: { header: number; index: number; expunge?: number };
  /** From the last lock granted to the first unlock. */
  holdMs: number;
  /** Files found renamed over after their lock was granted (and re-opened). */
  reopened: string[];
  /** Index minor version found under the lock (the one written). */
  minor: number;
}

export interface DeliverResult extends LockTiming {
  uid: number;
  sha1: string;
  size: number;
  internalDate: number;
  /** v7–v9: the 12-byte UUID written, hex. */
  uuid?: string;
}

export interface ExpungeResult extends LockTiming {
  uids: number[];
}

export interface FlagResult extends LockTiming {
  uid: number;
  flags: number;
}

/** A refusal the writer journals instead of writing: the mailbox did not allow the op. */
export class OpRefused extends Error {}

const CACHE_VERSION = 2;
const OPT_CONDSTORE = 2;
const FLAG_ANSWERED = 1;
const FLAG_FLAGGED = 2;
const FLAG_DELETED = 4;

/** The message a delivery writes: a pure function of (seed, mailbox, uid, time). */
export function messageFor(seed: number, mailbox: string, uid: number, internalDate: number) {
  const prng = new Prng(hashString(`${seed}\0${mailbox}\0${uid}\0${internalDate}`));
  return buildMessage(prng, {
    from: { name: "Live Writer", address: "writer@example.net" },
    to: [{ name: "", address: "rcpt@example.org" }],
    cc: [],
    subject: `live traffic ${mailbox} ${uid}`,
    date: internalDate - 5,
    received: internalDate,
    messageId: `<live.${uid}.${prng.u32().toString(16)}@example.net>`,
    targetSize: prng.logInt(400, 4000),
    attachment: false,
  });
}

/** The v7–v9 UUID a delivery writes (replication carries it, so the replica writes the same). */
export function uuidFor(seed: number, mailbox: string, uid: number): Buffer {
  const h = createHash("sha1").update(`uuid\0${seed}\0${mailbox}\0${uid}`).digest();
  const out = Buffer.from(h.subarray(0, 12));
  out[0] = 1; // schema 1, as 2.3.0–2.3.9's message_uuid_assign wrote
  return out;
}

function pread(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new Error(`short read at ${position + done}`);
    done += n;
  }
  return buf;
}

function pwrite(fd: number, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, position + done);
}

/** The index header as it is now, read through the (locked) fd. */
function readHeader(fd: number, file: string): IndexHeader {
  const size = fstatSync(fd).size;
  return parseIndexHeader(pread(fd, Math.min(size, 96), 0), size, file);
}

function readRecords(fd: number, h: IndexHeader): Buffer {
  return h.exists === 0 ? Buffer.alloc(0) : pread(fd, h.exists * h.recordSize, h.startOffset);
}

function num(v: FieldValue | undefined): number {
  return typeof v === "bigint" ? Number(v) : ((v as number | undefined) ?? 0);
}

function big(v: FieldValue | undefined): bigint {
  return typeof v === "bigint" ? v : BigInt((v as number | undefined) ?? 0);
}

/** Sets header fields in a copy of `raw` (fields this version lacks are skipped). */
function patchHeader(
  format: IndexFormat,
  raw: Buffer,
  values: Partial<Record<HeaderFieldName, FieldValue>>,
): Buffer {
  const out = Buffer.from(raw);
  for (const [name, value] of Object.entries(values) as [HeaderFieldName, FieldValue][]) {
    const f = format.headerField(name);
    if (f) encodeField(f, value, out, 0);
  }
  return out;
}

function recordField(format: IndexFormat, rec: Buffer, at: number, name: RecordFieldName) {
  const f = format.recordField(name);
  if (!f) return undefined;
  return f.type === "u64" ? rec.readBigUInt64BE(at + f.offset) : rec.readUInt32BE(at + f.offset);
}

function setRecordField(
  format: IndexFormat,
  rec: Buffer,
  at: number,
  name: RecordFieldName,
  value: FieldValue,
) {
  const f = format.recordField(name);
  if (f) encodeField(f, value, rec, at);
}

interface Locked {
  header: LockedFile;
  index: LockedFile;
  expunge?: LockedFile;
  lockedAt: number;
}

/**
 * Opens header and index, then locks them in Cyrus's order with the inode
 * re-check. Both files are opened before either lock, as Cyrus has the
 * mailbox open before it locks it.
 */
function lockMailbox(files: MailboxFiles, ignoreLocks: boolean): Locked {
  const indexFd = openSync(files.index, "r+");
  let header: LockedFile;
  try {
    header = lockReopen(files.header, ignoreLocks);
  } catch (err) {
    closeSync(indexFd);
    throw err;
  }
  let index: LockedFile;
  try {
    index = lockReopen(files.index, ignoreLocks, indexFd);
  } catch (err) {
    release(header, ignoreLocks);
    throw err;
  }
  return { header, index, lockedAt: performance.now() };
}

function unlockMailbox(l: Locked, ignoreLocks: boolean): Omit<LockTiming, "minor"> {
  const holdMs = performance.now() - l.lockedAt;
  if (l.expunge) release(l.expunge, ignoreLocks);
  release(l.index, ignoreLocks);
  release(l.header, ignoreLocks);
  const reopened = [l.header, l.index, ...(l.expunge ? [l.expunge] : [])]
    .filter((f) => f.reopened > 0)
    .map((f) => f.path.slice(f.path.lastIndexOf("/") + 1));
  return {
    waitMs: {
      header: l.header.waitMs,
      index: l.index.waitMs,
      ...(l.expunge ? { expunge: l.expunge.waitMs } : {}),
    },
    holdMs,
    reopened,
  };
}

/** Runs `body` with the mailbox locked; unlocks whatever happens. */
function withMailboxLocked<T extends { minor: number }>(
  files: MailboxFiles,
  ignoreLocks: boolean,
  body: (l: Locked) => T,
): T & LockTiming {
  const l = lockMailbox(files, ignoreLocks);
  let value: T | undefined;
  let failure: unknown;
  let failed = false;
  try {
    value = body(l);
  } catch (err) {
    failed = true;
    failure = err;
  }
  const timing = unlockMailbox(l, ignoreLocks);
  if (failed || value === undefined) throw failure;
  return { ...value, ...timing, minor: value.minor };
}

export interface DeliverOptions {
  seed: number;
  ignoreLocks: boolean;
  /** Replay: the UID the master gave it (must be above LAST_UID here). */
  uid?: number;
  /** Replay: the master's INTERNALDATE, so the message bytes are the same. */
  internalDate?: number;
}

export function deliver(files: MailboxFiles, mailbox: string, o: DeliverOptions): DeliverResult {
  return withMailboxLocked(files, o.ignoreLocks, (l) => {
    const h = readHeader(l.index.fd, files.index);
    const format = h.format;
    const lastUid = num(h.values.get("lastUid"));
    const uid = o.uid ?? lastUid + 1;
    if (uid <= lastUid) throw new OpRefused(`uid ${uid} is not above LAST_UID ${lastUid}`);
    const internalDate = o.internalDate ?? Math.floor(Date.now() / 1000);
    const msg = messageFor(o.seed, mailbox, uid, internalDate);
    writeFileSync(join(files.dataDir, `${uid}.`), msg.bytes, { mode: 0o600 });
    // The cache record goes at the end of cyrus.cache (same generation).
    let cacheOffset = 4;
    if (existsSync(files.cache)) {
      const cfd = openSync(files.cache, "a");
      try {
        cacheOffset = fstatSync(cfd).size;
        writeSync(cfd, msg.cache);
      } finally {
        closeSync(cfd);
      }
    }
    const condstore = (num(h.values.get("options")) & OPT_CONDSTORE) !== 0;
    const highest = big(h.values.get("highestModseq"));
    const modseq = condstore ? highest + 1n : 1n;
    const sha1 = createHash("sha1").update(msg.bytes).digest();
    const values: RecordValues = {
      uid,
      internalDate,
      sentDate: msg.sentDate,
      size: msg.bytes.length,
      headerSize: msg.headerSize,
      contentOffset: msg.headerSize,
      cacheOffset,
      lastUpdated: internalDate,
      systemFlags: 0,
      contentLines: msg.contentLines,
      cacheVersion: CACHE_VERSION,
      modseq,
    };
    let uuid: Buffer | undefined;
    if (format.recordField("uuid")) {
      uuid = uuidFor(o.seed, mailbox, uid);
      values.uuid = uuid;
    }
    if (format.recordField("guid")) values.guid = sha1; // guid_mode: sha1 (2.3.10+)
    // mailbox_append_index: RECORD_SIZE bytes after the last record (over any crash leftovers).
    const record = Buffer.alloc(h.recordSize);
    encodeRecord(format, values).copy(record);
    pwrite(l.index.fd, record, h.startOffset + h.exists * h.recordSize);
    const header = patchHeader(format, h.raw, {
      exists: h.exists + 1,
      lastUid: uid,
      lastAppendDate: internalDate,
      quotaUsed: big(h.values.get("quotaUsed")) + BigInt(msg.bytes.length),
      ...(condstore ? { highestModseq: modseq } : {}),
    });
    pwrite(l.index.fd, header, 0);
    fsyncSync(l.index.fd);
    return {
      minor: h.minorVersion,
      uid,
      sha1: sha1.toString("hex"),
      size: msg.bytes.length,
      internalDate,
      ...(uuid ? { uuid: uuid.toString("hex") } : {}),
    };
  });
}

export interface ExpungeOptions {
  ignoreLocks: boolean;
  /** Replay: exactly these UIDs. Otherwise `pick` chooses among the records. */
  uids?: number[];
  pick?: (uids: number[]) => number[];
}

export function expunge(files: MailboxFiles, o: ExpungeOptions): ExpungeResult {
  return withMailboxLocked(files, o.ignoreLocks, (l) => {
    const h = readHeader(l.index.fd, files.index);
    const format = h.format;
    const recs = readRecords(l.index.fd, h);
    const all: number[] = [];
    for (let i = 0; i < h.exists; i++) all.push(recs.readUInt32BE(i * h.recordSize));
    const uids = o.uids ?? o.pick?.(all) ?? [];
    if (uids.length === 0) throw new OpRefused("nothing to expunge");
    const gone = new Set(uids);
    for (const u of uids)
      if (!all.includes(u)) throw new OpRefused(`uid ${u} is not in cyrus.index`);
    const now = Math.floor(Date.now() / 1000);
    // mailbox_expunge opens (creating) cyrus.expunge before the lock, then lock_reopen.
    if (!existsSync(files.expunge)) closeSync(openSync(files.expunge, "a", 0o600));
    l.expunge = lockReopen(files.expunge, o.ignoreLocks);
    const efd = l.expunge.fd;
    const eSize = fstatSync(efd).size;
    // Geometry comes from cyrus.index (spool doc 4); a 0-byte file gets a header now.
    let eHeader: Buffer;
    let eExists = 0;
    let eQuota = 0n;
    let eCounts = { deleted: 0, answered: 0, flagged: 0 };
    if (eSize === 0) {
      eHeader = patchHeader(format, h.raw, {
        exists: 0,
        quotaUsed: 0n,
        deleted: 0,
        answered: 0,
        flagged: 0,
        leakedCache: 0,
      });
    } else {
      eHeader = pread(efd, h.startOffset, 0);
      eExists = eHeader.readUInt32BE(20);
      const fields = (n: HeaderFieldName) => {
        const f = format.headerField(n);
        return f
          ? f.type === "u64"
            ? eHeader.readBigUInt64BE(f.offset)
            : eHeader.readUInt32BE(f.offset)
          : 0;
      };
      eQuota = big(fields("quotaUsed"));
      eCounts = {
        deleted: num(fields("deleted")),
        answered: num(fields("answered")),
        flagged: num(fields("flagged")),
      };
    }
    const keep: Buffer[] = [];
    const moved: Buffer[] = [];
    let movedBytes = 0n;
    const movedFlags = { deleted: 0, answered: 0, flagged: 0 };
    for (let i = 0; i < h.exists; i++) {
      const rec = Buffer.from(recs.subarray(i * h.recordSize, (i + 1) * h.recordSize));
      if (!gone.has(rec.readUInt32BE(0))) {
        keep.push(rec);
        continue;
      }
      setRecordField(format, rec, 0, "lastUpdated", now);
      const flags = num(recordField(format, rec, 0, "systemFlags"));
      if (flags & FLAG_DELETED) movedFlags.deleted++;
      if (flags & FLAG_ANSWERED) movedFlags.answered++;
      if (flags & FLAG_FLAGGED) movedFlags.flagged++;
      movedBytes += BigInt(num(recordField(format, rec, 0, "size")));
      moved.push(rec);
    }
    // "For now, we just append to the end of the file."
    pwrite(efd, Buffer.concat(moved), h.startOffset + eExists * h.recordSize);
    const newEHeader = patchHeader(format, eHeader, {
      exists: eExists + moved.length,
      quotaUsed: eQuota + movedBytes,
      deleted: eCounts.deleted + movedFlags.deleted,
      answered: eCounts.answered + movedFlags.answered,
      flagged: eCounts.flagged + movedFlags.flagged,
      lastAppendDate: now,
    });
    pwrite(efd, newEHeader, 0);
    fsyncSync(efd);
    // The index without them, through cyrus.index.NEW, renamed over while locked.
    const newIndex = Buffer.concat([
      patchHeader(format, h.raw, {
        exists: keep.length,
        quotaUsed: big(h.values.get("quotaUsed")) - movedBytes,
        deleted: num(h.values.get("deleted")) - movedFlags.deleted,
        answered: num(h.values.get("answered")) - movedFlags.answered,
        flagged: num(h.values.get("flagged")) - movedFlags.flagged,
      }),
      ...keep,
    ]);
    const tmp = `${files.index}.NEW`;
    const nfd = openSync(tmp, "w", 0o600);
    try {
      pwrite(nfd, newIndex, 0);
      fsyncSync(nfd);
    } finally {
      closeSync(nfd);
    }
    renameSync(tmp, files.index);
    return { minor: h.minorVersion, uids };
  });
}

export interface FlagOptions {
  ignoreLocks: boolean;
  /** Replay: this record gets exactly `flags`. Otherwise `pick` chooses (uid, new flags). */
  uid?: number;
  flags?: number;
  pick?: (records: { uid: number; flags: number }[]) => { uid: number; flags: number } | undefined;
}

export function setFlags(files: MailboxFiles, o: FlagOptions): FlagResult {
  return withMailboxLocked(files, o.ignoreLocks, (l) => {
    const h = readHeader(l.index.fd, files.index);
    const format = h.format;
    const recs = readRecords(l.index.fd, h);
    const list: { uid: number; flags: number }[] = [];
    for (let i = 0; i < h.exists; i++)
      list.push({
        uid: recs.readUInt32BE(i * h.recordSize),
        flags: num(recordField(format, recs, i * h.recordSize, "systemFlags")),
      });
    const chosen = o.uid !== undefined ? { uid: o.uid, flags: o.flags ?? 0 } : o.pick?.(list);
    if (!chosen) throw new OpRefused("no record to flag");
    const i = list.findIndex((r) => r.uid === chosen?.uid);
    if (i < 0) throw new OpRefused(`uid ${chosen.uid} is not in cyrus.index`);
    const old = (list[i] as { flags: number }).flags;
    const at = i * h.recordSize;
    const rec = Buffer.from(recs.subarray(at, at + h.recordSize));
    const now = Math.floor(Date.now() / 1000);
    const condstore = (num(h.values.get("options")) & OPT_CONDSTORE) !== 0;
    const modseq = big(h.values.get("highestModseq")) + 1n;
    setRecordField(format, rec, 0, "systemFlags", chosen.flags);
    setRecordField(format, rec, 0, "lastUpdated", now);
    if (condstore) setRecordField(format, rec, 0, "modseq", modseq);
    const delta = (bit: number) => (chosen.flags & bit ? 1 : 0) - (old & bit ? 1 : 0);
    const header = patchHeader(format, h.raw, {
      answered: num(h.values.get("answered")) + delta(FLAG_ANSWERED),
      flagged: num(h.values.get("flagged")) + delta(FLAG_FLAGGED),
      deleted: num(h.values.get("deleted")) + delta(FLAG_DELETED),
      ...(condstore ? { highestModseq: modseq } : {}),
    });
    pwrite(l.index.fd, rec, h.startOffset + at);
    pwrite(l.index.fd, header, 0);
    fsyncSync(l.index.fd);
    return { minor: h.minorVersion, uid: chosen.uid, flags: chosen.flags };
  });
}
