// convertIndex on real files: the 2.3.16 test vectors of cyrus-2.3-spool.md
// 3.7 byte for byte, the Cyrus 3.6 fixtures upgraded to v10 and compared with
// the v10 that Cyrus 3.6 wrote itself, downgrade/upgrade round trips, the
// (uid, guid) digest, output length, expunge files and refused indexes.
//
// Expected bytes are built from hard-coded offsets (table 1.2/2 of the spool
// doc), never from the codec's own tables, so a table bug cannot hide itself.

import { createHash, randomBytes } from "node:crypto";
import { open, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { convertFileBytes, digestOf, parseFileBytes } from "../../src/agent/index-bytes.js";
import {
  type ConvertOptions,
  type ConvertResult,
  convertIndex,
  type GuidRequest,
} from "../../src/cyrus/convert.js";
import type { FieldValue } from "../../src/cyrus/field-codec.js";
import { formatFor, type IndexFormat } from "../../src/cyrus/formats/index.js";
import { sha1File } from "../../src/cyrus/guid.js";
import { type IndexKind, IndexReader, READ_CHUNK_BYTES } from "../../src/cyrus/index-file.js";
import {
  encodeIndexFile,
  type HeaderValues,
  type RecordValues,
} from "../../src/cyrus/index-writer.js";
import { CyrusFormatError } from "../../src/errors.js";
import {
  type FixtureVersion,
  fixtureMailboxes,
  fixturesDir,
  makeTempDir,
  messagePath,
  sha1Key,
  sha1SumsByKey,
} from "../helpers/fixtures.js";

fixturesDir(); // fail loudly, never skip, when the fixtures are missing

function format(minor: number): IndexFormat {
  const f = formatFor(minor);
  if (f === undefined) throw new Error(`no format ${minor}`);
  return f;
}
const V10 = format(10);

let dir = "";
let cleanup: () => Promise<void> = async () => {};
let counter = 0;
beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir("guidup-convert-"));
});
afterAll(() => cleanup());

function tempPath(name: string): string {
  return path.join(dir, `${++counter}-${name}`);
}

async function writeTemp(bytes: Buffer, name = "cyrus.index"): Promise<string> {
  const file = tempPath(name);
  await writeFile(file, bytes);
  return file;
}

interface Converted {
  result: ConvertResult;
  bytes: Buffer;
}

/** Converts the file at `source` into a new temp file and returns both. */
async function convertFile(
  source: string,
  options: ConvertOptions,
  kind: IndexKind = "index",
): Promise<Converted> {
  const reader = await IndexReader.open(source, { kind });
  const outPath = tempPath(`out.v${options.target.minor}`);
  const out = await open(outPath, "w");
  try {
    const result = await convertIndex(reader, out.fd, options);
    await out.close();
    const bytes = await readFile(outPath);
    return { result, bytes };
  } finally {
    await out.close().catch(() => {});
    await reader.close();
  }
}

async function convertBytes(source: Buffer, options: ConvertOptions): Promise<Converted> {
  return convertFile(await writeTemp(source), options);
}

/** Parses a hex dump of the spool doc ("0000: 00000007 …" lines). */
function hexDump(text: string): Buffer {
  const hex = text
    .trim()
    .split("\n")
    .map((line) => line.replace(/^\s*[0-9a-f]+:/, ""))
    .join("")
    .replace(/\s+/g, "");
  return Buffer.from(hex, "hex");
}

/** Big-endian u32 words given as hex, e.g. "00000007 0000004c". */
function words(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ""), "hex");
}

// ---------------------------------------------------------------------------
// Geometry read straight from the bytes (offsets 8/12/16/20, table 1.2), and
// the GUID slot of a record as the 20 bytes a reader sees (section 5.1).

interface Geometry {
  minor: number;
  start: number;
  recordSize: number;
  exists: number;
}

function geometry(file: Buffer): Geometry {
  return {
    minor: file.readUInt32BE(8),
    start: file.readUInt32BE(12),
    recordSize: file.readUInt32BE(16),
    exists: file.readUInt32BE(20),
  };
}

function recordAt(file: Buffer, g: Geometry, i: number): Buffer {
  const at = g.start + i * g.recordSize;
  return file.subarray(at, at + g.recordSize);
}

/** v10: bytes 60..79; v7–v9: UUID 60..71 + 8 zero bytes; older: NULL. */
function storedGuidOf(record: Buffer, minor: number): Buffer {
  if (minor === 10) return Buffer.from(record.subarray(60, 80));
  const out = Buffer.alloc(20);
  if (minor >= 7) record.copy(out, 0, 60, 72);
  return out;
}

/** SHA1 over (uid BE32, stored GUID) of every record, computed from the bytes. */
function expectedDigest(file: Buffer): Buffer {
  const g = geometry(file);
  const hash = createHash("sha1");
  for (let i = 0; i < g.exists; i++) {
    const r = recordAt(file, g, i);
    hash.update(r.subarray(0, 4));
    hash.update(storedGuidOf(r, g.minor));
  }
  return hash.digest();
}

