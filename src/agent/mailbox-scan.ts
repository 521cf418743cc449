// Reading one mailbox's index and expunge files into the facts the plan and
// the apply engine decide on: versions, counts, old-style GUIDs, digests and
// a fingerprint. Used without locks by `scan` (like imapd, which reads
// without locks too) and under locks by `lock`, through the locked fds.

import { createHash, type Hash } from "node:crypto";
import { compileRecordPlan, PAIR_BYTES, writeGuidPair } from "../cyrus/convert.js";
import type { FieldValue } from "../cyrus/field-codec.js";
import { isNullGuid, isOldStyleGuid } from "../cyrus/guid.js";
import { type IndexKind, IndexReader, type RecordChunk } from "../cyrus/index-file.js";
import type { FileFacts, MailboxScan } from "../protocol/messages.js";
import { plannedSet } from "./planned-set.js";

/** An old-style record: its GUID must be computed from the message file. */
export interface GuidNeed {
  uid: number;
  size: number;
}

export interface FileRead {
  facts: FileFacts;
  /** Old-style records (index and expunge may name the same UID). */
  needs: GuidNeed[];
  /** SHA1 over the UID list in file order. */
  uidsDigest: string;
  /** SHA1 over (uid, GUID as 20 bytes) in file order. */
  guidDigest: string;
  /** The (uid, GUID) pairs in file order, when asked for (the planned set). */
  pairs?: Buffer;
}

/**
 * Reads every record of one file (through `reader`, which the caller closes)
 * and feeds the fingerprint hash with what the plan depends on.
 */
export async function readFileFacts(
  reader: IndexReader,
  fingerprint: Hash,
  collectNeeds = true,
  collectPairs = false,
): Promise<FileRead> {
  const facts = new FileFactsBuilder(reader, fingerprint, collectNeeds, collectPairs);
  for await (const chunk of reader.chunks()) facts.add(chunk);
  return facts.finish();
}

/** readFileFacts through synchronous reads (a reader from IndexReader.openSync). */
export function readFileFactsSync(
  reader: IndexReader,
  fingerprint: Hash,
  collectNeeds = true,
  collectPairs = false,
): FileRead {
  const facts = new FileFactsBuilder(reader, fingerprint, collectNeeds, collectPairs);
  for (const chunk of reader.chunksSync()) facts.add(chunk);
  return facts.finish();
}

/** What readFileFacts gathers, fed one chunk of records at a time. */
class FileFactsBuilder {
  readonly #plan: ReturnType<typeof compileRecordPlan>;
  readonly #uids = createHash("sha1");
  readonly #guids = createHash("sha1");
  // Empty when not collected: under the locks with prepared GUIDs, a million
  // small objects would only feed the garbage collector inside the window.
  readonly #needs: GuidNeed[] = [];
  readonly #pairChunks: Buffer[] = [];
  #oldStyle = 0;
  #nullGuids = 0;
  #oldStyleBytes = 0;

  constructor(
    private readonly reader: IndexReader,
    private readonly fingerprint: Hash,
    private readonly collectNeeds: boolean,
    private readonly collectPairs: boolean,
  ) {
    const { format, values } = reader.header;
    this.#plan = compileRecordPlan(format, format);
    const minorBytes = Buffer.alloc(4);
    minorBytes.writeUInt32BE(format.minor);
    fingerprint
      .update(reader.kind)
      .update(minorBytes)
      .update(u32(values.get("uidValidity")));
  }

