import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseImapdConf } from "../../src/cyrus/imapd-conf.js";
import {
  discoverMailboxDirs,
  discoverMailboxes,
  parseMailboxList,
} from "../../src/cyrus/mailbox-list.js";
import { CyrusFormatError, FileAccessError } from "../../src/errors.js";

const FIXTURE = "/work/shared/fixtures/cyrus-3.6";

describe("parseMailboxList: ctl_mboxlist -d", () => {
  it("parses the 2.3.10–2.3.20 format (mbtype SP partition SP acl)", () => {
    const text = "user.bob\t0 default bob\tlrswipkxtecda\t\nuser.alice\t0 p2 alice\tlrs\t\n";
    expect(parseMailboxList(text, "dump.txt")).toEqual({
      mailboxes: [
        { name: "user.alice", partition: "p2" },
        { name: "user.bob", partition: "default" },
      ],
      excluded: [],
      invalid: [],
    });
  });

  it("parses the 2.3.4–2.3.9 format (mbtype SP partition TAB acl)", () => {
    const text = "user.bob.Some Folder\t0 default\tbob\tlrswipkxtecda\t\n";
    expect(parseMailboxList(text, "dump.txt").mailboxes).toEqual([
      { name: "user.bob.Some Folder", partition: "default" },
    ]);
  });

  it("parses the 2.3.0–2.3.3 format (no mbtype)", () => {
    const text = "user.bob\tdefault\tbob\tlrswipkxtecda\t\r\nshared\tp2\tanyone\tlrs\t\r\n";
    expect(parseMailboxList(text, "dump.txt").mailboxes).toEqual([
      { name: "shared", partition: "p2" },
      { name: "user.bob", partition: "default" },
    ]);
  });

  it("parses an entry with an empty ACL", () => {
    expect(parseMailboxList("user.bob\t0 default \n", "d").mailboxes).toEqual([
      { name: "user.bob", partition: "default" },
    ]);
    expect(parseMailboxList("user.bob\t0 default\n", "d").mailboxes).toEqual([
      { name: "user.bob", partition: "default" },
    ]);
  });

  it("excludes entries with mbtype bits, naming each reason", () => {
    const text = [
      "user.a\t1 imap2 a\tlrs\t",
      "user.b\t2 default b\tlrs\t",
      "user.c\t4 default c\tlrs\t",
      "user.d\t8 imap3!default d\tlrs\t",
      "user.e\t3 imap2 e\tlrs\t",
      "user.f\t16 default f\tlrs\t",
      "user.g\t0 default g\tlrs\t",
    ].join("\n");
    const list = parseMailboxList(text, "dump.txt");
    expect(list.mailboxes).toEqual([{ name: "user.g", partition: "default" }]);
    expect(list.excluded).toEqual([
      { name: "user.a", reason: "mbtype 1 (REMOTE: lives on another server (murder))" },
      { name: "user.b", reason: "mbtype 2 (RESERVE: create or rename in progress)" },
      { name: "user.c", reason: "mbtype 4 (NETNEWS: netnews mailbox)" },
      { name: "user.d", reason: "mbtype 8 (MOVING: being moved to another server)" },
      {
        name: "user.e",
        reason:
          "mbtype 3 (REMOTE: lives on another server (murder); RESERVE: create or rename in progress)",
      },
      { name: "user.f", reason: "mbtype 16 (unknown bits 0x10)" },
    ]);
  });

  it("drops identical duplicates and refuses conflicting ones", () => {
    const dup = "user.bob\t0 default bob\tlrs\t\nuser.bob\t0 default bob\tlrs\t\n";
    expect(parseMailboxList(dup, "d").mailboxes).toEqual([
      { name: "user.bob", partition: "default" },
    ]);
    const conflict = "user.bob\t0 default bob\tlrs\t\n\nuser.bob\t0 p2 bob\tlrs\t\n";
    expect(() => parseMailboxList(conflict, "d")).toThrow(
      "d:3: mailbox user.bob listed again with a different entry (first at line 1)",
    );
  });

  it.each([
    ["\t0 default acl", "d:3: not a ctl_mboxlist -d line: empty mailbox name"],
    ["user.bob\t0\tdefault", "d:3: not a ctl_mboxlist -d line: mbtype not followed by a SPACE"],
    ["user.bob\t0  acl", "d:3: not a ctl_mboxlist -d line: empty partition"],
    ["user.bob\t", "d:3: not a ctl_mboxlist -d line: empty partition"],
  ])("refuses the malformed line %j among good ones", (line, message) => {
    const text = `user.a\t0 default a\tlrs\t\nuser.b\t0 default b\tlrs\t\n${line}\n`;
    expect(() => parseMailboxList(text, "d")).toThrow(CyrusFormatError);
    expect(() => parseMailboxList(text, "d")).toThrow(message);
  });
});

