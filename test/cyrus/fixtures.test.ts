// Real index files written by Cyrus 3.6 (`reconstruct -V N`, fixtures README)
// read with IndexReader and compared field by field with what Cyrus 3.6's own
// `mbexamine` printed for them. The fixtures are required: fixturesDir() throws
// when they are missing, so this file fails instead of skipping.
//
// mbexamine prints what 3.6 derived from a file, which is not always what the
// file holds. Where the two legitimately differ, the comparison for that one
// field and version is replaced by a check of what the file does hold, with
// the reason in a comment (see the v6/v7 HIGHESTMODSEQ and v7–v9 GUID cases).

import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { FieldValue } from "../../src/cyrus/field-codec.js";
import type { RecordFieldName } from "../../src/cyrus/formats/index.js";
import { guidToHex, sha1File } from "../../src/cyrus/guid.js";
import { IndexReader, type IndexRecord } from "../../src/cyrus/index-file.js";
import {
  encodeIndexFile,
  type HeaderValues,
  type RecordValues,
} from "../../src/cyrus/index-writer.js";
import {
  FIXTURE_VERSIONS,
  type FixtureVersion,
  fixtureMailboxes,
  fixtureSha1Sums,
  fixturesDir,
  mbexamineText,
  messagePath,
  sha1Key,
  sha1SumsByKey,
} from "../helpers/fixtures.js";
import { type MbexamineMailbox, parseMbexamine } from "../helpers/mbexamine.js";

// Fails the whole file, loudly, when the fixtures are absent.
const FIXTURES = fixturesDir();

interface ReadIndex {
  reader: IndexReader;
  records: IndexRecord[];
  bytes: Buffer;
}

async function readIndex(indexPath: string): Promise<ReadIndex> {
  const reader = await IndexReader.open(indexPath);
  try {
    const records: IndexRecord[] = [];
    for await (const r of reader.records()) records.push(r);
    return { reader, records, bytes: await readFile(indexPath) };
  } finally {
    await reader.close();
  }
}

function u32(record: IndexRecord, name: RecordFieldName): number {
  const v = record.get(name);
  if (typeof v !== "number") throw new Error(`${name}: not a u32 (${String(v)})`);
  return v;
}

function big(v: FieldValue | undefined): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return BigInt(v);
  throw new Error(`not an integer: ${String(v)}`);
}

function bytes(v: FieldValue | undefined): Buffer {
  if (!Buffer.isBuffer(v)) throw new Error(`not bytes: ${String(v)}`);
  return v;
}

/** flags.json: SYSTEM_FLAGS and USER_FLAGS[0] bits set per mailbox and UID. */
const flagsJson = JSON.parse(readFileSync(path.join(FIXTURES, "flags.json"), "utf8")) as Record<
  string,
  { flags: Record<string, { system: number; user_bits: number[] }> }
>;

const parsed = new Map<FixtureVersion, MbexamineMailbox[]>(
  FIXTURE_VERSIONS.map((v) => [v, parseMbexamine(mbexamineText(v))]),
);

describe("fixtures", () => {
  it("are where the tests expect them", () => {
    expect(path.basename(FIXTURES)).toBe("cyrus-3.6");
  });

  it("sha1sums.txt matches the message files (present) or their absence (MISSING)", async () => {
    const entries = fixtureSha1Sums();
    expect(entries.length).toBeGreaterThan(0);
    for (const version of FIXTURE_VERSIONS) {
      const byName = new Map(fixtureMailboxes(version).map((m) => [m.name, m]));
      for (const e of entries) {
        const mailbox = byName.get(e.mailbox);
        expect(mailbox, `${e.mailbox} in v${version}/mailboxes.txt`).toBeDefined();
        const file = messagePath(mailbox!, e.uid);
        if (e.present) {
          const { guid, size } = await sha1File(file);
          expect(guidToHex(guid), `${version} ${file}`).toBe(e.sha1);
          expect(size, file).toBe(e.size);
        } else {
          await expect(sha1File(file)).rejects.toMatchObject({ code: "ENOENT" });
        }
      }
    }
  });
});

