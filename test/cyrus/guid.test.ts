// GUID forms (cyrus-2.3-spool.md 5.1, 5.4) and sha1File against openssl on
// real files: empty, small, exactly 1 MiB, just over, several MiB.

import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GUID_SIZE,
  guidFromHex,
  guidToHex,
  isNullGuid,
  isOldStyleGuid,
  NULL_GUID,
  sha1File,
  UUID_SIZE,
} from "../../src/cyrus/guid.js";
import { makeTempDir } from "../helpers/fixtures.js";

const execFileAsync = promisify(execFile);

/** A schema-1 v7–v9 UUID (byte 0 = 1) padded with 8 zero bytes, as 2.3.10+ upgrades it. */
const PADDED_UUID = Buffer.from("0100000001234567890000ab0000000000000000", "hex");
/** The example of section 5.2. */
const EXAMPLE_BODY = "Subject: test\r\n\r\nhello\r\n";
const EXAMPLE_SHA1 = "2883b4c4916eb4064ee68bd40c1a87257036faf6";

describe("GUID forms", () => {
  const sha1 = Buffer.from(EXAMPLE_SHA1, "hex");

  it("has the sizes of section 5", () => {
    expect(GUID_SIZE).toBe(20);
    expect(UUID_SIZE).toBe(12);
    expect(NULL_GUID).toEqual(Buffer.alloc(20));
  });

  it("NULL GUID: null and old-style", () => {
    expect(isNullGuid(NULL_GUID)).toBe(true);
    expect(isOldStyleGuid(NULL_GUID)).toBe(true);
  });

  it("padded UUID: old-style but not null (it triggers re-uploads, trap 11.7)", () => {
    expect(isNullGuid(PADDED_UUID)).toBe(false);
    expect(isOldStyleGuid(PADDED_UUID)).toBe(true);
  });

  it("SHA1: neither", () => {
    expect(isNullGuid(sha1)).toBe(false);
    expect(isOldStyleGuid(sha1)).toBe(false);
  });

  it("looks at bytes 12..19 only for old-style, at all 20 for null", () => {
    for (let i = 0; i < GUID_SIZE; i++) {
      const g = Buffer.alloc(GUID_SIZE);
      g[i] = 0x80;
      expect(isNullGuid(g), `byte ${i}`).toBe(false);
      expect(isOldStyleGuid(g), `byte ${i}`).toBe(i < UUID_SIZE);
    }
    // A real SHA1 that happens to end in 8 zero bytes counts as old-style,
    // as in Cyrus 2.4.0 (probability 2^-64, section 5.4).
    const unlucky = Buffer.concat([sha1.subarray(0, 12), Buffer.alloc(8)]);
    expect(isOldStyleGuid(unlucky)).toBe(true);
  });

  it("works on a Uint8Array view inside a larger buffer", () => {
    const big = Buffer.alloc(100, 0xff);
    PADDED_UUID.copy(big, 30);
    const view = new Uint8Array(big.buffer, big.byteOffset + 30, GUID_SIZE);
    expect(isOldStyleGuid(view)).toBe(true);
    expect(isNullGuid(view)).toBe(false);
    expect(guidToHex(view)).toBe(PADDED_UUID.toString("hex"));
  });

  it("hex: 40 lowercase digits both ways", () => {
    expect(guidToHex(sha1)).toBe(EXAMPLE_SHA1);
    expect(guidFromHex(EXAMPLE_SHA1)).toEqual(sha1);
    expect(guidFromHex("0".repeat(40))).toEqual(NULL_GUID);
    expect(guidFromHex(EXAMPLE_SHA1.slice(1))).toBeUndefined();
    expect(guidFromHex(`${EXAMPLE_SHA1}0`)).toBeUndefined();
    expect(guidFromHex(`${EXAMPLE_SHA1}\n`)).toBeUndefined();
    expect(guidFromHex("g".repeat(40))).toBeUndefined();
    // Upper case is refused: guidup only ever reads its own lowercase text.
    expect(guidFromHex(EXAMPLE_SHA1.toUpperCase())).toBeUndefined();
  });
});

describe("sha1File", () => {
  let dir = "";
  let cleanup: () => Promise<void> = async () => {};
  const files: Record<string, Buffer> = {};

  beforeAll(async () => {
    ({ dir, cleanup } = await makeTempDir("guidup-guid-"));
    const contents: Record<string, Buffer> = {
      "empty.": Buffer.alloc(0),
      "example.": Buffer.from(EXAMPLE_BODY),
      "one-mib.": randomBytes(1 << 20),
      "one-mib-plus-one.": randomBytes((1 << 20) + 1),
      "three-mib-odd.": randomBytes(3 * (1 << 20) + 12345),
    };
    for (const [name, data] of Object.entries(contents)) {
      await writeFile(path.join(dir, name), data);
      files[name] = data;
    }
  });
  afterAll(() => cleanup());

  async function openssl(file: string): Promise<string> {
    const { stdout } = await execFileAsync("openssl", ["dgst", "-sha1", "-r", file]);
    const hex = stdout.trim().split(/\s+/)[0] ?? "";
    expect(hex).toMatch(/^[0-9a-f]{40}$/);
    return hex;
  }

  it("equals the section 5.2 example", async () => {
    const { guid, size } = await sha1File(path.join(dir, "example."));
    expect(guidToHex(guid)).toBe(EXAMPLE_SHA1);
    expect(size).toBe(24);
  });

  it.each(["empty.", "example.", "one-mib.", "one-mib-plus-one.", "three-mib-odd."])(
    "equals openssl dgst -sha1 for %s",
    async (name) => {
      const file = path.join(dir, name);
      const { guid, size } = await sha1File(file);
      expect(guidToHex(guid)).toBe(await openssl(file));
      expect(size).toBe(files[name]?.length);
    },
  );

  it("gives the same digest with a small caller buffer (many reads)", async () => {
    const file = path.join(dir, "one-mib-plus-one.");
    const expected = createHash("sha1")
      .update(files["one-mib-plus-one."] as Buffer)
      .digest();
    const { guid, size } = await sha1File(file, Buffer.alloc(4093));
    expect(guid).toEqual(expected);
    expect(size).toBe((1 << 20) + 1);
  });

  it("empty file gives SHA1 of nothing, not the NULL GUID", async () => {
    const { guid } = await sha1File(path.join(dir, "empty."));
    expect(guidToHex(guid)).toBe("da39a3ee5e6b4b0d3255bfef95601890afd80709");
  });

  it("rejects a missing file with ENOENT", async () => {
    await expect(sha1File(path.join(dir, "absent."))).rejects.toMatchObject({ code: "ENOENT" });
  });
});
