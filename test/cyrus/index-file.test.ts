// IndexReader and parseIndexHeader on real files in a temp dir: every kind of
// bad input is refused with an error naming the file and the problem, leaves
// the file and its directory untouched and no fd open; chunked reading yields
// the same records whatever the chunk size.

import { open as openFd, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatFor, type IndexFormat } from "../../src/cyrus/formats/index.js";
import {
  CorruptIndexError,
  type IndexKind,
  IndexReader,
  type IndexRecord,
  parseIndexHeader,
  peekMinorVersion,
  READ_CHUNK_BYTES,
  UnsupportedVersionError,
} from "../../src/cyrus/index-file.js";
import {
  encodeHeader,
  encodeIndexFile,
  type HeaderValues,
  type RecordValues,
} from "../../src/cyrus/index-writer.js";
import { CyrusFormatError, FileAccessError } from "../../src/errors.js";
import { makeTempDir } from "../helpers/fixtures.js";

function format(minor: number): IndexFormat {
  const f = formatFor(minor);
  if (f === undefined) throw new Error(`no format ${minor}`);
  return f;
}

const V10 = format(10);

/** `n` records with UIDs 1..n (or the given ones) and recognisable field values. */
function records(uids: readonly number[]): RecordValues[] {
  return uids.map((uid, i) => ({
    uid,
    internalDate: 1_230_000_000 + i,
    size: 1000 + i,
    headerSize: 400 + i,
    contentOffset: 400 + i,
    systemFlags: i % 16,
    userFlags3: i,
    guid: Buffer.alloc(20, i + 1),
    modseq: BigInt(i + 1),
  }));
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

let dir = "";
let cleanup: () => Promise<void> = async () => {};
let counter = 0;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir("guidup-index-file-"));
});
afterAll(() => cleanup());

async function writeTemp(bytes: Buffer, name = `cyrus.index.${++counter}`): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, bytes);
  return file;
}

/** Paths of every fd this process has open. */
async function openFiles(): Promise<string[]> {
  const fds = await readdir("/proc/self/fd");
  const targets = await Promise.all(
    fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")),
  );
  return targets;
}

async function readAll(reader: IndexReader): Promise<IndexRecord[]> {
  const out: IndexRecord[] = [];
  for await (const r of reader.records()) out.push(r);
  return out;
}

/**
 * Opens `file` and reads every record, expecting `errorClass` with a message
 * naming the file and matching `what`. Checks that the file and its directory
 * are unchanged and that no fd on the file stays open.
 */
async function expectRefused(
  file: string,
  what: RegExp,
  errorClass:
    | typeof CyrusFormatError
    | typeof FileAccessError
    | typeof CorruptIndexError = CyrusFormatError,
  kind: IndexKind = "index",
): Promise<Error> {
  const listing = await readdir(dir);
  const before = await readFile(file).catch(() => undefined);
  let caught: unknown;
  try {
    const reader = await IndexReader.open(file, { kind });
    try {
      await readAll(reader);
    } finally {
      await reader.close();
    }
  } catch (err) {
    caught = err;
  }
  expect(caught, `${file} was accepted`).toBeInstanceOf(errorClass);
  const err = caught as Error;
  expect(err.message).toContain(file);
  expect(err.message).toMatch(what);
  expect(await readdir(dir)).toEqual(listing);
  expect(await readFile(file).catch(() => undefined)).toEqual(before);
  expect(await openFiles()).not.toContain(file);
  // The synchronous reader (guidup hash) refuses it with the very same error.
  let caughtSync: unknown;
  try {
    const reader = IndexReader.openSync(file, { kind });
    try {
      for (const _ of reader.chunksSync()) {
        // drain
      }
    } finally {
      reader.closeSync();
    }
  } catch (e) {
    caughtSync = e;
  }
  expect(caughtSync, `${file} was accepted by openSync/chunksSync`).toBeInstanceOf(errorClass);
  expect((caughtSync as Error).message).toBe(err.message);
  expect(await openFiles()).not.toContain(file);
  return err;
}

