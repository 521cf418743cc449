// Ctrl-C at a terminal (issue #10, item 1): the real guidup bin in a real
// pseudo-terminal, ^C typed as a byte on the pty so the line discipline
// signals the whole foreground process group. The first Ctrl-C drains (no new
// mailbox, the ones in flight finish) and says so; a second one aborts the
// mailboxes in flight, which roll back, and the report says what was left.
// Exit 130 either way, no state left in-progress, the terminal as it was, and
// a rerun converges.
//
// A fault-proxy hook holds one request until the test creates a file, so the
// ^C lands while a mailbox is at a known step. The proxy runs under setsid:
// it stands in for the agent, which the terminal's SIGINT does not stop
// either (guidup serve ignores it; agents over SSH are not in the group).

import { readdir } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  classifyPair,
  cli,
  expectAllNew,
  heldAgent,
  localHost,
  planMailboxes,
  smallPair,
  snapshotPair,
  stateOf,
  statusOf,
  type TestPair,
  writeInventory,
} from "../helpers/apply-harness.js";
import { DIST_MAIN } from "../helpers/pair-fixtures.js";
import { CTRL_C, plainText, runInPty } from "../helpers/pty.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

async function leftovers(pair: TestPair, names: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const side of ["master", "replica"] as const)
    for (const name of names)
      for (const f of await readdir(pair.mailboxDir(side, name)))
        if (f.endsWith(".NEW")) out.push(`${side} ${name} ${f}`);
  return out;
}

describe("Ctrl-C in a terminal", () => {
  it("apply: the first Ctrl-C drains — the mailbox at commit-master finishes, nothing new starts — exit 130, terminal intact, rerun converges", async () => {
    const pair = await smallPair({ seed: 51 }, pairs);
    // The master's 2nd commit: that mailbox's replica has committed, the
    // master has not (the replica-ahead window).
    const held = await heldAgent(pair, "master", "commit", 2);
    const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
      master: localHost(pair, "master", held.command),
      replica: localHost(pair, "replica"),
    });
    const plan = path.join(pair.dir, "plan.yaml");
    await cli(["plan", "--inventory", inventory, "--out", plan], 0);
    const planned = await planMailboxes(plan);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));

    const r = await runInPty({
      argv: [process.execPath, DIST_MAIN, "apply", plan, "--concurrency", "1"],
      steps: [
        { waitFile: held.marker },
        { send: CTRL_C },
        { waitText: "starting no new mailboxes" },
        { touch: held.release },
      ],
    });
    const text = plainText(r.output);
    if (process.env.SHOW_PTY) console.log(JSON.stringify(r.output));
    expect(r.timedOut, text).toBe(false);
    expect(r.stepsDone, text).toBe(4);
    expect(r.code, text).toBe(130);
    expect(text).toMatch(/Ctrl-C: starting no new mailboxes; finishing the 1 in flight/);
    expect(text).toMatch(/Ctrl-C again to abort/);
    expect(text).toMatch(/interrupted: 4 mailbox\(es\) not started; run guidup apply .* again/);
    // The terminal is as it was: modes restored, cursor visible.
    expect(r.termiosRestored).toBe(true);
    expect(r.lflag).toEqual({ ECHO: true, ICANON: true, ISIG: true });
    expect(r.cursorHidden).toBe(false);

    expect((await stateOf(plan, planned[0]!))?.phase).toBe("done");
    expect((await stateOf(plan, planned[1]!))?.phase).toBe("done");
    for (const name of planned.slice(2)) expect(await stateOf(plan, name), name).toBeUndefined();
    const status = await statusOf(plan);
    expect(status.counts["in-progress"]).toBe(0);
    expect(await leftovers(pair, planned)).toEqual([]);

    await cli(["apply", plan], 0);
    expect((await statusOf(plan)).counts.done).toBe(planned.length);
    await expectAllNew(snap, planned);
  });

  it("apply: a second Ctrl-C aborts the mailbox in flight, which rolls back; the report names it; exit 130; rerun converges", async () => {
    const pair = await smallPair({ seed: 52 }, pairs);
    // The master's 2nd lock request: the replica's copy of that mailbox is
    // locked and staged (the replica is locked first), the master's lock is
    // on its way.
    const held = await heldAgent(pair, "master", "lock", 2);
    const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
      master: localHost(pair, "master", held.command),
      replica: localHost(pair, "replica"),
    });
    const plan = path.join(pair.dir, "plan.yaml");
    await cli(["plan", "--inventory", inventory, "--out", plan], 0);
    const planned = await planMailboxes(plan);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));

    const r = await runInPty({
      argv: [process.execPath, DIST_MAIN, "apply", plan, "--concurrency", "1"],
      steps: [
        { waitFile: held.marker },
        { send: CTRL_C },
        { waitText: "starting no new mailboxes" },
        { send: CTRL_C },
        { waitText: "aborting the 1 mailbox\\(es\\) in flight" },
        { touch: held.release },
      ],
    });
    const text = plainText(r.output);
    if (process.env.SHOW_PTY) console.log(JSON.stringify(r.output));
    expect(r.timedOut, text).toBe(false);
    expect(r.stepsDone, text).toBe(6);
    expect(r.code, text).toBe(130);
    expect(r.termiosRestored).toBe(true);
    expect(r.cursorHidden).toBe(false);
    // What it left: the aborted mailbox by name, and the ones not started.
    const aborted = planned[1]!;
    expect(text).toContain(aborted);
    expect(text).toMatch(/interrupted: 4 mailbox\(es\) not started/);

    const st = await stateOf(plan, aborted);
    expect(st?.phase).toBe("failed");
    expect((await statusOf(plan)).counts["in-progress"]).toBe(0);
    // Rolled back: the aborted mailbox is all old on both sides, no .NEW left.
    const states = await classifyPair(snap, [aborted]);
    expect(states.map((s) => s.state)).toEqual(["old", "old"]);
    expect(await leftovers(pair, planned)).toEqual([]);

    await cli(["apply", plan], 0);
    expect((await statusOf(plan)).counts.done).toBe(planned.length);
    await expectAllNew(snap, planned);
  });

  it("hash: Ctrl-C stops hashing, keeps what was cached, exit 130, terminal intact; a rerun finishes", async () => {
    const pair = await smallPair({ seed: 53 }, pairs);
    const { command, marker, release } = await heldAgent(pair, "replica", "hash", 1);
    const replica = localHost(pair, "replica", command);
    const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
      master: localHost(pair, "master"),
      replica,
    });
    const r = await runInPty({
      argv: [process.execPath, DIST_MAIN, "hash", "--inventory", inventory],
      steps: [
        { waitFile: marker },
        { send: CTRL_C },
        { waitText: "Ctrl-C: stopping" },
        { touch: release },
      ],
    });
    const text = plainText(r.output);
    if (process.env.SHOW_PTY) console.log(JSON.stringify(r.output));
    expect(r.timedOut, text).toBe(false);
    expect(r.code, text).toBe(130);
    expect(text).toMatch(/interrupted/);
    expect(r.termiosRestored).toBe(true);
    expect(r.cursorHidden).toBe(false);

    const again = await cli(["hash", "--inventory", inventory], 0);
    expect(again.out).toMatch(/\(replica\): 6 mailboxes/);
    const third = await cli(["hash", "--inventory", inventory], 0);
    expect(third.out).toMatch(/hashed 0 files/);
    expect(third.out).not.toMatch(/, 0 already cached/);
  });
});
