// The version tables against cyrus-2.3-spool.md tables 1.2 (header) and 2
// (record), transcribed here by hand: every field's offset, size and type, the
// declared sizes, and the rules the tables must keep (sizes sum up, names
// unique, u64 alignment from v9 on). style.md habit 5.

import { describe, expect, it } from "vitest";
import {
  formatFor,
  type IndexFormat,
  OLDEST_READABLE_MINOR,
  TABLES,
  TARGET_MINOR,
  WRITABLE_MINORS,
  writableFormat,
} from "../../src/cyrus/formats/index.js";

type Row = readonly [name: string, offset: number, size: number, type: "u32" | "u64" | "bytes"];

/** Header bytes 0..31, every version (table 1.2). */
const HEADER_PREFIX: readonly Row[] = [
  ["generation", 0, 4, "u32"], // GENERATION_NO
  ["format", 4, 4, "u32"], // FORMAT
  ["minorVersion", 8, 4, "u32"], // MINOR_VERSION
  ["startOffset", 12, 4, "u32"], // START_OFFSET
  ["recordSize", 16, 4, "u32"], // RECORD_SIZE
  ["exists", 20, 4, "u32"], // EXISTS
  ["lastAppendDate", 24, 4, "u32"], // LAST_APPENDDATE
  ["lastUid", 28, 4, "u32"], // LAST_UID
];

/** Table 1.2, column "v4, v5": u32 quota at 32, UIDVALIDITY at 40. */
const HEADER_V4: readonly Row[] = [
  ...HEADER_PREFIX,
  ["quotaUsed", 32, 4, "u32"], // QUOTA_MAILBOX_USED (u32)
  ["pop3LastLogin", 36, 4, "u32"],
  ["uidValidity", 40, 4, "u32"],
  ["deleted", 44, 4, "u32"],
  ["answered", 48, 4, "u32"],
  ["flagged", 52, 4, "u32"],
  ["options", 56, 4, "u32"], // POP3_NEW_UIDL
  ["leakedCache", 60, 4, "u32"], // SPARE0, becomes LEAKED_CACHE on upgrade (trap 11.9)
  ["spare1", 64, 4, "u32"],
  ["spare2", 68, 4, "u32"],
  ["spare3", 72, 4, "u32"],
];

/** Column "v6, v7": u64 quota at 32..39 pushed the rest down by 4. */
const HEADER_V6: readonly Row[] = [
  ...HEADER_PREFIX,
  ["quotaUsed", 32, 8, "u64"],
  ["pop3LastLogin", 40, 4, "u32"],
  ["uidValidity", 44, 4, "u32"],
  ["deleted", 48, 4, "u32"],
  ["answered", 52, 4, "u32"],
  ["flagged", 56, 4, "u32"],
  ["options", 60, 4, "u32"], // POP3_NEW_UIDL
  ["leakedCache", 64, 4, "u32"],
  ["spare1", 68, 4, "u32"],
  ["spare2", 72, 4, "u32"],
];

/** Column "v8". */
const HEADER_V8: readonly Row[] = [
  ...HEADER_PREFIX,
  ["quotaUsed", 32, 8, "u64"],
  ["pop3LastLogin", 40, 4, "u32"],
  ["uidValidity", 44, 4, "u32"],
  ["deleted", 48, 4, "u32"],
  ["answered", 52, 4, "u32"],
  ["flagged", 56, 4, "u32"],
  ["options", 60, 4, "u32"], // MAILBOX_OPTIONS
  ["leakedCache", 64, 4, "u32"],
  ["highestModseq", 68, 8, "u64"],
  ["spare0", 76, 4, "u32"],
  ["spare1", 80, 4, "u32"],
  ["spare2", 84, 4, "u32"],
  ["spare3", 88, 4, "u32"],
];

/** Column "v9, v10" (and table 1.3). */
const HEADER_V9: readonly Row[] = [...HEADER_V8, ["spare4", 92, 4, "u32"]];