describe("IndexReader refuses bad input", () => {
  it("zero-length file", async () => {
    await expectRefused(await writeTemp(Buffer.alloc(0)), /empty file \(0 bytes\)/);
  });

  it("10-byte file", async () => {
    await expectRefused(await writeTemp(Buffer.alloc(10)), /truncated header \(10 bytes\)/);
  });

  it("23-byte file (geometry incomplete)", async () => {
    const head = encodeHeader(V10, {}, 0).subarray(0, 23);
    await expectRefused(await writeTemp(head), /truncated header \(23 bytes\)/);
  });

  it("truncated header: v10 file of 50 bytes", async () => {
    const head = encodeHeader(V10, {}, 0).subarray(0, 50);
    await expectRefused(await writeTemp(head), /truncated header: 50 bytes, version 10 needs 96/);
  });

  it("truncated header: v8 file of 91 bytes", async () => {
    const head = encodeHeader(format(8), {}, 0).subarray(0, 91);
    await expectRefused(await writeTemp(head), /truncated header: 91 bytes, version 8 needs 92/);
  });

  it.each([0, 1, 2, 3, 11])("unknown version %i", async (minor) => {
    const file = await writeTemp(encodeHeader(V10, { minorVersion: minor }, 0));
    const err = await expectRefused(
      file,
      new RegExp(`unknown index version ${minor} \\(guidup reads 4\\.\\.10\\)`),
    );
    expect(err).toBeInstanceOf(UnsupportedVersionError);
    expect((err as UnsupportedVersionError).newer).toBe(false);
    expect((err as UnsupportedVersionError).minor).toBe(minor);
    expect((err as UnsupportedVersionError).code).toBe("cyrus-version");
  });

  /** A header as Cyrus 2.4+ writes it for `minor`: its START_OFFSET and RECORD_SIZE, `records` zeroed records. */
  function newerIndex(minor: number, startOffset: number, recordSize: number, records = 2): Buffer {
    const head = encodeHeader(V10, { minorVersion: minor, startOffset, recordSize }, records);
    return Buffer.concat([head, Buffer.alloc(startOffset - head.length + records * recordSize)]);
  }

  it.each([
    [12, 128, 96],
    [13, 128, 104],
    [14, 160, 104],
    [15, 160, 104],
    [16, 160, 112],
    [17, 160, 112],
    [19, 160, 112],
    [20, 192, 144],
    [23, 200, 152],
  ])("newer version %i (start offset %i, record size %i)", async (minor, start, size) => {
    const file = await writeTemp(newerIndex(minor, start, size));
    const err = await expectRefused(file, new RegExp(`index version ${minor} is newer than 10`));
    expect(err).toBeInstanceOf(UnsupportedVersionError);
    expect((err as UnsupportedVersionError).newer).toBe(true);
  });

  // Issue #10 item 6: damage and foreign files were reported as "newer".
  it("a version 12 header with another version's geometry is corrupt, not newer", async () => {
    const file = await writeTemp(encodeHeader(V10, { minorVersion: 12 }, 0));
    const err = await expectRefused(
      file,
      /corrupt index header: it says version 12 \(Cyrus 2\.4 or later\) with start offset 96 and record size 88, but version 12 has start offset 128 and record size 96; run reconstruct/,
    );
    expect(err).toBeInstanceOf(CorruptIndexError);
    expect(err).not.toBeInstanceOf(UnsupportedVersionError);
  });

  it("a version 13 file shorter than its records is corrupt", async () => {
    const file = await writeTemp(newerIndex(13, 128, 104, 3).subarray(0, 128 + 104));
    await expectRefused(
      file,
      /corrupt index: its version 13 header counts 3 records \(440 bytes\) but the file has 232 bytes; run reconstruct/,
      CorruptIndexError,
    );
  });

  it("eight overwritten header bytes (version and start offset) make a corrupt file, not a newer one", async () => {
    const bytes = encodeIndexFile(V10, { lastUid: 2 }, records([1, 2]));
    Buffer.from("deadbeefcafef00d", "hex").copy(bytes, 8);
    const file = await writeTemp(bytes);
    const err = await expectRefused(
      file,
      /not a Cyrus index file: its version field \(bytes 8–11, .*\) reads 3735928559, which no Cyrus writes; .*run reconstruct/,
      CorruptIndexError,
    );
    expect(err.message).not.toContain("newer");
  });

  it("a huge minor version is not an index, not a crash", async () => {
    const file = await writeTemp(encodeHeader(V10, { minorVersion: 0xffffffff }, 0));
    await expectRefused(file, /not a Cyrus index file: .* reads 4294967295/, CorruptIndexError);
  });

  it.each([
    ["a v20 version with v12 geometry", 20, 128, 96],
    ["a later version with absurd geometry", 40, 96, 8],
  ])("%s is corrupt", async (_what, minor, start, size) => {
    const file = await writeTemp(newerIndex(minor, start, size));
    await expectRefused(file, /corrupt index header/, CorruptIndexError);
  });

  it("wrong RECORD_SIZE for the version", async () => {
    const file = await writeTemp(
      encodeIndexFile(V10, { recordSize: 80, lastUid: 2 }, records([1, 2])),
    );
    await expectRefused(file, /record size 80 does not match version 10 \(expected 88\)/);
    const v9 = await writeTemp(encodeIndexFile(format(9), { recordSize: 88 }, []));
    await expectRefused(v9, /record size 88 does not match version 9 \(expected 80\)/);
  });

  it("wrong START_OFFSET for the version", async () => {
    const bytes = Buffer.concat([encodeHeader(V10, { startOffset: 100 }, 0), Buffer.alloc(4)]);
    await expectRefused(
      await writeTemp(bytes),
      /start offset 100 does not match version 10 \(expected 96\)/,
    );
    const v8 = encodeHeader(format(8), { startOffset: 96 }, 0);
    await expectRefused(
      await writeTemp(Buffer.concat([v8, Buffer.alloc(4)])),
      /start offset 96 does not match version 8 \(expected 92\)/,
    );
  });

  it("EXISTS beyond the end of the file", async () => {
    const whole = encodeIndexFile(V10, { lastUid: 3 }, records([1, 2, 3]));
    const short = whole.subarray(0, whole.length - 1);
    await expectRefused(
      await writeTemp(short),
      /truncated: header says 3 records \(360 bytes\) but the file has 359 bytes/,
    );
    const lying = Buffer.concat([encodeHeader(V10, { lastUid: 1 }, 1_000_000), Buffer.alloc(88)]);
    await expectRefused(await writeTemp(lying), /header says 1000000 records/);
  });

  it("missing file", async () => {
    const file = path.join(dir, "no-such-cyrus.index");
    const err = await expectRefused(file, /no such file/, FileAccessError);
    expect((err as FileAccessError).detail).toMatchObject({ file, errno: "ENOENT" });
  });

  it("a directory instead of a file", async () => {
    await expectRefused(dir, /EISDIR|illegal operation on a directory/i, FileAccessError);
  });

  describe("UIDs in cyrus.index", () => {
    it("UID 0", async () => {
      const file = await writeTemp(encodeIndexFile(V10, { lastUid: 5 }, records([1, 0, 3])));
      await expectRefused(file, /record 2 has UID 0; run reconstruct/);
    });

    it("unsorted UIDs", async () => {
      const file = await writeTemp(encodeIndexFile(V10, { lastUid: 5 }, records([1, 3, 2])));
      await expectRefused(file, /record 3 has UID 2 after UID 3 \(UIDs must ascend\)/);
    });

    it("repeated UIDs", async () => {
      const file = await writeTemp(encodeIndexFile(V10, { lastUid: 5 }, records([1, 2, 2])));
      await expectRefused(file, /record 3 has UID 2 after UID 2/);
    });

    it("UID above LAST_UID", async () => {
      const file = await writeTemp(encodeIndexFile(V10, { lastUid: 2 }, records([1, 2, 3])));
      await expectRefused(file, /record 3 has UID 3 above LAST_UID 2/);
    });

    it("are found in a later chunk too", async () => {
      const uids = range(50);
      uids[41] = 7;
      const file = await writeTemp(encodeIndexFile(V10, { lastUid: 50 }, records(uids)));
      const reader = await IndexReader.open(file);
      try {
        const consume = async () => {
          for await (const _ of reader.chunks(88 * 10)) {
            // drain
          }
        };
        await expect(consume()).rejects.toThrow(/record 42 has UID 7 after UID 41/);
      } finally {
        await reader.close();
      }
    });
  });

  describe("UIDs in cyrus.expunge", () => {
    it("may be unsorted, repeated and above LAST_UID", async () => {
      const uids = [5, 3, 3, 9, 1];
      const file = await writeTemp(encodeIndexFile(V10, { lastUid: 4 }, records(uids)));
      const reader = await IndexReader.open(file, { kind: "expunge" });
      try {
        expect(reader.kind).toBe("expunge");
        expect((await readAll(reader)).map((r) => r.get("uid"))).toEqual(uids);
      } finally {
        await reader.close();
      }
    });

    it("may not hold UID 0", async () => {
      const file = await writeTemp(encodeIndexFile(V10, { lastUid: 4 }, records([2, 0])));
      await expectRefused(file, /record 2 has UID 0/, CyrusFormatError, "expunge");
    });
  });
});

