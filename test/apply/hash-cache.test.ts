// Proofs of the sha1 precompute (guidup hash), the replica → master cache
// relay and `guidup cache clean`, all through the real CLI and real agents
// (local transport) on generated master/replica spools:
//
//  1. hash interrupted with SIGINT (to the whole process group, as Ctrl-C)
//     and run again hashes every old-style message file exactly once;
//  2. a cache built on the replica and relayed leaves the master hashing only
//     the verification sample;
//  3. a replica file whose content changed after the replica was hashed (same
//     UID, same size) ends diverged, each side's digest being that of its own
//     files — never equal wrong GUIDs;
//  4. cache clean refuses while the newest plan has work left, obeys --force,
//     and after a complete apply leaves no cyrus.sha1s on either side.
//
// Needs the build (npx tsc -p tsconfig.json): agents run dist/src/cli/main.js.

import { readFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { mailboxFiles } from "../../src/agent/mailbox-files.js";
import { readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { replaceMessageFile } from "../../src/spoolgen/spool-generator.js";
import {
  cacheEntryTotal,
  distinctOldStyle,
  expectedGuidDigest,
  findCacheFiles,
  indexGuids,
  readStates,
  sha1Hex,
  spawnCli,
  waitFor,
} from "../helpers/hash-harness.js";
import {
  makeGeneratedPair,
  type PairFixture,
  runCliProcess,
  writeInventory,
} from "../helpers/pair-fixtures.js";

type HashReport = {
  interrupted: boolean;
  hosts: { side: string; hashed: number; alreadyCached: number; failed: unknown[] }[];
};

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function pair(opts: Parameters<typeof makeGeneratedPair>[0]): Promise<PairFixture> {
  const p = await makeGeneratedPair(opts);
  cleanups.push(() => p.cleanup());
  return p;
}

function hashedOn(report: HashReport, side: string): { hashed: number; alreadyCached: number } {
  const h = report.hosts.find((x) => x.side === side);
  if (!h) throw new Error(`no ${side} in ${JSON.stringify(report)}`);
  return h;
}

describe("guidup hash / relay / cache clean", () => {
  it("hash interrupted by SIGINT and rerun hashes no message file twice", async () => {
    // ~80 MB per side; --max-rate keeps the first run going for seconds.
    const p = await pair({
      mailboxes: 14,
      seed: 11,
      versions: [8, 9],
      largeMailboxes: 0,
      messagesPerMailbox: [40, 90],
      messageBytes: [20_000, 120_000],
      expungeFraction: 0.3,
    });
    const inv = await writeInventory(p, { transport: "local" });
    const want = await distinctOldStyle(p.replica.imapdConf, p.names);
    expect(want.total).toBeGreaterThan(500);

    const first = spawnCli(["hash", "-i", inv, "--side", "replica", "--json", "--max-rate", "8"]);
    cleanups.push(() => first.killGroup());
    // Interrupt once some files are hashed for sure: a mailbox's cache saved.
    await waitFor(
      "the first cyrus.sha1s",
      async () => (await findCacheFiles(p.replica.root)).length > 0,
      30_000,
      25,
    );
    first.interruptGroup();
    const end1 = await first.exited;
    expect(end1, first.err()).toEqual({ code: 130, signal: null });
    const r1 = JSON.parse(first.out()) as HashReport;
    expect(r1.interrupted).toBe(true);
    const h1 = hashedOn(r1, "replica");
    expect(h1.hashed).toBeGreaterThan(0);
    expect(h1.hashed).toBeLessThan(want.total);
    // What run 1 says it hashed is what its caches hold: nothing lost.
    expect(await cacheEntryTotal(p.replica.root)).toBe(h1.hashed);

    const second = await runCliProcess(["hash", "-i", inv, "--side", "replica", "--json"], {
      timeoutMs: 60_000,
    });
    expect(second.code, second.err).toBe(0);
    const r2 = JSON.parse(second.out) as HashReport;
    expect(r2.interrupted).toBe(false);
    const h2 = hashedOn(r2, "replica");
    // Exactly once over both runs, by the reports and by the cache files.
    expect(h1.hashed + h2.hashed).toBe(want.total);
    expect(await cacheEntryTotal(p.replica.root)).toBe(want.total);
    // Every file of the mailbox run 1 was in when interrupted was skipped, not re-read.
    expect(h2.alreadyCached).toBeGreaterThan(0);
    expect(h2.alreadyCached).toBeLessThanOrEqual(h1.hashed);

    const third = await runCliProcess(["hash", "-i", inv, "--side", "replica", "--json"]);
    expect(third.code, third.err).toBe(0);
    expect(hashedOn(JSON.parse(third.out) as HashReport, "replica").hashed).toBe(0);
    // The master was never touched.
    expect(await findCacheFiles(p.master.root)).toEqual([]);
  });

  it("with --relay-cache, a replica cache relayed to the master leaves the master hashing only the verification sample", async () => {
    const p = await pair({ mailboxes: 16, seed: 5, largeMailboxes: 1 });
    const inv = await writeInventory(p, { transport: "local" });
    const h = await runCliProcess(["hash", "-i", inv, "--side", "replica", "--json"]);
    expect(h.code, h.err).toBe(0);
    expect(await findCacheFiles(p.master.root)).toEqual([]);
    const plan = path.join(p.dir, "plans", "relay.yaml");
    const pl = await runCliProcess(["plan", "-i", inv, "--out", plan]);
    expect(pl.code, pl.err).toBe(0);
    const ap = await runCliProcess(["apply", plan, "--relay-cache", "--json"], {
      timeoutMs: 60_000,
    });
    expect(ap.code, ap.err).toBe(0);
    expect(JSON.parse(ap.out).outcomes).toEqual({ done: expect.any(Number) });

    const states = await readStates(plan);
    const withGuids = states.filter((s) => (s.counts?.master?.fromCache ?? 0) > 0);
    expect(withGuids.length).toBeGreaterThan(3);
    let computed = 0;
    let verified = 0;
    let fromCache = 0;
    for (const s of states) {
      const m = s.counts?.master;
      const r = s.counts?.replica;
      if (!m || !r) continue;
      // Master: only the sample of relayed entries was hashed.
      expect(m.computed, s.name).toBe(m.relayedVerified);
      // Replica: its own cache, valid, nothing hashed.
      expect(r.computed, s.name).toBe(0);
      computed += m.computed;
      verified += m.relayedVerified;
      fromCache += m.fromCache;
    }
    expect(computed).toBe(verified);
    expect(fromCache).toBeGreaterThan(computed);
    // And the GUIDs are right on both sides (verify hashes every file).
    const v = await runCliProcess(["verify", "-i", inv], { timeoutMs: 60_000 });
    expect(v.code, v.out + v.err).toBe(0);
  });

  it.each([
    ["after", false],
    ["before", true],
  ] as const)(
    "a replica file that differs from the master's (same size, changed %s hashing) ends diverged, never with equal wrong GUIDs",
    async (_when, changeFirst) => {
      const p = await pair({ mailboxes: 10, seed: 3, versions: [9], largeMailboxes: 0 });
      const inv = await writeInventory(p, { transport: "local" });
      const hash = async () => {
        const h = await runCliProcess(["hash", "-i", inv, "--side", "replica"]);
        expect(h.code, h.err).toBe(0);
      };
      if (!changeFirst) await hash();
      const old = await distinctOldStyle(p.replica.imapdConf, p.names);
      // A mailbox with several old-style files; change one in the middle.
      const [mailbox, uids] = [...old.perMailbox].find(([, u]) => u.length >= 8)!;
      const uid = uids[Math.floor(uids.length / 2)]!;
      const rconf = await readImapdConf(p.replica.imapdConf);
      const mconf = await readImapdConf(p.master.imapdConf);
      const masterFile = mailboxFiles(mconf, { name: mailbox }).messageFile(uid);
      const original = await readFile(mailboxFiles(rconf, { name: mailbox }).messageFile(uid));
      const changed = Buffer.from(original);
      changed[changed.length - 3] = changed[changed.length - 3]! ^ 0x20;
      expect(changed.length).toBe(original.length);
      await replaceMessageFile(p.replica, mailbox, uid, changed);
      // Hashed after the change, the replica's cache holds a valid SHA1 of the
      // wrong content: only each side hashing its own files can notice.
      if (changeFirst) await hash();
      const before = await indexGuids(p.master.imapdConf, mailbox);

      const plan = path.join(p.dir, "plans", "div.yaml");
      expect((await runCliProcess(["plan", "-i", inv, "--out", plan])).code).toBe(0);
      const ap = await runCliProcess(["apply", plan, "--json"], { timeoutMs: 60_000 });
      expect(ap.code, ap.err).toBe(4);
      const report = JSON.parse(ap.out) as { problems: { name: string; phase: string }[] };
      expect(report.problems).toEqual([
        expect.objectContaining({ name: mailbox, phase: "diverged" }),
      ]);

      const st = (await readStates(plan)).find((s) => s.name === mailbox)!;
      expect(st.phase).toBe("diverged");
      // Each side's would-be GUIDs came from its own files.
      const wantMaster = await expectedGuidDigest(p.master.imapdConf, mailbox);
      const wantReplica = await expectedGuidDigest(p.replica.imapdConf, mailbox);
      expect(wantMaster).not.toBe(wantReplica);
      expect(st.digests).toEqual({ master: wantMaster, replica: wantReplica });
      // Nothing committed for that mailbox: both indexes are as before.
      expect(await indexGuids(p.master.imapdConf, mailbox)).toEqual(before);
      const masterAfter = (await indexGuids(p.master.imapdConf, mailbox)).get(uid);
      const replicaAfter = (await indexGuids(p.replica.imapdConf, mailbox)).get(uid);
      expect(masterAfter).not.toBe(sha1Hex(changed));
      expect(replicaAfter).not.toBe(sha1Hex(await readFile(masterFile)));
      // Every other mailbox was upgraded.
      expect(
        (await readStates(plan)).filter((s) => s.name !== mailbox).every((s) => s.phase === "done"),
      ).toBe(true);

      // Once the replica file is put right, the rerun upgrades it with the
      // master's content on both sides.
      await replaceMessageFile(p.replica, mailbox, uid, await readFile(masterFile));
      const again = await runCliProcess(["apply", plan, "--json"], { timeoutMs: 60_000 });
      expect(again.code, again.err).toBe(0);
      const sha = sha1Hex(await readFile(masterFile));
      expect((await indexGuids(p.master.imapdConf, mailbox)).get(uid)).toBe(sha);
      expect((await indexGuids(p.replica.imapdConf, mailbox)).get(uid)).toBe(sha);
    },
  );

  it("cache clean refuses while work remains, obeys --force, and leaves no cyrus.sha1s after a complete apply", async () => {
    const p = await pair({ mailboxes: 12, seed: 9, largeMailboxes: 0 });
    const inv = await writeInventory(p, { transport: "local" });
    const plansDir = path.join(p.dir, "plans");
    const plan = path.join(plansDir, "clean.yaml");
    const both = await runCliProcess(["hash", "-i", inv, "--side", "both"]);
    expect(both.code, both.err).toBe(0);
    expect((await runCliProcess(["plan", "-i", inv, "--out", plan])).code).toBe(0);
    const cachesBefore = await findCacheFiles(p.dir);
    expect(cachesBefore.length).toBeGreaterThan(4);

    const refused = await runCliProcess(["cache", "clean", "-i", inv, "--plans-dir", plansDir]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/refused: \d+ mailbox\(es\) of .*clean\.yaml are not done/);
    expect(await findCacheFiles(p.dir)).toEqual(cachesBefore);

    // Part of the plan done: still refused (by --plan too).
    const batch = await runCliProcess(["apply", plan, "--batch", "3"]);
    expect(batch.code, batch.err).toBe(1);
    const stillRefused = await runCliProcess(["cache", "clean", "-i", inv, "--plan", plan]);
    expect(stillRefused.code).toBe(1);
    expect((await findCacheFiles(p.dir)).length).toBeGreaterThan(0);

    const forced = await runCliProcess(["cache", "clean", "-i", inv, "--plan", plan, "--force"]);
    expect(forced.code, forced.err).toBe(0);
    expect(forced.out).toMatch(/removed \d+ cache file\(s\) on the master, \d+ on the replica/);
    expect(await findCacheFiles(p.dir)).toEqual([]);

    // The rest of the apply hashes what it needs (prepare saves caches again).
    const rest = await runCliProcess(["apply", plan], { timeoutMs: 60_000 });
    expect(rest.code, rest.err).toBe(0);
    expect((await findCacheFiles(p.dir)).length).toBeGreaterThan(0);

    const clean = await runCliProcess(["cache", "clean", "-i", inv, "--plans-dir", plansDir]);
    expect(clean.code, clean.err).toBe(0);
    expect(await findCacheFiles(p.master.root)).toEqual([]);
    expect(await findCacheFiles(p.replica.root)).toEqual([]);
  });
});
