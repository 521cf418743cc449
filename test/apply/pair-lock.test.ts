// Issue #10 item 3: one apply per pair at a time, whichever plan. Each host
// keeps the pair lock itself (guidup.lock in its configdirectory, an OFD
// lock held by an agent of the running apply): a second apply of another
// plan of the same pair is refused naming the first, and a holder killed
// with SIGKILL leaves nothing that blocks the next apply.

import { existsSync } from "node:fs";
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readPlan } from "../../src/plan/plan-file.js";
import type { PairLockRecord } from "../../src/protocol/messages.js";
import {
  cli,
  planMailboxes,
  plannedLocalPair,
  SIDES,
  type Side,
  sleep,
  spawnCli,
  statusOf,
  type TestPair,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

/** A pair and two plans of it (the same mailboxes, two ids). */
async function pairWithTwoPlans(seed: number) {
  const { pair, inventory } = await plannedLocalPair(
    { seed, mailboxes: 5 },
    { keep: pairs, plan: false },
  );
  const first = path.join(pair.dir, "first.yaml");
  const second = path.join(pair.dir, "second.yaml");
  await cli(["plan", "--inventory", inventory, "--out", first], 0);
  await cli(["plan", "--inventory", inventory, "--out", second], 0);
  return { pair, first, second };
}

function lockFileOf(pair: TestPair, side: Side): string {
  return path.join(pair[side].root, "config", "guidup.lock");
}

async function recordOf(pair: TestPair, side: Side): Promise<PairLockRecord | undefined> {
  const file = lockFileOf(pair, side);
  if (!existsSync(file)) return undefined;
  const text = (await readFile(file, "utf8")).trim();
  return text === "" ? undefined : (JSON.parse(text) as PairLockRecord);
}

/** Waits until both hosts' lock files name `planId` as holder: the lock is taken then. */
async function waitForHolder(pair: TestPair, planId: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = await Promise.all(SIDES.map((s) => recordOf(pair, s)));
    if (records.every((r) => r?.plan === planId)) return;
    if (Date.now() > deadline) throw new Error(`the pair lock was not taken by ${planId}`);
    await sleep(20);
  }
}

/** Waits until the kernel lists no lock on `file` in /proc/locks. */
async function waitUnlocked(file: string, timeoutMs = 20_000): Promise<void> {
  const ino = (await stat(file)).ino;
  const deadline = Date.now() + timeoutMs;
  while ((await readFile("/proc/locks", "utf8")).split("\n").some((l) => l.includes(`:${ino} `))) {
    if (Date.now() > deadline) throw new Error(`${file} is still locked`);
    await sleep(20);
  }
}

describe("the pair lock", () => {
  it("refuses a second apply of the same pair (another plan), naming the first; free again afterwards", async () => {
    const { pair, first, second } = await pairWithTwoPlans(81);
    const firstId = (await readPlan(first)).id;
    const pause = path.join(pair.dir, "pause");
    await writeFile(pause, "");
    const running = spawnCli(["apply", first, "--pause-file", pause]);
    await waitForHolder(pair, firstId);

    const refused = await cli(["apply", second], 2);
    const lines = refused.err.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("pair t is being applied by someone else");
    expect(lines[0]).toContain(`another apply holds the pair lock ${lockFileOf(pair, "master")}`);
    expect(lines[0]).toContain(`plan ${firstId} (pair t) run by`);
    expect((await statusOf(second)).counts.pending).toBe(5);

    await rm(pause);
    const r = await running.done;
    expect(r.code, r.err).toBe(0);
    expect((await statusOf(first)).counts.done).toBe(5);
    // The lock went with the first apply's agents: the second plan runs now
    // (its mailboxes are found done under the locks).
    await cli(["apply", second], 0);
    expect((await statusOf(second)).counts.done).toBe(5);
    expect((await recordOf(pair, "replica"))?.plan).toBe((await readPlan(second)).id);
  });

  it("a holder killed with SIGKILL leaves only history: the next apply runs", async () => {
    const { pair, first, second } = await pairWithTwoPlans(82);
    const firstId = (await readPlan(first)).id;
    const pause = path.join(pair.dir, "pause");
    await writeFile(pause, "");
    const running = spawnCli(["apply", first, "--pause-file", pause]);
    await waitForHolder(pair, firstId);
    const holders = await Promise.all(SIDES.map((s) => recordOf(pair, s)));
    // The controller and the agents holding the locks, all at once, as a
    // crash or an OOM kill would.
    running.child.kill("SIGKILL");
    for (const h of holders) process.kill(h!.agentPid, "SIGKILL");
    expect((await running.done).signal).toBe("SIGKILL");
    for (const side of SIDES) await waitUnlocked(lockFileOf(pair, side));
    // The stale record still names the dead holder; it blocks nothing.
    expect((await recordOf(pair, "master"))?.plan).toBe(firstId);

    const r = await cli(["apply", second], 0);
    expect(r.out).toContain("done 5");
    expect((await recordOf(pair, "master"))?.plan).toBe((await readPlan(second)).id);
    expect(await planMailboxes(second)).toHaveLength(5);
    await rm(pause);
  });
});
