// Properties of convertIndex over random valid index files of every readable
// version (4..10) converted to every writable one (6..10), read back through
// IndexReader. The expected values follow the rules of cyrus-2.3-spool.md 3.3
// and 3.4 (and convert.ts's downgrade rule for the UUID slot), computed here
// independently of the codec:
//   - a field both versions have is carried (u32 quota widens to u64), except
//     options, which v6/v7 targets keep only bit 0 of (POP3_NEW_UIDL);
//   - geometry comes from the target, EXISTS is the record count, spares are 0;
//   - a field the source lacks takes its default: HIGHESTMODSEQ 1, MODSEQ 1,
//     CONTENT_LINES 0xFFFFFFFF, CACHE_VERSION 0;
//   - MODSEQ 0 becomes 1 only when upgrading to 10 from v8/v9;
//   - GUID slot: guidFor's answer, else the source's (v10 GUID, v7–v9 UUID +
//     8 zero bytes, NULL before v7); a v7–v9 target keeps the first 12 bytes
//     of an old-style GUID (bytes 12..19 zero) and the NULL UUID otherwise.
//
// One large file (60,000 records) checks conversion across several read
// chunks: convertIndex reads with the default 4 MiB chunks.

import { createHash } from "node:crypto";
import { open, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { convertIndex, type GuidRequest } from "../../src/cyrus/convert.js";
import type { FieldValue } from "../../src/cyrus/field-codec.js";
import {
  formatFor,
  type HeaderFieldName,
  type IndexFormat,
  type RecordFieldName,
} from "../../src/cyrus/formats/index.js";
import { IndexReader, READ_CHUNK_BYTES } from "../../src/cyrus/index-file.js";
import {
  encodeIndexFile,
  type HeaderValues,
  type RecordValues,
} from "../../src/cyrus/index-writer.js";
import { makeTempDir } from "../helpers/fixtures.js";

const SOURCE_MINORS = [4, 5, 6, 7, 8, 9, 10] as const;
const TARGET_MINORS = [6, 7, 8, 9, 10] as const;
const MAX_U64 = (1n << 64n) - 1n;

function format(minor: number): IndexFormat {
  const f = formatFor(minor);
  if (f === undefined) throw new Error(`no format ${minor}`);
  return f;
}

let dir = "";
let cleanup: () => Promise<void> = async () => {};
beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir("guidup-convert-prop-"));
});
afterAll(() => cleanup());

// ---------------------------------------------------------------------------
// Generators.

const u32 = fc.oneof(
  fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff),
  fc.integer({ min: 0, max: 0xffffffff }),
);
const u64 = fc.oneof(
  fc.constantFrom(0n, 1n, 0xffffffffn, 0x100000000n, MAX_U64),
  fc.bigInt({ min: 0n, max: MAX_U64 }),
);
const bytesOf = (n: number) =>
  fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a));
/** NULL, padded schema-1 UUID, or random (SHA1-like) 20 bytes. */
const guid20 = fc.oneof(
  fc.constant(Buffer.alloc(20)),
  bytesOf(11).map((b) => Buffer.concat([Buffer.from([1]), b, Buffer.alloc(8)])),
  bytesOf(20),
);
const uuid12 = fc.oneof(fc.constant(Buffer.alloc(12)), bytesOf(12));

/**
 * The file for a RandomFile. encodeIndexFile masks v6/v7 POP3_NEW_UIDL to bit
 * 0 (the writer's rule), but a file on disk may hold any u32 there and 2.3.16
 * carries all of it to v8+ (3.3), so the raw value is put back.
 */
function fileBytes(src: RandomFile): Buffer {
  const bytes = encodeIndexFile(format(src.minor), src.header, src.records);
  if (src.minor === 6 || src.minor === 7) bytes.writeUInt32BE(src.header.options as number, 60);
  return bytes;
}

/** Geometry and UID fields are set by the generator of the whole file. */
const SET_BY_FILE: ReadonlySet<string> = new Set([
  "minorVersion",
  "startOffset",
  "recordSize",
  "exists",
  "lastUid",
  "uid",
]);

