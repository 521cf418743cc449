// apply --max-lock-hold: when the master's lock hold p99 over the recent
// mailboxes exceeds the limit, apply runs one mailbox fewer in flight and
// says so; the run still finishes every mailbox. (A limit of 0 ms is always
// exceeded: every hold spans at least the commit round trips.)

import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  cli,
  expectAllNew,
  generatedPair,
  localHost,
  planMailboxes,
  snapshotPair,
  type TestPair,
  writeInventory,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

describe("apply --max-lock-hold", () => {
  it("lowers the concurrency step by step and says so; every mailbox is done", async () => {
    const pair = await generatedPair({
      seed: 51,
      mailboxes: 14,
      versions: [8, 9],
      expungeFraction: 0.2,
      largeMailboxes: 0,
      messagesPerMailbox: [1, 3],
      messageBytes: [300, 900],
    });
    pairs.push(pair);
    const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
      master: localHost(pair, "master"),
      replica: localHost(pair, "replica"),
    });
    const plan = path.join(pair.dir, "plan.yaml");
    await cli(["plan", "--inventory", inventory, "--out", plan], 0);
    const planned = await planMailboxes(plan);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const r = await cli(["apply", plan, "--concurrency", "3", "--max-lock-hold", "0ms"], 0);
    expect(r.err).toMatch(/throttle: master lock hold p99 \d+ ms > 0 ms: concurrency 3 → 2/);
    expect(r.err).toMatch(/concurrency 2 → 1/);
    expect(r.out).toContain(`done ${planned.length}`);
    await expectAllNew(snap, pair.names);
  });

  it("--max-rate limits prepare's hashing (a cold cache: every GUID hashed in prepare); a bad rate is refused", async () => {
    const pair = await generatedPair({
      seed: 52,
      mailboxes: 4,
      versions: [9],
      expungeFraction: 0,
      largeMailboxes: 0,
      messagesPerMailbox: [2, 3],
      messageBytes: [300, 900],
    });
    pairs.push(pair);
    const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
      master: localHost(pair, "master"),
      replica: localHost(pair, "replica"),
    });
    const plan = path.join(pair.dir, "plan.yaml");
    await cli(["plan", "--inventory", inventory, "--out", plan], 0);
    const bad = await cli(["apply", plan, "--max-rate", "0"], 2);
    expect(bad.err).toContain('--max-rate: "0" is not a positive number of MB/s');
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const r = await cli(["apply", plan, "--max-rate", "1", "--json"], 0);
    const report = JSON.parse(r.out) as { outcomes: Record<string, number> };
    expect(report.outcomes).toEqual({ done: 4 });
    await expectAllNew(snap, pair.names);
  });
});
