// What apply does with mailboxes it cannot or should not touch right now:
//   - a mailbox changed between plan and apply (a message appended by
//     rewriting cyrus.index, as Cyrus 2.3 does): `stale` by default, its files
//     untouched, the others done; upgraded with --allow-drift when master and
//     replica changed alike; `diverged` (both rolled back) when only the
//     master has the new message;
//   - a foreign fcntl locker (test/helpers/foreign-locker.py, classic POSIX
//     locks like Cyrus 2.3) holding one mailbox: that mailbox times out, is
//     retried once at the end of the run, and either fails cleanly
//     (lock-timeout, files untouched) or, once the locker lets go, is done;
//     the other mailboxes proceed meanwhile.

import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { appendMessage } from "../../src/spoolgen/spool-generator.js";
import { FOREIGN_LOCKER } from "../helpers/agent-process.js";
import {
  classifyPair,
  cli,
  expectAllNew,
  generatedPair,
  localHost,
  planMailboxes,
  sleep,
  snapshotPair,
  stateOf,
  type TestPair,
  writeInventory,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
const lockers: ChildProcess[] = [];
afterEach(() => {
  for (const l of lockers.splice(0)) l.kill("SIGKILL");
});
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

async function setup(seed: number) {
  const pair = await generatedPair({
    seed,
    mailboxes: 6,
    versions: [7, 8, 9],
    expungeFraction: 0.4,
    largeMailboxes: 0,
    messagesPerMailbox: [1, 5],
    messageBytes: [300, 1500],
  });
  pairs.push(pair);
  const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
    master: localHost(pair, "master"),
    replica: localHost(pair, "replica"),
  });
  const plan = path.join(pair.dir, "plan.yaml");
  await cli(["plan", "--inventory", inventory, "--out", plan], 0);
  const planned = await planMailboxes(plan);
  expect(planned.length).toBe(6);
  return { pair, inventory, plan, planned };
}

function holdLock(file: string): Promise<ChildProcess> {
  const child = spawn("python3", [FOREIGN_LOCKER, "hold", file, "120"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  lockers.push(child);
  return new Promise((resolve, reject) => {
    child.stdout?.on("data", (d: Buffer) => {
      if (d.toString().includes("locked")) resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`foreign-locker exited ${code}`)));
  });
}

describe("drift between plan and apply", () => {
  it("stale by default; --allow-drift upgrades a mailbox changed alike on both sides, and refuses (diverged) one changed on the master only", async () => {
    const { pair, inventory, plan, planned } = await setup(41);
    const both = planned[1]!;
    const masterOnly = planned[3]!;
    // New mail after the plan: Cyrus appends `<uid>.` and rewrites cyrus.index.
    const uidM = await appendMessage(pair.master, both);
    const uidR = await appendMessage(pair.replica, both);
    expect(uidR).toBe(uidM);
    await appendMessage(pair.master, masterOnly);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));

    const first = await cli(["apply", plan], 4);
    expect(first.out).toMatch(
      new RegExp(
        `stale\\s+${both.replaceAll(".", "\\.")}: .*changed on master and replica since the plan`,
      ),
    );
    expect(first.out).toMatch(
      new RegExp(
        `stale\\s+${masterOnly.replaceAll(".", "\\.")}: .*changed on master since the plan`,
      ),
    );
    const states = await classifyPair(snap, planned);
    for (const s of states)
      expect(s.state, `${s.side} ${s.name}`).toBe(
        [both, masterOnly].includes(s.name) ? "old" : "new",
      );
    expect((await stateOf(plan, both))?.phase).toBe("stale");

    const drift = await cli(["apply", plan, "--allow-drift"], 4);
    expect((await stateOf(plan, both))?.phase).toBe("done");
    const div = (await stateOf(plan, masterOnly)) as {
      phase: string;
      lastError: { code: string; step: string };
    };
    expect(div.phase).toBe("diverged");
    expect(div.lastError).toMatchObject({ code: "diverged", step: "compare" });
    expect(drift.out).toContain(`diverged      ${masterOnly}`);
    const after = await classifyPair(snap, planned);
    for (const s of after)
      expect(s.state, `${s.side} ${s.name}`).toBe(s.name === masterOnly ? "old" : "new");
    await cli(["verify", "--inventory", inventory], 1);

    // Replication catches up: the replica gets the same message; now it converges.
    await appendMessage(pair.replica, masterOnly);
    const snap2 = await snapshotPair(pair, path.join(pair.dir, "before2"));
    await cli(["apply", plan, "--allow-drift"], 0);
    await expectAllNew(snap2, pair.names);
    await cli(["verify", "--inventory", inventory], 0);
  });
});

describe("a foreign fcntl locker holding one mailbox", () => {
  it("times out, is retried once at the end, and fails cleanly; the others are done", async () => {
    const { pair, inventory, plan, planned } = await setup(42);
    const held = planned[0]!;
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const locker = await holdLock(path.join(pair.mailboxDir("master", held), "cyrus.index"));
    const r = await cli(["apply", plan, "--lock-timeout", "500ms", "--concurrency", "2"], 4);
    expect(r.out).toMatch(/done 5/);
    const st = (await stateOf(plan, held)) as {
      phase: string;
      attempts: number;
      lastError: Record<string, string>;
    };
    expect(st.phase).toBe("failed");
    expect(st.attempts).toBe(2); // the first try, and the retry at the end of the run
    expect(st.lastError).toMatchObject({
      code: "lock-timeout",
      step: "lock-master",
      host: "master",
    });
    for (const s of await classifyPair(snap, planned))
      expect(s.state, `${s.side} ${s.name}`).toBe(s.name === held ? "old" : "new");
    locker.kill("SIGTERM");
    await cli(["apply", plan], 0);
    await expectAllNew(snap, pair.names);
    await cli(["verify", "--inventory", inventory], 0);
  });

  it("times out, and the retry at the end of the run succeeds once the locker lets go", async () => {
    const { pair, inventory, plan, planned } = await setup(43);
    const held = planned[0]!;
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const locker = await holdLock(path.join(pair.mailboxDir("replica", held), "cyrus.index"));
    const run = cli(["apply", plan, "--lock-timeout", "2s", "--concurrency", "2"], 0);
    // Let go once the first attempt has timed out: its state says so, or the
    // retry (attempt 2, waiting up to 2 s for the lock) has already begun.
    for (;;) {
      const st = (await stateOf(plan, held)) as
        | { attempts: number; lastError?: { code: string } }
        | undefined;
      if (st?.lastError?.code === "lock-timeout" || (st?.attempts ?? 0) >= 2) break;
      await sleep(20);
    }
    locker.kill("SIGTERM");
    const r = await run;
    expect(r.out).toMatch(/done 6/);
    const st = (await stateOf(plan, held)) as { phase: string; attempts: number };
    expect(st).toMatchObject({ phase: "done", attempts: 2 });
    await expectAllNew(snap, pair.names);
    await cli(["verify", "--inventory", inventory], 0);
  });
});