function valuesArb<N extends string>(
  fields: readonly { name: N; type: string; size: number }[],
): fc.Arbitrary<Partial<Record<N, FieldValue>>> {
  const model: Record<string, fc.Arbitrary<FieldValue>> = {};
  for (const f of fields) {
    if (SET_BY_FILE.has(f.name)) continue;
    model[f.name] =
      f.type === "u32" ? u32 : f.type === "u64" ? u64 : f.size === 20 ? guid20 : uuid12;
  }
  return fc.record(model) as fc.Arbitrary<Partial<Record<N, FieldValue>>>;
}

interface RandomFile {
  minor: number;
  header: HeaderValues;
  records: RecordValues[];
  /** Per record: what guidFor answers (undefined = keep the source GUID). */
  answers: (Buffer | undefined)[];
  useGuidFor: boolean;
}

const randomFile: fc.Arbitrary<RandomFile> = fc
  .constantFrom(...SOURCE_MINORS)
  .chain((minor) => {
    const f = format(minor);
    const record = fc.record({
      gap: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 0x08000000 })),
      values: valuesArb(f.recordFields),
      answer: fc.option(guid20, { nil: undefined }),
    });
    return fc.record({
      minor: fc.constant(minor),
      header: valuesArb(f.headerFields),
      rows: fc.array(record, { maxLength: 6 }),
      lastUidExtra: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0x7fffffff })),
      useGuidFor: fc.boolean(),
    });
  })
  .map(({ minor, header, rows, lastUidExtra, useGuidFor }) => {
    let uid = 0;
    const records = rows.map((row) => {
      uid += row.gap;
      return { ...row.values, uid } as RecordValues;
    });
    return {
      minor,
      header: { ...header, lastUid: uid + lastUidExtra } as HeaderValues,
      records,
      answers: rows.map((r) => r.answer),
      useGuidFor,
    };
  });

// ---------------------------------------------------------------------------
// Expected values, from the rules in the header comment.

function big(v: FieldValue | undefined): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return BigInt(v);
  throw new Error(`not an integer: ${String(v)}`);
}

function isOldStyle(guid: Buffer): boolean {
  return guid.subarray(12, 20).every((b) => b === 0);
}

/** The source record's GUID as 20 bytes. */
function sourceGuid(minor: number, r: RecordValues): Buffer {
  if (minor === 10) return r.guid as Buffer;
  if (minor >= 7) return Buffer.concat([r.uuid as Buffer, Buffer.alloc(8)]);
  return Buffer.alloc(20);
}

/** What a reader of a target-`minor` file sees as the record's GUID. */
function storedAs(minor: number, guid: Buffer): Buffer {
  if (minor === 10) return guid;
  if (minor >= 7 && isOldStyle(guid)) return guid;
  return Buffer.alloc(20);
}

function expectedHeader(src: RandomFile, name: HeaderFieldName, target: IndexFormat): bigint {
  const source = format(src.minor);
  switch (name) {
    case "minorVersion":
      return BigInt(target.minor);
    case "startOffset":
      return BigInt(target.headerSize);
    case "recordSize":
      return BigInt(target.recordSize);
    case "exists":
      return BigInt(src.records.length);
  }
  if (name.startsWith("spare")) return 0n;
  if (source.headerField(name) === undefined) return name === "highestModseq" ? 1n : 0n;
  const value = big(src.header[name]);
  if (name === "options" && target.minor <= 7) return value & 1n;
  return value;
}

function expectedRecord(
  src: RandomFile,
  r: RecordValues,
  name: RecordFieldName,
  target: IndexFormat,
): bigint {
  const source = format(src.minor);
  if (source.recordField(name) === undefined) {
    if (name === "contentLines") return 0xffffffffn;
    if (name === "modseq") return 1n;
    return 0n; // cacheVersion
  }
  const value = big(r[name]);
  if (name === "modseq" && value === 0n && target.minor === 10 && src.minor < 10) return 1n;
  return value;
}

async function readBack(
  file: string,
): Promise<{ reader: IndexReader; records: Map<RecordFieldName, FieldValue>[] }> {
  const reader = await IndexReader.open(file);
  const records = [];
  for await (const r of reader.records()) records.push(r as Map<RecordFieldName, FieldValue>);
  await reader.close();
  return { reader, records };
}

async function convertTo(
  source: string,
  target: IndexFormat,
  guidFor: ((req: GuidRequest) => Buffer | undefined | Promise<Buffer | undefined>) | undefined,
  out: string,
) {
  const reader = await IndexReader.open(source);
  const fh = await open(out, "w");
  try {
    return await convertIndex(reader, fh.fd, { target, ...(guidFor ? { guidFor } : {}) });
  } finally {
    await fh.close();
    await reader.close();
  }
}

