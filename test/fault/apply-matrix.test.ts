// The apply fault matrix: for each step of the cut-over protocol
//   1 master prepare · 2 replica prepare · 3 replica lock (compare + stage) ·
//   4 master lock (compare + stage) · 5 replica commit · 6 master commit
// and each kind of fault
//   (a) the agent is SIGKILLed when the step's request reaches it,
//   (b) the connection drops after the host did the step, before the
//       controller hears of it,
//   (c) the host answers an error (a foreign fcntl lock and a lock timeout, a
//       full tmpfs, a read-only bind mount, an immutable directory),
//   (d) the controller is SIGKILLed while the step's request is in flight,
// one test per cell, with real agents, real pipes, real mounts and locks:
// faults come from test/helpers/fault-proxy.mjs standing in front of the
// real agent, never from mocks.
//
// After each fault: on each host every mailbox's index and expunge files are
// all old (byte-identical to before) or all new (exactly the correct v10
// upgrade), never mixed; the faulted mailbox's state says what happened
// (phase, step, host, error code); in (a)–(c) the other mailboxes went on
// and are done. Then one more apply of the same plan converges (exit 0), no
// .NEW or guidup temporary file is left, and guidup verify passes. Step 6
// leaves the replica ahead (exit 3) and the rerun repairs it.
//
// (d) covers the crashes the cut-over adds: between prepare and lock (d3:
// prepared files on both sides, nothing locked), during the comparison (d4:
// the master's lock, which compares and stages, in flight with the replica
// locked and staged), and between the two commits (d6). The state is written
// once before the locks and not again until the outcome: in every (d) cell it
// says `in-progress [prepare]`, and the files decide on the rerun. A crash
// between one commit's two renames is covered at the agent level
// (test/fault/agent-kill.test.ts (c)).

import { execFileSync, spawn } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FOREIGN_LOCKER } from "../helpers/agent-process.js";
import {
  classifyPair,
  cli,
  expectAllNew,
  faultDirs,
  firedFault,
  generatedPair,
  localHost,
  planMailboxes,
  proxyCommand,
  runCli,
  type Side,
  snapshotPair,
  spawnCli,
  stateOf,
  type TestPair,
  waitAgentsGone,
  waitForFile,
  writeInventory,
} from "../helpers/apply-harness.js";
import { makeTempDir } from "../helpers/fixtures.js";

type Step = 1 | 2 | 3 | 4 | 5 | 6;
const STEP: Record<Step, { side: Side; op: string; name: string }> = {
  1: { side: "master", op: "prepare", name: "prepare" },
  2: { side: "replica", op: "prepare", name: "prepare" },
  3: { side: "replica", op: "lock", name: "lock-replica" },
  4: { side: "master", op: "lock", name: "lock-master" },
  5: { side: "replica", op: "commit", name: "commit-replica" },
  6: { side: "master", op: "commit", name: "commit-master" },
};

let root: string;
let cleanupRoot: () => Promise<void>;
let cellNo = 0;
/** Registers a test's cleanup (the test context's, as the cells run concurrently). */
type OnFinished = (fn: () => void | Promise<void>) => void;

beforeAll(async () => {
  if (process.getuid?.() !== 0)
    throw new Error(
      "the fault matrix mounts tmpfs and uses chattr: it needs root and does not skip",
    );
  ({ dir: root, cleanup: cleanupRoot } = await makeTempDir("guidup-matrix-"));
});
afterAll(async () => {
  await cleanupRoot?.();
});

interface Cell {
  /** Undo steps (umount, chattr -i, kill) that run even when the test fails. */
  undo: (() => void)[];
  pair: TestPair;
  dir: string;
  plan: string;
  verifyInventory: string;
  planned: string[];
  /** The mailbox the fault hits. */
  target: string;
  faults: Record<Side, string>;
  snap: Awaited<ReturnType<typeof snapshotPair>>;
}

