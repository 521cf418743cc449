import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { type ImapdConf, parseImapdConf } from "../../src/cyrus/imapd-conf.js";
import {
  dirHashLetter,
  MailboxNameError,
  mailboxDataDir,
  mailboxMetaDir,
  messageFilePath,
  validateMailboxName,
} from "../../src/cyrus/mailbox-path.js";
import { CyrusFormatError, GuidupError, InternalError } from "../../src/errors.js";

const ROOT = "/var/spool/imap";

function conf(lines: string): ImapdConf {
  return parseImapdConf(`partition-default: ${ROOT}\n${lines}`, "/etc/imapd.conf");
}

const HASH_OFF = conf("hashimapspool: no\nvirtdomains: on\nunixhierarchysep: yes\n");
const HASH_LETTER = conf("hashimapspool: yes\nvirtdomains: on\nunixhierarchysep: yes\n");
const HASH_FULL = conf(
  "hashimapspool: yes\nfulldirhash: yes\nvirtdomains: on\nunixhierarchysep: yes\n",
);

// cyrus-2.3-spool.md section 8.2, every row of the worked-examples table.
const SECTION_8_2_TABLE: [string, string, string, string][] = [
  [
    "user.bob.Some Folder",
    "/user/bob/Some Folder",
    "/b/user/bob/Some Folder",
    "/E/user/bob/Some Folder",
  ],
  ["user.bob", "/user/bob", "/b/user/bob", "/E/user/bob"],
  ["user.alice.Sent", "/user/alice/Sent", "/a/user/alice/Sent", "/L/user/alice/Sent"],
  ["shared.folder", "/shared/folder", "/f/shared/folder", "/T/shared/folder"],
  ["Archive", "/Archive", "/a/Archive", "/E/Archive"],
  [
    "user.john^doe.Drafts",
    "/user/john^doe/Drafts",
    "/j/user/john^doe/Drafts",
    "/B/user/john^doe/Drafts",
  ],
  ["user.1234", "/user/1234", "/q/user/1234", "/D/user/1234"],
  [
    "DELETED.user.bob.Trash.4B1C2D3E",
    "/DELETED/user/bob/Trash/4B1C2D3E",
    "/u/DELETED/user/bob/Trash/4B1C2D3E",
    "/C/DELETED/user/bob/Trash/4B1C2D3E",
  ],
  [
    "example.com!user.bob.Some Folder",
    "/domain/example.com/user/bob/Some Folder",
    "/domain/e/example.com/b/user/bob/Some Folder",
    "/domain/O/example.com/E/user/bob/Some Folder",
  ],
];

describe("mailboxDataDir", () => {
  it.each(SECTION_8_2_TABLE)("places %s as in section 8.2", (name, off, letter, full) => {
    expect(mailboxDataDir(HASH_OFF, name, "default")).toBe(ROOT + off);
    expect(mailboxDataDir(HASH_LETTER, name, "default")).toBe(ROOT + letter);
    expect(mailboxDataDir(HASH_FULL, name, "default")).toBe(ROOT + full);
  });

  it("places every fixture mailbox where Cyrus 3.6 put it (hashimapspool yes, fulldirhash no)", () => {
    const fixtureConf = parseImapdConf(
      readFileSync("/work/shared/fixtures/cyrus-3.6/imapd.conf", "utf8"),
      "imapd.conf",
    );
    const root = fixtureConf.partitions.get("default");
    const mapping = readFileSync("/work/shared/fixtures/cyrus-3.6/v10/mailboxes.txt", "utf8")
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => l.split("\t") as [string, string]);
    expect(mapping).toHaveLength(7);
    for (const [name, dir] of mapping) {
      expect(mailboxDataDir(fixtureConf, name, "default")).toBe(`${root}/${dir}`);
    }
  });

  it("treats virtdomains userid like on for the domain prefix", () => {
    const userid = conf("virtdomains: userid\n");
    expect(mailboxDataDir(userid, "example.com!user.bob", "default")).toBe(
      `${ROOT}/domain/example.com/user/bob`,
    );
  });

  it("normalises a partition root with a trailing slash", () => {
    const c = parseImapdConf("partition-default: /var/spool/imap/\n", "x.conf");
    expect(mailboxDataDir(c, "user.bob", "default")).toBe(`${ROOT}/user/bob`);
  });

  it("refuses a partition the config does not define", () => {
    expect(() => mailboxDataDir(HASH_OFF, "user.bob", "p9")).toThrow(CyrusFormatError);
    expect(() => mailboxDataDir(HASH_OFF, "user.bob", "p9")).toThrow(
      "mailbox user.bob is on partition 'p9', but /etc/imapd.conf has no partition-p9",
    );
  });
});

describe("mailboxMetaDir", () => {
  const meta = parseImapdConf(
    [
      "partition-default: /var/spool/imap",
      "metapartition-default: /ssd/meta",
      "partition-p2: /srv/p2",
      "metapartition_files: header index",
      "hashimapspool: yes",
    ].join("\n"),
    "/etc/imapd.conf",
  );

  it("puts only the files listed in metapartition_files under the metapartition", () => {
    expect(mailboxMetaDir(meta, "user.bob", "default", "header")).toBe("/ssd/meta/b/user/bob");
    expect(mailboxMetaDir(meta, "user.bob", "default", "index")).toBe("/ssd/meta/b/user/bob");
    expect(mailboxMetaDir(meta, "user.bob", "default", "cache")).toBe("/var/spool/imap/b/user/bob");
    expect(mailboxMetaDir(meta, "user.bob", "default", "expunge")).toBe(
      "/var/spool/imap/b/user/bob",
    );
    expect(mailboxDataDir(meta, "user.bob", "default")).toBe("/var/spool/imap/b/user/bob");
  });

  it("uses the data partition when the partition has no metapartition", () => {
    expect(mailboxMetaDir(meta, "user.bob", "p2", "header")).toBe("/srv/p2/b/user/bob");
  });

  it("uses the data partition when metapartition_files is empty", () => {
    const c = parseImapdConf(
      "partition-default: /var/spool/imap\nmetapartition-default: /ssd/meta\n",
      "x.conf",
    );
    expect(mailboxMetaDir(c, "user.bob", "default", "header")).toBe("/var/spool/imap/user/bob");
  });
});

