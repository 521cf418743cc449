// The agent's `hash` op (hashMailboxes) over a generated spool, in this
// process, with real files and the real worker threads: what it hashes and
// caches, and which mailboxes it skips without calling them failed now that
// `guidup hash` sends every listed mailbox (no separate scan first).

import { createHash } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashMailboxes } from "../../src/agent/hash-op.js";
import { mailboxFiles } from "../../src/agent/mailbox-files.js";
import { readMailbox } from "../../src/agent/mailbox-scan.js";
import { readSha1Cache } from "../../src/agent/sha1-cache.js";
import { type ImapdConf, readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { type GeneratedSpool, generateSpool } from "../../src/spoolgen/spool-generator.js";
import { makeTempDir } from "../helpers/fixtures.js";

let dir = "";
let cleanup: () => Promise<void> = async () => {};
let spool: GeneratedSpool;
let conf: ImapdConf;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir("guidup-hash-op-"));
  spool = await generateSpool({
    dir,
    pair: false,
    mailboxes: 12,
    seed: 5,
    versions: [9],
    largeMailboxes: 0,
    messagesPerMailbox: [3, 8],
    expungeFraction: 0,
    sizeClasses: [
      { weight: 3, bytes: [500, 3_000], attachment: false },
      { weight: 1, bytes: [20_000, 200_000], attachment: true },
    ],
  });
  conf = await readImapdConf(spool.master.imapdConf);
});
afterAll(() => cleanup());

describe("hashMailboxes", () => {
  it("caches the SHA1 of every message file, skips Cyrus 2.4+ and vanished mailboxes, reports corrupt ones", async () => {
    const withMail = spool.mailboxes.filter((m) => m.records > 0);
    expect(withMail.length).toBeGreaterThanOrEqual(5);
    const [newer, gone, corrupt, ...rest] = withMail;
    // A 2.4+ index (minor 12): past the upgrade, nothing to hash.
    const newerIndex = mailboxFiles(conf, { name: newer!.name }).index;
    // With the geometry Cyrus 2.4 writes (start offset 128, record size 96,
    // the file long enough for its records): anything else reads as corrupt.
    const bytes = await readFile(newerIndex);
    const header = Buffer.alloc(128);
    bytes.copy(header, 0, 0, 96);
    header.writeUInt32BE(12, 8);
    header.writeUInt32BE(128, 12);
    header.writeUInt32BE(96, 16);
    const exists = header.readUInt32BE(20);
    await writeFile(newerIndex, Buffer.concat([header, Buffer.alloc(exists * 96)]));
    // A mailbox deleted since the list was made.
    await rm(mailboxFiles(conf, { name: gone!.name }).index);
    // A broken index: record size that does not match its version.
    const corruptIndex = mailboxFiles(conf, { name: corrupt!.name }).index;
    const broken = await readFile(corruptIndex);
    broken.writeUInt32BE(77, 16);
    await writeFile(corruptIndex, broken);

    const refs = spool.mailboxes.map((m) => ({ name: m.name }));
    const progress: number[] = [];
    const r = await hashMailboxes(conf, refs, { workers: 1 }, (p) => progress.push(p.files));
    expect(r.mailboxes).toBe(refs.length);
    expect(r.failed).toEqual([
      { mailbox: corrupt!.name, reason: expect.stringMatching(/record size 77/) },
    ]);
    const expectedFiles = rest.reduce((n, m) => n + m.records, 0);
    expect(r.hashed).toBe(expectedFiles);
    expect(progress.at(-1)).toBe(expectedFiles);

    // Every cache entry is the SHA1 of its file; the skipped mailboxes have none.
    let entries = 0;
    for (const m of rest) {
      const files = mailboxFiles(conf, { name: m.name });
      const { cache, problem } = await readSha1Cache(files.sha1s);
      expect(problem).toBeUndefined();
      expect(cache.size).toBe(m.records);
      for (const e of cache.entries()) {
        const data = await readFile(files.messageFile(e.uid));
        expect(e.sha1.equals(createHash("sha1").update(data).digest()), `${m.name} ${e.uid}`).toBe(
          true,
        );
        expect(e.size).toBe(data.length);
        entries++;
      }
    }
    expect(entries).toBe(expectedFiles);
    for (const m of [newer!, gone!, corrupt!]) {
      const { cache } = await readSha1Cache(mailboxFiles(conf, { name: m.name }).sha1s);
      expect(cache.size).toBe(0);
    }

    // A second run (two workers this time) finds everything cached.
    const again = await hashMailboxes(conf, refs, { workers: 2 }, () => {});
    expect(again.hashed).toBe(0);
    expect(again.alreadyCached).toBe(expectedFiles);
  });

  it("hashes exactly the old-style UIDs a scan finds, in index and expunge, over versions 6 to 10", async () => {
    const mixed = await generateSpool({
      dir: `${dir}/mixed`,
      pair: false,
      mailboxes: 16,
      seed: 11,
      versions: [6, 7, 8, 9, 10],
      largeMailboxes: 0,
      messagesPerMailbox: [4, 12],
      expungeFraction: 0.3,
      sizeClasses: [{ weight: 1, bytes: [300, 2_000], attachment: false }],
    });
    const mixedConf = await readImapdConf(mixed.master.imapdConf);
    const expected = new Map<string, number[]>();
    let withExpunge = 0;
    let newStyleSkipped = 0;
    for (const m of mixed.mailboxes) {
      const files = mailboxFiles(mixedConf, { name: m.name });
      const hasExpunge = await readFile(files.expunge).then(
        (b) => b.length > 0,
        () => false,
      );
      if (hasExpunge) withExpunge++;
      const read = await readMailbox(
        m.name,
        { path: files.index, kind: "index" },
        hasExpunge ? { path: files.expunge, kind: "expunge" } : undefined,
      );
      const uids = new Set([...read.index.needs, ...(read.expunge?.needs ?? [])].map((n) => n.uid));
      newStyleSkipped += read.index.facts.records - read.index.facts.oldStyle;
      expected.set(
        m.name,
        [...uids].sort((a, b) => a - b),
      );
    }
    // The spool has what this test is about.
    expect(withExpunge).toBeGreaterThan(0);
    expect(newStyleSkipped).toBeGreaterThan(0);

    const r = await hashMailboxes(
      mixedConf,
      mixed.mailboxes.map((m) => ({ name: m.name })),
      { workers: 1 },
      () => {},
    );
    expect(r.failed).toEqual([]);
    let total = 0;
    for (const [name, uids] of expected) {
      const { cache } = await readSha1Cache(mailboxFiles(mixedConf, { name }).sha1s);
      expect(
        [...cache.entries()].map((e) => e.uid).sort((a, b) => a - b),
        name,
      ).toEqual(uids);
      total += uids.length;
    }
    expect(r.hashed).toBe(total);
  });
});