/** Records whose stored GUID differs between source and output. */
function expectedGuidsChanged(source: Buffer, output: Buffer): number {
  const gs = geometry(source);
  const go = geometry(output);
  let n = 0;
  for (let i = 0; i < go.exists; i++) {
    const a = storedGuidOf(recordAt(source, gs, i), gs.minor);
    const b = storedGuidOf(recordAt(output, go, i), go.minor);
    if (!a.equals(b)) n++;
  }
  return n;
}

/** Checks digest, guidsChanged, record count and length of a conversion. */
function expectConsistent(source: Buffer, { result, bytes }: Converted): void {
  const g = geometry(bytes);
  expect(bytes.length).toBe(g.start + g.exists * g.recordSize);
  expect(result.bytesWritten).toBe(bytes.length);
  expect(result.records).toBe(geometry(source).exists);
  expect(g.exists).toBe(geometry(source).exists);
  expect(result.digest.toString("hex")).toBe(expectedDigest(bytes).toString("hex"));
  expect(result.guidsChanged).toBe(expectedGuidsChanged(source, bytes));
}

// ---------------------------------------------------------------------------
// (a) Test vectors, cyrus-2.3-spool.md 3.7 (output of the compiled 2.3.16
// mailbox_upgrade_index_work, mailbox_default_options = 0).

const VECTOR_V9_INPUT = hexDump(`
0000: 00000007 00000000 00000009 00000060 00000050 00000001 4b3d3b00 0000002a
0020: 00000000 000004d2 00000000 4b389780 00000001 00000001 00000000 00000002
0040: 00000000 00000000 0000004d 00000000 00000000 00000000 00000000 00000000
0060: 00000029 4b3d2b60 4b3ba4c0 000004d2 00000141 00000141 00000004 4b3d2b61
0080: 00000005 80000001 00000000 00000000 00000002 00000011 00000002 01000000
00a0: 01234567 890000ab 00000000 0000004d
`);

const VECTOR_V9_OUTPUT = hexDump(`
0000: 00000007 00000000 0000000a 00000060 00000058 00000001 4b3d3b00 0000002a
0020: 00000000 000004d2 00000000 4b389780 00000001 00000001 00000000 00000002
0040: 00000000 00000000 0000004d 00000000 00000000 00000000 00000000 00000000
0060: 00000029 4b3d2b60 4b3ba4c0 000004d2 00000141 00000141 00000004 4b3d2b61
0080: 00000005 80000001 00000000 00000000 00000002 00000011 00000002 01000000
00a0: 01234567 890000ab 00000000 00000000 00000000 0000004d
`);

const VECTOR_V4_OUTPUT = hexDump(`
0000: 00000007 00000000 0000000a 00000060 00000058 00000001 4b3d3b00 0000002a
0020: 00000000 000004d2 00000000 4b389780 00000001 00000001 00000000 00000000
0040: 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000000
0060: 00000029 4b3d2b60 4b3ba4c0 000004d2 00000141 00000141 00000004 4b3d2b61
0080: 00000005 80000001 00000000 00000000 00000002 ffffffff 00000000 00000000
00a0: 00000000 00000000 00000000 00000000 00000000 00000001
`);

/** The v7 input: same values as the v9 one, v7 layout, POP3_NEW_UIDL 0, no MODSEQ. */
const VECTOR_V7_INPUT = Buffer.concat([
  // header, 76 bytes: GENERATION_NO … LAST_UID, quota u64, POP3_LAST_LOGIN,
  // UIDVALIDITY, DELETED, ANSWERED, FLAGGED, POP3_NEW_UIDL, LEAKED_CACHE, SPARE1, SPARE2
  words(`00000007 00000000 00000007 0000004c 00000048 00000001 4b3d3b00 0000002a
         00000000 000004d2 00000000 4b389780 00000001 00000001 00000000 00000000
         00000000 00000000 00000000`),
  // record, 72 bytes: … CONTENT_LINES 0x11, CACHE_VERSION 2, UUID
  words(`00000029 4b3d2b60 4b3ba4c0 000004d2 00000141 00000141 00000004 4b3d2b61
         00000005 80000001 00000000 00000000 00000002 00000011 00000002
         01000000 01234567 890000ab`),
]);

/** v7 output = v9 output except HIGHESTMODSEQ 1 (0x44), MODSEQ 1 (0xb0), options 0 (0x3c). */
const VECTOR_V7_OUTPUT = (() => {
  const out = Buffer.from(VECTOR_V9_OUTPUT);
  out.writeBigUInt64BE(1n, 0x44);
  out.writeBigUInt64BE(1n, 0xb0);
  out.writeUInt32BE(0, 0x3c);
  return out;
})();

/** The v4 input: quota u32 at 32, UIDVALIDITY at 40, counts at 44/48/52, 52-byte record. */
const VECTOR_V4_INPUT = Buffer.concat([
  // header, 76 bytes: … QUOTA u32, POP3_LAST_LOGIN, UIDVALIDITY, DELETED, ANSWERED,
  // FLAGGED, POP3_NEW_UIDL, SPARE0..SPARE3
  words(`00000007 00000000 00000004 0000004c 00000034 00000001 4b3d3b00 0000002a
         000004d2 00000000 4b389780 00000001 00000001 00000000 00000000
         00000000 00000000 00000000 00000000`),
  words(`00000029 4b3d2b60 4b3ba4c0 000004d2 00000141 00000141 00000004 4b3d2b61
         00000005 80000001 00000000 00000000 00000002`),
]);