/** A fresh generated pair, its plan made through fault proxies on both hosts. */
async function setupCell(
  onFinished: OnFinished,
  fault?: { side: Side; spec: string; hook?: boolean },
  options: { leaf?: boolean } = {},
): Promise<Cell> {
  const dir = path.join(root, `cell-${++cellNo}`);
  mkdirSync(dir);
  const undo: (() => void)[] = [];
  onFinished(() => {
    for (const u of undo.splice(0).reverse()) {
      try {
        u();
      } catch {
        // best effort: the next undo still runs
      }
    }
  });
  const hookFile = path.join(dir, "hook.sh");
  const pair = await generatedPair({
    seed: 21,
    mailboxes: 5,
    versions: [7, 8, 9],
    expungeFraction: 0.6,
    largeMailboxes: 0,
    messagesPerMailbox: [2, 6],
    messageBytes: [300, 1500],
  });
  undo.push(() => rmSync(pair.dir, { recursive: true, force: true }));
  // Every generated mailbox (v7–v9) is planned, in name order. The target is
  // the first one, or with `leaf` the last without sub-mailboxes (whose
  // directories a mount over its own would cover); a fault spec's "{n}" is
  // its position (--concurrency 1: one request of each op per mailbox).
  const names = [...pair.names].sort();
  const targetIndex = options.leaf
    ? names.findLastIndex((n) => !names.some((o) => o.startsWith(`${n}.`)))
    : 0;
  const target = names[targetIndex]!;
  if (fault) fault = { ...fault, spec: fault.spec.replace("{n}", String(targetIndex + 1)) };
  const faults = await faultDirs(dir);
  const cmd = (side: Side) =>
    proxyCommand(
      faults[side],
      fault?.side === side ? fault.spec : undefined,
      fault?.side === side && fault.hook ? `sh '${hookFile}'` : undefined,
    );
  const inventory = await writeInventory(pair, path.join(dir, "inventory.yaml"), {
    master: localHost(pair, "master", cmd("master")),
    replica: localHost(pair, "replica", cmd("replica")),
  });
  // guidup verify needs no faults: a plain inventory of the same pair.
  const verifyInventory = await writeInventory(pair, path.join(dir, "verify.yaml"), {
    master: localHost(pair, "master"),
    replica: localHost(pair, "replica"),
  });
  const plan = path.join(dir, "plan.yaml");
  await cli(["plan", "--inventory", inventory, "--out", plan], 0);
  const planned = await planMailboxes(plan);
  expect(planned).toEqual(names);
  const snap = await snapshotPair(pair, path.join(dir, "before"));
  return { undo, pair, dir, plan, verifyInventory, planned, target, faults, snap };
}

interface Expect {
  exit: number;
  phase: string;
  step?: string;
  host?: Side;
  code?: string | RegExp;
  files: Record<Side, "old" | "new">;
  /** Temporary files left behind by a killed agent (removed by the rerun's prepare). */
  leftovers?: Side;
}

/** Checks the state of files and the state file after the fault, then reruns to convergence. */
async function afterFault(
  cell: Cell,
  got: { code: number; out: string; err: string },
  want: Expect,
  othersDone: boolean,
) {
  const ctx = `exit ${got.code}\n--- stdout\n${got.out}\n--- stderr\n${got.err}`;
  expect(got.code, ctx).toBe(want.exit);
  await waitAgentsGone(cell.faults.master);
  await waitAgentsGone(cell.faults.replica);

  // Never mixed, never anything but old or correct-new (classifyPair throws).
  const states = await classifyPair(cell.snap, cell.pair.names);
  for (const s of states.filter((x) => x.name === cell.target)) {
    expect(s.state, `${s.side} ${s.name}`).toBe(want.files[s.side]);
    expect(s.leftovers.length > 0, `${s.side} leftovers ${s.leftovers}`).toBe(
      want.leftovers === s.side,
    );
  }
  for (const s of states.filter((x) => x.name !== cell.target && cell.planned.includes(x.name))) {
    const why = JSON.stringify(await stateOf(cell.plan, s.name));
    expect(s.state, `${s.side} ${s.name}: ${why}\n${ctx}`).toBe(othersDone ? "new" : "old");
    expect(s.leftovers).toEqual([]);
  }

  // The state says what happened.
  const st = (await stateOf(cell.plan, cell.target)) as {
    phase: string;
    step?: string;
    lastError?: { code: string; step?: string; host?: string; message: string };
  };
  expect(st, ctx).toBeDefined();
  expect(st.phase, JSON.stringify(st)).toBe(want.phase);
  if (want.phase === "in-progress") expect(st.step).toBe(want.step);
  else {
    expect(st.lastError?.step, JSON.stringify(st)).toBe(want.step);
    if (want.host) expect(st.lastError?.host).toBe(want.host);
    if (want.code) expect(st.lastError?.code ?? "", JSON.stringify(st)).toMatch(want.code);
  }
  for (const other of cell.planned.filter((n) => n !== cell.target)) {
    const o = await stateOf(cell.plan, other);
    if (othersDone) expect(o?.phase, other).toBe("done");
  }
}

