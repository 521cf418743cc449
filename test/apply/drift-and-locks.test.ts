// What apply does with mailboxes it cannot or should not touch right now:
//   - a mailbox changed between plan and apply (a message appended by
//     rewriting cyrus.index, as Cyrus 2.3 does): upgraded as planned by
//     default when master and replica changed alike, `stale` with
//     --exact-plan; `lagging` (both rolled back, retried in the run, exit 1)
//     when only the master has the new message, done by a plain rerun once
//     the replica has it;
//   - an entry whose actions were edited is done exactly as written, or
//     refused; an edited fact makes it stale naming the field (#10.4);
//   - a foreign fcntl locker (test/helpers/foreign-locker.py, classic POSIX
//     locks like Cyrus 2.3) holding one mailbox: that mailbox times out, is
//     retried once at the end of the run, and either fails cleanly
//     (lock-timeout, files untouched) or, once the locker lets go, is done;
//     the other mailboxes proceed meanwhile.

import { type ChildProcess, spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { isOldStyleGuid } from "../../src/cyrus/guid.js";
import { IndexReader } from "../../src/cyrus/index-file.js";
import { appendMessage } from "../../src/spoolgen/spool-generator.js";
import { FOREIGN_LOCKER, ForeignLocker } from "../helpers/agent-process.js";
import {
  classifyPair,
  cli,
  expectAllNew,
  plannedLocalPair,
  sleep,
  snapshotPair,
  stateOf,
  type TestPair,
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
  const planned = await plannedLocalPair(
    {
      seed,
      versions: [7, 8, 9],
      expungeFraction: 0.4,
      messagesPerMailbox: [1, 5],
      messageBytes: [300, 1500],
    },
    { keep: pairs },
  );
  expect(planned.planned.length).toBe(6);
  return planned;
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
  it("appends are applied as planned; --exact-plan makes them stale; a master-only append is lagging until replication catches up, then a plain rerun finishes", async () => {
    const { pair, inventory, plan, planned } = await setup(41);
    const both = planned[1]!;
    const masterOnly = planned[3]!;
    // New mail after the plan: Cyrus appends `<uid>.` and rewrites cyrus.index.
    const uidM = await appendMessage(pair.master, both);
    const uidR = await appendMessage(pair.replica, both);
    expect(uidR).toBe(uidM);
    const lagUid = await appendMessage(pair.master, masterOnly);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));

    // The exact check of 0.1: any change is stale.
    const exact = await cli(["apply", plan, "--exact-plan"], 4);
    for (const name of [both, masterOnly])
      expect(exact.out).toMatch(
        new RegExp(
          `stale\\s+${name.replaceAll(".", "\\.")}: .*fingerprint: changed since the plan`,
        ),
      );
    for (const s of await classifyPair(snap, planned))
      expect(s.state, `${s.side} ${s.name}`).toBe(
        [both, masterOnly].includes(s.name) ? "old" : "new",
      );
    expect((await stateOf(plan, both))?.phase).toBe("stale");

    // By default an append is drift that does not matter; a replica that has
    // not got the master's new message yet is lagging, retried, and left
    // lagging (exit 1, not a failure) when it never catches up.
    const plain = await cli(["apply", plan, "--retries", "1", "--retry-backoff", "100ms"], 1);
    expect(plain.out).toContain("since the plan: 2 appended");
    expect(plain.out).toContain("1 retries");
    expect((await stateOf(plan, both))?.phase).toBe("done");
    const lag = (await stateOf(plan, masterOnly)) as {
      phase: string;
      lastError: { code: string; step: string; message: string };
    };
    expect(lag.phase).toBe("lagging");
    expect(lag.lastError).toMatchObject({ code: "lagging", step: "compare" });
    expect(lag.lastError.message).toBe(
      `replica behind by 1 UIDs (uid ${lagUid}); waiting for replication`,
    );
    expect(plain.out).toContain(`lagging       ${masterOnly}: replica behind by 1 UIDs`);
    for (const s of await classifyPair(snap, planned))
      expect(s.state, `${s.side} ${s.name}`).toBe(s.name === masterOnly ? "old" : "new");

    // Replication catches up: a plain rerun of the same plan finishes it.
    await appendMessage(pair.replica, masterOnly);
    const snap2 = await snapshotPair(pair, path.join(pair.dir, "before2"));
    await cli(["apply", plan], 0);
    await expectAllNew(snap2, pair.names);
    await cli(["verify", "--inventory", inventory], 0);
  });

  it("honours an entry's actions and makes an edited fact stale, naming the field (#10.4)", async () => {
    const { pair, plan, planned } = await setup(44);
    const [versionOnly, editedUidValidity, guidOnly] = planned as [string, string, string];
    let text = await readFile(plan, "utf8");
    text = editEntry(text, versionOnly, (b) =>
      b.replace('"actions": ["version", "guid"]', '"actions": ["version"]'),
    );
    text = editEntry(text, editedUidValidity, (b) =>
      b.replace(
        /("master": \{ "index": \{[^}]*"uidValidity": )(\d+)/,
        (_m, pre: string, v: string) => `${pre}${Number(v) + 1}`,
      ),
    );
    text = editEntry(text, guidOnly, (b) =>
      b.replace('"actions": ["version", "guid"]', '"actions": ["guid"]'),
    );
    await writeFile(plan, text);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const r = await cli(["apply", plan], 4);

    // [version] only: the index is rewritten at v10, old-style GUIDs stay.
    expect((await stateOf(plan, versionOnly))?.phase).toBe("done");
    for (const side of ["master", "replica"] as const) {
      const facts = await scanFacts(pair, side, versionOnly);
      expect(facts.minor, `${side} ${versionOnly}`).toBe(10);
      expect(facts.oldStyle, `${side} ${versionOnly}`).toBeGreaterThan(0);
    }
    const edited = (await stateOf(plan, editedUidValidity)) as {
      phase: string;
      lastError: { message: string };
    };
    expect(edited.phase).toBe("stale");
    expect(edited.lastError.message).toMatch(
      /master uidValidity: plan says \d+, the mailbox has \d+/,
    );
    const refused = (await stateOf(plan, guidOnly)) as {
      phase: string;
      lastError: { code: string; message: string };
    };
    expect(refused).toMatchObject({ phase: "stale", lastError: { code: "refused" } });
    expect(refused.lastError.message).toMatch(/actions lack "version"/);
    expect(r.out).toContain(`stale         ${guidOnly}`);
    for (const s of await classifyPair(
      snap,
      planned.filter((n) => n !== versionOnly),
    ))
      expect(s.state, `${s.side} ${s.name}`).toBe(
        [editedUidValidity, guidOnly].includes(s.name) ? "old" : "new",
      );
  });
});