const VECTOR_HEADER: HeaderValues = {
  generation: 7,
  lastAppendDate: 0x4b3d3b00,
  lastUid: 0x2a,
  quotaUsed: 0x4d2n,
  uidValidity: 0x4b389780,
  deleted: 1,
  answered: 1,
  flagged: 0,
};
const VECTOR_RECORD: RecordValues = {
  uid: 0x29,
  internalDate: 0x4b3d2b60,
  sentDate: 0x4b3ba4c0,
  size: 0x4d2,
  headerSize: 0x141,
  contentOffset: 0x141,
  cacheOffset: 4,
  lastUpdated: 0x4b3d2b61,
  systemFlags: 5,
  userFlags0: 0x80000001,
  userFlags3: 2,
  contentLines: 0x11,
  cacheVersion: 2,
  uuid: Buffer.from("0100000001234567890000ab", "hex"),
  modseq: 77n,
};

function pick(f: IndexFormat, values: RecordValues): RecordValues {
  return Object.fromEntries(
    Object.entries(values).filter(([k]) => f.recordField(k as never) !== undefined),
  ) as RecordValues;
}

describe("(a) test vectors of section 3.7", () => {
  it("the hand-built inputs are what encodeIndexFile builds from the same values", () => {
    const v9 = format(9);
    expect(
      encodeIndexFile(v9, { ...VECTOR_HEADER, options: 2, highestModseq: 77n }, [VECTOR_RECORD]),
    ).toEqual(VECTOR_V9_INPUT);
    const v7 = format(7);
    expect(encodeIndexFile(v7, VECTOR_HEADER, [pick(v7, VECTOR_RECORD)])).toEqual(VECTOR_V7_INPUT);
    const v4 = format(4);
    expect(
      encodeIndexFile(v4, { ...VECTOR_HEADER, quotaUsed: 0x4d2 }, [pick(v4, VECTOR_RECORD)]),
    ).toEqual(VECTOR_V4_INPUT);
  });

  it.each([
    ["v9", VECTOR_V9_INPUT, VECTOR_V9_OUTPUT],
    ["v7", VECTOR_V7_INPUT, VECTOR_V7_OUTPUT],
    ["v4", VECTOR_V4_INPUT, VECTOR_V4_OUTPUT],
  ])("%s input upgrades to the 2.3.16 output byte for byte", async (_name, input, output) => {
    const converted = await convertBytes(input, { target: V10 });
    expect(converted.bytes.toString("hex")).toBe(output.toString("hex"));
    expect(converted.result.bytesWritten).toBe(96 + 88);
    expect(converted.result.records).toBe(1);
    // No guidFor: the GUID slot keeps the padded UUID (v7/v9) or NULL (v4),
    // which is the same 20 bytes a reader of the source sees.
    expect(converted.result.guidsChanged).toBe(0);
    expectConsistent(input, converted);
  });

  it("a v10 vector output converts to itself (the upgrade of a v10 file is a no-op)", async () => {
    for (const out of [VECTOR_V9_OUTPUT, VECTOR_V7_OUTPUT, VECTOR_V4_OUTPUT]) {
      expect((await convertBytes(out, { target: V10 })).bytes).toEqual(out);
    }
  });
});

// ---------------------------------------------------------------------------
// (b) Cyrus 3.6 fixtures v06..v09 upgraded to v10 versus Cyrus 3.6's own v10.

/** Decodes a whole index through IndexReader: header values and records. */
async function decodeFile(file: string): Promise<{
  header: ReadonlyMap<string, FieldValue>;
  records: ReadonlyMap<string, FieldValue>[];
}> {
  const reader = await IndexReader.open(file);
  try {
    const records = [];
    for await (const r of reader.records()) records.push(r);
    return { header: reader.header.values, records };
  } finally {
    await reader.close();
  }
}

