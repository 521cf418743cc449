// Issue #9, "How it must be proved": the spool checker
// (test/helpers/spool-checker.ts) against the Cyrus-2.3-like writer
// (examples/cyrus-writer.ts).
//   - A locking writer with a replica replayer and no guidup: the checker
//     passes, over every op kind and every index version the spool holds.
//   - A writer that IGNORES locks, run at the exact moment guidup holds the
//     mailbox's locks (the master's commit request, held by the fault proxy's
//     hook): its append lands in the old cyrus.index that the commit then
//     renames over, and the checker reports that UID missing on the master;
//     its flag change in place is lost the same way; its delayed expunge
//     (cyrus.index.NEW, the very temp name guidup's .NEW file has) loses the
//     record and leaves index and expunge at different versions.
//   - The same moment with a LOCKING writer: it blocks on cyrus.header (seen
//     in /proc/locks), and after the swap re-checks the inode, re-opens the
//     renamed-over cyrus.index and appends to the upgraded file; the checker
//     passes.

import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  cli,
  faultDirs,
  firedFault,
  generatedPair,
  localHost,
  planMailboxes,
  proxyCommand,
  runCli,
  type TestPair,
  writeInventory,
} from "../helpers/apply-harness.js";
import {
  type OpEntry,
  onceArgv,
  opsOf,
  readJournal,
  replayArgv,
  runWriter,
  startTraffic,
} from "../helpers/cyrus-writer.js";
import { checkSpools, describeProblems, takeBaseline } from "../helpers/spool-checker.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

async function pairOf(
  seed: number,
  mailboxes: number,
  versions = [6, 7, 8, 9, 10],
): Promise<TestPair> {
  const pair = await generatedPair({
    seed,
    mailboxes,
    versions,
    expungeFraction: 0.4,
    largeMailboxes: 0,
    messagesPerMailbox: [2, 8],
    messageBytes: [300, 1500],
  });
  pairs.push(pair);
  return pair;
}

/**
 * The master's request during which it holds the mailbox's locks and its
 * upgraded files wait to be renamed in (guidup 0.1.0: `commit`). If the
 * cut-over protocol renames that op, move the hook here.
 */
const SWAP_OP = "commit";

const sh = (argv: string[]) => argv.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");

/**
 * A plan of `pair`, and an inventory whose master runs through the fault
 * proxy with a hook (shell text) on its first `commit` request: the moment
 * the master's locks are held and its upgraded files wait to be renamed in.
 */
async function planWithCommitHook(pair: TestPair, hook: string) {
  const faults = await faultDirs(path.join(pair.dir, "faults"));
  const hookFile = path.join(pair.dir, "hook.sh");
  await writeFile(hookFile, `set -e\n${hook}\n`);
  const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
    master: localHost(
      pair,
      "master",
      proxyCommand(faults.master, `request:${SWAP_OP}:1:hook`, `sh '${hookFile}'`),
    ),
    replica: localHost(pair, "replica"),
  });
  const plan = path.join(pair.dir, "plan.yaml");
  await cli(["plan", "--inventory", inventory, "--out", plan], 0);
  return { plan, faults, planned: await planMailboxes(plan) };
}