describe("parseIndexHeader", () => {
  it("checks the given file size against EXISTS, not only the buffer", () => {
    const head = encodeHeader(V10, { lastUid: 9 }, 2);
    expect(() => parseIndexHeader(head, 96 + 88, "x/cyrus.index")).toThrow(
      /x\/cyrus.index: truncated: header says 2 records \(272 bytes\)/,
    );
    const ok = parseIndexHeader(head, 96 + 2 * 88 + 5, "x/cyrus.index");
    expect(ok).toMatchObject({ minorVersion: 10, startOffset: 96, recordSize: 88, exists: 2 });
    expect(ok.raw).toEqual(head);
    expect(ok.values.get("lastUid")).toBe(9);
  });

  it("keeps only [0, START_OFFSET) as raw even when given more", () => {
    const head = Buffer.concat([
      encodeHeader(format(6), { uidValidity: 77 }, 0),
      Buffer.alloc(20, 0xee),
    ]);
    const h = parseIndexHeader(head, head.length, "f");
    expect(h.raw.length).toBe(76);
    expect(h.values.get("uidValidity")).toBe(77);
    expect(h.format.minor).toBe(6);
  });

  it("reads the version first, so a short file of an unknown version says so", () => {
    const head = encodeHeader(V10, { minorVersion: 3 }, 0).subarray(0, 30);
    expect(() => parseIndexHeader(head, 30, "f")).toThrow(UnsupportedVersionError);
  });

  it("peekMinorVersion reads offset 8 when there are 12 bytes", () => {
    expect(peekMinorVersion(encodeHeader(format(7), {}, 0))).toBe(7);
    expect(peekMinorVersion(Buffer.alloc(11))).toBeUndefined();
  });
});