/** Applies `edit` to one mailbox entry's block of a plan file's text. */
function editEntry(text: string, name: string, edit: (block: string) => string): string {
  // A guidup-plan/3 entry is one line.
  const start = text.indexOf(`  - { "name": ${JSON.stringify(name)}, `);
  if (start < 0) throw new Error(`no entry ${name}`);
  const end = text.indexOf("\n", start);
  const block = text.slice(start, end);
  const edited = edit(block);
  if (edited === block) throw new Error(`edit of ${name} changed nothing`);
  return text.slice(0, start) + edited + text.slice(end);
}

/** One side's cyrus.index facts, read directly. */
async function scanFacts(pair: TestPair, side: "master" | "replica", name: string) {
  const reader = await IndexReader.open(path.join(pair.mailboxDir(side, name), "cyrus.index"));
  try {
    let oldStyle = 0;
    const slot = reader.format.recordField("guid");
    for await (const chunk of reader.chunks())
      for (let i = 0; i < chunk.count; i++) {
        const at = i * chunk.recordSize + (slot?.offset ?? 0);
        if (slot && isOldStyleGuid(chunk.buf, at)) oldStyle++;
      }
    return { minor: reader.format.minor, oldStyle };
  } finally {
    await reader.close();
  }
}

describe("a foreign fcntl locker holding one mailbox", () => {
  it("on the master: a short wait, retried with back-off, fails cleanly; the others are done", async () => {
    const { pair, inventory, plan, planned } = await setup(42);
    const held = planned[0]!;
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const locker = await holdLock(path.join(pair.mailboxDir("master", held), "cyrus.index"));
    // The master waits a short while whatever --lock-timeout says, releases
    // the replica, backs off and retries.
    const r = await cli(
      [
        "apply",
        plan,
        "--lock-timeout",
        "30s",
        "--master-lock-wait",
        "300ms",
        "--retries",
        "2",
        "--retry-backoff",
        "100ms",
        "--concurrency",
        "2",
      ],
      4,
    );
    expect(r.out).toMatch(/done 5/);
    const st = (await stateOf(plan, held)) as {
      phase: string;
      attempts: number;
      lastError: Record<string, string>;
    };
    expect(st.phase).toBe("failed");
    expect(st.attempts).toBe(3); // the first try and two retries
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

  it("on the replica: while guidup waits for the replica's lock, the master's copy stays free (issue #9: never hold the master hostage)", async () => {
    const { pair, plan, planned } = await setup(45);
    const held = planned[2]!;
    const locker = await holdLock(path.join(pair.mailboxDir("replica", held), "cyrus.index"));
    const masterIndex = path.join(pair.mailboxDir("master", held), "cyrus.index");
    let finished = false;
    const run = cli(["apply", plan, "--only", held, "--lock-timeout", "3s"], 4).finally(() => {
      finished = true;
    });
    // Once apply has started this mailbox (its state says in-progress, written
    // before prepare and the locks), try the master's lock as a Cyrus process
    // would, again and again, until apply gives up on the replica (twice 3 s).
    let started = false;
    let tries = 0;
    let busy = 0;
    while (!finished) {
      // Let the event loop deliver the apply's exit (stateOf may not wait on I/O).
      await new Promise((r) => setImmediate(r));
      if (!started) started = (await stateOf(plan, held))?.phase === "in-progress";
      if (!started) continue;
      if ((await ForeignLocker.try(masterIndex)) === "busy") busy++;
      tries++;
    }
    await run;
    locker.kill("SIGTERM");
    expect(tries).toBeGreaterThan(5);
    expect(busy).toBe(0);
    expect((await stateOf(plan, held)) as unknown).toMatchObject({
      phase: "failed",
      lastError: { code: "lock-timeout", step: "lock-replica", host: "replica" },
    });
  });

  it("on the replica: times out, and the retry at the end of the run succeeds once the locker lets go", async () => {
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