/** Table 2, column "v≤4". */
const RECORD_V4: readonly Row[] = [
  ["uid", 0, 4, "u32"],
  ["internalDate", 4, 4, "u32"],
  ["sentDate", 8, 4, "u32"],
  ["size", 12, 4, "u32"],
  ["headerSize", 16, 4, "u32"],
  ["contentOffset", 20, 4, "u32"],
  ["cacheOffset", 24, 4, "u32"],
  ["lastUpdated", 28, 4, "u32"],
  ["systemFlags", 32, 4, "u32"],
  ["userFlags0", 36, 4, "u32"],
  ["userFlags1", 40, 4, "u32"],
  ["userFlags2", 44, 4, "u32"],
  ["userFlags3", 48, 4, "u32"],
];
const RECORD_V5: readonly Row[] = [...RECORD_V4, ["contentLines", 52, 4, "u32"]];
const RECORD_V6: readonly Row[] = [...RECORD_V5, ["cacheVersion", 56, 4, "u32"]];
const RECORD_V7: readonly Row[] = [...RECORD_V6, ["uuid", 60, 12, "bytes"]];
const RECORD_V8: readonly Row[] = [...RECORD_V7, ["modseq", 72, 8, "u64"]];
const RECORD_V10: readonly Row[] = [
  ...RECORD_V6,
  ["guid", 60, 20, "bytes"],
  ["modseq", 80, 8, "u64"],
];

interface Expected {
  headerSize: number;
  recordSize: number;
  writable: boolean;
  header: readonly Row[];
  record: readonly Row[];
}

/** Section 0.1 sizes and tables 1.2 / 2, per minor. */
const EXPECTED: Readonly<Record<number, Expected>> = {
  4: { headerSize: 76, recordSize: 52, writable: false, header: HEADER_V4, record: RECORD_V4 },
  5: { headerSize: 76, recordSize: 56, writable: false, header: HEADER_V4, record: RECORD_V5 },
  6: { headerSize: 76, recordSize: 60, writable: true, header: HEADER_V6, record: RECORD_V6 },
  7: { headerSize: 76, recordSize: 72, writable: true, header: HEADER_V6, record: RECORD_V7 },
  8: { headerSize: 92, recordSize: 80, writable: true, header: HEADER_V8, record: RECORD_V8 },
  9: { headerSize: 96, recordSize: 80, writable: true, header: HEADER_V9, record: RECORD_V8 },
  10: { headerSize: 96, recordSize: 88, writable: true, header: HEADER_V9, record: RECORD_V10 },
};

const MINORS = [4, 5, 6, 7, 8, 9, 10] as const;

function format(minor: number): IndexFormat {
  const f = formatFor(minor);
  if (f === undefined) throw new Error(`no format for minor ${minor}`);
  return f;
}

function rows(fields: IndexFormat["headerFields"] | IndexFormat["recordFields"]): Row[] {
  return fields.map((f) => [f.name, f.offset, f.size, f.type] as const);
}

