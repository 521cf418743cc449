// guidup inspect, run as the real bin: the JSON contract of the codec issue
// (u64 values as decimal strings, GUIDs as lowercase hex of the right length,
// absent for v6) and one-line errors with exit code 2.

import { spawnSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { fixturesDir, makeTempDir } from "../helpers/fixtures.js";

const MAIN = resolve(import.meta.dirname, "../../dist/src/cli/main.js");

function inspect(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, "inspect", ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const alice = (v: string) => join(fixturesDir(), `v${v}`, "spool/a/user/alice/cyrus.index");

describe("guidup inspect", () => {
  it("prints v10 as JSON: header fields, 64-bit values as strings, 40-hex SHA1 GUIDs", () => {
    const r = inspect(alice("10"), "--json");
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out);
    expect(doc.file).toBe(alice("10"));
    expect(doc.header).toMatchObject({
      minorVersion: 10,
      exists: 8,
      startOffset: 96,
      recordSize: 88,
      generation: 3,
    });
    expect(doc.header.highestModseq).toBe("9");
    expect(doc.header.quotaUsed).toBe("13959");
    expect(doc.records).toHaveLength(8);
    expect(doc.records[0]).toMatchObject({
      uid: 1,
      size: 1124,
      systemFlags: 0,
      guid: "7618467c69746ee7bab1f07078090adc4a53bfb3",
      modseq: "2",
    });
    expect(doc.records[0].userFlags).toEqual([0, 0, 0, 0]);
  });

  it("gives the v7–v9 UUID as 24 hex digits and no GUID for v6", () => {
    const v9 = JSON.parse(inspect(alice("09"), "--json").out);
    expect(v9.records[0].guid).toMatch(/^[0-9a-f]{24}$/);
    const v6 = JSON.parse(inspect(alice("06"), "--json").out);
    expect(v6.records[0].guid).toBeUndefined();
    expect(v6.records[0].modseq).toBeUndefined();
  });

  it("prints a text form with one line per record", () => {
    const r = inspect(alice("10"));
    expect(r.code).toBe(0);
    expect(r.out).toContain("index version 10");
    expect(r.out.split("\n").filter((l) => /^\d{6}> UID:/.test(l))).toHaveLength(8);
  });

  it("refuses a missing, empty or truncated file with one line and exit code 2", async () => {
    const { dir, cleanup } = await makeTempDir();
    const empty = join(dir, "cyrus.index");
    await writeFile(empty, "");
    for (const [file, want] of [
      [join(dir, "nope"), "no such file"],
      [empty, "empty file"],
    ] as const) {
      const r = inspect(file);
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err.trim().split("\n")).toHaveLength(1);
      expect(r.err).toContain(file);
      expect(r.err).toContain(want);
    }
    await cleanup();
  });

  // Issue #10 item 6: a cyrus.header or a message file was "newer than 10".
  it("says a cyrus.header or a message file is not an index file (exit 2, one line)", () => {
    const mailbox = join(fixturesDir(), "v09", "spool/a/user/alice");
    for (const file of [join(mailbox, "cyrus.header"), join(mailbox, "1.")]) {
      const r = inspect(file);
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err.trim().split("\n")).toHaveLength(1);
      expect(r.err).toContain(`${file}: not a Cyrus index file`);
      expect(r.err).toContain("run reconstruct");
      expect(r.err).not.toContain("newer");
    }
  });
});