// ---------------------------------------------------------------------------

describe("convertIndex properties", () => {
  it("carries, defaults and rewrites every field by the 2.3 rules, 4..10 → 6..10", async () => {
    const sourcePath = path.join(dir, "source.index");
    const outPath = path.join(dir, "out.index");
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(randomFile, async (src) => {
        runs++;
        await writeFile(sourcePath, fileBytes(src));
        for (const targetMinor of TARGET_MINORS) {
          const target = format(targetMinor);
          const requests: GuidRequest[] = [];
          const guidFor = src.useGuidFor
            ? (req: GuidRequest) => {
                requests.push(req);
                const answer = src.answers[req.msgno - 1];
                // Alternate sync and async answers.
                return req.msgno % 2 === 0 ? Promise.resolve(answer) : answer;
              }
            : undefined;
          const result = await convertTo(sourcePath, target, guidFor, outPath);
          const out = await readFile(outPath);
          const { reader, records } = await readBack(outPath);
          const ctx = `v${src.minor} → v${targetMinor}`;

          expect(out.length, ctx).toBe(target.headerSize + src.records.length * target.recordSize);
          expect(result.bytesWritten, ctx).toBe(out.length);
          expect(result.records, ctx).toBe(src.records.length);

          for (const field of target.headerFields) {
            expect(big(reader.header.values.get(field.name)), `${ctx} header ${field.name}`).toBe(
              expectedHeader(src, field.name, target),
            );
          }

          const digest = createHash("sha1");
          let changed = 0;
          expect(records.length, ctx).toBe(src.records.length);
          for (const [i, r] of src.records.entries()) {
            const got = records[i] as Map<RecordFieldName, FieldValue>;
            const at = `${ctx} record ${i + 1}`;
            for (const field of target.recordFields) {
              if (field.name === "guid" || field.name === "uuid") continue;
              expect(big(got.get(field.name)), `${at} ${field.name}`).toBe(
                expectedRecord(src, r, field.name, target),
              );
            }
            const fromSource = sourceGuid(src.minor, r);
            const chosen = (src.useGuidFor ? src.answers[i] : undefined) ?? fromSource;
            const stored = storedAs(targetMinor, chosen);
            if (targetMinor === 10) expect(got.get("guid"), `${at} guid`).toEqual(chosen);
            else if (targetMinor >= 7)
              expect(got.get("uuid"), `${at} uuid`).toEqual(stored.subarray(0, 12));
            else expect(got.has("guid") || got.has("uuid"), at).toBe(false);
            if (!stored.equals(fromSource)) changed++;
            const uid = Buffer.alloc(4);
            uid.writeUInt32BE(r.uid as number);
            digest.update(uid).update(stored);

            if (src.useGuidFor) {
              const req = requests[i];
              expect(req, at).toMatchObject({ msgno: i + 1, uid: r.uid, size: r.size });
              expect(req?.sourceGuid, at).toEqual(fromSource);
            }
          }
          expect(result.guidsChanged, ctx).toBe(changed);
          expect(result.digest.toString("hex"), ctx).toBe(digest.digest("hex"));
          if (!src.useGuidFor) expect(requests, ctx).toEqual([]);
        }
      }),
      { numRuns: 150 },
    );
    expect(runs).toBe(150);
  });

  it("upgrading to 10 and converting again is idempotent", async () => {
    const a = path.join(dir, "idem-a.index");
    const b = path.join(dir, "idem-b.index");
    const c = path.join(dir, "idem-c.index");
    await fc.assert(
      fc.asyncProperty(randomFile, async (src) => {
        await writeFile(a, fileBytes(src));
        await convertTo(a, format(10), undefined, b);
        await convertTo(b, format(10), undefined, c);
        expect(await readFile(c)).toEqual(await readFile(b));
      }),
      { numRuns: 100 },
    );
  });
});

// ---------------------------------------------------------------------------
// A file spanning several 4 MiB read chunks, built once, outside fast-check.

