// `guidup hash` (the built CLI, a real local agent) over a copy of the
// real-Cyrus fixture tree: every cache entry is the SHA1 that sha1sums.txt
// gives for the file, with one worker and with two (whichever thread hashed
// a file: the agent's main thread takes files while its workers start); a
// missing message file is one line naming mailbox and UID,
// the rest of the spool still cached; a mailbox list that cannot be read is
// one line naming the file (the agent, started while the list is read, is
// closed again: the suite's process check fails on a survivor).

import { rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mailboxFiles } from "../../src/agent/mailbox-files.js";
import { readSha1Cache } from "../../src/agent/sha1-cache.js";
import { type ImapdConf, readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { sha1Key, sha1SumsByKey } from "../helpers/fixtures.js";
import {
  makeFixturePair,
  type PairFixture,
  runCliProcess,
  writeInventory,
} from "../helpers/pair-fixtures.js";

let pair: PairFixture;
let conf: ImapdConf;
let inventory = "";

beforeAll(async () => {
  pair = await makeFixturePair("09");
  conf = await readImapdConf(pair.master.imapdConf);
  inventory = await writeInventory(pair, { transport: "local" });
});
afterAll(() => pair?.cleanup());

/** The real CLI, run to its end (a child process). */
const guidup = (args: string[]) => runCliProcess(args, { timeoutMs: 120_000 });

async function removeCaches(): Promise<void> {
  for (const name of pair.names) await rm(mailboxFiles(conf, { name }).sha1s, { force: true });
}

/** Every cache entry of the master, as "mailbox/uid" → SHA1 hex. */
async function cachedSha1s(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of pair.names) {
    const { cache, problem } = await readSha1Cache(mailboxFiles(conf, { name }).sha1s);
    expect(problem, name).toBeUndefined();
    for (const e of cache.entries()) out.set(sha1Key(name, e.uid), e.sha1.toString("hex"));
  }
  return out;
}

describe("guidup hash over the fixture spool", () => {
  for (const workers of ["1", "2"]) {
    it(`--workers ${workers}: every cache entry is the message file's SHA1 from sha1sums.txt`, async () => {
      await removeCaches();
      const r = await guidup([
        "hash",
        "-i",
        inventory,
        "--side",
        "master",
        "--workers",
        workers,
        "--json",
      ]);
      expect(r.code, r.err).toBe(0);
      const cached = await cachedSha1s();
      const sums = sha1SumsByKey();
      const expected = [...sums.values()].filter((e) => pair.names.includes(e.mailbox));
      expect(expected.length).toBeGreaterThan(20);
      // v9 GUIDs are all old-style: every message of every mailbox is cached.
      expect(cached.size).toBe(expected.length);
      for (const e of expected)
        expect(cached.get(sha1Key(e.mailbox, e.uid)), sha1Key(e.mailbox, e.uid)).toBe(e.sha1);
      const json = JSON.parse(r.out) as { hosts: { hashed: number; failed: unknown[] }[] };
      expect(json.hosts[0]!.hashed).toBe(expected.length);
      expect(json.hosts[0]!.failed).toEqual([]);
    });
  }

  it("a missing message file: one line naming mailbox and UID, exit 1, every other file cached", async () => {
    await removeCaches();
    const sums = [...sha1SumsByKey().values()].filter((e) => pair.names.includes(e.mailbox));
    const gone = sums[Math.floor(sums.length / 2)]!;
    const file = mailboxFiles(conf, { name: gone.mailbox }).messageFile(gone.uid);
    await rm(file);
    const r = await guidup(["hash", "-i", inventory, "--side", "master", "--workers", "2"]);
    expect(r.code, r.err).toBe(1);
    const lines = r.out.split("\n").filter((l) => l.includes(gone.mailbox));
    expect(lines).toEqual([`  ${gone.mailbox} uid ${gone.uid}: ${file}: ENOENT`]);
    const cached = await cachedSha1s();
    expect(cached.size).toBe(sums.length - 1);
    expect(cached.has(sha1Key(gone.mailbox, gone.uid))).toBe(false);
  });

  it("a mailbox list that cannot be read: one line naming it, exit 2, nothing cached", async () => {
    await removeCaches();
    const missing = path.join(pair.dir, "no-such-list.txt");
    const inv = await writeInventory(
      pair,
      { transport: "local" },
      { mailboxes: { file: missing } },
    );
    const r = await guidup(["hash", "-i", inv, "--side", "master"]);
    expect(r.code).toBe(2);
    const errLines = r.err.split("\n").filter((l) => l.trim() !== "" && !/^\S+Z hash /.test(l));
    expect(errLines).toHaveLength(1);
    expect(errLines[0]).toContain(missing);
    expect((await cachedSha1s()).size).toBe(0);
  });
});
