import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import {
  CYRUS_HEADER_MAGIC,
  encodeCyrusHeader23,
  parseCyrusHeader,
} from "../../src/cyrus/cyrus-header.js";
import { CyrusFormatError } from "../../src/errors.js";

const FIXTURE = "/work/shared/fixtures/cyrus-3.6";

/** The magic in hex, copied from cyrus-2.3-spool.md section 6. */
const MAGIC_HEX =
  "a1028b0d 43797275 73206d61 696c626f 78206865 61646572 0a225468 65206265 73742074 68696e67 2061626f 75742074 68697320 73797374 656d2077 61732074 68617420 69742068 6164206c 6f747320 6f662067 6f616c73 2e220a09 2d2d4a69 6d204d6f 72726973 206f6e20 416e6472 65770a".replace(
    / /g,
    "",
  );

function header(rest: string): Buffer {
  return Buffer.concat([CYRUS_HEADER_MAGIC, Buffer.from(rest, "utf8")]);
}

describe("CYRUS_HEADER_MAGIC", () => {
  it("is the 115 bytes of section 6", () => {
    expect(CYRUS_HEADER_MAGIC).toHaveLength(115);
    expect(CYRUS_HEADER_MAGIC.toString("hex")).toBe(MAGIC_HEX);
  });
});

describe("parseCyrusHeader: Cyrus 3.6 fixture headers (dlist form)", async () => {
  const mapping = (await readFile(`${FIXTURE}/v10/mailboxes.txt`, "utf8"))
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split("\t") as [string, string]);
  const mailboxesJson = JSON.parse(await readFile(`${FIXTURE}/mailboxes.json`, "utf8")) as Record<
    string,
    { uniqueid: string; acl: Record<string, string> }
  >;
  const flagsJson = JSON.parse(await readFile(`${FIXTURE}/flags.json`, "utf8")) as Record<
    string,
    { userflag_names: string[] }
  >;

  it("has 7 mailboxes", () => {
    expect(mapping).toHaveLength(7);
  });

  it.each(mapping)("reads %s", async (name, dir) => {
    const file = `${FIXTURE}/v10/spool/${dir}/cyrus.header`;
    const parsed = parseCyrusHeader(await readFile(file), file);
    const meta = mailboxesJson[name];
    const flags = flagsJson[name];
    expect(meta).toBeDefined();
    expect(flags).toBeDefined();
    const acl = Object.entries(meta?.acl ?? {})
      .map(([id, rights]) => `${id}\t${rights}\t`)
      .join("");
    expect(parsed).toEqual({
      form: "dlist",
      name,
      uniqueId: meta?.uniqueid,
      userFlags: flags?.userflag_names,
      acl,
    });
  });

  it("gives user.alice the flag names of flags.json in bit order", async () => {
    const file = `${FIXTURE}/v10/spool/a/user/alice/cyrus.header`;
    expect(parseCyrusHeader(await readFile(file), file).userFlags).toEqual(["$Label1", "Junk"]);
  });
});

describe("parseCyrusHeader: dlist details", () => {
  it("reads Q, NIL, escapes and ignores keys it does not know", () => {
    const parsed = parseCyrusHeader(
      header(
        '%(T el N "user.bob.a \\"b\\" \\\\c" I NIL Q user.bob X (1 2) A %(bob lrs anyone NIL) U (a NIL c))\n',
      ),
      "h",
    );
    expect(parsed).toEqual({
      form: "dlist",
      name: 'user.bob.a "b" \\c',
      quotaRoot: "user.bob",
      userFlags: ["a", "", "c"],
      acl: "bob\tlrs\tanyone\t\t",
    });
  });

  it.each([
    ["%(T el N user.bob\n", "dlist: unexpected end"],
    ['%(N "user.bob) \n', "dlist: unterminated quoted string"],
    ["%(N user.bob) x\n", "dlist: text after the closing ')'"],
    ["%(N {8+}\n", "dlist: literal not supported"],
    ["%(U x)\n", "dlist: U is not a list"],
    ["%(A (bob lrs))\n", "dlist: A is not a %(…) map"],
    ["%(N user.bob)", "dlist line not terminated by LF"],
    ["%(N)\n", "dlist: key N without a value"],
    ["%(U (a b\n", "dlist: unexpected end"],
    ["%{x}\n", "dlist: unsupported '%' item"],
  ])("refuses %j", (rest, why) => {
    expect(() => parseCyrusHeader(header(rest), "/spool/x/cyrus.header")).toThrow(CyrusFormatError);
    expect(() => parseCyrusHeader(header(rest), "/spool/x/cyrus.header")).toThrow(
      `/spool/x/cyrus.header: not a Cyrus mailbox header: ${why}`,
    );
  });
});