  add(chunk: RecordChunk): void {
    // Hash whole chunks, not records: one native call per chunk instead of
    // five per record is what keeps a 100,000-record read short under a lock.
    const uidList = Buffer.allocUnsafe(chunk.count * 4);
    const pairs = Buffer.allocUnsafe(chunk.count * PAIR_BYTES);
    for (let i = 0; i < chunk.count; i++) {
      const at = i * chunk.recordSize;
      writeGuidPair(this.#plan, chunk.buf, at, pairs, i * PAIR_BYTES);
      for (let k = 0; k < 4; k++) uidList[i * 4 + k] = pairs[i * PAIR_BYTES + k] as number;
      if (isOldStyleGuid(pairs, i * PAIR_BYTES + 4)) {
        const size = chunk.buf.readUInt32BE(at + 12);
        this.#oldStyle++;
        if (this.collectNeeds) this.#needs.push({ uid: chunk.buf.readUInt32BE(at), size });
        this.#oldStyleBytes += size;
        if (isNullGuid(pairs, i * PAIR_BYTES + 4)) this.#nullGuids++;
      }
    }
    this.#uids.update(uidList);
    this.#guids.update(pairs);
    this.fingerprint.update(pairs);
    if (this.collectPairs) this.#pairChunks.push(pairs);
  }

  finish(): FileRead {
    const { format, values } = this.reader.header;
    const highestModseq = values.get("highestModseq");
    const facts: FileFacts = {
      minor: format.minor,
      records: this.reader.header.exists,
      oldStyle: this.#oldStyle,
      nullGuids: this.#nullGuids,
      oldStyleBytes: this.#oldStyleBytes,
      lastUid: values.get("lastUid") as number,
      uidValidity: values.get("uidValidity") as number,
      ...(highestModseq === undefined ? {} : { highestModseq: String(highestModseq) }),
    };
    return {
      facts,
      needs: this.#needs,
      uidsDigest: this.#uids.digest("hex"),
      guidDigest: this.#guids.digest("hex"),
      ...(this.collectPairs ? { pairs: Buffer.concat(this.#pairChunks) } : {}),
    };
  }
}

function u32(value: FieldValue | undefined): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(typeof value === "number" ? value : 0);
  return b;
}

export interface MailboxRead {
  scan: MailboxScan;
  index: FileRead;
  expunge?: FileRead;
}

/** Opens (by path or by locked fd) one file for reading. */
export type FileSource = { path: string; fd?: number; kind: IndexKind };

async function openSource(source: FileSource): Promise<IndexReader> {
  return source.fd === undefined
    ? IndexReader.open(source.path, { kind: source.kind })
    : IndexReader.fromFd(source.fd, source.path, { kind: source.kind });
}

/**
 * Reads index and (if given) expunge. Errors propagate (CyrusFormatError,
 * FileAccessError, UnsupportedVersionError): the caller decides whether that
 * makes the mailbox unreadable, missing or newer.
 */
export async function readMailbox(
  name: string,
  index: FileSource,
  expunge: FileSource | undefined,
  collectNeeds = true,
  /** Also compute the planned set cut at the index's own LAST_UID (for a plan). */
  withPlannedSet = false,
): Promise<MailboxRead> {
  const fingerprint = createHash("sha1").update(name);
  const indexReader = await openSource(index);
  let indexRead: FileRead;
  try {
    indexRead = await readFileFacts(indexReader, fingerprint, collectNeeds, withPlannedSet);
  } finally {
    await indexReader.close();
  }
  let expungeRead: FileRead | undefined;
  if (expunge) {
    const reader = await openSource(expunge);
    try {
      expungeRead = await readFileFacts(reader, fingerprint, collectNeeds, withPlannedSet);
    } finally {
      await reader.close();
    }
  }
  return mailboxRead(name, fingerprint, indexRead, expungeRead, withPlannedSet);
}

/**
 * readMailbox by path with synchronous calls, for small files read without
 * locks (a plan's scan of thousands of mailboxes of a few kB: the thread-pool
 * round trips of open, fstat, read and close cost more than the reads).
 */
export function readMailboxSync(
  name: string,
  indexPath: string,
  expungePath: string | undefined,
  withPlannedSet = false,
): MailboxRead {
  const fingerprint = createHash("sha1").update(name);
  const read = (path: string, kind: IndexKind) => {
    const reader = IndexReader.openSync(path, { kind });
    try {
      return readFileFactsSync(reader, fingerprint, true, withPlannedSet);
    } finally {
      reader.closeSync();
    }
  };
  const indexRead = read(indexPath, "index");
  const expungeRead = expungePath === undefined ? undefined : read(expungePath, "expunge");
  return mailboxRead(name, fingerprint, indexRead, expungeRead, withPlannedSet);
}

function mailboxRead(
  name: string,
  fingerprint: Hash,
  indexRead: FileRead,
  expungeRead: FileRead | undefined,
  withPlannedSet: boolean,
): MailboxRead {
  return {
    index: indexRead,
    ...(expungeRead ? { expunge: expungeRead } : {}),
    scan: {
      name,
      status: "ok",
      index: indexRead.facts,
      ...(expungeRead ? { expunge: expungeRead.facts } : {}),
      fingerprint: fingerprint.digest("hex"),
      uidsDigest: indexRead.uidsDigest,
      guidDigest: indexRead.guidDigest,
      ...(withPlannedSet && indexRead.pairs
        ? {
            planned: plannedSet(indexRead.pairs, expungeRead?.pairs, indexRead.facts.lastUid),
          }
        : {}),
    },
  };
}