describe("IndexReader reads", () => {
  it("every version 4..10, with the values written", async () => {
    for (let minor = 4; minor <= 10; minor++) {
      const f = format(minor);
      const header: HeaderValues = {
        generation: 7,
        lastUid: 40,
        uidValidity: 123,
        quotaUsed: 0x1234,
      };
      const recs = records([3, 17, 40]).map((r) =>
        Object.fromEntries(Object.entries(r).filter(([k]) => f.recordField(k as never))),
      ) as RecordValues[];
      const file = await writeTemp(encodeIndexFile(f, header, recs));
      const reader = await IndexReader.open(file);
      try {
        expect(reader.format.minor).toBe(minor);
        expect(reader.header.values.get("uidValidity")).toBe(123);
        expect(BigInt(reader.header.values.get("quotaUsed") as number | bigint)).toBe(0x1234n);
        const got = await readAll(reader);
        expect(got.map((r) => r.get("uid"))).toEqual([3, 17, 40]);
        expect(got[1]?.get("size")).toBe(1001);
        expect(got[2]?.get("userFlags3")).toBe(2);
      } finally {
        await reader.close();
      }
    }
  });

  it("ignores bytes after EXISTS records (crash leftovers)", async () => {
    const whole = encodeIndexFile(V10, { lastUid: 3 }, records([1, 2, 3]));
    const file = await writeTemp(Buffer.concat([whole, Buffer.alloc(88 * 2 + 5, 0xff)]));
    const reader = await IndexReader.open(file);
    try {
      expect(reader.fileSize).toBe(whole.length + 88 * 2 + 5);
      expect((await readAll(reader)).map((r) => r.get("uid"))).toEqual([1, 2, 3]);
    } finally {
      await reader.close();
    }
  });

  it("reads an empty index (EXISTS 0)", async () => {
    const file = await writeTemp(encodeIndexFile(V10, {}, []));
    const reader = await IndexReader.open(file);
    try {
      expect(reader.header.exists).toBe(0);
      expect(await readAll(reader)).toEqual([]);
      const chunks = [];
      for await (const c of reader.chunks()) chunks.push(c);
      expect(chunks).toEqual([]);
    } finally {
      await reader.close();
    }
  });

  it("yields the same records in chunks smaller than the file as in one chunk", async () => {
    const n = 37;
    const bytes = encodeIndexFile(V10, { lastUid: 200 }, records(range(n).map((u) => u * 5)));
    const file = await writeTemp(bytes);
    const reader = await IndexReader.open(file);
    try {
      const whole = await readAll(reader);
      expect(whole).toHaveLength(n);
      expect(READ_CHUNK_BYTES).toBeGreaterThan(bytes.length);
      for (const chunkBytes of [1, 87, 88, 89, 176, 300, 88 * 36, 88 * n, 88 * n + 1, 1 << 20]) {
        const perChunk = Math.max(1, Math.floor(chunkBytes / 88));
        const raw: Buffer[] = [];
        let next = 0;
        for await (const chunk of reader.chunks(chunkBytes)) {
          expect(chunk.first).toBe(next);
          expect(chunk.recordSize).toBe(88);
          expect(chunk.count).toBe(Math.min(perChunk, n - next));
          expect(chunk.buf.length).toBe(chunk.count * 88);
          next += chunk.count;
          raw.push(chunk.buf);
        }
        expect(next, `chunkBytes ${chunkBytes}`).toBe(n);
        expect(Buffer.concat(raw), `chunkBytes ${chunkBytes}`).toEqual(bytes.subarray(96));
      }
    } finally {
      await reader.close();
    }
  });

  it("openSync/chunksSync yield the same chunks as open/chunks, in every chunk size", async () => {
    const n = 37;
    const bytes = encodeIndexFile(V10, { lastUid: 200 }, records(range(n).map((u) => u * 5)));
    const file = await writeTemp(bytes);
    const reader = await IndexReader.open(file);
    const sync = IndexReader.openSync(file);
    try {
      expect(sync.header).toEqual(reader.header);
      expect(sync.fileSize).toBe(reader.fileSize);
      for (const chunkBytes of [1, 88, 89, 300, 88 * n, 1 << 20]) {
        const chunks = [];
        for await (const c of reader.chunks(chunkBytes)) chunks.push(c);
        expect([...sync.chunksSync(chunkBytes)], `chunkBytes ${chunkBytes}`).toEqual(chunks);
      }
    } finally {
      await reader.close();
      sync.closeSync();
    }
    expect(await openFiles()).not.toContain(file);
  });

  it("chunksSync finds bad UIDs in a later chunk too", async () => {
    const uids = range(50);
    uids[41] = 7;
    const file = await writeTemp(encodeIndexFile(V10, { lastUid: 50 }, records(uids)));
    const reader = IndexReader.openSync(file);
    try {
      expect(() => [...reader.chunksSync(88 * 10)]).toThrow(/record 42 has UID 7 after UID 41/);
    } finally {
      reader.closeSync();
    }
  });

  it("fromFd reads through the caller's fd and never closes it", async () => {
    const file = await writeTemp(encodeIndexFile(V10, { lastUid: 2 }, records([1, 2])));
    const handle = await openFd(file, "r");
    try {
      const reader = await IndexReader.fromFd(handle.fd, file);
      expect((await readAll(reader)).map((r) => r.get("uid"))).toEqual([1, 2]);
      await reader.close();
      // Still open: closing would drop the caller's fcntl locks.
      expect((await handle.stat()).size).toBe(96 + 2 * 88);
    } finally {
      await handle.close();
    }
  });

  it("open() closes its fd on close()", async () => {
    const file = await writeTemp(encodeIndexFile(V10, {}, []));
    const reader = await IndexReader.open(file);
    expect(await openFiles()).toContain(file);
    await reader.close();
    expect(await openFiles()).not.toContain(file);
  });
});