async function converge(cell: Cell) {
  const rerun = await runCli(["apply", cell.plan]);
  expect(rerun.code, `rerun: ${rerun.out}${rerun.err}`).toBe(0);
  await expectAllNew(cell.snap, cell.pair.names);
  expect(await runCli(["verify", "--inventory", cell.verifyInventory]).then((r) => r.code)).toBe(0);
  const st = await stateOf(cell.plan, cell.target);
  expect(st?.phase).toBe("done");
}

function applyArgs(cell: Cell, ...extra: string[]) {
  return ["apply", cell.plan, "--concurrency", "1", ...extra];
}

/** What each step leaves when it fails without the host having done it. */
function failedBefore(step: Step, code?: string | RegExp): Expect {
  return {
    exit: step === 6 ? 3 : 4,
    phase: step === 6 ? "replica-ahead" : "failed",
    step: STEP[step].name,
    host: STEP[step].side,
    ...(code ? { code } : {}),
    files: { master: "old", replica: step === 6 ? "new" : "old" },
  };
}

describe.concurrent("(a) the agent is SIGKILLed when the step's request reaches it", () => {
  for (const step of [1, 2, 3, 4, 5, 6] as Step[]) {
    const { side, op, name } = STEP[step];
    it(`a${step}: ${side} agent killed on ${name}`, async ({ onTestFinished }) => {
      const cell = await setupCell(onTestFinished, { side, spec: `request:${op}:1:kill-agent` });
      const got = await runCli(applyArgs(cell));
      expect(firedFault(cell.faults[side])?.mailbox).toBe(cell.target);
      // A killed agent cannot clean up: the files it prepared stay until the
      // next prepare of that mailbox (harmless meanwhile: only it could rename them).
      const leftovers: Side | undefined = step >= 3 ? side : undefined;
      await afterFault(
        cell,
        got,
        { ...failedBefore(step, "transport"), ...(leftovers ? { leftovers } : {}) },
        true,
      );
      await converge(cell);
    });
  }
});

describe.concurrent("(b) the connection drops after the host did the step", () => {
  for (const step of [1, 2, 3, 4, 5, 6] as Step[]) {
    const { side, op, name } = STEP[step];
    it(`b${step}: ${side} connection dropped after its ${name} answer`, async ({
      onTestFinished,
    }) => {
      const cell = await setupCell(onTestFinished, { side, spec: `response:${op}:1:drop` });
      const got = await runCli(applyArgs(cell));
      expect(firedFault(cell.faults[side])?.mailbox).toBe(cell.target);
      // Steps 5 and 6 were carried out: the replica is upgraded. The agent
      // whose connection dropped rolls its own work back (stdin ended).
      const want: Expect =
        step >= 5
          ? {
              exit: 3,
              phase: "replica-ahead",
              step: name,
              host: side,
              files: { master: step === 6 ? "new" : "old", replica: "new" },
            }
          : failedBefore(step);
      await afterFault(cell, got, want, true);
      await converge(cell);
    });
  }
});