describe("version tables", () => {
  it("cover exactly minors 4..10, oldest 4, target 10, writable 6..10", () => {
    expect(TABLES.map((t) => t.minor)).toEqual([...MINORS]);
    expect(OLDEST_READABLE_MINOR).toBe(4);
    expect(TARGET_MINOR).toBe(10);
    expect([...WRITABLE_MINORS]).toEqual([6, 7, 8, 9, 10]);
    for (const minor of [0, 1, 2, 3, 11, 12, 17]) {
      expect(formatFor(minor)).toBeUndefined();
      expect(writableFormat(minor)).toBeUndefined();
    }
    expect(writableFormat(4)).toBeUndefined();
    expect(writableFormat(5)).toBeUndefined();
    for (const minor of [6, 7, 8, 9, 10]) expect(writableFormat(minor)?.minor).toBe(minor);
  });

  describe.each(MINORS)("v%i", (minor) => {
    const f = format(minor);
    const expected = EXPECTED[minor] as Expected;

    it("declares the sizes of section 0.1 and its writability", () => {
      expect(f.minor).toBe(minor);
      expect(f.headerSize).toBe(expected.headerSize);
      expect(f.recordSize).toBe(expected.recordSize);
      expect(f.writable).toBe(expected.writable);
    });

    it("header rows sum to headerSize, record rows to recordSize", () => {
      expect(f.header.reduce((n, r) => n + r.size, 0)).toBe(f.headerSize);
      expect(f.record.reduce((n, r) => n + r.size, 0)).toBe(f.recordSize);
    });

    it("has unique field names", () => {
      const header = f.header.map((r) => r.name);
      const record = f.record.map((r) => r.name);
      expect(new Set(header).size).toBe(header.length);
      expect(new Set(record).size).toBe(record.length);
    });

    it("has row sizes that match their types", () => {
      for (const r of [...f.header, ...f.record]) {
        if (r.type === "u32") expect(r.size, r.name).toBe(4);
        if (r.type === "u64") expect(r.size, r.name).toBe(8);
      }
    });

    it("places every header field as table 1.2 says", () => {
      expect(rows(f.headerFields)).toEqual(expected.header);
    });

    it("places every record field as table 2 says", () => {
      expect(rows(f.recordFields)).toEqual(expected.record);
    });

    it("looks fields up by name at the placed offsets", () => {
      for (const field of f.headerFields) expect(f.headerField(field.name)).toEqual(field);
      for (const field of f.recordFields) expect(f.recordField(field.name)).toEqual(field);
      expect(f.recordField(minor === 10 ? "uuid" : "guid")).toBeUndefined();
    });

    if (minor >= 9) {
      it("keeps u64 fields 8-aligned from v9 on (section 1.4)", () => {
        expect(f.headerSize % 8).toBe(0);
        expect(f.recordSize % 8).toBe(0);
        for (const field of f.recordFields) {
          if (field.type === "u64") expect(field.offset % 8, field.name).toBe(0);
        }
      });
    }
  });

  it("has the key offsets named in the brief", () => {
    const at = (minor: number, name: Parameters<IndexFormat["headerField"]>[0]) =>
      format(minor).headerField(name);
    const rec = (minor: number, name: Parameters<IndexFormat["recordField"]>[0]) =>
      format(minor).recordField(name);
    expect(at(4, "quotaUsed")).toMatchObject({ offset: 32, size: 4, type: "u32" });
    expect(at(4, "uidValidity")).toMatchObject({ offset: 40 });
    expect(at(5, "uidValidity")).toMatchObject({ offset: 40 });
    expect(at(6, "quotaUsed")).toMatchObject({ offset: 32, size: 8, type: "u64" });
    expect(at(6, "uidValidity")).toMatchObject({ offset: 44 });
    expect(at(7, "uidValidity")).toMatchObject({ offset: 44 });
    expect(at(8, "highestModseq")).toMatchObject({ offset: 68, size: 8, type: "u64" });
    expect(at(9, "highestModseq")).toMatchObject({ offset: 68 });
    expect(at(10, "highestModseq")).toMatchObject({ offset: 68 });
    expect(at(6, "highestModseq")).toBeUndefined();
    expect(at(7, "highestModseq")).toBeUndefined();
    expect(rec(7, "uuid")).toMatchObject({ offset: 60, size: 12 });
    expect(rec(8, "uuid")).toMatchObject({ offset: 60, size: 12 });
    expect(rec(8, "modseq")).toMatchObject({ offset: 72, size: 8 });
    expect(rec(9, "modseq")).toMatchObject({ offset: 72, size: 8 });
    expect(rec(10, "guid")).toMatchObject({ offset: 60, size: 20 });
    expect(rec(10, "modseq")).toMatchObject({ offset: 80, size: 8 });
    expect(rec(6, "modseq")).toBeUndefined();
    expect(rec(7, "modseq")).toBeUndefined();
    expect(rec(6, "uuid")).toBeUndefined();
    expect(rec(4, "contentLines")).toBeUndefined();
    expect(rec(5, "contentLines")).toMatchObject({ offset: 52 });
    expect(rec(5, "cacheVersion")).toBeUndefined();
  });

  it("masks POP3_NEW_UIDL to bit 0 only when writing v6/v7 (section 12)", () => {
    for (const minor of MINORS) {
      const mask = format(minor).headerField("options")?.writeMask;
      expect(mask, `v${minor}`).toBe(minor === 6 || minor === 7 ? 1 : undefined);
    }
    for (const minor of MINORS) {
      for (const field of [...format(minor).headerFields, ...format(minor).recordFields]) {
        if (field.name !== "options")
          expect(field.writeMask, `${minor} ${field.name}`).toBeUndefined();
      }
    }
  });
});
