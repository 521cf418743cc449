// Crashes of the agent at every state of a mailbox, with real processes and
// real files: SIGKILL after lock, SIGKILL after upgrade (.NEW files written),
// the state a crash between commit's two renames leaves, and stdin closed
// while upgraded. Afterwards the originals are intact or fully replaced,
// never half; the next lock cleans up; and real Cyrus (cyrus-check-guids.sh)
// accepts every GUID after a completed upgrade.
//
// The mid-commit crash cannot be timed from outside (the two renames run back
// to back, and the agent has no pause hook on purpose), so the test makes the
// exact on-disk state that crash leaves — commit renames cyrus.expunge.NEW
// first — from a real agent's own .NEW files, and shows the next agent
// completes it.

import { readdir, rename, stat } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  AgentProcess,
  contents,
  cyrusCheckGuids,
  exists,
  expectSha1Guids,
  ForeignLocker,
  killAll,
  makeFixtureSpool,
  makeGeneratedSpool,
  minorOf,
  removeUncheckableMailboxes,
  snapshot,
  type TempSpool,
  upgradeAll,
} from "../helpers/agent-process.js";

const agents: AgentProcess[] = [];
const spools: TempSpool[] = [];

afterEach(async () => {
  await killAll(agents);
  await Promise.all(spools.splice(0).map((s) => s.cleanup()));
});

async function start(conf: string): Promise<AgentProcess> {
  const agent = await AgentProcess.start(conf);
  agents.push(agent);
  return agent;
}

/**
 * A generated 2.3 spool and one of its mailboxes below v10 with a
 * cyrus.expunge (padded UUIDs, unsorted expunge records).
 */
async function generated() {
  const spool = await makeGeneratedSpool({
    seed: 3,
    mailboxes: 12,
    expungeFraction: 0.5,
    largeMailboxes: 0,
  });
  spools.push(spool);
  const removed = await removeUncheckableMailboxes(spool);
  const m = spool.generated.mailboxes.find(
    (x) => x.hasExpunge && x.minor < 10 && x.records > 0 && !removed.includes(x.name),
  );
  if (!m) throw new Error("the generated spool has no v<10 mailbox with cyrus.expunge");
  const dir = spool.dir(m.name);
  const files = {
    header: path.join(dir, "cyrus.header"),
    index: path.join(dir, "cyrus.index"),
    expunge: path.join(dir, "cyrus.expunge"),
  };
  return { spool, mailbox: { name: m.name }, minor: m.minor, dir, files };
}

/** The mailbox's files without guidup's own cache and without leftovers. */
async function mailboxContents(dir: string) {
  const c = contents(await snapshot(dir));
  for (const k of Object.keys(c))
    if (k === "cyrus.sha1s" || k.endsWith(".NEW") || k.includes(".guidup-")) delete c[k];
  return c;
}

async function expectUnlocked(files: { header: string; index: string; expunge: string }) {
  for (const f of [files.header, files.index, files.expunge]) {
    expect(await ForeignLocker.try(f), f).toBe("acquired");
  }
}

async function expectCompleted(dir: string, files: { index: string; expunge: string }) {
  expect(await minorOf(files.index)).toBe(10);
  expect(await minorOf(files.expunge)).toBe(10);
  await expectSha1Guids(dir, files.index, "index");
  await expectSha1Guids(dir, files.expunge, "expunge");
  expect(await exists(`${files.index}.NEW`)).toBe(false);
  expect(await exists(`${files.expunge}.NEW`)).toBe(false);
  expect((await readdir(dir)).filter((f) => f.includes(".guidup-"))).toEqual([]);
}

/** An agent's own temporary names (guidup-private, per process: session.ts). */
function tmpOf(files: { index: string; expunge: string }, agent: { hello: { pid: number } }) {
  return {
    indexNew: `${files.index}.guidup-${agent.hello.pid}`,
    expungeNew: `${files.expunge}.guidup-${agent.hello.pid}`,
  };
}
const STAGE = { target: 10, guids: true };

