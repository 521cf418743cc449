// --batch N: a 25-mailbox plan finished by three `apply --batch 10` runs,
// with `guidup status` counting 10, 20, 25 done, the plan's order kept, exit
// 1 (work left) until the last run, and a dry run in between that locks
// nothing and lists exactly what is left.

import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  cli,
  expectAllNew,
  generatedPair,
  localHost,
  planMailboxes,
  snapshotPair,
  stateOf,
  statusOf,
  type TestPair,
  treeFacts,
  writeInventory,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

describe("apply --batch", () => {
  it("three --batch 10 runs finish a 25-mailbox plan; status shows 10, 20, 25 done", async () => {
    const pair = await generatedPair({
      seed: 31,
      mailboxes: 25,
      versions: [8, 9],
      expungeFraction: 0.3,
      largeMailboxes: 0,
      messagesPerMailbox: [0, 3],
      messageBytes: [300, 1200],
    });
    pairs.push(pair);
    const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
      master: localHost(pair, "master"),
      replica: localHost(pair, "replica"),
    });
    const plan = path.join(pair.dir, "plan.yaml");
    await cli(["plan", "--inventory", inventory, "--out", plan], 0);
    const planned = await planMailboxes(plan);
    expect(planned).toHaveLength(25);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));

    const s0 = await statusOf(plan);
    expect(s0.counts.pending).toBe(25);
    expect(s0.counts.done).toBe(0);

    const expectDone = async (n: number) => {
      const st = await statusOf(plan);
      expect(st.counts.done).toBe(n);
      expect(st.counts.pending).toBe(25 - n);
      // In the plan's order: the first n are done, the rest untouched.
      for (const [i, name] of planned.entries())
        expect((await stateOf(plan, name))?.phase, name).toBe(i < n ? "done" : undefined);
    };

    const first = await cli(["apply", plan, "--batch", "10"], 1);
    expect(first.out).toContain("done 10; 0 were already done; 15 left (stopped: batch)");
    await expectDone(10);

    // A dry run locks nothing, writes nothing and names the 15 left.
    const facts = await treeFacts(pair);
    const dry = await cli(["apply", plan, "--dry-run"], 0);
    expect(dry.out).toContain("15 mailbox(es) would run");
    for (const name of planned.slice(10)) expect(dry.out).toContain(`would apply ${name} `);
    expect(await treeFacts(pair)).toEqual(facts);

    const second = await cli(["apply", plan, "--batch", "10"], 1);
    expect(second.out).toContain("done 10; 10 were already done; 5 left (stopped: batch)");
    await expectDone(20);

    const third = await cli(["apply", plan, "--batch", "10"], 0);
    expect(third.out).toContain("done 5; 20 were already done; 0 left");
    await expectDone(25);
    const text = await cli(["status", plan], 0);
    expect(text.out).toMatch(/done\s+25/);

    await expectAllNew(snap, pair.names);
    await cli(["verify", "--inventory", inventory], 0);
  });
});
