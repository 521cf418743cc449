// guidup cache clean finds the pair's plans next to the inventory, whatever
// the current directory (issue #10), says which plan it checked, and refuses
// when it finds none unless --force. guidup plan writes its default plan
// there, named by the plan's id (one timestamp format for both).

import { copyFile, mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readPlan } from "../../src/plan/plan-file.js";
import { cli, plannedLocalPair, runCli, type TestPair } from "../helpers/apply-harness.js";

let pair: TestPair;
let inventory: string;
beforeAll(async () => {
  ({ pair, inventory } = await plannedLocalPair(
    { seed: 91, mailboxes: 4, messagesPerMailbox: [1, 2], messageBytes: [200, 400] },
    { plan: false },
  ));
});
afterAll(async () => {
  await pair?.cleanup();
});

describe("plan's default file and cache clean", () => {
  it("plan writes plans/<plan id>.yaml next to the inventory; cache clean checks it from any directory", async () => {
    expect(process.cwd()).not.toBe(pair.dir);
    const planned = await cli(["plan", "--inventory", inventory], 0);
    const plansDir = path.join(pair.dir, "plans");
    const [file] = await readdir(plansDir);
    const plan = path.join(plansDir, file!);
    expect(planned.out.startsWith(`${plan}: pair t,`)).toBe(true);
    expect(file).toBe(`${(await readPlan(plan)).id}.yaml`);
    expect(file).toMatch(/^t-\d{8}T\d{6}Z-[0-9a-f]{6}\.yaml$/);

    const refused = await runCli(["cache", "clean", "--inventory", inventory]);
    expect(refused.code).toBe(1);
    expect(refused.err.trim()).toBe(
      `cache clean t: refused: 4 mailbox(es) of plan ${plan} are not done (4 planned); finish with guidup apply ${plan} (or use --force)`,
    );

    await cli(["apply", plan], 0);
    const cleaned = await runCli(["cache", "clean", "--inventory", inventory]);
    expect(cleaned.code, cleaned.err).toBe(0);
    expect(cleaned.out).toContain(`cache clean t: checked plan ${plan}: all 4 mailboxes done\n`);
    expect(cleaned.out).toMatch(/removed \d+ cache file\(s\) on the master/);
  });

  it("refuses when it finds no plan of the pair, unless --force", async () => {
    const elsewhere = path.join(pair.dir, "elsewhere");
    await mkdir(elsewhere);
    const inv = path.join(elsewhere, "inventory.yaml");
    await copyFile(inventory, inv);
    const refused = await runCli(["cache", "clean", "--inventory", inv]);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain(
      `cache clean t: refused: found no plan of pair t in ${path.join(elsewhere, "plans")}; name it with --plan FILE`,
    );
    const forced = await runCli(["cache", "clean", "--inventory", inv, "--force"]);
    expect(forced.code, forced.err).toBe(0);
    expect(forced.err).toContain("cache clean t: --force: no plan checked");
  });
});