describe.concurrent("(c) the host answers an error", () => {
  it("c1: a foreign fcntl lock holds the master's cyrus.index: the master's short wait times out, the replica is released, retried with back-off, fails", async ({
    onTestFinished,
  }) => {
    const cell = await setupCell(onTestFinished);
    const locker = holdLock(
      cell,
      path.join(cell.pair.mailboxDir("master", cell.target), "cyrus.index"),
    );
    await locker.ready;
    // --lock-timeout is long: the master still waits only --master-lock-wait.
    const got = await runCli(
      applyArgs(
        cell,
        "--lock-timeout",
        "30s",
        "--master-lock-wait",
        "200ms",
        "--retries",
        "2",
        "--retry-backoff",
        "100ms",
      ),
    );
    locker.release();
    await afterFault(cell, got, failedBefore(4, "lock-timeout"), true);
    expect(got.out).toContain("2 retries");
    await converge(cell);
  });

  it("c2: a foreign fcntl lock holds the replica's cyrus.index: lock-replica times out, retried, fails", async ({
    onTestFinished,
  }) => {
    const cell = await setupCell(onTestFinished);
    const locker = holdLock(
      cell,
      path.join(cell.pair.mailboxDir("replica", cell.target), "cyrus.index"),
    );
    await locker.ready;
    const got = await runCli(applyArgs(cell, "--lock-timeout", "500ms"));
    locker.release();
    await afterFault(cell, got, failedBefore(3, "lock-timeout"), true);
    await converge(cell);
  });

  it("c3: the master's mailbox directory is a full tmpfs: prepare fails with ENOSPC before any lock", async ({
    onTestFinished,
  }) => {
    const cell = await setupCell(onTestFinished, undefined, { leaf: true });
    const dir = cell.pair.mailboxDir("master", cell.target);
    const filler = fullTmpfs(cell, dir);
    const got = await runCli(applyArgs(cell));
    await afterFault(cell, got, failedBefore(1, "file-access"), true);
    expect(got.out).toMatch(/ENOSPC|no space/i);
    rmSync(filler);
    await converge(cell);
  });

  it("c4: the replica's mailbox directory turns read-only (ro bind mount) at its prepare: EROFS", async ({
    onTestFinished,
  }) => {
    const cell = await setupCellWithHook(onTestFinished, "replica", "prepare", (c) => {
      const d = c.pair.mailboxDir("replica", c.target);
      c.undo.push(() => execFileSync("umount", [d]));
      return `mount --bind '${d}' '${d}' && mount -o remount,bind,ro '${d}'`;
    });
    const got = await runCli(applyArgs(cell));
    await afterFault(cell, got, failedBefore(2, "file-access"), true);
    expect(got.out).toMatch(/EROFS|read-only/i);
    execFileSync("umount", [cell.pair.mailboxDir("replica", cell.target)]);
    cell.undo.pop();
    await converge(cell);
  });

  it("c5: the replica's mailbox directory is made immutable (chattr +i) at commit-replica: rename fails", async ({
    onTestFinished,
  }) => {
    const cell = await setupCellWithHook(onTestFinished, "replica", "commit", (c) => {
      const d = c.pair.mailboxDir("replica", c.target);
      c.undo.push(() => execFileSync("chattr", ["-i", d]));
      return `chattr +i '${d}'`;
    });
    const got = await runCli(applyArgs(cell));
    // The staged files cannot be removed from an immutable directory either.
    await afterFault(cell, got, { ...failedBefore(5, "file-access"), leftovers: "replica" }, true);
    execFileSync("chattr", ["-i", cell.pair.mailboxDir("replica", cell.target)]);
    cell.undo.pop();
    await converge(cell);
  });

  it("c6: the master's mailbox directory is made immutable at commit-master: replica ahead, repaired", async ({
    onTestFinished,
  }) => {
    const cell = await setupCellWithHook(onTestFinished, "master", "commit", (c) => {
      const d = c.pair.mailboxDir("master", c.target);
      c.undo.push(() => execFileSync("chattr", ["-i", d]));
      return `chattr +i '${d}'`;
    });
    const got = await runCli(applyArgs(cell));
    expect(got.err).toContain("REPLICA AHEAD OF MASTER");
    await afterFault(cell, got, { ...failedBefore(6, "file-access"), leftovers: "master" }, true);
    const status = await runCli(["status", cell.plan]);
    expect(status.out).toMatch(/replica-ahead\s+1/);
    execFileSync("chattr", ["-i", cell.pair.mailboxDir("master", cell.target)]);
    cell.undo.pop();
    await converge(cell);
  });

  it("c0: a message file missing on the replica: prepare fails with message-file before any lock, nothing changes", async ({
    onTestFinished,
  }) => {
    const cell = await setupCell(onTestFinished);
    const dir = cell.pair.mailboxDir("replica", cell.target);
    const file = readdirSync(dir).find((f) => /^\d+\.$/.test(f))!;
    const saved = path.join(cell.dir, "saved-message");
    cpSync(path.join(dir, file), saved);
    rmSync(path.join(dir, file));
    const got = await runCli(applyArgs(cell));
    await afterFault(
      cell,
      got,
      {
        exit: 4,
        phase: "failed",
        step: "prepare",
        host: "replica",
        code: "message-file",
        files: { master: "old", replica: "old" },
      },
      true,
    );
    cpSync(saved, path.join(dir, file));
    await converge(cell);
  });
});