describe("parseMailboxList: plain names", () => {
  it("reads one name per line, skipping blank lines and # comments, sorted and deduplicated", () => {
    const text = "# master\nuser.bob\n\n   \nuser.alice.Sent\r\nuser.bob\nuser.bob.Some Folder\n";
    expect(parseMailboxList(text, "names.txt")).toEqual({
      mailboxes: [
        { name: "user.alice.Sent" },
        { name: "user.bob" },
        { name: "user.bob.Some Folder" },
      ],
      excluded: [],
      invalid: [],
    });
  });

  // Issue #10 item 7: trimming turned `user.bob.trail ` into `user.bob.trail`.
  it("takes each line exactly as written: only LF or CRLF is removed", () => {
    const text = "user.bob.trail \n user.lead\r\nuser.tab\r\n";
    expect(parseMailboxList(text, "n").mailboxes).toEqual([
      { name: " user.lead" },
      { name: "user.bob.trail " },
      { name: "user.tab" },
    ]);
  });

  // Issue #10 item 7: one invalid name aborted the whole list, naming only the first.
  it("reports every invalid name with its line and reason, and keeps the rest", () => {
    const text = "user.a\nuser.b..c\nuser.c\nuser/d\nuser.e\nuser.f\nuser.g\n";
    const list = parseMailboxList(text, "names.txt");
    expect(list.mailboxes.map((m) => m.name)).toEqual([
      "user.a",
      "user.c",
      "user.e",
      "user.f",
      "user.g",
    ]);
    expect(list.invalid).toEqual([
      {
        name: "user.b..c",
        reason:
          "names.txt:2: invalid mailbox name \"user.b..c\": empty hierarchy component (leading, trailing or double '.')",
      },
      { name: "user/d", reason: "names.txt:4: invalid mailbox name \"user/d\": contains '/'" },
    ]);
  });

  // Issue #10 items 5 and 7: a JSON dump was read as names ("invalid mailbox name \"\\\"acl\\\": {\"").
  it("refuses a list whose lines are mostly not mailbox names, unless asked to read it anyway", () => {
    const json = JSON.stringify(
      [
        { name: "user.alice", acl: { alice: "lrs" } },
        { name: "user.bob", acl: {} },
      ],
      null,
      2,
    );
    expect(() => parseMailboxList(json, "list.json")).toThrow(
      /^list\.json: not a mailbox list in a known format \(ctl_mboxlist -d output or one mailbox name per line\): \d+ of \d+ lines are neither, the first: line 1: invalid mailbox name "\[": /,
    );
    const read = parseMailboxList(json, "list.json", { acceptSuspicious: true });
    expect(read.invalid.length).toBeGreaterThan(5);
    const tabs = '{\n\t"mailboxes": [\n\t\t"user.a"\n\t]\n}\n';
    expect(() => parseMailboxList(tabs, "t.json")).toThrow(
      /^t\.json: not a mailbox list in a known format/,
    );
  });

  it("sorts by code unit, not by locale", () => {
    expect(parseMailboxList("user.b\nuser.B\nuser.a\nuser.Z\n", "n").mailboxes).toEqual([
      { name: "user.B" },
      { name: "user.Z" },
      { name: "user.a" },
      { name: "user.b" },
    ]);
  });

  it("refuses a file mixing dump lines and plain names", () => {
    expect(() => parseMailboxList("user.bob\nuser.alice\t0 default a\t\n", "n")).toThrow(
      "n:2: mixes ctl_mboxlist -d lines and plain mailbox names",
    );
  });

  it("returns nothing for an empty list", () => {
    expect(parseMailboxList("", "n")).toEqual({ mailboxes: [], excluded: [], invalid: [] });
  });
});

