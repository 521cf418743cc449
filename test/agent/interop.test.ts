// The agent's locks against a foreign process that locks like Cyrus 2.3 (an
// fcntl build): test/helpers/foreign-locker.py takes classic POSIX F_SETLK(W)
// whole-file write locks. Real processes, real files, real kernel locks.

import { stat } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  AgentProcess,
  ForeignLocker,
  killAll,
  makeEmptySpool,
  makeFixtureSpool,
  messages,
  minorOf,
  type TempSpool,
  writeMailbox,
} from "../helpers/agent-process.js";
import { untilBlockedOnLock, untilOpen } from "../helpers/proc-wait.js";

const agents: AgentProcess[] = [];
const spools: TempSpool[] = [];
const foreigners: ForeignLocker[] = [];

afterEach(async () => {
  await Promise.all(foreigners.splice(0).map((f) => f.kill()));
  await killAll(agents);
  await Promise.all(spools.splice(0).map((s) => s.cleanup()));
});

async function start(spool: TempSpool): Promise<AgentProcess> {
  spools.push(spool);
  const agent = await AgentProcess.start(spool.conf);
  agents.push(agent);
  return agent;
}

async function hold(file: string, seconds: number): Promise<ForeignLocker> {
  const f = await ForeignLocker.hold(file, seconds);
  foreigners.push(f);
  return f;
}

const ALICE = { name: "user.alice" };

/** A v9 mailbox with an expunge file (2 records moved there, unsorted). */
async function expungeSpool(): Promise<{ spool: TempSpool; dir: string }> {
  const spool = await makeEmptySpool();
  const dir = await writeMailbox(spool, "user.dora", {
    minor: 9,
    messages: messages("user.dora", [1, 2, 4, 6]),
    expunge: messages("user.dora", [5, 3]),
  });
  return { spool, dir };
}

describe("locks against a Cyrus-like foreign locker", () => {
  it("a foreign lock on cyrus.header makes lock time out cleanly, naming the file", async () => {
    const spool = await makeFixtureSpool("09");
    const agent = await start(spool);
    const dir = spool.dir("user.alice");
    const header = path.join(dir, "cyrus.header");
    await hold(header, 30);
    const t0 = Date.now();
    const err = await agent.fail("lock", { mailbox: ALICE, timeoutMs: 600 });
    const took = Date.now() - t0;
    expect(err.code).toBe("lock-timeout");
    expect(err.message).toContain(header);
    // It waited (never less than asked); no upper bound: the machine may be loaded.
    expect(took).toBeGreaterThanOrEqual(550);
    // Nothing held, nothing written; the session is idle and can lock others.
    expect(await agent.call("status", {})).toEqual({ session: "idle" });
    expect(await ForeignLocker.try(path.join(dir, "cyrus.index"))).toBe("acquired");
    await agent.call("lock", { mailbox: { name: "user.bob" }, timeoutMs: 1000 });
    await agent.call("rollback", {});
  });

  it("a foreign lock on cyrus.index also times out, and releases the header lock taken before it", async () => {
    const spool = await makeFixtureSpool("09");
    const agent = await start(spool);
    const dir = spool.dir("user.alice");
    const index = path.join(dir, "cyrus.index");
    await hold(index, 30);
    const err = await agent.fail("lock", { mailbox: ALICE, timeoutMs: 400 });
    expect(err.code).toBe("lock-timeout");
    expect(err.message).toContain(index);
    expect(await ForeignLocker.try(path.join(dir, "cyrus.header"))).toBe("acquired");
  });

  it("a foreign lock released in time: lock waits for it and proceeds", async () => {
    const spool = await makeFixtureSpool("09");
    const agent = await start(spool);
    const index = path.join(spool.dir("user.alice"), "cyrus.index");
    const foreign = await hold(index, 30);
    const pending = agent.call("lock", { mailbox: ALICE, timeoutMs: 30_000 });
    // The agent is waiting once it has the index open (after the header lock).
    await untilOpen(agent.pid, index);
    const seenWaiting = Date.now();
    expect(await ForeignLocker.try(index)).toBe("busy");
    const released = Date.now();
    await foreign.kill();
    const lock = await pending;
    // It waited at least from when it was seen waiting until the holder went.
    expect(lock.waitedMs).toBeGreaterThanOrEqual(released - seenWaiting);
    expect(lock.scan.status).toBe("ok");
    await agent.call("upgrade", { target: 10 });
    await agent.call("commit", {});
    expect(await minorOf(index)).toBe(10);
  });

  it("while the agent holds a mailbox, a foreign non-blocking lock fails on header, index and expunge", async () => {
    const { spool, dir } = await expungeSpool();
    const agent = await start(spool);
    const files = ["cyrus.header", "cyrus.index", "cyrus.expunge"].map((f) => path.join(dir, f));
    // cyrus.cache is never locked by the agent (pop3d holds it for whole sessions).
    const cache = path.join(dir, "cyrus.cache");

    const lock = await agent.call("lock", { mailbox: { name: "user.dora" }, timeoutMs: 2000 });
    expect(lock.scan.expunge).toMatchObject({ minor: 9, records: 2 });
    for (const f of files) expect(await ForeignLocker.try(f), f).toBe("busy");
    expect(await ForeignLocker.try(cache)).toBe("acquired");

    await agent.call("upgrade", { target: 10 });
    for (const f of files) expect(await ForeignLocker.try(f), f).toBe("busy");

    await agent.call("rollback", {});
    for (const f of files) expect(await ForeignLocker.try(f), f).toBe("acquired");
  });

  it("a foreign process blocked on the old cyrus.index gets its lock after commit and finds the new inode", async () => {
    const { spool, dir } = await expungeSpool();
    const agent = await start(spool);
    const index = path.join(dir, "cyrus.index");
    const expunge = path.join(dir, "cyrus.expunge");
    const oldIndexIno = (await stat(index)).ino;
    const oldExpungeIno = (await stat(expunge)).ino;

    await agent.call("lock", { mailbox: { name: "user.dora" }, timeoutMs: 2000 });
    await agent.call("upgrade", { target: 10 });
    const waiter = await ForeignLocker.wait(index);
    foreigners.push(waiter);
    const expungeWaiter = await ForeignLocker.wait(expunge);
    foreigners.push(expungeWaiter);
    // Blocked (the kernel lists both waiting): nothing acquired while we hold the locks.
    await untilBlockedOnLock(waiter.child.pid!);
    await untilBlockedOnLock(expungeWaiter.child.pid!);
    expect(waiter.stdout).toEqual([]);
    expect(expungeWaiter.stdout).toEqual([]);

    const commit = await agent.call("commit", {});
    expect(commit.renamed).toEqual([expunge, index]);
    const newIndexIno = (await stat(index)).ino;
    const newExpungeIno = (await stat(expunge)).ino;
    expect(newIndexIno).not.toBe(oldIndexIno);

    for (const [w, oldIno, newIno] of [
      [waiter, oldIndexIno, newIndexIno],
      [expungeWaiter, oldExpungeIno, newExpungeIno],
    ] as const) {
      const line = await w.line("acquired");
      const m = /^acquired ino=(\d+) pathino=(\d+)$/.exec(line);
      expect(m, line).not.toBeNull();
      expect(Number(m![1])).toBe(oldIno);
      expect(Number(m![2])).toBe(newIno);
      expect(Number(m![1])).not.toBe(Number(m![2]));
      expect(await w.exited).toBe(0);
    }
    expect(await minorOf(index)).toBe(10);
    expect(await minorOf(expunge)).toBe(10);
  });
});
