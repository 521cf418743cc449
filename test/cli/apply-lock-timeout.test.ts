// A lock timeout in a --batch run (issue #10, item 8): the busy mailbox is
// retried within the same run even though the batch is used up (a retry is
// not a new mailbox), and when it is still busy after its retries, apply's
// report, its progress, its state and `status` all count it failed; the next
// apply upgrades it once the lock is free.

import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ForeignLocker } from "../helpers/agent-process.js";
import {
  cli,
  planMailboxes,
  plannedLocalPair,
  runCli,
  statusOf,
  type TestPair,
} from "../helpers/apply-harness.js";

let pair: TestPair;
let plan: string;
beforeAll(async () => {
  ({ pair, plan } = await plannedLocalPair({
    seed: 101,
    mailboxes: 3,
    messagesPerMailbox: [1, 2],
    messageBytes: [200, 400],
  }));
});
afterAll(async () => {
  await pair?.cleanup();
});

describe("a lock timeout in a --batch run", () => {
  it("is retried in the run, then reported failed by apply, its progress, state and status alike; the next apply does it", async () => {
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
        "--master-lock-wait",
        "100ms",
        "--retries",
        "1",
        "--retry-backoff",
        "100ms",
      ]);
      expect(r.code, r.err).toBe(4);
      expect(r.out).toContain("done 1, failed 1; 0 were already done; 1 left (stopped: batch)");
      expect(r.out).toContain(`  failed        ${held}: the master's copy is busy`);
      expect(r.out).toContain("; 1 retries");
      // The last progress line counts the same.
      expect(r.err).toContain("done 1 · failed 1 · remaining 0 of this batch");
      const status = await statusOf(plan);
      expect(status.counts.failed).toBe(1);
      expect(status.counts.done).toBe(1);
      expect(status.mailboxes.map((m) => m.name)).toEqual([held]);
    } finally {
      locker.child.kill();
      await locker.exited;
    }
    await cli(["apply", plan], 0);
    expect((await statusOf(plan)).counts.done).toBe(3);
  });
});