describe("agent killed with SIGKILL", () => {
  it("(a) after lock: originals byte-identical, locks gone, the next agent upgrades", async () => {
    const { spool, mailbox, dir, files } = await generated();
    const before = await mailboxContents(dir);
    const agent = await start(spool.conf);
    await agent.call("lock", { mailbox, timeoutMs: 2000 });
    expect(await ForeignLocker.try(files.index)).toBe("busy");
    expect(await agent.kill("SIGKILL")).toEqual({ code: null, signal: "SIGKILL" });

    expect(await mailboxContents(dir)).toEqual(before);
    await expectUnlocked(files);

    const next = await start(spool.conf);
    const lock = await next.call("lock", { mailbox, timeoutMs: 2000 });
    expect(lock.removedStale).toEqual([]);
    expect((await next.call("upgrade", { target: 10 })).changed).toBe(true);
    expect((await next.call("commit", {})).renamed).toEqual([files.expunge, files.index]);
    await expectCompleted(dir, files);
  });

  it("(b) after prepare and lock: temporary files left, originals byte-identical; the next prepare removes them and a full cut-over succeeds", async () => {
    const { spool, mailbox, minor, dir, files } = await generated();
    const before = await mailboxContents(dir);
    const agent = await start(spool.conf);
    const tmp = tmpOf(files, agent);
    const prep = await agent.call("prepare", { mailbox, stage: STAGE });
    const first = await agent.call("lock", { mailbox, timeoutMs: 2000, stage: STAGE });
    expect(first.staged?.path).toBe("prepared");
    expect(first.staged?.guidDigest).toBe(prep.staged?.guidDigest);
    expect(await exists(tmp.indexNew)).toBe(true);
    expect(await exists(tmp.expungeNew)).toBe(true);
    await agent.kill("SIGKILL");

    expect(await mailboxContents(dir)).toEqual(before);
    expect(await minorOf(files.index)).toBe(minor);
    expect(await minorOf(files.expunge)).toBe(minor);
    await expectUnlocked(files);
    // A crash leftover is what it is: harmless (only its dead writer could
    // rename it), still there until the next prepare of this mailbox.
    expect(await exists(tmp.indexNew)).toBe(true);

    const next = await start(spool.conf);
    const again = await next.call("prepare", { mailbox, stage: STAGE });
    expect(await exists(tmp.indexNew)).toBe(false);
    expect(await exists(tmp.expungeNew)).toBe(false);
    // The first agent's hashing was saved to the sha1 cache before the crash.
    expect(again.computed).toBe(0);
    const lock = await next.call("lock", { mailbox, timeoutMs: 2000, stage: STAGE });
    expect(lock.staged?.path).toBe("prepared");
    expect(lock.staged?.guidDigest).toBe(first.staged?.guidDigest);
    await next.call("commit", {});
    await expectCompleted(dir, files);
  });

  it("(c) between commit's two renames: v10 cyrus.expunge, old cyrus.index, its temporary file left; the next agent completes", async () => {
    const { spool, mailbox, minor, dir, files } = await generated();
    const agent = await start(spool.conf);
    const tmp = tmpOf(files, agent);
    await agent.call("prepare", { mailbox, stage: STAGE });
    const first = await agent.call("lock", { mailbox, timeoutMs: 2000, stage: STAGE });
    await agent.kill("SIGKILL");
    // commit renames expunge first; the crash came before the index rename.
    await rename(tmp.expungeNew, files.expunge);
    expect(await minorOf(files.expunge)).toBe(10);
    expect(await minorOf(files.index)).toBe(minor);
    expect(await exists(tmp.indexNew)).toBe(true);
    const expungeIno = (await stat(files.expunge)).ino;

    const next = await start(spool.conf);
    const scan = (await next.call("scan", { mailboxes: [mailbox] })).mailboxes[0];
    expect(scan).toMatchObject({
      status: "ok",
      index: { minor },
      expunge: { minor: 10, oldStyle: 0 },
    });
    await next.call("prepare", { mailbox, stage: STAGE });
    expect(await exists(tmp.indexNew)).toBe(false);
    const lock = await next.call("lock", { mailbox, timeoutMs: 2000, stage: STAGE });
    expect(lock.staged).toMatchObject({
      changed: true,
      files: { index: "prepared", expunge: "unchanged" },
      guidDigest: first.staged?.guidDigest,
    });
    // Only the index is left to do; the v10 expunge is kept as it is.
    expect((await next.call("commit", {})).renamed).toEqual([files.index]);
    expect((await stat(files.expunge)).ino).toBe(expungeIno);
    await expectCompleted(dir, files);

    // And real Cyrus agrees, once the rest of the spool is done too.
    await upgradeAll(next);
    const check = cyrusCheckGuids(spool.spool, spool.conf);
    expect(check.status, check.output).toBe(0);
  });

  it("(d) stdin closed while staged: exit 0 after rollback, no temporary file, originals intact, locks released", async () => {
    const { spool, mailbox, dir, files } = await generated();
    const before = await mailboxContents(dir);
    const agent = await start(spool.conf);
    const tmp = tmpOf(files, agent);
    await agent.call("prepare", { mailbox, stage: STAGE });
    await agent.call("lock", { mailbox, timeoutMs: 2000, stage: STAGE });
    expect(await exists(tmp.indexNew)).toBe(true);
    expect(await agent.closeStdin()).toEqual({ code: 0, signal: null });
    expect(agent.stderr).toContain("rolling back");
    expect(await exists(tmp.indexNew)).toBe(false);
    expect(await exists(tmp.expungeNew)).toBe(false);
    expect(await mailboxContents(dir)).toEqual(before);
    await expectUnlocked(files);
  });

  it("stdin closed after prepare, before lock: exit 0, the prepared temporary files removed", async () => {
    const { spool, mailbox, dir, files } = await generated();
    const before = await mailboxContents(dir);
    const agent = await start(spool.conf);
    const tmp = tmpOf(files, agent);
    await agent.call("prepare", { mailbox, stage: STAGE });
    expect(await exists(tmp.indexNew)).toBe(true);
    expect(await agent.closeStdin()).toEqual({ code: 0, signal: null });
    expect(await exists(tmp.indexNew)).toBe(false);
    expect(await exists(tmp.expungeNew)).toBe(false);
    expect(await mailboxContents(dir)).toEqual(before);
  });

  it("stdin closed while only locked: exit 0, locks released, nothing written", async () => {
    const { spool, mailbox, dir, files } = await generated();
    const before = contents(await snapshot(dir));
    const agent = await start(spool.conf);
    await agent.call("lock", { mailbox, timeoutMs: 2000 });
    expect(await agent.closeStdin()).toEqual({ code: 0, signal: null });
    expect(contents(await snapshot(dir))).toEqual(before);
    await expectUnlocked(files);
  });
});

describe("real Cyrus accepts the GUIDs after a completed upgrade", () => {
  for (const version of ["06", "07", "08", "09"] as const) {
    it(`fixture spool v${version}`, async () => {
      const spool = await makeFixtureSpool(version);
      spools.push(spool);
      const agent = await start(spool.conf);
      expect(await upgradeAll(agent)).toHaveLength(7);
      const check = cyrusCheckGuids(spool.spool, spool.conf);
      expect(check.status, check.output).toBe(0);
      expect(check.output).toContain("ALL GUIDS MATCH");
    });
  }

  it("generated 2.3 spool with cyrus.expunge files and padded UUIDs", async () => {
    const spool = await makeGeneratedSpool({
      seed: 7,
      mailboxes: 16,
      expungeFraction: 0.5,
      largeMailboxes: 0,
    });
    spools.push(spool);
    await removeUncheckableMailboxes(spool);
    const agent = await start(spool.conf);
    await upgradeAll(agent);
    const check = cyrusCheckGuids(spool.spool, spool.conf);
    expect(check.status, check.output).toBe(0);
    const m = /(\d+) expunge file\(s\)/.exec(check.output);
    expect(Number(m?.[1])).toBeGreaterThan(0);
  });
});