describe("conversion across read chunks", () => {
  const N = 60_000;

  /** Deterministic record values: modseq 0 every 7th, UUID pattern, gaps in UIDs. */
  function bigFile(minor: 7 | 9): Buffer {
    const f = format(minor);
    const recs: RecordValues[] = [];
    for (let i = 0; i < N; i++) {
      const uuid = Buffer.alloc(12);
      if (i % 3 !== 0) {
        uuid[0] = 1;
        uuid.writeUInt32BE(i, 8);
      }
      recs.push({
        uid: 2 * i + 1,
        internalDate: 1_230_000_000 + i,
        size: 1000 + (i % 5000),
        systemFlags: i & 0xf,
        userFlags2: i,
        contentLines: i % 100,
        cacheVersion: 2,
        uuid,
        ...(minor === 9 ? { modseq: BigInt(i % 7) } : {}),
      });
    }
    return encodeIndexFile(f, { lastUid: 2 * N, highestModseq: 99n, uidValidity: 42 }, recs);
  }

  it.each([7, 9] as const)("v%i with %i records → v10", async (minor) => {
    const source = bigFile(minor);
    const f = format(minor);
    expect(N * f.recordSize).toBeGreaterThan(READ_CHUNK_BYTES);
    const sourcePath = path.join(dir, `big-v${minor}.index`);
    const outPath = path.join(dir, `big-v${minor}-out.index`);
    await writeFile(sourcePath, source);

    const reader = await IndexReader.open(sourcePath);
    let chunks = 0;
    for await (const _ of reader.chunks()) chunks++;
    await reader.close();
    expect(chunks).toBeGreaterThan(1);

    const msgnos: number[] = [];
    const result = await convertTo(
      sourcePath,
      format(10),
      (req) => {
        msgnos.push(req.msgno);
        if (req.msgno % 5 !== 0) return undefined;
        const g = Buffer.alloc(20, 0xab);
        g.writeUInt32BE(req.uid, 0);
        return Promise.resolve(g);
      },
      outPath,
    );
    expect(msgnos).toEqual(Array.from({ length: N }, (_, i) => i + 1));

    // The expected file, assembled at fixed offsets (table 2, rules 3.4).
    const expected = Buffer.alloc(96 + N * 88);
    source.copy(expected, 0, 0, 32); // GENERATION_NO .. LAST_UID
    expected.writeUInt32BE(10, 8);
    expected.writeUInt32BE(96, 12);
    expected.writeUInt32BE(88, 16);
    source.copy(expected, 32, 32, 68); // quota .. LEAKED_CACHE: same offsets v6+
    expected.writeBigUInt64BE(minor === 7 ? 1n : 99n, 68);
    const digest = createHash("sha1");
    let changed = 0;
    for (let i = 0; i < N; i++) {
      const s = 76 + (minor === 9 ? 20 : 0) + i * f.recordSize;
      const d = 96 + i * 88;
      source.copy(expected, d, s, s + 60);
      const uuid = source.subarray(s + 60, s + 72);
      let guid = Buffer.concat([uuid, Buffer.alloc(8)]);
      if ((i + 1) % 5 === 0) {
        guid = Buffer.alloc(20, 0xab);
        guid.writeUInt32BE(source.readUInt32BE(s), 0);
        changed++;
      }
      guid.copy(expected, d + 60);
      const modseq = minor === 9 ? source.readBigUInt64BE(s + 72) : 0n;
      expected.writeBigUInt64BE(modseq === 0n ? 1n : modseq, d + 80);
      digest.update(source.subarray(s, s + 4)).update(guid);
    }
    const out = await readFile(outPath);
    expect(out.length).toBe(expected.length);
    expect(out.equals(expected)).toBe(true);
    expect(result.records).toBe(N);
    expect(result.guidsChanged).toBe(changed);
    expect(result.digest.toString("hex")).toBe(digest.digest("hex"));

    // And it reads back the same in 4 MiB chunks and in small ones.
    const back = await IndexReader.open(outPath);
    const a: Buffer[] = [];
    const b: Buffer[] = [];
    for await (const c of back.chunks()) a.push(c.buf);
    for await (const c of back.chunks(88 * 1000 + 17)) b.push(c.buf);
    await back.close();
    expect(a.length).toBeGreaterThan(1);
    expect(Buffer.concat(a).equals(out.subarray(96))).toBe(true);
    expect(Buffer.concat(b).equals(out.subarray(96))).toBe(true);
  });
});
