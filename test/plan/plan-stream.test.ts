// guidup-plan/3 read and written entry by entry (src/plan/plan-stream.ts):
// the round trip, the file's layout, a cut or broken file refused with one
// line naming the file and the line, /2 still read, and `show --summary`
// reading the header alone.

import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import YAML from "yaml";
import { formatPlan, PlanError, readPlan, writePlan } from "../../src/plan/plan-file.js";
import { openPlan, PlanWriter } from "../../src/plan/plan-stream.js";
import { runCli } from "../helpers/pair-fixtures.js";
import { makeMailbox, makePlan, makeSkipped } from "../helpers/plan-factory.js";
import { asV2, formatPlanV2 } from "../helpers/plan-v2.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-plan-stream-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

/** 1-based number of the first line containing `needle`. */
function lineOf(text: string, needle: string): number {
  const at = text.indexOf(needle);
  expect(at).toBeGreaterThanOrEqual(0);
  return text.slice(0, at).split("\n").length;
}

/** The header's bodySha256 as a matcher (its value is checked in "bodySha256" below). */
const DIGEST = expect.stringMatching(/^[0-9a-f]{64}$/);

async function planFile(
  name: string,
  n = 12,
  skipped = 4,
): Promise<{ file: string; text: string }> {
  const file = join(dir, name);
  await writePlan(file, makePlan(n, { skipped }));
  return { file, text: await readFile(file, "utf8") };
}