describe("dirHashLetter", () => {
  it("matches the worked example of section 8.2 (bob → E)", () => {
    expect(dirHashLetter("bob", true)).toBe("E");
    expect(dirHashLetter("bob.Sent", true)).toBe("E");
  });

  it("gives A for the empty string with fulldirhash and q without", () => {
    expect(dirHashLetter("", true)).toBe("A");
    expect(dirHashLetter("", false)).toBe("q");
  });

  it("lowercases the first letter and maps non-letters to q", () => {
    expect(dirHashLetter("Bob", false)).toBe("b");
    expect(dirHashLetter("1234", false)).toBe("q");
    expect(dirHashLetter("^x", false)).toBe("q");
    expect(dirHashLetter("élan", false)).toBe("q");
  });
});

describe("messageFilePath", () => {
  it("names a message file <uid>.", () => {
    expect(messageFilePath("/var/spool/imap/b/user/bob", 42)).toBe(
      "/var/spool/imap/b/user/bob/42.",
    );
    expect(messageFilePath("/d", 4294967295)).toBe("/d/4294967295.");
  });

  it.each([0, -1, 1.5, 2 ** 32, Number.NaN])("refuses UID %s", (uid) => {
    expect(() => messageFilePath("/d", uid)).toThrow(InternalError);
  });
});

describe("validateMailboxName", () => {
  const on = { virtDomains: "on" } as const;
  const off = { virtDomains: "off" } as const;

  it.each([
    "user.bob",
    "user.bob.Some Folder",
    "user.john^doe",
    "shared.#$'+,-:=@_~",
    "user.bob.&AOQ-pfel",
    "user.bob.R&-D",
    "DELETED.user.bob.Trash.4B1C2D3E",
  ])("accepts %s", (name) => {
    expect(() => validateMailboxName(name, off)).not.toThrow();
  });

  it("accepts a domain prefix only with virtdomains on or userid", () => {
    expect(() => validateMailboxName("example.com!user.bob", on)).not.toThrow();
    expect(() =>
      validateMailboxName("example.com!user.bob", { virtDomains: "userid" }),
    ).not.toThrow();
    expect(() => validateMailboxName("example.com!user.bob", off)).toThrow(
      "'!' not allowed with virtdomains off",
    );
  });

  it.each([
    ["", "empty name"],
    ["user.../etc", "contains '/'"],
    ["user...etc", "empty hierarchy component"],
    ["user.a..b", "empty hierarchy component"],
    ["../x", "contains '/'"],
    ["..", "empty hierarchy component"],
    [".user.bob", "empty hierarchy component"],
    ["user.bob.", "empty hierarchy component"],
    ["user.bob/../../etc", "contains '/'"],
    ["/etc/passwd", "contains '/'"],
    ["user.bob\0x", "contains NUL"],
    ["user.bob\\x", "character U+005c not allowed"],
    ["user.bob\nx", "character U+000a not allowed"],
    ["user.bøb", "character U+00f8 not allowed"],
    ["~user.bob", "starts with '~'"],
    ["user.bob.&AOQ", "unterminated '&' sequence"],
    ["user.bob.&A.Q-", "unterminated '&' sequence"],
    ["user.bob!x", "'!' not allowed with virtdomains off"],
  ])("refuses %j (%s)", (name, why) => {
    expect(() => validateMailboxName(name, off)).toThrow(MailboxNameError);
    expect(() => validateMailboxName(name, off)).toThrow(why);
  });

  it.each([
    ["..!user.bob", "invalid domain part"],
    ["!user.bob", "invalid domain part"],
    ["a..b!user.bob", "invalid domain part"],
    [".example.com!user.bob", "invalid domain part"],
    ["example.com!", "empty name"],
    ["example.com!user.bob!x", "more than one '!'"],
    ["example.com!user..bob", "empty hierarchy component"],
  ])("refuses %j with virtdomains on (%s)", (name, why) => {
    expect(() => validateMailboxName(name, on)).toThrow(why);
  });

  it("refuses names longer than 490 characters, and accepts 490", () => {
    const ok = `user.${"a".repeat(485)}`;
    expect(ok).toHaveLength(490);
    expect(() => validateMailboxName(ok, off)).not.toThrow();
    expect(() => validateMailboxName(`${ok}b`, off)).toThrow("longer than 490 characters");
  });

  it("is a GuidupError with code mailbox-name and a one-line message naming the mailbox", () => {
    let caught: unknown;
    try {
      validateMailboxName("user.bob\n../../etc", off);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(GuidupError);
    const err = caught as MailboxNameError;
    expect(err.code).toBe("mailbox-name");
    expect(err.name).toBe("MailboxNameError");
    expect(err.message).not.toContain("\n");
    expect(err.message).toContain('"user.bob\\n../../etc"');
  });

  it("is applied by every path builder, so hostile names never become paths", () => {
    for (const name of ["user.../etc", "user.a..b", "../x", "user.bob/../../etc", "a\0b"]) {
      expect(() => mailboxDataDir(HASH_LETTER, name, "default")).toThrow(MailboxNameError);
      expect(() => mailboxMetaDir(HASH_FULL, name, "default", "index")).toThrow(MailboxNameError);
    }
  });
});