describe("(b) fixtures v06..v09 upgraded to v10 equal Cyrus 3.6's v10", () => {
  const sums = sha1SumsByKey();
  const v10Mailboxes = new Map(fixtureMailboxes("10").map((m) => [m.name, m]));

  describe.each(["06", "07", "08", "09"] as const)("v%s", (version: FixtureVersion) => {
    const minor = Number(version);

    it.each(fixtureMailboxes(version).map((m) => [m.name, m] as const))(
      "%s",
      async (name, mailbox) => {
        const requests: GuidRequest[] = [];
        let excluded = 0;
        // SHA1 of the message file, as 2.3.10+ computes it. A file listed as
        // MISSING cannot be hashed: guidFor returns undefined (keep the source
        // GUID), and that record is left out of the GUID comparison below,
        // because Cyrus 3.6 hashed the file before it was deleted.
        const guidFor = async (req: GuidRequest): Promise<Buffer | undefined> => {
          requests.push(req);
          const entry = sums.get(sha1Key(name, req.uid));
          if (entry === undefined) throw new Error(`${name} uid ${req.uid} not in sha1sums.txt`);
          if (!entry.present) {
            excluded++;
            return undefined;
          }
          return (await sha1File(messagePath(mailbox, req.uid))).guid;
        };
        const source = await readFile(mailbox.indexPath);
        const converted = await convertFile(mailbox.indexPath, { target: V10, guidFor });
        expectConsistent(source, converted);
        const g = geometry(source);
        expect(converted.result.guidsChanged).toBe(g.exists - excluded);

        // What guidFor was told: msgno, uid, SIZE, and the source GUID (v6:
        // NULL; v7–v9: 3.6's all-zero UUID padded with 8 zero bytes).
        expect(requests.map((r) => r.msgno)).toEqual(
          Array.from({ length: g.exists }, (_, i) => i + 1),
        );
        for (const [i, req] of requests.entries()) {
          const rec = recordAt(source, g, i);
          expect(req.uid).toBe(rec.readUInt32BE(0));
          expect(req.size).toBe(rec.readUInt32BE(12));
          expect(req.sourceGuid).toEqual(Buffer.alloc(20));
        }

        const fixture10 = v10Mailboxes.get(name);
        if (fixture10 === undefined) throw new Error(`${name} not in v10`);
        const expected = await readFile(fixture10.indexPath);
        const outPath = await writeTemp(converted.bytes, "converted.index");
        const ours = await decodeFile(outPath);
        const theirs = await decodeFile(fixture10.indexPath);
        const old = await decodeFile(mailbox.indexPath);

        for (const [field, value] of theirs.header) {
          const got = ours.header.get(field);
          if (field === "highestModseq" && minor < 8) {
            // v6/v7 hold no HIGHESTMODSEQ; the 2.3 upgrade sets 1 (3.3 step 2).
            // Cyrus 3.6's v10 has the real value from its native index.
            expect(got, field).toBe(1n);
            continue;
          }
          expect(got, `header ${field}`).toEqual(value);
        }
        expect(ours.records).toHaveLength(theirs.records.length);
        for (const [i, theirRecord] of theirs.records.entries()) {
          const ourRecord = ours.records[i] as ReadonlyMap<string, FieldValue>;
          const oldRecord = old.records[i] as ReadonlyMap<string, FieldValue>;
          const uid = ourRecord.get("uid") as number;
          for (const [field, value] of theirRecord) {
            const got = ourRecord.get(field);
            const at = `record ${i + 1} uid ${uid} ${field}`;
            if (field === "modseq" && minor < 8) {
              // v6/v7 records have no MODSEQ: the upgrade writes 1 (3.4 rule 5);
              // 3.6's v10 kept its real modseqs.
              expect(got, at).toBe(1n);
              continue;
            }
            if (field === "contentLines" || field === "cacheVersion") {
              // Carried from the old record (2.3 keeps them for v5+/v6+ sources).
              // Here they also equal 3.6's v10, since 3.6 wrote 0 and 11 in all.
              expect(got, at).toEqual(oldRecord.get(field));
            }
            if (field === "guid" && sums.get(sha1Key(name, uid))?.present === false) {
              // MISSING file: source GUID kept (NULL), not comparable.
              expect(got, at).toEqual(Buffer.alloc(20));
              continue;
            }
            expect(got, at).toEqual(value);
          }
        }

        // v8/v9 carry HIGHESTMODSEQ and MODSEQ, so with SHA1 GUIDs the whole
        // file equals Cyrus 3.6's v10 byte for byte.
        if (minor >= 8 && excluded === 0) expect(converted.bytes.equals(expected)).toBe(true);
        // v6/v7: equal once the modseq fields are set to the 2.3 defaults.
        if (minor < 8 && excluded === 0) {
          const patched = Buffer.from(expected);
          patched.writeBigUInt64BE(1n, 68);
          for (let k = 0; k < g.exists; k++) patched.writeBigUInt64BE(1n, 96 + k * 88 + 80);
          expect(converted.bytes.equals(patched)).toBe(true);
        }
      },
    );
  });
});

// ---------------------------------------------------------------------------
// (c) Downgrade 10 → 9, 8, 7, 6 and upgrade back.

/** A v10 file with a mix of GUID forms, built from the fixture user.alice. */
async function mixedV10(): Promise<{ bytes: Buffer; guids: Buffer[] }> {
  const alice = fixtureMailboxes("10").find((m) => m.name === "user.alice");
  if (alice === undefined) throw new Error("no user.alice");
  const decoded = await decodeFile(alice.indexPath);
  const guids = decoded.records.map((r, i) => {
    if (i === 0) return Buffer.alloc(20); // NULL
    if (i % 2 === 1) return r.get("guid") as Buffer; // SHA1 from the fixture
    return Buffer.concat([Buffer.from([1]), randomBytes(11), Buffer.alloc(8)]); // padded UUID
  });
  const header = {
    ...Object.fromEntries(decoded.header),
    // IMAP_CONDSTORE on: bit 1 does not survive v6/v7 (POP3_NEW_UIDL only).
    options: 0b11,
    leakedCache: 5,
    // Spares nonzero in the source: every conversion writes them 0.
    spare0: 1,
    spare4: 0xffffffff,
  } as HeaderValues;
  const records = decoded.records.map(
    (r, i) => ({ ...Object.fromEntries(r), guid: guids[i] }) as RecordValues,
  );
  return { bytes: encodeIndexFile(V10, header, records), guids };
}

function withZeroSpares(v10: Buffer): Buffer {
  const out = Buffer.from(v10);
  out.fill(0, 76, 96);
  return out;
}