describe("parseCyrusHeader: 2.3 form", () => {
  it("reads quota root, uniqueid, flags (each followed by SPACE) and the ACL", () => {
    const parsed = parseCyrusHeader(
      header("user.bob\t4cce051e4a1b2c3d\n$Label1 Junk \nbob\tlrswipkxtecda\tanyone\tlrs\t\n"),
      "h",
    );
    expect(parsed).toEqual({
      form: "2.3",
      quotaRoot: "user.bob",
      uniqueId: "4cce051e4a1b2c3d",
      userFlags: ["$Label1", "Junk"],
      acl: "bob\tlrswipkxtecda\tanyone\tlrs\t",
    });
  });

  it("keeps flag positions across empty words", () => {
    expect(parseCyrusHeader(header("\tx\na  c \n\n"), "h").userFlags).toEqual(["a", "", "c"]);
  });

  it("reads an empty quota root and the old form without uniqueid", () => {
    expect(parseCyrusHeader(header("\tabc\n\n\n"), "h")).toEqual({
      form: "2.3",
      uniqueId: "abc",
      userFlags: [],
      acl: "",
    });
    expect(parseCyrusHeader(header("user.bob\n\nbob\tlrs\t\n"), "h")).toEqual({
      form: "2.3",
      quotaRoot: "user.bob",
      userFlags: [],
      acl: "bob\tlrs\t",
    });
  });

  it.each([
    ["an empty file", Buffer.alloc(0), "shorter than the magic"],
    ["114 bytes of magic", CYRUS_HEADER_MAGIC.subarray(0, 114), "shorter than the magic"],
    [
      "a wrong first byte",
      Buffer.concat([Buffer.from("x"), CYRUS_HEADER_MAGIC.subarray(1)]),
      "bad magic",
    ],
    ["the magic alone", header(""), "truncated"],
    ["only the quota line", header("user.bob\tid\n"), "truncated"],
    ["no ACL line", header("user.bob\tid\nflag \n"), "truncated"],
    ["an ACL without LF", header("user.bob\tid\nflag \nbob\tlrs\t"), "truncated"],
    ["an empty uniqueid", header("user.bob\t\n\n\n"), "TAB but no uniqueid"],
    ["129 flags", header(`\tid\n${"f ".repeat(129)}\n\n`), "129 user flags, at most 128"],
  ])("refuses %s", (_label, buf, why) => {
    expect(() => parseCyrusHeader(buf, "/spool/b/user/bob/cyrus.header")).toThrow(
      `/spool/b/user/bob/cyrus.header: not a Cyrus mailbox header: ${why}`,
    );
  });
});

describe("encodeCyrusHeader23", () => {
  it("writes the exact 2.3 bytes", () => {
    const buf = encodeCyrusHeader23({
      quotaRoot: "user.bob",
      uniqueId: "4cce051e4a1b2c3d",
      userFlags: ["$Label1", "Junk"],
      acl: "bob\tlrswipkxtecda\t",
    });
    expect(buf.subarray(0, 115).toString("hex")).toBe(MAGIC_HEX);
    expect(buf.subarray(115).toString("latin1")).toBe(
      "user.bob\t4cce051e4a1b2c3d\n$Label1 Junk \nbob\tlrswipkxtecda\t\n",
    );
  });

  it.each([
    { quotaRoot: "user.bob", uniqueId: "0123456789abcdef", userFlags: [], acl: "" },
    { uniqueId: "0123456789abcdef", userFlags: ["a", "b"], acl: "anyone\tlrs\t" },
    { quotaRoot: "user.bob", userFlags: ["\\x", "", "$Forwarded"], acl: "bob\tlrs\t" },
    { userFlags: Array.from({ length: 128 }, (_, i) => `f${i}`), acl: "" },
  ])("round-trips %#", (fields) => {
    const parsed = parseCyrusHeader(encodeCyrusHeader23(fields), "h");
    expect(parsed).toEqual({ form: "2.3", ...fields });
  });

  it.each([
    [{ quotaRoot: "a\tb", userFlags: [] }, "quota root"],
    [{ uniqueId: "", userFlags: [] }, "uniqueid"],
    [{ uniqueId: "a\nb", userFlags: [] }, "uniqueid"],
    [{ userFlags: ["two words"] }, "user flag"],
    [{ userFlags: [], acl: "bob\tlrs\t\n" }, "ACL"],
    [{ userFlags: Array.from({ length: 129 }, (_, i) => `f${i}`) }, "129 user flags"],
  ])("refuses fields that would break the file (%#)", (fields, what) => {
    expect(() => encodeCyrusHeader23(fields)).toThrow(`cannot write cyrus.header: ${what}`);
  });
});
