// Issue #10 item 2: apply state belongs to the plan it was written for (its
// id). A plan written over an old plan's path must not inherit the old
// plan's "done" mailboxes: `plan --out` refuses an existing file unless
// --overwrite (which moves the old state aside), and a state directory of
// another plan is refused by name, never read as this plan's.

import { copyFile, mkdir, readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { StateStore, stateDirFor } from "../../src/apply/state-store.js";
import { IndexReader } from "../../src/cyrus/index-file.js";
import { readPlan } from "../../src/plan/plan-file.js";
import {
  cli,
  planMailboxes,
  plannedLocalPair,
  SIDES,
  statusOf,
  type TestPair,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

async function upgradedPair(seed: number) {
  const { pair, inventory, plan } = await plannedLocalPair({ seed, mailboxes: 5 }, { keep: pairs });
  await cli(["apply", plan], 0);
  return { pair, inventory, plan };
}

async function minorsOnDisk(pair: TestPair, names: readonly string[]): Promise<number[]> {
  const minors: number[] = [];
  for (const side of SIDES) {
    for (const name of names) {
      const reader = await IndexReader.open(path.join(pair.mailboxDir(side, name), "cyrus.index"));
      minors.push(reader.header.minorVersion);
      await reader.close();
    }
  }
  return minors;
}

describe("a plan written over an old plan's path", () => {
  it("is refused unless --overwrite, which moves the old state aside; the new plan then runs in full", async () => {
    const { pair, inventory, plan } = await upgradedPair(71);
    const oldId = (await readPlan(plan)).id;
    const oldPlanText = await readFile(plan, "utf8");

    const refused = await cli(
      ["plan", "--inventory", inventory, "--out", plan, "--target-version", "9"],
      2,
    );
    expect(refused.err).toContain(`${plan} exists and has apply state (${plan}.state)`);
    expect(refused.err).toContain("--overwrite");
    expect(await readFile(plan, "utf8")).toBe(oldPlanText);

    const replaced = await cli(
      ["plan", "--inventory", inventory, "--out", plan, "--target-version", "9", "--overwrite"],
      0,
    );
    expect(replaced.out).toContain(`moved to ${plan}.state.${oldId}`);
    expect(await readdir(`${plan}.state.${oldId}`)).toContain("plan-id");

    const names = await planMailboxes(plan);
    expect(names).toHaveLength(5);
    const applied = await cli(["apply", plan], 0);
    expect(applied.out).toContain("done 5");
    expect(applied.out).toContain("0 were already done");
    expect(await minorsOnDisk(pair, names)).toEqual(Array(10).fill(9));
  });

  it("copied over the old file by hand: apply refuses the old state, naming both plans", async () => {
    const { pair, inventory, plan } = await upgradedPair(72);
    const oldId = (await readPlan(plan)).id;
    const other = path.join(pair.dir, "v9.yaml");
    await cli(["plan", "--inventory", inventory, "--out", other, "--target-version", "9"], 0);
    const newId = (await readPlan(other)).id;
    await copyFile(other, plan);

    const r = await cli(["apply", plan], 2);
    expect(r.err).toContain(`belongs to plan ${oldId}, not to this plan (${newId})`);
    expect(r.err.trim().split("\n")).toHaveLength(1);
    // Nothing ran: the disk is still at v10, and status refuses the state too.
    expect(await minorsOnDisk(pair, await planMailboxes(plan))).toEqual(Array(10).fill(10));
    const status = await cli(["status", plan], 2);
    expect(status.out).toBe("");
    expect(status.err).toContain(`belongs to plan ${oldId}`);
  });

  it("a state file of another plan is refused, not read as done", async () => {
    const { pair, inventory, plan } = await upgradedPair(73);
    const other = path.join(pair.dir, "v9.yaml");
    await cli(["plan", "--inventory", inventory, "--out", other, "--target-version", "9"], 0);
    const otherId = (await readPlan(other)).id;
    // Give the other plan a state directory of its own (bound to it), then
    // plant one of the old plan's state files ("done") in it.
    const store = new StateStore(stateDirFor(other));
    await store.acquire(otherId);
    await store.release();
    const name = (await planMailboxes(plan))[0]!;
    const to = store.pathFor(name);
    await mkdir(path.dirname(to), { recursive: true });
    await copyFile(new StateStore(stateDirFor(plan)).pathFor(name), to);
    const r = await cli(["apply", other], 2);
    expect(r.err).toContain(
      `belongs to plan ${(await readPlan(plan)).id}, not to this plan (${otherId})`,
    );
    expect((await statusOf(plan)).counts.done).toBe(5);
  });
});
