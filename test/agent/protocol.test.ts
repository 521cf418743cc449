// The agent protocol end to end: `guidup serve` as a real child process over
// stdio, on real copies of the Cyrus 3.6 fixtures. Every op with a real
// result, every out-of-order request, malformed lines, and the upgrade's
// refusals (stale fingerprint, missing message file). No mocks.

import { createHash } from "node:crypto";
import { truncate, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { PROTOCOL_VERSION } from "../../src/protocol/messages.js";
import { TOOL_VERSION } from "../../src/version.js";
import {
  AgentProcess,
  contents,
  exists,
  expectSha1Guids,
  ForeignLocker,
  guidsOf,
  killAll,
  makeFixtureSpool,
  minorOf,
  snapshot,
  type TempSpool,
} from "../helpers/agent-process.js";
import { fixtureSha1Sums } from "../helpers/fixtures.js";

const agents: AgentProcess[] = [];
const spools: TempSpool[] = [];

afterEach(async () => {
  await killAll(agents);
  await Promise.all(spools.splice(0).map((s) => s.cleanup()));
});

async function setup(version: "06" | "07" | "08" | "09" | "10" = "09") {
  const spool = await makeFixtureSpool(version);
  spools.push(spool);
  const agent = await AgentProcess.start(spool.conf);
  agents.push(agent);
  return { spool, agent };
}

const ALICE = { name: "user.alice" };
const BOB = { name: "user.bob" };

describe("guidup serve over stdio", () => {
  it("opens with a hello line naming protocol, tool, host, pid and config", async () => {
    const { spool, agent } = await setup();
    expect(agent.hello).toEqual({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      tool: TOOL_VERSION,
      host: hostname(),
      pid: agent.pid,
      config: spool.conf,
    });
  });

  it("discover lists the spool's mailboxes; scan reports facts, missing and unreadable", async () => {
    const { spool, agent } = await setup();
    const { mailboxes } = await agent.call("discover", {});
    expect(mailboxes.map((m) => m.name)).toEqual([
      "user.alice",
      "user.alice.Archive",
      "user.alice.Archive.2009",
      "user.alice.Sent",
      "user.bob",
      "user.bob.Some Folder",
      "user.bob.Trash",
    ]);
    expect(mailboxes.every((m) => m.partition === "default")).toBe(true);

    await unlink(path.join(spool.dir("user.bob.Trash"), "cyrus.index"));
    const folder = path.join(spool.dir("user.bob.Some Folder"), "cyrus.index");
    await truncate(folder, 100); // header intact, records cut off
    const scan = await agent.call("scan", {
      mailboxes: [
        ALICE,
        { name: "user.nobody" },
        { name: "user.bob.Trash" },
        { name: "user.bob.Some Folder" },
      ],
    });
    const [alice, nobody, trash, cut] = scan.mailboxes;
    expect(cut).toMatchObject({ name: "user.bob.Some Folder", status: "corrupt" });
    expect(cut?.reason).toContain(folder);
    expect(alice).toMatchObject({
      name: "user.alice",
      status: "ok",
      index: { minor: 9, records: 8, oldStyle: 8, nullGuids: 8, lastUid: 8 },
    });
    expect(alice?.fingerprint).toMatch(/^[0-9a-f]{40}$/);
    expect(alice?.guidDigest).toMatch(/^[0-9a-f]{40}$/);
    expect(alice?.uidsDigest).toMatch(/^[0-9a-f]{40}$/);
    expect(alice?.index?.oldStyleBytes).toBe(
      fixtureSha1Sums()
        .filter((e) => e.mailbox === "user.alice")
        .reduce((n, e) => n + e.size, 0),
    );
    expect(nobody).toMatchObject({ name: "user.nobody", status: "missing" });
    expect(trash).toMatchObject({ name: "user.bob.Trash", status: "missing" });
    expect(trash?.reason).toContain("cyrus.index");
  });

  it("hash fills the sha1 cache with progress; a second hash hashes nothing; cache-clean removes it", async () => {
    const { spool, agent } = await setup();
    const first = await agent.call("hash", { mailboxes: [ALICE, BOB] });
    expect(first).toMatchObject({ mailboxes: 2, hashed: 14, alreadyCached: 0, failed: [] });
    expect(first.hashedBytes).toBeGreaterThan(0);
    expect([...agent.progress.values()].flat().length).toBeGreaterThan(0);
    const sha1s = path.join(spool.dir("user.alice"), "cyrus.sha1s");
    expect(await exists(sha1s)).toBe(true);

    const second = await agent.call("hash", { mailboxes: [ALICE, BOB] });
    expect(second).toMatchObject({ mailboxes: 2, hashed: 0, hashedBytes: 0, alreadyCached: 14 });

    // With a warm cache the upgrade hashes nothing.
    await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    const up = await agent.call("upgrade", { target: 10 });
    expect(up.counts).toMatchObject({ records: 8, computed: 0, fromCache: 8, kept: 0 });
    await agent.call("rollback", {});

    expect(await agent.call("cache-clean", { mailboxes: [ALICE, BOB] })).toEqual({ removed: 2 });
    expect(await exists(sha1s)).toBe(false);
    expect(await agent.call("cache-clean", { mailboxes: [ALICE, BOB] })).toEqual({ removed: 0 });
  });

  it("cache-get / cache-put relay a cache to another agent; the upgrade there verifies a sample and uses the rest", async () => {
    const { agent: master } = await setup();
    const { spool: replicaSpool, agent: replica } = await setup();
    await master.call("hash", { mailboxes: [ALICE] });
    const got = await master.call("cache-get", { mailbox: ALICE });
    expect(got.entries).toBe(8);
    expect(got.data.length).toBeGreaterThan(0);

    expect(await replica.call("cache-put", { mailbox: ALICE, data: got.data })).toEqual({
      entries: 8,
    });
    expect(await exists(path.join(replicaSpool.dir("user.alice"), "cyrus.sha1s"))).toBe(true);

    await replica.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    const up = await replica.call("upgrade", { target: 10 });
    expect(up.changed).toBe(true);
    expect(up.counts.fromCache).toBeGreaterThan(0);
    expect(up.counts.relayedVerified).toBeGreaterThan(0);
    expect(up.counts.computed).toBe(up.counts.relayedVerified);
    expect(up.counts.fromCache + up.counts.computed).toBe(8);
    await replica.call("commit", {});
    await expectSha1Guids(
      replicaSpool.dir("user.alice"),
      path.join(replicaSpool.dir("user.alice"), "cyrus.index"),
      "index",
    );

    // The master, from its own local cache, reaches the same digest.
    await master.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    const mup = await master.call("upgrade", { target: 10 });
    expect(mup.counts).toMatchObject({ fromCache: 8, computed: 0 });
    expect(mup.guidDigest).toBe(up.guidDigest);
    await master.call("rollback", {});
  });

  it("lock → status → upgrade → status → commit upgrades to v10 with SHA1 GUIDs", async () => {
    const { spool, agent } = await setup();
    const dir = spool.dir("user.bob");
    const index = path.join(dir, "cyrus.index");
    expect(await agent.call("status", {})).toEqual({ session: "idle" });

    const asked = Date.now();
    const lock = await agent.call("lock", { mailbox: BOB, timeoutMs: 2000 });
    const lockedSeen = Date.now();
    expect(lock.removedStale).toEqual([]);
    // The wait lies inside the round trip (both Date.now() in ms on this machine).
    expect(lock.waitedMs).toBeLessThanOrEqual(lockedSeen - asked);
    expect(lock.scan).toMatchObject({ name: "user.bob", status: "ok", index: { minor: 9 } });
    expect(await agent.call("status", {})).toMatchObject({
      session: "locked",
      mailbox: "user.bob",
      newFiles: [],
    });

    const up = await agent.call("upgrade", { target: 10 });
    expect(up).toMatchObject({
      changed: true,
      counts: { records: 6, expungeRecords: 0, computed: 6, fromCache: 0, kept: 0 },
    });
    expect(up.guidDigest).toMatch(/^[0-9a-f]{40}$/);
    // guidup's own temporary name, never Cyrus's .NEW (session.ts).
    const tmp = `${index}.guidup-${agent.hello.pid}`;
    expect(await exists(tmp)).toBe(true);
    expect(await exists(`${index}.NEW`)).toBe(false);
    expect(await minorOf(index)).toBe(9);
    const st = await agent.call("status", { mailbox: BOB });
    expect(st).toMatchObject({
      session: "upgraded",
      mailbox: "user.bob",
      newFiles: [tmp],
    });
    expect(st.scan?.index?.minor).toBe(9);

    const commitAsked = Date.now();
    const commit = await agent.call("commit", {});
    expect(commit.renamed).toEqual([index]);
    // Held at least from the lock's reply to the commit request.
    expect(commit.lockHeldMs).toBeGreaterThanOrEqual(commitAsked - lockedSeen);
    expect(await exists(tmp)).toBe(false);
    expect(await minorOf(index)).toBe(10);
    await expectSha1Guids(dir, index, "index");
    const after = await agent.call("status", { mailbox: BOB });
    expect(after).toMatchObject({ session: "idle", newFiles: [] });
    expect(after.scan).toMatchObject({
      index: { minor: 10, oldStyle: 0 },
      guidDigest: up.guidDigest,
    });
    // The sha1 cache was filled by the upgrade's own hashing.
    expect(await exists(path.join(dir, "cyrus.sha1s"))).toBe(true);
  });

  it("verify hashes the message files and compares them with the stored GUIDs", async () => {
    const { spool, agent } = await setup();
    const before = (await agent.call("verify", { mailboxes: [BOB] })).mailboxes[0];
    expect(before).toMatchObject({ name: "user.bob", checked: 6, unreadable: [] });
    expect(before?.mismatches).toHaveLength(6); // v9: no GUIDs yet
    await agent.call("lock", { mailbox: BOB, timeoutMs: 2000 });
    await agent.call("upgrade", { target: 10 });
    await agent.call("commit", {});
    const after = (await agent.call("verify", { mailboxes: [BOB] })).mailboxes[0];
    expect(after).toMatchObject({ checked: 6, mismatches: [], unreadable: [] });
    await unlink(path.join(spool.dir("user.bob"), "2."));
    const missing = (await agent.call("verify", { mailboxes: [BOB] })).mailboxes[0];
    expect(missing?.unreadable.map((u) => u.uid)).toEqual([2]);
  });

  it("rollback after upgrade removes the staged file and leaves the mailbox byte-identical", async () => {
    const { spool, agent } = await setup();
    const dir = spool.dir("user.alice");
    const before = contents(await snapshot(dir));
    await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    const lockedSeen = Date.now();
    await agent.call("upgrade", { target: 10 });
    const rollbackAsked = Date.now();
    const rb = await agent.call("rollback", {});
    expect(rb.removed).toEqual([path.join(dir, `cyrus.index.guidup-${agent.hello.pid}`)]);
    expect(rb.lockHeldMs).toBeGreaterThanOrEqual(rollbackAsked - lockedSeen);
    const after = contents(await snapshot(dir));
    delete after["cyrus.sha1s"]; // the upgrade's hashing fills the cache: not a mailbox file
    expect(after).toEqual(before);
    expect(await agent.call("status", {})).toEqual({ session: "idle" });
    // rollback of a mailbox only locked works too
    await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    expect((await agent.call("rollback", {})).removed).toEqual([]);
  });

  it("refuses out-of-order requests with code out-of-order and changes nothing on disk", async () => {
    const { spool, agent } = await setup();
    const before = await snapshot(spool.spool);

    for (const op of ["upgrade", "commit", "rollback"] as const) {
      const err = await agent.fail(op, op === "upgrade" ? { target: 10 } : {});
      expect(err.code, op).toBe("out-of-order");
    }
    await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    const twice = await agent.fail("lock", { mailbox: BOB, timeoutMs: 2000 });
    expect(twice.code).toBe("out-of-order");
    expect(twice.message).toContain("user.alice");
    const again = await agent.fail("lock", { mailbox: ALICE, timeoutMs: 2000 });
    expect(again.code).toBe("out-of-order");
    // Still holding alice, and bob was never locked.
    expect(await agent.call("status", {})).toMatchObject({
      session: "locked",
      mailbox: "user.alice",
    });
    expect(await ForeignLocker.try(path.join(spool.dir("user.alice"), "cyrus.index"))).toBe("busy");
    expect(await ForeignLocker.try(path.join(spool.dir("user.bob"), "cyrus.header"))).toBe(
      "acquired",
    );

    const commitLocked = await agent.fail("commit", {});
    expect(commitLocked.code).toBe("out-of-order");
    expect(commitLocked.message).toBe(
      "commit: needs a locked and staged mailbox, but the session is locked (user.alice)",
    );
    expect(await snapshot(spool.spool)).toEqual(before);

    await agent.call("upgrade", { target: 10 });
    const upTwice = await agent.fail("upgrade", { target: 10 });
    expect(upTwice.code).toBe("out-of-order");
    await agent.call("rollback", {});
    const final = await snapshot(spool.spool);
    for (const k of final.keys()) if (k.endsWith("cyrus.sha1s")) final.delete(k);
    expect(final).toEqual(before);
  });

  it("discover in pages: the whole list page by page, `more` until the last; a page before the first or a bad size is a protocol error", async () => {
    const { agent } = await setup();
    const whole = await agent.call("discover", {});
    expect(whole.more).toBeUndefined();
    expect((await agent.fail("discover", { page: { from: 3, size: 3 } })).code).toBe("protocol");
    const names: string[] = [];
    const mores: boolean[] = [];
    for (let from = 0; ; from += 3) {
      const page = await agent.call("discover", { page: { from, size: 3 } });
      expect(page.mailboxes.length).toBeLessThanOrEqual(3);
      names.push(...page.mailboxes.map((m) => m.name));
      mores.push(page.more === true);
      if (!page.more) break;
    }
    expect(names).toEqual(whole.mailboxes.map((m) => m.name));
    expect(mores).toEqual([true, true, false]);
    // The last page let the list go: a later page must start again from 0.
    expect((await agent.fail("discover", { page: { from: 3, size: 3 } })).code).toBe("protocol");
    expect((await agent.fail("discover", { page: { from: 0, size: 0 } })).code).toBe("protocol");
  });

  it("answers malformed JSON, a missing id and an unknown op with error lines and keeps serving", async () => {
    const { agent } = await setup();
    agent.sendRaw("{this is not json");
    expect(await agent.waitFor((l) => l.id === null)).toMatchObject({
      ok: false,
      error: { code: "protocol" },
    });
    agent.sendRaw('{"op":"status"}');
    expect(await agent.waitFor((l) => l.id === null)).toMatchObject({
      ok: false,
      error: { code: "protocol", message: expect.stringContaining("id") },
    });
    agent.sendRaw('{"id":"7","op":"status"}');
    expect(await agent.waitFor((l) => l.id === null)).toMatchObject({
      error: { code: "protocol" },
    });
    agent.sendRaw("null");
    expect(await agent.waitFor((l) => l.id === null)).toMatchObject({
      error: { code: "protocol" },
    });
    agent.sendRaw('{"id":77}');
    expect(await agent.waitFor((l) => l.id === 77)).toMatchObject({ error: { code: "protocol" } });
    agent.sendRaw('{"id":78,"op":"frobnicate"}');
    expect(await agent.waitFor((l) => l.id === 78)).toMatchObject({
      ok: false,
      error: { code: "unknown-op", message: expect.stringContaining("frobnicate") },
    });
    agent.sendRaw('{"id":79,"op":"__proto__"}');
    expect(await agent.waitFor((l) => l.id === 79)).toMatchObject({
      error: { code: "unknown-op" },
    });
    agent.sendRaw("");
    agent.sendRaw('{"id":80,"op":"scan","mailboxes":"user.alice"}');
    expect(await agent.waitFor((l) => l.id === 80)).toMatchObject({ error: { code: "protocol" } });
    agent.sendRaw('{"id":81,"op":"lock","mailbox":{"name":"user.alice"}}');
    expect(await agent.waitFor((l) => l.id === 81)).toMatchObject({ error: { code: "usage" } });
    // Still serving, nothing left over.
    expect(await agent.call("status", {})).toEqual({ session: "idle" });
    expect((await agent.call("scan", { mailboxes: [ALICE] })).mailboxes[0]?.status).toBe("ok");
    expect(agent.lines).toEqual([]);
  });

  it("prepare converts outside the locks; lock(stage) finds the same bytes and only the swap is left", async () => {
    const { spool, agent } = await setup();
    const dir = spool.dir("user.alice");
    const index = path.join(dir, "cyrus.index");
    const tmp = `${index}.guidup-${agent.hello.pid}`;
    const stage = { target: 10, guids: true };
    const prep = await agent.call("prepare", { mailbox: ALICE, stage });
    expect(prep.staged).toMatchObject({
      path: "prepared",
      changed: true,
      files: { index: "prepared" },
    });
    expect(prep.check).toMatchObject({ records: 8, appended: 0 });
    expect(await exists(tmp)).toBe(true);
    expect(await minorOf(index)).toBe(9); // nothing renamed without the locks
    const lock = await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000, stage });
    expect(lock.staged).toMatchObject({ path: "prepared", guidDigest: prep.staged?.guidDigest });
    expect(lock.check).toEqual(prep.check);
    expect((await agent.call("commit", {})).renamed).toEqual([index]);
    await expectSha1Guids(dir, index, "index");
  });

  it("when the connection drops with a staged mailbox (stdin ends, stdout and stderr unread), it still rolls back and removes its files", async () => {
    const { spool, agent } = await setup();
    const dir = spool.dir("user.alice");
    const index = path.join(dir, "cyrus.index");
    const tmp = `${index}.guidup-${agent.hello.pid}`;
    await agent.call("lock", {
      mailbox: ALICE,
      timeoutMs: 2000,
      stage: { target: 10, guids: true },
    });
    expect(await exists(tmp)).toBe(true);
    // What sshd does when the connection goes: nobody reads the agent's
    // output any more (its writes fail with EPIPE) and its input ends.
    agent.child.stdout.destroy();
    agent.child.stderr.destroy();
    agent.child.stdin.end();
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    expect(await exists(tmp)).toBe(false);
    expect(await minorOf(index)).toBe(9);
    expect(await ForeignLocker.try(index)).toBe("acquired");
  });

  it("rollback with pairs answers cyrus.index's (uid, GUID) list as staged", async () => {
    const { agent } = await setup();
    const stage = { target: 10, guids: true };
    const lock = await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000, stage });
    const rb = await agent.call("rollback", { pairs: true });
    const pairs = Buffer.from(rb.pairs ?? "", "base64");
    expect(pairs.length).toBe(8 * 24);
    expect(createHash("sha1").update(pairs).digest("hex")).toBe(lock.staged?.guidDigest);
  });

  it("a missing message file fails the upgrade with code message-file naming mailbox and uid; locked until rollback", async () => {
    const { spool, agent } = await setup();
    const dir = spool.dir("user.alice");
    const index = path.join(dir, "cyrus.index");
    await unlink(path.join(dir, "3."));
    await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    const err = await agent.fail("upgrade", { target: 10 });
    expect(err.code).toBe("message-file");
    expect(err.message).toContain("user.alice");
    expect(err.message).toContain("uid 3");
    expect(err.detail).toMatchObject({ mailbox: "user.alice", uid: 3 });
    expect(await exists(`${index}.NEW`)).toBe(false);
    expect(await minorOf(index)).toBe(9);
    expect(await agent.call("status", { mailbox: ALICE })).toMatchObject({
      session: "locked",
      mailbox: "user.alice",
      newFiles: [],
    });
    expect(await ForeignLocker.try(index)).toBe("busy");
    expect(await agent.call("rollback", {})).toMatchObject({ removed: [] });
    expect(await ForeignLocker.try(index)).toBe("acquired");
  });

  it("target 9 downgrades a v10 mailbox", async () => {
    const { spool, agent } = await setup("10");
    const index = path.join(spool.dir("user.alice"), "cyrus.index");
    await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    const up = await agent.call("upgrade", { target: 9 });
    expect(up.changed).toBe(true);
    expect(up.counts).toMatchObject({ records: 8, computed: 0, fromCache: 0 });
    expect((await agent.call("commit", {})).renamed).toEqual([index]);
    expect(await minorOf(index)).toBe(9);
    const scan = (await agent.call("scan", { mailboxes: [ALICE] })).mailboxes[0];
    expect(scan).toMatchObject({ status: "ok", index: { minor: 9, records: 8 } });
  });

  it("a v10 mailbox whose GUIDs are all SHA1: upgrade changed:false, commit renames nothing", async () => {
    const { spool, agent } = await setup("10");
    const dir = spool.dir("user.alice");
    const before = await snapshot(dir);
    const lock = await agent.call("lock", { mailbox: ALICE, timeoutMs: 2000 });
    expect(lock.scan.index).toMatchObject({ minor: 10, oldStyle: 0 });
    const up = await agent.call("upgrade", { target: 10 });
    expect(up).toMatchObject({
      changed: false,
      counts: { records: 8, computed: 0, fromCache: 0, kept: 8 },
      guidDigest: lock.scan.guidDigest,
    });
    expect(await agent.call("status", {})).toMatchObject({ session: "upgraded", newFiles: [] });
    expect((await agent.call("commit", {})).renamed).toEqual([]);
    expect(await snapshot(dir)).toEqual(before);
    expect((await guidsOf(path.join(dir, "cyrus.index"))).length).toBe(8);
  });
});