describe.concurrent("(d) the controller is SIGKILLed while the step's request is in flight", () => {
  for (const step of [1, 2, 3, 4, 5, 6] as Step[]) {
    const { side, op, name } = STEP[step];
    it(`d${step}: controller killed during ${name}`, async ({ onTestFinished }) => {
      const cell = await setupCell(onTestFinished, { side, spec: `request:${op}:1:pause` });
      const controller = spawnCli(applyArgs(cell));
      await waitForFile(path.join(cell.faults[side], "paused"));
      controller.child.kill("SIGKILL");
      const done = await controller.done;
      expect(done.signal).toBe("SIGKILL");
      // Every agent notices its input ended and rolls back what it holds
      // (and removes what it prepared); after step 5 the replica has
      // committed: it stays upgraded. The state was last written before the
      // locks: the files decide on the rerun.
      await afterFault(
        cell,
        { code: 0, out: done.out, err: done.err },
        {
          exit: 0,
          phase: "in-progress",
          step: "prepare",
          files: { master: "old", replica: step === 6 ? "new" : "old" },
        },
        false,
      );
      const status = await runCli(["status", cell.plan]);
      expect(status.out).toContain(`in-progress   ${cell.target} [prepare]`);
      await converge(cell);
    });
  }
});

// ---- fault helpers ------------------------------------------------------------

/** A cell whose `side` proxy runs the shell text `hook(cell)` on the 1st `op` request. */
async function setupCellWithHook(
  onFinished: OnFinished,
  side: Side,
  op: string,
  hook: (cell: Cell) => string,
): Promise<Cell> {
  const cell = await setupCell(
    onFinished,
    { side, spec: `request:${op}:{n}:hook`, hook: true },
    { leaf: true },
  );
  writeFileSync(path.join(cell.dir, "hook.sh"), `set -e\n${hook(cell)}\n`);
  return cell;
}

/** foreign-locker.py holding PATH (classic fcntl, as Cyrus 2.3). */
function holdLock(cell: Cell, file: string): { ready: Promise<void>; release: () => void } {
  const child = spawn("python3", [FOREIGN_LOCKER, "hold", file, "120"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  cell.undo.push(() => child.kill("SIGKILL"));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("locked")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`foreign-locker exited ${code}`)));
  });
  return { ready, release: () => child.kill("SIGTERM") };
}

/**
 * Moves `dir`'s files onto a small tmpfs mounted at `dir` and fills it, so
 * that creating a file works but writing one fails with ENOSPC. Returns the
 * filler file (remove it to make room).
 */
function fullTmpfs(cell: Cell, dir: string): string {
  const saved = `${dir}.saved`;
  cpSync(dir, saved, { recursive: true });
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dir]);
  cell.undo.push(() => execFileSync("umount", [dir]));
  cpSync(saved, dir, { recursive: true });
  const filler = path.join(dir, "filler");
  const st = statfsSync(dir);
  try {
    writeFileSync(filler, Buffer.alloc(Number(st.bavail) * Number(st.bsize)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  }
  return filler;
}