describe("the spool checker", () => {
  it("passes a locking writer with its replica replayer (no guidup), over every op and index version", async () => {
    const pair = await pairOf(71, 24);
    const baseline = await takeBaseline(pair);
    const dir = path.join(pair.dir, "traffic");
    await mkdir(dir);
    const traffic = startTraffic({
      masterConf: pair.master.imapdConf,
      replicaConf: pair.replica.imapdConf,
      mailboxesFile: pair.mailboxList,
      dir,
      rate: 100,
      seed: 5,
      delayMs: 300,
    });
    await traffic.waitForOps(200);
    await traffic.stop();
    const ops = opsOf(traffic.masterEntries());
    // The traffic exercised what the checker must judge: every op, every version.
    expect(new Set(ops.map((o) => o.op))).toEqual(new Set(["deliver", "expunge", "flag"]));
    expect(new Set(ops.map((o) => o.minor))).toEqual(new Set([6, 7, 8, 9, 10]));
    expect(opsOf(traffic.replicaEntries()).length).toBe(ops.length);
    const problems = await checkSpools(
      pair,
      baseline,
      traffic.masterEntries(),
      traffic.replicaEntries(),
    );
    expect(describeProblems(problems)).toBe("");
  });

  it("catches a writer that ignores locks: its append while guidup holds the mailbox is lost in the swap", async () => {
    const pair = await pairOf(72, 6);
    const target = pair.names[2] as string;
    const journal = path.join(pair.dir, "ignoring.journal");
    const replicaJournal = path.join(pair.dir, "ignoring.replica.journal");
    const { plan, faults, planned } = await planWithCommitHook(
      pair,
      [
        sh([
          process.execPath,
          ...onceArgv({
            conf: pair.master.imapdConf,
            mailbox: target,
            op: "deliver",
            journal,
            ignoreLocks: true,
          }),
        ]),
        // Replication copies it; the replica already committed its upgrade.
        sh([process.execPath, ...replayArgv(pair.replica.imapdConf, journal, replicaJournal)]),
      ].join("\n"),
    );
    expect(planned).toContain(target);
    const baseline = await takeBaseline(pair);
    await cli(["apply", plan, "--only", target], 0);
    expect(
      firedFault(faults.master),
      `the master's \`${SWAP_OP}\` request never came: move SWAP_OP to the protocol's swap op`,
    ).toMatchObject({ op: SWAP_OP, mailbox: target });
    const [delivered] = opsOf(readJournal(journal));
    expect(delivered).toMatchObject({ op: "deliver", mailbox: target });
    const uid = (delivered as { uid: number }).uid;
    const problems = await checkSpools(
      pair,
      baseline,
      readJournal(journal),
      readJournal(replicaJournal),
      {
        upgraded: [target],
      },
    );
    const text = describeProblems(problems);
    expect(text).toContain(`${target} master uid ${uid}: uid ${uid} missing from cyrus.index`);
    expect(text).toMatch(
      new RegExp(
        `${target.replaceAll(".", "\\.")}( uid ${uid})?: master and replica cyrus.index differ`,
      ),
    );
    // Nothing else is wrong: the lost append is the whole story.
    expect(problems.every((p) => p.mailbox === target)).toBe(true);
  });

  /** A lock-ignoring `op` on the master at the swap, replayed on the replica; the checker's verdict. */
  async function ignoringOpAtSwap(seed: number, op: "flag" | "expunge") {
    // Versions 7..9 only: every mailbox is planned, the target included.
    const pair = await pairOf(seed, 6, [7, 8, 9]);
    const target = pair.names[2] as string;
    const journal = path.join(pair.dir, `ignoring-${op}.journal`);
    const replicaJournal = path.join(pair.dir, `ignoring-${op}.replica.journal`);
    const { plan, faults } = await planWithCommitHook(
      pair,
      [
        sh([
          process.execPath,
          ...onceArgv({
            conf: pair.master.imapdConf,
            mailbox: target,
            op,
            journal,
            ignoreLocks: true,
          }),
        ]),
        sh([process.execPath, ...replayArgv(pair.replica.imapdConf, journal, replicaJournal)]),
      ].join("\n"),
    );
    const baseline = await takeBaseline(pair);
    const applied = await runCli(["apply", plan, "--only", target]);
    expect(firedFault(faults.master)).toMatchObject({ op: SWAP_OP, mailbox: target });
    const [done] = opsOf(readJournal(journal));
    expect(done, `the ${op} did not happen`).toMatchObject({ op, mailbox: target });
    const problems = await checkSpools(
      pair,
      baseline,
      readJournal(journal),
      readJournal(replicaJournal),
    );
    return { target, done: done as OpEntry, problems, applied };
  }

  it("catches a writer that ignores locks: its flag change in place while guidup holds the mailbox is lost in the swap", async () => {
    const { target, done, problems } = await ignoringOpAtSwap(74, "flag");
    const uid = (done as { uid: number }).uid;
    const flags = (done as { flags: number }).flags;
    expect(describeProblems(problems)).toContain(
      `${target} master uid ${uid}: uid ${uid} has SYSTEM_FLAGS ${flags ^ 2}; the journal set ${flags}`,
    );
    expect(problems.every((p) => p.mailbox === target && p.side !== "replica")).toBe(true);
  });

  it("catches a writer that ignores locks: its expunge while guidup holds the mailbox (it rewrites cyrus.index.NEW, guidup's own temp name) loses the record", async () => {
    const { target, done, problems, applied } = await ignoringOpAtSwap(75, "expunge");
    const [uid] = (done as { uids: number[] }).uids;
    const text = describeProblems(problems);
    console.log(`apply exit ${applied.code}; checker:\n${text}`);
    expect(problems.some((p) => p.mailbox === target && p.side === "master" && p.uid === uid)).toBe(
      true,
    );
    expect(problems.every((p) => p.mailbox === target)).toBe(true);
  });

  it("a locking writer at the same moment waits, re-opens the renamed-over index and appends to the upgraded file", async () => {
    const pair = await pairOf(73, 6);
    const target = pair.names[2] as string;
    const journal = path.join(pair.dir, "locking.journal");
    const replicaJournal = path.join(pair.dir, "locking.replica.journal");
    const pidFile = path.join(pair.dir, "writer.pid");
    const writer = sh([
      process.execPath,
      ...onceArgv({ conf: pair.master.imapdConf, mailbox: target, op: "deliver", journal }),
    ]);
    // Start it in the background and return once /proc/locks shows its
    // request blocked behind guidup's lock (a "->" line with its pid).
    const { plan, faults } = await planWithCommitHook(
      pair,
      [
        `${writer} </dev/null >/dev/null 2>&1 &`,
        `echo $! > '${pidFile}'`,
        `until grep -Eq "^[0-9]+: -> POSIX +ADVISORY +WRITE +$! " /proc/locks; do sleep 0.02; done`,
      ].join("\n"),
    );
    const baseline = await takeBaseline(pair);
    await cli(["apply", plan, "--only", target], 0);
    expect(
      firedFault(faults.master),
      `the master's \`${SWAP_OP}\` request never came: move SWAP_OP to the protocol's swap op`,
    ).toMatchObject({ op: SWAP_OP, mailbox: target });
    // The writer finishes on its own once guidup lets go.
    for (let i = 0; !readJournal(journal).some((e) => e.kind === "end"); i++) {
      if (i > 600) throw new Error("the locking writer never finished");
      await new Promise((r) => setTimeout(r, 50));
    }
    await runWriter(replayArgv(pair.replica.imapdConf, journal, replicaJournal));
    const [op] = opsOf(readJournal(journal));
    expect(op).toMatchObject({
      op: "deliver",
      mailbox: target,
      minor: 10,
      reopened: ["cyrus.index"],
    });
    expect(op?.waitMs.header).toBeGreaterThan(0);
    const problems = await checkSpools(
      pair,
      baseline,
      readJournal(journal),
      readJournal(replicaJournal),
      {
        upgraded: [target],
      },
    );
    expect(describeProblems(problems)).toBe("");
  });
});
