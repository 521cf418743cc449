// Two things about a running apply that the engine promises: a second apply
// of the same plan is refused while the first runs (a lock on the state
// directory), and SIGINT stops it cleanly — no new mailbox starts, the one in
// flight finishes, state is written, exit 130 — after which a rerun converges.

import { rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  cli,
  expectAllNew,
  faultDirs,
  localHost,
  planMailboxes,
  plannedLocalPair,
  proxyCommand,
  smallPair,
  snapshotPair,
  spawnCli,
  stateOf,
  statusOf,
  type TestPair,
  waitForFile,
  writeInventory,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

describe("a running apply", () => {
  it("refuses a second apply of the same plan while the first holds the state lock", async () => {
    const { pair, plan } = await plannedLocalPair({ seed: 41 }, { keep: pairs });
    // The first apply waits on its pause file, holding the state lock.
    const pause = path.join(pair.dir, "pause");
    await writeFile(pause, "");
    const first = spawnCli(["apply", plan, "--pause-file", pause]);
    await waitForFile(path.join(`${plan}.state`, ".owner"));
    const second = await cli(["apply", plan], 2);
    expect(second.err).toContain("another guidup apply of this plan is running");
    expect(second.err.trim().split("\n")).toHaveLength(1);
    await rm(pause);
    const r = await first.done;
    expect(r.code, r.err).toBe(0);
    expect((await statusOf(plan)).counts.done).toBe((await planMailboxes(plan)).length);
  });

  it("on SIGINT starts nothing new, finishes the mailbox in flight, exits 130; a rerun converges", async () => {
    const pair = await smallPair({ seed: 42 }, pairs);
    const dirs = await faultDirs(pair.dir);
    // The master's 2nd lock is held for 2 s by a hook: SIGINT arrives
    // while that mailbox is in flight.
    const marker = path.join(pair.dir, "in-flight");
    const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
      master: localHost(
        pair,
        "master",
        proxyCommand(dirs.master, "request:lock:2:hook", `touch ${marker}; sleep 2`),
      ),
      replica: localHost(pair, "replica"),
    });
    const plan = path.join(pair.dir, "plan.yaml");
    await cli(["plan", "--inventory", inventory, "--out", plan], 0);
    const planned = await planMailboxes(plan);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const run = spawnCli(["apply", plan, "--concurrency", "1"]);
    await waitForFile(marker);
    run.child.kill("SIGINT");
    const r = await run.done;
    expect(r.code, r.err).toBe(130);
    expect(r.err).toContain("SIGINT: starting no new mailboxes");
    // The first mailbox was done before, the second was in flight and finished.
    expect((await stateOf(plan, planned[0]!))?.phase).toBe("done");
    expect((await stateOf(plan, planned[1]!))?.phase).toBe("done");
    for (const name of planned.slice(2)) expect(await stateOf(plan, name), name).toBeUndefined();
    await cli(["apply", plan], 0);
    expect((await statusOf(plan)).counts.done).toBe(planned.length);
    await expectAllNew(snap, planned);
  });
});