describe("(c) downgrade then upgrade", () => {
  it.each([9, 8, 7, 6])("10 → %i → 10", async (target) => {
    const { bytes: source, guids } = await mixedV10();
    const g = geometry(source);
    const down = await convertBytes(source, { target: format(target) });
    expectConsistent(source, down);
    const gd = geometry(down.bytes);
    expect(gd).toMatchObject({ minor: target, exists: g.exists });

    // The UUID slot of v7–v9 (documented rule in convert.ts): a padded UUID
    // gives back its 12 bytes; a SHA1 (or NULL) becomes the NULL UUID.
    for (let i = 0; i < g.exists; i++) {
      const guid = guids[i] as Buffer;
      const rec = recordAt(down.bytes, gd, i);
      const isPadded = guid[0] === 1 && guid.subarray(12).equals(Buffer.alloc(8));
      if (target >= 7) {
        expect(rec.subarray(60, 72)).toEqual(isPadded ? guid.subarray(0, 12) : Buffer.alloc(12));
      }
      if (target >= 8)
        expect(rec.readBigUInt64BE(72)).toBe(recordAt(source, g, i).readBigUInt64BE(80));
    }
    const nonNull = guids.filter((x) => !x.equals(Buffer.alloc(20))).length;
    const sha1s = guids.filter((x) => !x.subarray(12).equals(Buffer.alloc(8))).length;
    expect(down.result.guidsChanged).toBe(target === 6 ? nonNull : sha1s);
    // Header: options keep only bit 0 in v6/v7; spares are 0.
    expect(down.bytes.readUInt32BE(60)).toBe(target <= 7 ? 1 : 0b11);
    expect(down.bytes.subarray(target <= 7 ? 68 : 76, gd.start)).toEqual(
      Buffer.alloc(gd.start - (target <= 7 ? 68 : 76)),
    );

    // What an upgrade back must give: the source with spares 0, and for v6/v7
    // (no MODSEQ, no HIGHESTMODSEQ, one option bit) MODSEQ 1, HIGHESTMODSEQ 1
    // and options & 1.
    const expectedBack = withZeroSpares(source);
    if (target <= 7) {
      expectedBack.writeBigUInt64BE(1n, 68);
      expectedBack.writeUInt32BE(1, 60);
      for (let i = 0; i < g.exists; i++) expectedBack.writeBigUInt64BE(1n, 96 + i * 88 + 80);
    }

    // With the original GUIDs supplied, the upgrade is exact.
    const byUid = new Map(guids.map((x, i) => [recordAt(source, g, i).readUInt32BE(0), x]));
    const back = await convertBytes(down.bytes, {
      target: V10,
      guidFor: (req) => byUid.get(req.uid),
    });
    expectConsistent(down.bytes, back);
    expect(back.bytes.toString("hex")).toBe(expectedBack.toString("hex"));

    // Without guidFor: padded UUIDs come back (v7–v9), SHA1s come back NULL;
    // v6 has no slot, so everything comes back NULL.
    const plain = await convertBytes(down.bytes, { target: V10 });
    expect(plain.result.guidsChanged).toBe(0);
    const expectedPlain = Buffer.from(expectedBack);
    for (let i = 0; i < g.exists; i++) {
      const guid = guids[i] as Buffer;
      const keep = target >= 7 && guid.subarray(12).equals(Buffer.alloc(8));
      (keep ? guid : Buffer.alloc(20)).copy(expectedPlain, 96 + i * 88 + 60);
    }
    expect(plain.bytes.toString("hex")).toBe(expectedPlain.toString("hex"));
  });

  it.each([9, 8])(
    "a v10 file of padded UUIDs round-trips through v%i byte-exactly",
    async (target) => {
      const { bytes } = await mixedV10();
      const g = geometry(bytes);
      const padded = Buffer.from(bytes);
      for (let i = 0; i < g.exists; i++) {
        Buffer.concat([Buffer.from([1]), randomBytes(11), Buffer.alloc(8)]).copy(
          padded,
          96 + i * 88 + 60,
        );
      }
      const down = await convertBytes(padded, { target: format(target) });
      expect(down.result.guidsChanged).toBe(0);
      const back = await convertBytes(down.bytes, { target: V10 });
      expect(back.result.guidsChanged).toBe(0);
      expect(back.bytes.toString("hex")).toBe(withZeroSpares(padded).toString("hex"));
      expect(back.result.digest).toEqual(down.result.digest);
    },
  );

  it("keeps MODSEQ 0 when downgrading and converting v10 → v10 (only an upgrade to 10 fixes it)", async () => {
    const recs = [1, 2, 3].map((uid) => ({ uid, modseq: 0n, guid: Buffer.alloc(20, uid) }));
    const source = encodeIndexFile(V10, { lastUid: 3 }, recs);
    const same = await convertBytes(source, { target: V10 });
    expect(same.bytes).toEqual(source);
    for (const target of [8, 9]) {
      const down = await convertBytes(source, { target: format(target) });
      for (let i = 0; i < 3; i++)
        expect(down.bytes.readBigUInt64BE(geometry(down.bytes).start + i * 80 + 72)).toBe(0n);
      const up = await convertBytes(down.bytes, { target: V10 });
      for (let i = 0; i < 3; i++) expect(up.bytes.readBigUInt64BE(96 + i * 88 + 80)).toBe(1n);
    }
  });
});

