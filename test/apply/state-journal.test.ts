// The state directory's journal (src/apply/state-journal.ts): an index of
// phases that status and apply trust only when it is whole, rebuilt from the
// state files when it is missing or when an apply died with it open — here
// a real process killed (SIGKILL) after a state file was written and before
// its journal record was.

import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MailboxState } from "../../src/apply/state.js";
import { JOURNAL_FILE } from "../../src/apply/state-journal.js";
import { StateStore, stateDirFor } from "../../src/apply/state-store.js";
import { writePlan } from "../../src/plan/plan-file.js";
import { REPO_ROOT } from "../helpers/fixtures.js";
import { runCli } from "../helpers/pair-fixtures.js";
import { makePlan } from "../helpers/plan-factory.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-journal-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const done = (name: string, planId: string): MailboxState => ({
  name,
  planId,
  phase: "done",
  attempts: 1,
  updated: "2026-01-01T00:00:00.000Z",
  finished: "2026-01-01T00:00:00.000Z",
  lockHeldMs: { master: 4, replica: 6 },
});

async function statusJson(plan: string): Promise<{ counts: Record<string, number>; err: string }> {
  const r = await runCli(["status", plan, "--json"]);
  return { counts: JSON.parse(r.out).counts, err: r.err };
}

/**
 * A controller that takes the state directory as apply does, records three
 * mailboxes done, writes a fourth one's state file, and dies by SIGKILL
 * before that file's journal record: the crash window.
 */
const CRASHER = `
import { replaceFileSync } from ${JSON.stringify(join(REPO_ROOT, "dist/src/fsutil/atomic-file.js"))};
import { StateStore } from ${JSON.stringify(join(REPO_ROOT, "dist/src/apply/state-store.js"))};
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
const [dir, planId, ...names] = process.argv.slice(2);
const store = new StateStore(dir, planId);
await store.acquire(planId);
const state = (name) => ({ name, planId, phase: "done", attempts: 1, updated: "2026-01-01T00:00:00.000Z" });
for (const name of names.slice(0, 3)) await store.write(state(name));
const last = names[3];
const path = store.pathFor(last);
mkdirSync(dirname(path), { recursive: true });
replaceFileSync(path, JSON.stringify(state(last)) + "\\n");
process.kill(process.pid, "SIGKILL");
`;

describe("the state journal", () => {
  it("is rebuilt from the state files after it is deleted", async () => {
    const plan = join(dir, "deleted.yaml");
    const p = makePlan(5);
    await writePlan(plan, p);
    const store = new StateStore(stateDirFor(plan), p.id);
    await store.acquire(p.id);
    await store.write(done("user.u000001", p.id));
    await store.write(done("user.u000003", p.id));
    await store.write({ ...done("user.u000004", p.id), phase: "failed" });
    await store.release();
    const journal = await readFile(join(stateDirFor(plan), JOURNAL_FILE), "utf8");
    expect(journal.split("\n")[0]).toBe(`guidup-state-journal/1 ${p.id}`);
    expect(journal).toMatch(/\nclose \S+\n$/);
    const before = await statusJson(plan);
    expect(before.counts).toMatchObject({ done: 2, failed: 1, pending: 2 });
    expect(before.err).toBe("");

    await unlink(join(stateDirFor(plan), JOURNAL_FILE));
    const after = await statusJson(plan);
    expect(after.counts).toEqual(before.counts);
    expect(after.err).toContain("index rebuilt from the state files");
    // An apply taking the directory writes the rebuilt journal back.
    const again = new StateStore(stateDirFor(plan), p.id);
    await again.acquire(p.id);
    expect(again.isFinished("user.u000003")).toBe(true);
    expect(again.isFinished("user.u000004")).toBe(false);
    await again.release();
    expect((await statusJson(plan)).err).toBe("");
  });

  it("is rebuilt after a controller dies between a state file and its record", async () => {
    const plan = join(dir, "crash.yaml");
    const p = makePlan(6);
    await writePlan(plan, p);
    const script = join(dir, "crasher.mjs");
    await writeFile(script, CRASHER);
    const names = ["user.u000000", "user.u000001", "user.u000002", "user.u000005"];
    const child = spawn(process.execPath, [script, stateDirFor(plan), p.id, ...names], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const signal = await new Promise((resolve) => child.on("exit", (_code, sig) => resolve(sig)));
    expect(signal, stderr).toBe("SIGKILL");
    const journal = await readFile(join(stateDirFor(plan), JOURNAL_FILE), "utf8");
    // Three records after the last open marker, no record of the fourth, no close.
    const tail = journal
      .slice(journal.lastIndexOf("\nopen ") + 1)
      .trimEnd()
      .split("\n");
    expect(tail).toHaveLength(4);
    expect(tail.slice(1).every((l) => / done - -$/.test(l))).toBe(true);

    // status trusts no open journal of a dead apply: it counts all four done.
    const status = await statusJson(plan);
    expect(status.counts).toMatchObject({ done: 4, pending: 2 });
    expect(status.err).toContain("index rebuilt from the state files");
    // Nor does apply: the fourth is finished, without reading its file again.
    const store = new StateStore(stateDirFor(plan), p.id);
    await store.acquire(p.id);
    expect(names.map((n) => store.isFinished(n))).toEqual([true, true, true, true]);
    expect(store.isFinished("user.u000003")).toBe(false);
    await store.release();
    expect((await statusJson(plan)).err).toBe("");
  });

  it("records each state write after its file, the last record of a mailbox winning", async () => {
    const plan = join(dir, "behind.yaml");
    const p = makePlan(3);
    await writePlan(plan, p);
    const store = new StateStore(stateDirFor(plan), p.id);
    await store.acquire(p.id);
    await store.write({ ...done("user.u000002", p.id), phase: "in-progress" });
    expect(store.isFinished("user.u000002")).toBe(false);
    await store.write(done("user.u000002", p.id));
    expect(store.isFinished("user.u000002")).toBe(true);
    await store.release();
    const journal = await readFile(join(stateDirFor(plan), JOURNAL_FILE), "utf8");
    expect(journal.match(/ in-progress 4 6\n/g)).toHaveLength(1);
    expect(journal.match(/ done 4 6\n/g)).toHaveLength(1);
  });
});