describe.each(FIXTURE_VERSIONS)("v%s", (version) => {
  const minor = Number(version);
  const mailboxes = fixtureMailboxes(version);
  const examined = parsed.get(version) as MbexamineMailbox[];
  const sums = sha1SumsByKey();

  it("mbexamine.txt lists the mailboxes of mailboxes.txt, in order", () => {
    expect(examined.map((m) => m.name)).toEqual(mailboxes.map((m) => m.name));
    for (const [i, m] of mailboxes.entries()) {
      expect(examined[i]?.path).toBe(`<spool>/${m.dir}`);
    }
  });

  describe.each(mailboxes.map((m) => [m.name, m] as const))("%s", (name, mailbox) => {
    const mb = examined.find((m) => m.name === name) as MbexamineMailbox;

    it("header agrees with mbexamine", async () => {
      const { reader, bytes: file } = await readIndex(mailbox.indexPath);
      const h = reader.header;
      const v = h.values;
      const e = mb.header;
      expect(h.minorVersion).toBe(minor);
      expect(e.minorVersion).toBe(minor);
      expect(v.get("minorVersion")).toBe(minor);
      expect(v.get("generation")).toBe(e.generation);
      expect(h.startOffset).toBe(e.headerSize);
      expect(h.recordSize).toBe(e.recordSize);
      expect(h.exists).toBe(e.exists);
      expect(big(v.get("quotaUsed"))).toBe(e.quotaUsed);
      expect(v.get("lastAppendDate")).toBe(e.lastAppendDate);
      expect(v.get("uidValidity")).toBe(e.uidValidity);
      expect(v.get("lastUid")).toBe(e.lastUid);
      expect(v.get("deleted")).toBe(e.deleted);
      expect(v.get("answered")).toBe(e.answered);
      expect(v.get("flagged")).toBe(e.flagged);
      expect(v.get("options")).toBe(e.options);
      expect(v.get("pop3LastLogin")).toBe(e.pop3LastLogin);
      expect(file.length).toBe(h.startOffset + h.exists * h.recordSize);
      if (minor >= 8) {
        expect(big(v.get("highestModseq"))).toBe(e.highestModseq);
      } else {
        // v6/v7 have no HIGHESTMODSEQ: bytes 68..75 are SPARE1/SPARE2, which
        // Cyrus 3.6 writes as 0 (spool doc section 12). mbexamine shows 1
        // anyway: 3.6 derives it, as 2.3.16's upgrade does (3.3 step 2).
        // Skip the comparison; check the file holds no modseq instead.
        expect(v.has("highestModseq")).toBe(false);
        expect(e.highestModseq).toBe(1n);
        expect(file.readBigUInt64BE(68)).toBe(0n);
        expect(v.get("leakedCache")).toBe(0);
      }
      // Spares are written 0.
      for (const spare of ["spare0", "spare1", "spare2", "spare3", "spare4"] as const) {
        if (v.has(spare)) expect(v.get(spare), spare).toBe(0);
      }
    });

    it("records agree with mbexamine, field by field", async () => {
      const { records, reader } = await readIndex(mailbox.indexPath);
      expect(records.length).toBe(mb.records.length);
      expect(records.length).toBe(reader.header.exists);
      for (const [i, r] of records.entries()) {
        const e = mb.records[i];
        if (e === undefined) throw new Error("record count differs");
        const at = `record ${i + 1} (UID ${e.uid})`;
        expect(u32(r, "uid"), at).toBe(e.uid);
        expect(u32(r, "internalDate"), at).toBe(e.internalDate);
        expect(u32(r, "sentDate"), at).toBe(e.sentDate);
        expect(u32(r, "size"), at).toBe(e.size);
        expect(u32(r, "headerSize"), at).toBe(e.headerSize);
        expect(u32(r, "lastUpdated"), at).toBe(e.lastUpdated);
        expect(u32(r, "systemFlags"), at).toBe(e.systemFlags);
        expect(u32(r, "cacheVersion"), at).toBe(e.cacheVersion);
        expect(
          [u32(r, "userFlags0"), u32(r, "userFlags1"), u32(r, "userFlags2"), u32(r, "userFlags3")],
          at,
        ).toEqual(e.userFlags);
        // Not printed by mbexamine; README: CONTENT_OFFSET = HEADER_SIZE and
        // CONTENT_LINES = 0 in every 3.6-written legacy record.
        expect(u32(r, "contentOffset"), at).toBe(e.headerSize);
        expect(u32(r, "contentLines"), at).toBe(0);

        if (minor >= 8) {
          expect(big(r.get("modseq")), at).toBe(e.modseq);
        } else {
          // No MODSEQ in v6/v7, and mbexamine prints none.
          expect(r.has("modseq"), at).toBe(false);
          expect(e.modseq, at).toBeUndefined();
        }

        if (minor === 10) {
          expect(guidToHex(bytes(r.get("guid"))), at).toBe(e.guid);
        } else if (minor === 6) {
          // No GUID/UUID field in v6; mbexamine prints none.
          expect(r.has("guid") || r.has("uuid"), at).toBe(false);
          expect(e.guid, at).toBeUndefined();
        } else {
          // v7–v9 hold a 12-byte UUID. Cyrus 3.6 does not read it at all and
          // prints the NULL GUID (40 zeros); the file's UUID is NULL too (3.6
          // writes zeros, README). The two agree only because of that, so
          // check both facts rather than "UUID padded = printed GUID".
          expect(e.guid, at).toBe("0".repeat(40));
          expect(bytes(r.get("uuid")), at).toEqual(Buffer.alloc(12));
        }
      }
    });

    if (minor === 10) {
      it("v10 GUIDs equal sha1sums.txt for present files", async () => {
        const { records } = await readIndex(mailbox.indexPath);
        for (const r of records) {
          const uid = u32(r, "uid");
          const entry = sums.get(sha1Key(name, uid));
          expect(entry, `${name} uid ${uid} in sha1sums.txt`).toBeDefined();
          // A MISSING file was deleted after the index was written, so its
          // GUID is the SHA1 of the file as it was: still the listed value.
          expect(guidToHex(bytes(r.get("guid"))), `uid ${uid}`).toBe(entry?.sha1);
        }
      });
    }

    it("holds the flags of flags.json; header counts match the records", async () => {
      const { records, reader } = await readIndex(mailbox.indexPath);
      const put = flagsJson[name]?.flags ?? {};
      const count = (bit: number) =>
        records.filter((r) => (u32(r, "systemFlags") & bit) !== 0).length;
      for (const r of records) {
        const uid = u32(r, "uid");
        const want = put[String(uid)];
        const at = `uid ${uid}`;
        expect(u32(r, "systemFlags"), at).toBe(want?.system ?? 0);
        expect(u32(r, "userFlags0"), at).toBe(
          (want?.user_bits ?? []).reduce((w, b) => w | (1 << b), 0),
        );
        for (const w of ["userFlags1", "userFlags2", "userFlags3"] as const)
          expect(u32(r, w), at).toBe(0);
      }
      // SYSTEM_FLAGS bit 2 \Deleted, bit 0 \Answered, bit 1 \Flagged (table 2).
      expect(reader.header.values.get("deleted")).toBe(count(4));
      expect(reader.header.values.get("answered")).toBe(count(1));
      expect(reader.header.values.get("flagged")).toBe(count(2));
    });

    it("holds exactly the messages of sha1sums.txt", async () => {
      const { records } = await readIndex(mailbox.indexPath);
      const listed = fixtureSha1Sums()
        .filter((s) => s.mailbox === name)
        .map((s) => s.uid);
      expect(records.map((r) => u32(r, "uid"))).toEqual(listed);
    });

    it("decodes and re-encodes byte-identically", async () => {
      const { reader, records, bytes: file } = await readIndex(mailbox.indexPath);
      const header = Object.fromEntries(reader.header.values) as HeaderValues;
      const recs = records.map((r) => Object.fromEntries(r) as RecordValues);
      expect(encodeIndexFile(reader.format, header, recs)).toEqual(file);
    });
  });

  it("empty mailboxes read fine: 0 records, header only", async () => {
    const empty = mailboxes.filter(
      (m) => m.name === "user.alice.Archive" || m.name === "user.bob.Trash",
    );
    expect(empty).toHaveLength(2);
    for (const m of empty) {
      const { reader, records, bytes: file } = await readIndex(m.indexPath);
      expect(reader.header.exists).toBe(0);
      expect(records).toEqual([]);
      expect(file.length).toBe(reader.format.headerSize);
      expect(reader.header.values.get("lastUid")).toBe(0);
    }
  });
});