// ---------------------------------------------------------------------------
// (d) digest and guidsChanged.

describe("(d) digest and guidsChanged", () => {
  it("digest = SHA1 over (uid BE32, stored GUID), for every target", async () => {
    const { bytes: source, guids } = await mixedV10();
    for (const target of [6, 7, 8, 9, 10]) {
      const c = await convertBytes(source, { target: format(target) });
      const g = geometry(c.bytes);
      const hash = createHash("sha1");
      for (let i = 0; i < g.exists; i++) {
        const uid = Buffer.alloc(4);
        uid.writeUInt32BE(recordAt(source, geometry(source), i).readUInt32BE(0));
        hash.update(uid);
        const guid = guids[i] as Buffer;
        const stored =
          target === 10
            ? guid
            : target === 6 || !guid.subarray(12).equals(Buffer.alloc(8))
              ? Buffer.alloc(20)
              : guid;
        hash.update(stored);
      }
      expect(c.result.digest.toString("hex"), `v${target}`).toBe(hash.digest("hex"));
    }
  });

  it("the digest of an empty file is SHA1 of nothing", async () => {
    const c = await convertBytes(encodeIndexFile(format(8), {}, []), { target: V10 });
    expect(c.result.digest.toString("hex")).toBe("da39a3ee5e6b4b0d3255bfef95601890afd80709");
    expect(c.result).toMatchObject({ records: 0, guidsChanged: 0, bytesWritten: 96 });
  });

  it("counts only records whose stored GUID changes", async () => {
    const guids = [
      Buffer.alloc(20, 1),
      Buffer.alloc(20, 2),
      Buffer.alloc(20, 3),
      Buffer.alloc(20, 4),
    ];
    const source = encodeIndexFile(
      V10,
      { lastUid: 4 },
      guids.map((guid, i) => ({ uid: i + 1, guid, modseq: 1n })),
    );
    // Same GUID for uid 1, undefined (keep) for uid 2, new ones for 3 and 4.
    const c = await convertBytes(source, {
      target: V10,
      guidFor: async (req) =>
        req.uid === 1
          ? Buffer.from(guids[0] as Buffer)
          : req.uid === 2
            ? undefined
            : Buffer.alloc(20, 9),
    });
    expect(c.result.guidsChanged).toBe(2);
    expectConsistent(source, c);
    expect(recordAt(c.bytes, geometry(c.bytes), 3).subarray(60, 80)).toEqual(Buffer.alloc(20, 9));
  });

  it("mixes synchronous and asynchronous guidFor answers", async () => {
    const source = encodeIndexFile(
      format(9),
      { lastUid: 6 },
      [1, 2, 3, 4, 5, 6].map((uid) => ({ uid })),
    );
    const c = await convertBytes(source, {
      target: V10,
      guidFor: (req) =>
        req.uid % 2 === 0
          ? Promise.resolve(Buffer.alloc(20, req.uid))
          : Buffer.alloc(20, 100 + req.uid),
    });
    const g = geometry(c.bytes);
    for (let i = 0; i < 6; i++) {
      const uid = i + 1;
      expect(recordAt(c.bytes, g, i).subarray(60, 80)).toEqual(
        Buffer.alloc(20, uid % 2 === 0 ? uid : 100 + uid),
      );
    }
    expect(c.result.guidsChanged).toBe(6);
  });

  it("refuses a GUID that is not 20 bytes, and passes on guidFor's errors", async () => {
    const file = await writeTemp(encodeIndexFile(format(9), { lastUid: 1 }, [{ uid: 1 }]));
    await expect(
      convertFile(file, { target: V10, guidFor: () => Buffer.alloc(12) }),
    ).rejects.toThrow(/GUID of 12 bytes/);
    await expect(
      convertFile(file, {
        target: V10,
        guidFor: async () => {
          throw new Error("hash failed");
        },
      }),
    ).rejects.toThrow("hash failed");
  });
});

// ---------------------------------------------------------------------------
// (e) Output length, trailing garbage.

describe("(e) output length", () => {
  it.each([4, 5, 6, 7, 8, 9, 10])(
    "v%i: headerSize + exists × recordSize for every target",
    async (minor) => {
      const f = format(minor);
      const recs = [1, 2, 3, 4, 5].map((uid) => pick(f, { uid, size: uid * 10, modseq: 3n }));
      const source = encodeIndexFile(f, { lastUid: 5 }, recs);
      for (const target of [6, 7, 8, 9, 10]) {
        const t = format(target);
        const c = await convertBytes(source, { target: t });
        expect(c.bytes.length).toBe(t.headerSize + 5 * t.recordSize);
        expect(c.result.bytesWritten).toBe(c.bytes.length);
      }
    },
  );

  it("drops bytes after EXISTS records in the source", async () => {
    const clean = encodeIndexFile(
      format(9),
      { lastUid: 3 },
      [1, 2, 3].map((uid) => ({ uid, modseq: 5n })),
    );
    // A crash leftover: a fourth record written, EXISTS not yet updated, plus junk.
    const leftover = encodeIndexFile(format(9), {}, [{ uid: 4, modseq: 6n }]).subarray(96);
    const dirty = Buffer.concat([clean, leftover, randomBytes(37)]);
    const a = await convertBytes(clean, { target: V10 });
    const b = await convertBytes(dirty, { target: V10 });
    expect(b.bytes).toEqual(a.bytes);
    expect(b.bytes.length).toBe(96 + 3 * 88);
    expect(b.result.records).toBe(3);
    expect((await stat(await writeTemp(b.bytes))).size).toBe(96 + 3 * 88);
  });
});

