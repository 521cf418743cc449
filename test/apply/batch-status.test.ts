// --batch N: a 25-mailbox plan finished by three `apply --batch 10` runs,
// with `guidup status` counting 10, 20, 25 done, the plan's order kept, exit
// 1 (work left) until the last run, and a dry run in between that locks
// nothing and lists exactly what is left.

import { spawn } from "node:child_process";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { FOREIGN_LOCKER } from "../helpers/agent-process.js";
import {
  cli,
  expectAllNew,
  plannedLocalPair,
  snapshotPair,
  stateOf,
  statusOf,
  type TestPair,
  treeFacts,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

describe("apply --batch", () => {
  it("three --batch 10 runs finish a 25-mailbox plan; status shows 10, 20, 25 done", async () => {
    const { pair, inventory, plan, planned } = await plannedLocalPair(
      {
        seed: 31,
        mailboxes: 25,
        versions: [8, 9],
        expungeFraction: 0.3,
        messagesPerMailbox: [0, 3],
        messageBytes: [300, 1200],
      },
      { keep: pairs },
    );
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

  it("a lock timeout in a --batch run is retried in that run, and the report, progress and status agree (#10.8)", async ({
    onTestFinished,
  }) => {
    const { pair, plan, planned } = await plannedLocalPair(
      { seed: 32, versions: [8, 9], expungeFraction: 0.3, messageBytes: [300, 1200] },
      { keep: pairs },
    );
    const held = planned[0]!;
    const locker = spawn(
      "python3",
      [FOREIGN_LOCKER, "hold", path.join(pair.mailboxDir("master", held), "cyrus.index"), "120"],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    onTestFinished(() => {
      locker.kill("SIGKILL");
    });
    await new Promise<void>((resolve, reject) => {
      locker.stdout.on("data", (d: Buffer) => {
        if (d.toString().includes("locked")) resolve();
      });
      locker.once("exit", (code) => reject(new Error(`foreign-locker exited ${code}`)));
    });

    const args = [
      "--batch",
      "3",
      "--master-lock-wait",
      "100ms",
      "--retries",
      "2",
      "--retry-backoff",
      "50ms",
    ];
    const run = await cli(["apply", plan, ...args, "--json"], 4);
    const report = JSON.parse(run.out) as {
      outcomes: Record<string, number>;
      processed: number;
      retries: number;
      remaining: number;
      stoppedBy?: string;
      lockHold: Record<"master" | "replica", { count: number; max: number }>;
    };
    // The held mailbox was tried 1 + 2 times in this batch run, then counted once, as failed.
    expect(report).toMatchObject({
      outcomes: { done: 2, failed: 1 },
      processed: 3,
      retries: 2,
      remaining: 3,
      stoppedBy: "batch",
    });
    // The lone report's one lock-hold summary (the engine's): at least the 2 done locked the master.
    expect(report.lockHold.master.count).toBeGreaterThanOrEqual(2);
    expect(report).not.toHaveProperty("lockHoldMs");
    expect((await stateOf(plan, held)) as unknown).toMatchObject({
      phase: "failed",
      attempts: 3,
      lastError: { code: "lock-timeout", step: "lock-master" },
    });
    const st = await statusOf(plan);
    expect(st.counts).toMatchObject({ done: 2, failed: 1, pending: 3 });

    // Plain (progress) output of the same kind of run counts it the same way.
    locker.kill("SIGTERM");
    await new Promise((r) => locker.once("exit", r));
    const next = await cli(["apply", plan, "--batch", "3"], 1);
    expect(next.out).toContain("done 3; 2 were already done; 1 left (stopped: batch)");
    expect((await stateOf(plan, held))?.phase).toBe("done");
  });
});
