// guidup show (issue #10, "make the long run legible"): the summary first and
// alone by default, entries behind --entries or a filter (--only, --action,
// --min-records, --skipped), and a downgrade plan marked as one.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writePlan } from "../../src/plan/plan-file.js";
import { runCli } from "../helpers/pair-fixtures.js";
import { makePlan } from "../helpers/plan-factory.js";

let dir: string;
let file: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-show-"));
  const plan = makePlan(30, { skipped: 7 });
  plan.mailboxes[17]!.master.index.records = 90_000;
  file = join(dir, "plan.yaml");
  await writePlan(file, plan);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const entryLines = (out: string) =>
  out.split("\n").filter((l) => /^ {2}\S.* user\.[us]\d{6}/.test(l) && !/^ +[\d,]+ /.test(l));

describe("guidup show", () => {
  it("prints the summary alone by default, and says how to list entries", async () => {
    const r = await runCli(["show", file]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /^plan slot1-20250102T030405Z-a1b2c3 for pair slot1: target index version 10$/m,
    );
    expect(r.out).toContain("mailboxes: 30 to apply, 7 skipped");
    expect(r.out).not.toContain("to apply (actions");
    expect(r.out).toContain(`entries: guidup show ${file} --entries, or filtered:`);
  });

  it("--entries lists all; --only, --action, --min-records and --skipped filter", async () => {
    const all = await runCli(["show", file, "--entries"]);
    expect(all.out).toContain("30 planned and 7 skipped entries:");
    const only = await runCli(["show", file, "--only", "user.u00001*"]);
    expect(only.out).toContain("10 planned and 0 skipped entries match:");
    const version = await runCli(["show", file, "--action", "version"]);
    expect(version.out).toContain("24 planned and 0 skipped entries match:");
    const big = await runCli(["show", file, "--min-records", "90000"]);
    expect(big.out).toContain("1 planned and 0 skipped entries match:");
    expect(big.out).toMatch(/^ {2}version,guid +user\.u000017 /m);
    const skipped = await runCli(["show", file, "--skipped"]);
    expect(skipped.out).toContain("0 planned and 7 skipped entries match:");
    expect(entryLines(skipped.out)).toHaveLength(7);
  });

  it("refuses a filter that matches nothing or a bad action", async () => {
    const none = await runCli(["show", file, "--only", "user.zz*"]);
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/--only 'user\.zz\*' matches none of the 37 mailboxes/);
    const bad = await runCli(["show", file, "--action", "upgrade"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("--action upgrade: give version or guid");
  });

  it("marks a downgrade plan: it drops GUIDs", async () => {
    const down = join(dir, "down.yaml");
    await writePlan(down, makePlan(3, { target: 9 }));
    const r = await runCli(["show", down]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^DOWNGRADE plan .* target index version 9, below 10$/m);
    expect(r.out).toMatch(/it DROPS GUIDs: each SHA1 GUID becomes the NULL UUID/);
  });
});
