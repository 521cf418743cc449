// A lock timeout in a --batch run (issue #10, item 8, the counters): the
// mailbox is queued for a retry the batch then does not reach; apply's report
// names it as failed, as its state and `status` do, and the next apply
// upgrades it once the lock is free.

import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ForeignLocker } from "../helpers/agent-process.js";
import {
  cli,
  generatedPair,
  localHost,
  planMailboxes,
  runCli,
  statusOf,
  type TestPair,
  writeInventory,
} from "../helpers/apply-harness.js";

let pair: TestPair;
let plan: string;
beforeAll(async () => {
  pair = await generatedPair({
    seed: 101,
    mailboxes: 3,
    versions: [9],
    largeMailboxes: 0,
    expungeFraction: 0,
    messagesPerMailbox: [1, 2],
    messageBytes: [200, 400],
  });
  const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
    master: localHost(pair, "master"),
    replica: localHost(pair, "replica"),
  });
  plan = path.join(pair.dir, "plan.yaml");
  await cli(["plan", "--inventory", inventory, "--out", plan], 0);
});
afterAll(async () => {
  await pair?.cleanup();
});

describe("a lock timeout in a --batch run", () => {
  it("is reported failed by apply, its state and status alike; the next apply does it", async () => {
    const [held] = await planMailboxes(plan);
    const locker = await ForeignLocker.hold(
      path.join(pair.mailboxDir("master", held!), "cyrus.header"),
      120,
    );
    try {
      const r = await runCli([
        "apply",
        plan,
        "--batch",
        "2",
        "--concurrency",
        "1",
        "--lock-timeout",
        "200ms",
      ]);
      expect(r.code, r.err).toBe(1);
      expect(r.out).toContain(`  failed        ${held}: lock timeout, not retried in this run\n`);
      const status = await statusOf(plan);
      expect(status.counts.failed).toBe(1);
      expect(status.counts.done).toBe(2);
      expect(status.mailboxes.map((m) => m.name)).toEqual([held]);
    } finally {
      locker.child.kill();
      await locker.exited;
    }
    await cli(["apply", plan], 0);
    expect((await statusOf(plan)).counts.done).toBe(3);
  });
});
