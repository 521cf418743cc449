import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run as runDiff } from "../../src/cli/diff.js";
import type { Io } from "../../src/cli/io.js";
import { run as runShow } from "../../src/cli/show.js";
import { ExitCode } from "../../src/errors.js";
import { diffPlans, hasDifferences, renderPlanDiff } from "../../src/plan/diff.js";
import { PlanError, writePlan } from "../../src/plan/plan-file.js";
import { planJson, renderPlanEntries, renderPlanSummary, reviewPlan } from "../../src/plan/show.js";
import { makeMailbox, makePlan, makeSkipped } from "../helpers/plan-factory.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-show-diff-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function captureIo(): Io & { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  return {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    isTTY: false,
    drained: () => Promise.resolve(),
    stdout: () => out,
    stderr: () => err,
  };
}

describe("show", () => {
  const plan = makePlan(30, { skipped: 7 });
  // One clearly largest mailbox.
  plan.mailboxes[17]!.master.index.records = 90_000;

  it("summarises counts by action and reason, per-host totals, the largest mailboxes", () => {
    const text = renderPlanSummary(plan);
    const r = reviewPlan(plan);
    expect(r.toApply).toBe(30);
    expect(r.byAction).toEqual({ version: 24, guid: 30 });
    expect(r.bySkipReason).toEqual({
      "missing-on-master": 2,
      "missing-on-replica": 1,
      "uids-differ": 1,
      "newer-than-target": 1,
      unreadable: 1,
      excluded: 1,
    });
    expect(text).toContain("mailboxes: 30 to apply, 7 skipped, 3 up to date");
    expect(text).toContain("actions: version 24, guid 30");
    expect(text).toContain("skipped: missing-on-master 2, missing-on-replica 1, uids-differ 1");
    expect(text).toMatch(/records +[\d,]+ +[\d,]+/);
    expect(text).toContain("master   cyrus@imap1.example.com /etc/imapd.conf");
    expect(text).toContain("replica  local /srv/replica/imapd.conf");
    expect(r.largest).toHaveLength(10);
    expect(r.largest[0]?.name).toBe("user.u000017");
    const largestLine = text.split("\n").find((l) => l.includes("user.u000017"));
    expect(largestLine).toMatch(/^ +90,\d{3} +\d+ /);
    // The summary in the file is display only; a mismatch is pointed out, not trusted.
    expect(r.summaryMismatches.some((m) => m.startsWith("master records"))).toBe(true);
    expect(text).toContain("the plan's summary disagrees with its entries");
  });

  it("lists the entries, planned then skipped", () => {
    const lines = [...renderPlanEntries(plan)];
    expect(lines).toHaveLength(1 + 30 + 1 + 7);
    expect(lines[1]).toMatch(/^ {2}version,guid +user\.u000000 {2}v6\/v6 {2}records \d+\/\d+/);
    expect(lines[3]).toContain("user.u000002 (p2)");
    expect(lines.at(-1)).toMatch(/^ {2}missing-on-master +user\.s000006: /);
  });

  it("guidup show --entries prints summary and entries; --json the review and the plan", async () => {
    const file = join(dir, "show.yaml");
    await writePlan(file, plan);
    const io = captureIo();
    expect(await runShow([file, "--entries"], io)).toBe(ExitCode.ok);
    expect(io.stdout()).toContain("mailboxes: 30 to apply");
    expect(io.stdout()).toContain("user.s000003");
    const json = captureIo();
    expect(await runShow([file, "--json"], json)).toBe(ExitCode.ok);
    // The plan as written: with the writer's bodySha256.
    const shown = JSON.parse(json.stdout()) as { plan: { bodySha256?: string } };
    expect(shown.plan.bodySha256).toMatch(/^[0-9a-f]{64}$/);
    expect(shown).toEqual(
      JSON.parse(JSON.stringify(planJson({ ...plan, bodySha256: shown.plan.bodySha256 }))),
    );
  });

  it("guidup show refuses a hand-edited plan that breaks the schema", async () => {
    const file = join(dir, "broken.yaml");
    await writePlan(file, plan);
    const text = await readFile(file, "utf8");
    await writeFile(file, text.replace(/^target: 10$/m, "target: ten"));
    const line = text.split("\n").indexOf("target: 10") + 1;
    await expect(runShow([file], captureIo())).rejects.toThrow(
      `${file}:${line}:9: target: must be integer, got "ten"`,
    );
    await expect(runShow([file], captureIo())).rejects.toMatchObject({
      exitCode: ExitCode.badInput,
    });
  });
});