// ---------------------------------------------------------------------------
// (f) Expunge files; refused indexes.

describe("(f) expunge files and bad UIDs", () => {
  it("converts an expunge file with unsorted, repeated and > LAST_UID UIDs, in file order", async () => {
    const uids = [7, 3, 3, 12, 1, 7];
    const source = encodeIndexFile(
      format(8),
      { lastUid: 10 },
      uids.map((uid, i) => ({ uid, lastUpdated: 1000 + i, modseq: BigInt(i) })),
    );
    const file = await writeTemp(source, "cyrus.expunge");
    const c = await convertFile(file, { target: V10 }, "expunge");
    expectConsistent(source, c);
    const g = geometry(c.bytes);
    for (let i = 0; i < uids.length; i++) {
      const r = recordAt(c.bytes, g, i);
      expect(r.readUInt32BE(0)).toBe(uids[i]);
      expect(r.readUInt32BE(28)).toBe(1000 + i);
      expect(r.readBigUInt64BE(80)).toBe(i === 0 ? 1n : BigInt(i)); // MODSEQ 0 → 1
    }
  });

  it.each([
    ["UID 0", [1, 0, 2], /record 2 has UID 0/],
    ["unsorted UIDs", [1, 5, 4], /record 3 has UID 4 after UID 5 \(UIDs must ascend\)/],
    ["a repeated UID", [1, 2, 2], /record 3 has UID 2 after UID 2/],
    ["UID > LAST_UID", [1, 2, 11], /record 3 has UID 11 above LAST_UID 10/],
  ] as const)("refuses an index with %s", async (_what, uids, message) => {
    const file = await writeTemp(
      encodeIndexFile(
        format(9),
        { lastUid: 10 },
        uids.map((uid) => ({ uid })),
      ),
    );
    const err = await convertFile(file, { target: V10 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CyrusFormatError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toMatch(/run reconstruct/);
  });
});

describe("the guids option (the agent's upgrade path)", () => {
  it("replaces only old-style GUIDs, byte-identical to the equivalent guidFor", async () => {
    // v10 records with NULL, padded and SHA1 GUIDs; a table holding a GUID
    // for every UID, including the SHA1 ones (which must be kept).
    const kinds = ["null", "padded", "sha1"] as const;
    const records = Array.from({ length: 30 }, (_, i) => {
      const kind = kinds[i % 3]!;
      const guid =
        kind === "null"
          ? Buffer.alloc(20)
          : kind === "padded"
            ? Buffer.concat([randomBytes(12), Buffer.alloc(8)])
            : randomBytes(20);
      return { uid: i * 2 + 1, size: 100 + i, guid, modseq: BigInt(i + 1) };
    });
    const source = encodeIndexFile(V10, { lastUid: 100, uidValidity: 7 }, records);
    const table = new Map(
      records.map((r) => [r.uid, createHash("sha1").update(`m${r.uid}`).digest()]),
    );
    const viaMap = await convertBytes(source, { target: V10, guids: table });
    const viaCallback = await convertBytes(source, {
      target: V10,
      guidFor: (r) => (r.oldStyle ? table.get(r.uid) : undefined),
    });
    expect(viaMap.bytes.equals(viaCallback.bytes)).toBe(true);
    expect(viaMap.result.digest.equals(viaCallback.result.digest)).toBe(true);
    expect(viaMap.result.guidsChanged).toBe(20);
    for (const [i, r] of records.entries()) {
      const at = 96 + i * 88 + 60;
      const written = viaMap.bytes.subarray(at, at + 20);
      expect(written.equals(i % 3 === 2 ? r.guid : table.get(r.uid)!), `uid ${r.uid}`).toBe(true);
    }
  });
});

describe("the guidTable option (packed GUIDs)", () => {
  /** The same GUIDs as a sorted table: uids ascending, 20 bytes each. */
  function tableOf(map: Map<number, Buffer>): { uids: Uint32Array; guids: Buffer } {
    const uids = Uint32Array.from([...map.keys()].sort((a, b) => a - b));
    return { uids, guids: Buffer.concat([...uids].map((u) => map.get(u)!)) };
  }

  it("gives byte-identical output and digest to the guids map, for every source and target", async () => {
    for (const sourceMinor of [6, 7, 9, 10]) {
      const f = format(sourceMinor);
      const records = Array.from({ length: 40 }, (_, i) => {
        const values: RecordValues = { uid: i * 3 + 1, size: 200 + i, modseq: BigInt(i % 4) };
        if (sourceMinor >= 7 && sourceMinor <= 9 && i % 2 === 0) values.uuid = randomBytes(12);
        if (sourceMinor === 10 && i % 3 === 1) values.guid = randomBytes(20);
        return pick(f, values);
      });
      const source = encodeIndexFile(f, { lastUid: 200, uidValidity: 9 }, records);
      // GUIDs for most uids (not all: a missing one keeps the source's).
      const map = new Map<number, Buffer>();
      for (const r of records) {
        const uid = r.uid as number;
        if (uid % 5 !== 0) map.set(uid, createHash("sha1").update(`g${uid}`).digest());
      }
      for (const targetMinor of [6, 7, 8, 9, 10]) {
        const target = format(targetMinor);
        const viaMap = await convertBytes(source, { target, guids: map });
        const viaTable = await convertBytes(source, { target, guidTable: tableOf(map) });
        // The reference: one callback per record, the map's rule spelled out.
        const viaCallback = await convertBytes(source, {
          target,
          guidFor: (r) => (r.oldStyle ? map.get(r.uid) : undefined),
        });
        // The map in descending insertion order (packed after a sort).
        const reversed = new Map([...map].reverse());
        const viaReversed = await convertBytes(source, { target, guids: reversed });
        const where = `v${sourceMinor} → v${targetMinor}`;
        for (const other of [viaMap, viaTable, viaReversed]) {
          expect(other.bytes.equals(viaCallback.bytes), where).toBe(true);
          expect(other.result.digest.equals(viaCallback.result.digest), where).toBe(true);
          expect(other.result.guidsChanged, where).toBe(viaCallback.result.guidsChanged);
        }
      }
    }
  });

  it("converts a file of several read chunks (the reader's buffers taking turns) as the in-memory converter does", async () => {
    // 40,000 v9 records = 3.2 MB: four 1 MiB chunks through two buffers.
    const n = 40_000;
    const v9 = format(9);
    const records = Array.from({ length: n }, (_, i) =>
      pick(v9, {
        uid: i * 2 + 1,
        size: 1000 + (i % 977),
        modseq: BigInt(i % 3),
        ...(i % 4 === 0 ? { uuid: randomBytes(12) } : {}),
      }),
    );
    const source = encodeIndexFile(v9, { lastUid: 2 * n, uidValidity: 5 }, records);
    expect(source.length).toBeGreaterThan(3 * READ_CHUNK_BYTES);
    const map = new Map<number, Buffer>();
    for (let i = 0; i < n; i += 3) map.set(i * 2 + 1, createHash("sha1").update(`c${i}`).digest());
    const viaTable = await convertBytes(source, { target: V10, guidTable: tableOf(map) });
    // The reference reads nothing in chunks: the whole file in memory.
    const reference = convertFileBytes(parseFileBytes(source, "source", "index"), V10, map);
    expect(viaTable.bytes.equals(Buffer.concat([reference.header, ...reference.records]))).toBe(
      true,
    );
    expect(viaTable.result.digest.toString("hex")).toBe(digestOf(reference));
  });

  it("finds uids of an expunge file in any order, repeated ones too", async () => {
    const uids = [9, 3, 7, 3, 12, 1, 9];
    const records = uids.map((uid) => pick(V10, { uid, size: 10 + uid, modseq: 2n }));
    const source = encodeIndexFile(V10, { lastUid: 12, uidValidity: 1 }, records);
    const file = await writeTemp(source, "cyrus.expunge");
    const map = new Map([1, 3, 7, 9].map((u) => [u, createHash("sha1").update(`e${u}`).digest()]));
    const viaMap = await convertFile(file, { target: V10, guids: map }, "expunge");
    const viaTable = await convertFile(file, { target: V10, guidTable: tableOf(map) }, "expunge");
    expect(viaTable.bytes.equals(viaMap.bytes)).toBe(true);
    expect(viaTable.result.digest.equals(viaMap.result.digest)).toBe(true);
    expect(viaTable.result.guidsChanged).toBe(6);
  });

  it("refuses a table whose uids do not ascend or whose GUID bytes do not match", async () => {
    const source = encodeIndexFile(V10, { lastUid: 5, uidValidity: 1 }, [
      pick(V10, { uid: 1, size: 1 }),
    ]);
    await expect(
      convertBytes(source, {
        target: V10,
        guidTable: { uids: Uint32Array.from([2, 1]), guids: Buffer.alloc(40) },
      }),
    ).rejects.toThrow(/ascending/);
    await expect(
      convertBytes(source, {
        target: V10,
        guidTable: { uids: Uint32Array.from([1]), guids: Buffer.alloc(19) },
      }),
    ).rejects.toThrow(/19 bytes/);
  });

  it("a map value that is not 20 bytes fails only when a record uses it", async () => {
    const source = encodeIndexFile(V10, { lastUid: 9, uidValidity: 1 }, [
      pick(V10, { uid: 1, size: 1 }),
      pick(V10, { uid: 2, size: 2, guid: randomBytes(20) }),
    ]);
    // uid 2 has an SHA1 GUID: its odd map value is never used.
    const good = createHash("sha1").update("x").digest();
    const unused = new Map([
      [1, good],
      [2, Buffer.alloc(7)],
    ]);
    const c = await convertBytes(source, { target: V10, guids: unused });
    expect(c.bytes.subarray(96 + 60, 96 + 80).equals(good)).toBe(true);
    const used = new Map([[1, Buffer.alloc(7)]]);
    await expect(convertBytes(source, { target: V10, guids: used })).rejects.toThrow(
      /GUID of 7 bytes/,
    );
  });
});