describe("guidup-plan/3", () => {
  it("round-trips through the streaming writer and reader, and is YAML with one line per entry", async () => {
    const plan = makePlan(25, { skipped: 6 });
    const { file, text } = await (async () => {
      const f = join(dir, "rt.yaml");
      await writePlan(f, plan);
      return { file: f, text: await readFile(f, "utf8") };
    })();
    const stream = await openPlan(file);
    const { mailboxes, skipped, ...header } = plan;
    expect(stream.header).toEqual({ ...header, bodySha256: DIGEST });
    expect(await collect(stream.mailboxes())).toEqual(mailboxes);
    expect(await collect(stream.skipped())).toEqual(skipped);
    expect(await collect(stream.names())).toEqual(mailboxes.map((m) => m.name));
    // The same plan through the yaml library: a reviewer's tools read it too.
    expect(YAML.parse(text)).toEqual({ ...JSON.parse(JSON.stringify(plan)), bodySha256: DIGEST });
    expect(text.match(/^ {2}- \{ "name": /gm)).toHaveLength(31);
    expect(text.indexOf("summary:")).toBeLessThan(text.indexOf("mailboxes:"));
    expect(text.endsWith("\n...\n")).toBe(true);
  });

  it("counts the summary as entries come, skipped ones in any order", async () => {
    const plan = makePlan(9, { skipped: 5 });
    const file = join(dir, "writer.yaml");
    const { format: _f, summary: _s, mailboxes, skipped, ...head } = plan;
    const writer = await PlanWriter.create(file, head);
    for (const m of mailboxes) await writer.add(m);
    for (const s of [...skipped].reverse()) await writer.skip(s);
    const summary = await writer.commit({ mailboxes: 20, upToDate: 6 });
    expect(summary).toMatchObject({ mailboxes: 20, toApply: 9, skipped: 5, upToDate: 6 });
    const back = await readPlan(file);
    expect(back.skipped).toEqual(skipped);
    expect(back.summary).toEqual(summary);
    expect(back.summary.records.master).toBe(
      mailboxes.reduce((n, m) => n + m.master.index.records + (m.master.expunge?.records ?? 0), 0),
    );
  });

  it("spills skipped entries over many sort runs: any order in, the file writePlan writes out, no run file left", async () => {
    const plan = makePlan(12, { skipped: 40 });
    const expected = join(dir, "spill-expected.yaml");
    await writePlan(expected, plan);
    const file = join(dir, "spill.yaml");
    const { format: _f, summary, mailboxes, skipped, ...head } = plan;
    const writer = await PlanWriter.create(file, head, { skippedRunRecords: 3 });
    // Interleaved with the planned entries, as a scan's skips come, and shuffled.
    const shuffled = skipped.map((s, i) => skipped[(i * 17) % skipped.length] as typeof s);
    expect(new Set(shuffled.map((s) => s.name)).size).toBe(40);
    for (const [i, m] of mailboxes.entries()) {
      await writer.add(m);
      for (const s of shuffled.slice(i * 3, i * 3 + 3)) await writer.skip(s);
    }
    for (const s of shuffled.slice(36)) await writer.skip(s);
    expect((await readdir(dir)).filter((f) => f.includes(".skipped.run-")).length).toBe(13);
    await writer.commit({ summary });
    expect(await readFile(file, "utf8")).toBe(await readFile(expected, "utf8"));
    expect((await readdir(dir)).filter((f) => f.startsWith(".spill.yaml"))).toEqual([]);
  });

  it("refuses a skipped name twice or also planned, across sort runs: a bug of the caller, nothing written", async () => {
    const plan = makePlan(6, { skipped: 8 });
    const { format: _f, summary, mailboxes, skipped, ...head } = plan;
    const cases: [string, (w: PlanWriter) => Promise<void>, RegExp][] = [
      [
        "twice",
        (w) => w.skip(skipped[2] as (typeof skipped)[number]),
        /skipped entry user\.s000002 twice/,
      ],
      [
        "planned",
        (w) =>
          w.skip({
            name: (mailboxes[4] as (typeof mailboxes)[number]).name,
            reason: "corrupt",
            detail: "x",
          }),
        /mailbox "user\.u000004" is both planned and skipped/,
      ],
    ];
    for (const [label, extra, message] of cases) {
      const file = join(dir, `bad-skip-${label}.yaml`);
      const writer = await PlanWriter.create(file, head, { skippedRunRecords: 2 });
      for (const m of mailboxes) await writer.add(m);
      for (const s of skipped) await writer.skip(s);
      await extra(writer);
      await expect(writer.commit({ summary }), label).rejects.toThrow(message);
      expect((await readdir(dir)).filter((f) => f.includes(`bad-skip-${label}`))).toEqual([]);
    }
  });

  it("refuses entries out of order: a bug of the writer's caller", async () => {
    const file = join(dir, "unordered.yaml");
    const { format: _f, summary: _s, mailboxes: _m, skipped: _k, ...head } = makePlan(0);
    const writer = await PlanWriter.create(file, head);
    await writer.add(makeMailbox(2));
    await expect(writer.add(makeMailbox(1))).rejects.toThrow(/out of order/);
    await writer.abort();
  });

  it("refuses a plan cut short, with one line naming the file and the line", async () => {
    const { file, text } = await planFile("cut.yaml");
    const cases: [number, RegExp][] = [
      // In the middle of an entry's line.
      [
        text.indexOf("user.u000007") + 4,
        /:\d+:1: the plan ends in the middle of a line \(cut short\?\)$/,
      ],
      // At a line's end, before the skipped list.
      [
        text.indexOf('  - { "name": "user.u000008'),
        /:\d+:1: the plan ends before its "skipped:" line \(cut short\?\)$/,
      ],
      // Without the closing "...".
      [text.length - 4, /:\d+:1: the plan ends without its closing "\.\.\." line \(cut short\?\)$/],
      // Inside the header.
      [
        text.indexOf("summary:"),
        /:\d+:1: the plan ends before its "mailboxes:" line \(cut short\?\)$/,
      ],
    ];
    for (const [at, message] of cases) {
      const cut = join(dir, `cut-${at}.yaml`);
      await writeFile(cut, text);
      await truncate(cut, Buffer.byteLength(text.slice(0, at)));
      const err = await rejection(readPlan(cut));
      expect(err).toBeInstanceOf(PlanError);
      expect(err.message.split("\n")).toHaveLength(1);
      expect(err.message.startsWith(`${cut}:`)).toBe(true);
      expect(err.message).toMatch(message);
    }
    expect((await readPlan(file)).mailboxes).toHaveLength(12);
  });

  it("refuses a broken entry at its line: schema, order, duplicates, layout, planned and skipped", async () => {
    const { file, text } = await planFile("broken.yaml");
    const edits: [string, (t: string) => string, string, RegExp][] = [
      [
        "bad action",
        (t) =>
          t.replace(
            '"name": "user.u000004", "actions": ["guid"]',
            '"name": "user.u000004", "actions": ["gid"]',
          ),
        '"user.u000004"',
        /:5: mailboxes\[4\]\.actions\[0\]: must be equal to one of the allowed values: "version", "guid", got "gid"$/,
      ],
      [
        "unsorted",
        (t) => t.replace('"name": "user.u000003"', '"name": "user.u000001x"'),
        '"user.u000001x"',
        /:5: mailboxes\[3\]\.name: not sorted by name: "user\.u000001x" comes after "user\.u000002"$/,
      ],
      [
        "duplicate",
        (t) => t.replace('"name": "user.u000006"', '"name": "user.u000005"'),
        '"name": "user.u000005", "actions": ["version", "guid"], "master": { "index": { "minor": 7',
        /:5: mailboxes\[6\]\.name: mailbox "user\.u000005" is listed twice$/,
      ],
      [
        "block entry",
        (t) => t.replace(/^ {2}- \{ "name": "user\.u000007".*$/m, "  - name: user.u000007"),
        "  - name: user.u000007",
        /:1: not an entry of a guidup-plan\/3 plan: each is one line ' {2}- \{ "name": …, … \}'$/,
      ],
      [
        "not JSON",
        (t) => t.replace(/("name": "user\.u000002".*) \}$/m, "$1"),
        '"user.u000002"',
        /:5: mailboxes\[2\]: not a one-line flow mapping \(/,
      ],
      [
        "planned and skipped",
        (t) => t.replace('"name": "user.s000003"', '"name": "user.u000011"'),
        '"name": "user.u000011", "reason"',
        /:5: skipped\[3\]\.name: mailbox "user\.u000011" is also planned$/,
      ],
    ];
    for (const [what, edit, needle, message] of edits) {
      const bad = edit(text);
      expect(bad, what).not.toBe(text);
      const f = join(dir, `broken-${what.replace(/ /g, "-")}.yaml`);
      await writeFile(f, bad);
      const err = await rejection(readPlan(f));
      expect(err, what).toBeInstanceOf(PlanError);
      expect(err.message.split("\n"), what).toHaveLength(1);
      expect(
        err.message.startsWith(`${f}:${lineOf(bad, needle)}:`),
        `${what}: ${err.message}`,
      ).toBe(true);
      expect(err.message, what).toMatch(message);
    }
    expect((await readPlan(file)).mailboxes).toHaveLength(12);
  });

  it("keeps a reviewer's comments and blank lines between entries, and an entry deleted by hand", async () => {
    const { file, text } = await planFile("edited.yaml");
    const edited = text
      .replace(/^( {2}- \{ "name": "user\.u000004".*)$/m, "  # looked at this one\n\n$1")
      .replace(/^ {2}- \{ "name": "user\.u000005".*\n/m, "");
    await writeFile(file, edited);
    const names = (await readPlan(file)).mailboxes.map((m) => m.name);
    expect(names).toHaveLength(11);
    expect(names).not.toContain("user.u000005");
  });

  it("bodySha256: the SHA-256 of every byte after the mailboxes: line, matched in the names pass; an edit, another digest or none is not a match", async () => {
    // Enough skipped entries that the file's rest runs past the chunk in
    // which the names pass meets "skipped:" and stops.
    const plan = makePlan(300, { skipped: 12_000 });
    const file = join(dir, "digest.yaml");
    await writePlan(file, plan);
    const text = await readFile(file, "utf8");
    expect(text.length).toBeGreaterThan(text.indexOf("\nskipped:\n") + 2 ** 20);
    const bodyAt = text.indexOf("\nmailboxes:\n") + "\nmailboxes:\n".length;
    const digest = createHash("sha256").update(text.slice(bodyAt)).digest("hex");
    expect(text.slice(0, bodyAt)).toContain(`\nbodySha256: "${digest}"\n`);
    // Both writers agree (the whole-text one serves small plans and tests).
    expect(formatPlan(plan)).toBe(text);

    const verdict = async (content: string) => {
      await writeFile(file, content);
      const names: string[] = [];
      const v = await (await openPlan(file)).namesAndBody((n) => names.push(n));
      expect(names).toEqual(plan.mailboxes.map((m) => m.name));
      return v;
    };
    expect(await verdict(text)).toBe("matches");
    // A reviewer's note between entries; a skipped entry's detail near the end.
    expect(
      await verdict(text.replace(/^( {2}- \{ "name": "user\.u000100".*)$/m, "  # ok\n$1")),
    ).toBe("differs");
    const last = makeSkipped(11_999).detail;
    expect(await verdict(text.replace(last, `${last}!`))).toBe("differs");
    // The digest itself edited; and removed (a plan of a guidup before it).
    const other = digest.replace(/.$/, (c) => (c === "a" ? "b" : "a"));
    expect(await verdict(text.replace(digest, other))).toBe("differs");
    expect(await verdict(text.replace(`bodySha256: "${digest}"\n`, ""))).toBe("absent");
    // A broken order is refused as names() refuses it, the hashing stopped.
    const swapped = text.replace(
      /^( {2}- \{ "name": "user\.u000101".*)\n( {2}- \{ "name": "user\.u000102".*)$/m,
      "$2\n$1",
    );
    await writeFile(file, swapped);
    const err = await rejection((await openPlan(file)).namesAndBody(() => {}));
    expect(err).toBeInstanceOf(PlanError);
    expect(err.message).toMatch(/not sorted by name: "user\.u000101" comes after "user\.u000102"/);
    // A guidup-plan/2 plan has none.
    await writeFile(file, formatPlanV2(plan));
    expect(await (await openPlan(file)).namesAndBody(() => {})).toBe("absent");
  });

  it("bodySha256 is the writer's own: one in the head it is given (another plan's) is not copied", async () => {
    const { file } = await planFile("copied-from.yaml", 5, 1);
    const read = await openPlan(file);
    const { format: _f, summary: _s, ...head } = read.header;
    expect(head.bodySha256).toMatch(/^[0-9a-f]{64}$/);
    const out = join(dir, "copied-to.yaml");
    const writer = await PlanWriter.create(out, head);
    for await (const m of read.mailboxes()) if (m.name !== "user.u000002") await writer.add(m);
    await writer.commit({ mailboxes: 4, upToDate: 0 });
    const copy = await openPlan(out);
    expect(copy.header.bodySha256).not.toBe(head.bodySha256);
    expect(await copy.namesAndBody(() => {})).toBe("matches");
  });

  it("still reads guidup-plan/2, whole, through the same interface", async () => {
    const plan = makePlan(15, { skipped: 3 });
    const file = join(dir, "v2.yaml");
    await writeFile(file, formatPlanV2(plan));
    expect(await readPlan(file)).toEqual(asV2(plan));
    const stream = await openPlan(file);
    expect(stream.header.format).toBe("guidup-plan/2");
    expect(await collect(stream.names())).toEqual(plan.mailboxes.map((m) => m.name));
    expect(await collect(stream.skipped())).toEqual(plan.skipped);
    const shown = await runCli(["show", file, "--entries"]);
    expect(shown.code).toBe(0);
    expect(shown.out).toContain("15 planned and 3 skipped entries:");
  });

  it("show --summary reads the header alone: a broken entry does not stop it, show without it does", async () => {
    const { file, text } = await planFile("summary.yaml", 40, 2);
    await writeFile(
      file,
      text.replace(
        '"name": "user.u000030", "actions": [',
        '"name": "user.u000030", "actions": ["bogus", ',
      ),
    );
    const summary = await runCli(["show", file, "--summary"]);
    expect(summary.code).toBe(0);
    expect(summary.out).toContain("mailboxes: 40 to apply, 2 skipped");
    expect(summary.out).toContain("per host (planned mailboxes, from the plan's summary)");
    const full = await runCli(["show", file]);
    expect(full.code).toBe(2);
    expect(full.err).toMatch(
      new RegExp(`${file}:${lineOf(text, '"user.u000030"')}:5: mailboxes\\[30\\]\\.actions`),
    );
  });

  it("diff walks two plans side by side", async () => {
    const a = makePlan(30, { skipped: 2 });
    const b = makePlan(30, { skipped: 2 });
    b.mailboxes.splice(10, 1);
    b.mailboxes[20]!.master.index.records += 1;
    b.mailboxes.push({ ...makeMailbox(40) });
    b.skipped.push(makeSkipped(5));
    const fa = join(dir, "diff-a.yaml");
    const fb = join(dir, "diff-b.yaml");
    await writePlan(fa, a);
    await writePlan(fb, b);
    const r = await runCli(["diff", fa, fb, "--json"]);
    expect(r.code).toBe(1);
    const d = JSON.parse(r.out);
    expect(d.removed.map((m: { name: string }) => m.name)).toEqual(["user.u000010"]);
    expect(d.added.map((m: { name: string }) => m.name)).toEqual(["user.u000040"]);
    expect(d.changed).toEqual([
      { name: "user.u000021", fields: [expect.objectContaining({ path: "master.index.records" })] },
    ]);
    expect(d.skipped.added).toHaveLength(1);
  });
});