describe("diff", () => {
  const old = makePlan(10, { skipped: 3 });

  function changedPlan() {
    const next = structuredClone(old);
    next.id = "slot1-20250103T000000Z-ffffff";
    next.created = "2025-01-03T00:00:00.000Z";
    next.mailboxes.splice(4, 1); // removed (and now skipped)
    next.skipped.push({
      name: "user.u000004",
      reason: "uids-differ",
      detail: "replication behind",
    });
    next.skipped.sort((a, b) => (a.name < b.name ? -1 : 1));
    next.mailboxes.push(makeMailbox(42)); // added
    next.mailboxes[0]!.master.index.records += 5; // changed
    next.mailboxes[0]!.master.fingerprint = "f".repeat(40);
    delete next.mailboxes[2]!.partition; // changed: a field gone
    next.skipped = next.skipped.filter((s) => s.name !== makeSkipped(1).name);
    return next;
  }

  it("finds nothing but id and created between two plans of the same spools", () => {
    const again = { ...structuredClone(old), id: "slot1-x", created: "2025-02-01T00:00:00Z" };
    const d = diffPlans(old, again);
    expect(hasDifferences(d)).toBe(false);
    expect(renderPlanDiff(d)).toContain("no differences besides id and created");
  });

  it("finds added, removed and changed entries", () => {
    const d = diffPlans(old, changedPlan());
    expect(d.added.map((m) => m.name)).toEqual(["user.u000042"]);
    expect(d.removed.map((m) => m.name)).toEqual(["user.u000004"]);
    expect(d.changed).toEqual([
      {
        name: "user.u000000",
        fields: [
          {
            path: "master.index.records",
            old: old.mailboxes[0]!.master.index.records,
            new: old.mailboxes[0]!.master.index.records + 5,
          },
          {
            path: "master.fingerprint",
            old: old.mailboxes[0]!.master.fingerprint,
            new: "f".repeat(40),
          },
        ],
      },
      { name: "user.u000002", fields: [{ path: "partition", old: "p2", new: null }] },
    ]);
    expect(d.skipped.added.map((s) => s.name)).toEqual(["user.u000004"]);
    expect(d.skipped.removed.map((s) => s.name)).toEqual(["user.s000001"]);
    expect(hasDifferences(d)).toBe(true);
    const text = renderPlanDiff(d);
    expect(text).toContain("mailboxes to apply: 1 added, 1 removed, 2 changed");
    expect(text).toContain("  + user.u000042 [version, guid]");
    expect(text).toContain("  - user.u000004 [guid] (now skipped: uids-differ)");
    expect(text).toMatch(/ {6}master\.index\.records: \d+ → \d+/);
    expect(text).toContain("      partition: p2 → (absent)");
    expect(text).toContain("  + user.u000004: uids-differ: replication behind");
  });

  it("reports header changes", () => {
    const next = { ...structuredClone(old), target: 9 };
    const d = diffPlans(old, next);
    expect(d.header).toEqual([{ path: "target", old: 10, new: 9 }]);
    expect(renderPlanDiff(d)).toContain("header:\n  target: 10 → 9\n");
  });

  it("refuses plans of different pairs", () => {
    const other = makePlan(10, { pair: "slot2" });
    expect(() => diffPlans(old, other, { old: "a.yaml", new: "b.yaml" })).toThrow(PlanError);
    expect(() => diffPlans(old, other, { old: "a.yaml", new: "b.yaml" })).toThrow(
      'a.yaml is for pair "slot1", b.yaml for pair "slot2": diff compares two plans of the same pair',
    );
  });

  it("guidup diff exits 0 when equal, 1 when different, 2 for bad input", async () => {
    const a = join(dir, "a.yaml");
    const b = join(dir, "b.yaml");
    const c = join(dir, "c.yaml");
    await writePlan(a, old);
    await writePlan(b, changedPlan());
    await writePlan(c, makePlan(3, { pair: "slot2" }));
    const same = captureIo();
    expect(await runDiff([a, a], same)).toBe(ExitCode.ok);
    const differ = captureIo();
    expect(await runDiff([a, b], differ)).toBe(1);
    expect(differ.stdout()).toContain("+ user.u000042");
    const json = captureIo();
    expect(await runDiff([a, b, "--json"], json)).toBe(1);
    expect(JSON.parse(json.stdout()).added[0].name).toBe("user.u000042");
    await expect(runDiff([a, c], captureIo())).rejects.toMatchObject({
      exitCode: ExitCode.badInput,
    });
    await expect(runDiff([a], captureIo())).rejects.toMatchObject({ exitCode: ExitCode.badInput });
  });

  it("diffs two 100,000-entry plans", () => {
    const big = makePlan(100_000);
    const next = makePlan(100_000, { seed: "rescan" });
    const d = diffPlans(big, next);
    expect(d.changed).toHaveLength(100_000);
    expect(d.changed[0]?.fields.map((f) => f.path)).toEqual([
      "master.fingerprint",
      "replica.fingerprint",
    ]);
  });
});