describe("discoverMailboxes", () => {
  it("finds exactly the 7 mailboxes of the Cyrus 3.6 fixture spool", async () => {
    const conf = parseImapdConf(
      `partition-default: ${FIXTURE}/v10/spool\nhashimapspool: yes\nfulldirhash: no\n`,
      "test.conf",
    );
    const expected = (await readFile(`${FIXTURE}/v10/mailboxes.txt`, "utf8"))
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => l.split("\t")[0] as string)
      .sort()
      .map((name) => ({ name, partition: "default" }));
    expect(expected).toHaveLength(7);
    expect(await discoverMailboxes(conf)).toEqual(expected);
  });

  describe("on a built spool", () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "guidup-discover-"));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    async function mailboxDir(path: string): Promise<void> {
      await mkdir(path, { recursive: true });
      await writeFile(join(path, "cyrus.header"), "");
    }

    it("undoes hashing and domains, skips staging, strays and symlinks", async () => {
      const root = join(dir, "spool1");
      await mailboxDir(join(root, "E/user/bob"));
      await mailboxDir(join(root, "E/user/bob/Some Folder"));
      await mailboxDir(join(root, "C/DELETED/user/bob/Trash/4B1C2D3E"));
      await mailboxDir(join(root, "domain/O/example.com/E/user/bob"));
      await mailboxDir(join(root, "domain/O/example.com/E/user/bob/Sent"));
      // Intermediate directories without cyrus.header are not mailboxes.
      await mkdir(join(root, "L/user/alice/NoHeader"), { recursive: true });
      // Staging, a wrongly hashed copy, a name Cyrus refuses, a symlink.
      await mailboxDir(join(root, "stage./E/user/bob"));
      await mailboxDir(join(root, "sync./1234/E/user/bob"));
      await mailboxDir(join(root, "b/user/bob"));
      await mailboxDir(join(root, "lost+found"));
      await mailboxDir(join(root, "E/user/b\\ad"));
      await mailboxDir(join(dir, "outside/user/eve"));
      await mkdir(join(root, "T/user"), { recursive: true });
      await symlink(join(dir, "outside/user/eve"), join(root, "T/user/eve"));
      // A cyrus.header at the root itself names no mailbox.
      await writeFile(join(root, "cyrus.header"), "");

      const conf = parseImapdConf(
        `partition-default: ${root}\nhashimapspool: yes\nfulldirhash: yes\nvirtdomains: on\n`,
        "test.conf",
      );
      expect(await discoverMailboxes(conf)).toEqual([
        { name: "DELETED.user.bob.Trash.4B1C2D3E", partition: "default" },
        { name: "example.com!user.bob", partition: "default" },
        { name: "example.com!user.bob.Sent", partition: "default" },
        { name: "user.bob", partition: "default" },
        { name: "user.bob.Some Folder", partition: "default" },
      ]);
      // Issue #10 item 7: the directories that are not mailboxes were
      // skipped silently; each is reported now, with its reason.
      const { invalid } = await discoverMailboxDirs(conf);
      expect(invalid).toEqual([
        {
          name: join(root, "b/user/bob"),
          reason: `${join(root, "b/user/bob")} holds a cyrus.header, but mailbox "user.bob" lives at ${join(root, "E/user/bob")} (a stray copy?)`,
        },
        {
          name: join(root, "lost+found"),
          reason: `${join(root, "lost+found")} holds a cyrus.header but is no mailbox directory of partition default`,
        },
        {
          name: "user.b\\ad",
          reason: `${join(root, "E/user/b\\ad")}: invalid mailbox name "user.b\\\\ad": character U+005c not allowed`,
        },
      ]);
    });

    it("walks every partition, looking for headers under the metapartition when configured", async () => {
      const data1 = join(dir, "data1");
      const meta1 = join(dir, "meta1");
      const data2 = join(dir, "data2");
      await mailboxDir(join(meta1, "user/alice"));
      await mkdir(join(data1, "user/alice"), { recursive: true });
      // A header left on the data partition is not where Cyrus looks: ignored.
      await mailboxDir(join(data1, "user/stale"));
      await mailboxDir(join(data2, "user/carol"));
      await mailboxDir(join(data2, "shared"));
      const conf = parseImapdConf(
        [
          `partition-default: ${data1}`,
          `metapartition-default: ${meta1}`,
          `partition-p2: ${data2}`,
          "metapartition_files: header index",
        ].join("\n"),
        "test.conf",
      );
      expect(await discoverMailboxes(conf)).toEqual([
        { name: "shared", partition: "p2" },
        { name: "user.alice", partition: "default" },
        { name: "user.carol", partition: "p2" },
      ]);
    });

    it("treats domain/ as an ordinary mailbox directory when virtdomains is off", async () => {
      const root = join(dir, "spool3");
      await mailboxDir(join(root, "domain/example.com/user/bob"));
      await mailboxDir(join(root, "domain"));
      const conf = parseImapdConf(`partition-default: ${root}\n`, "test.conf");
      // "domain.example.com.user.bob" would be domain/example/com/user/bob: not this directory.
      expect(await discoverMailboxes(conf)).toEqual([{ name: "domain", partition: "default" }]);
    });

    it("reports a missing partition root as a file-access error", async () => {
      const conf = parseImapdConf(`partition-default: ${join(dir, "nope")}\n`, "test.conf");
      await expect(discoverMailboxes(conf)).rejects.toThrow(FileAccessError);
      await expect(discoverMailboxes(conf)).rejects.toThrow(
        `cannot read spool directory ${join(dir, "nope")}`,
      );
    });
  });
});
