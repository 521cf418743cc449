import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import YAML from "yaml";
import { ExitCode, InternalError } from "../../src/errors.js";
import type { Plan } from "../../src/plan/model.js";
import {
  formatPlan,
  PlanError,
  parsePlan,
  readPlan,
  validatePlan,
  writePlan,
} from "../../src/plan/plan-file.js";
import { parseYamlSubset } from "../../src/plan/yaml-subset.js";
import { makeMailbox, makePlan } from "../helpers/plan-factory.js";
import { asV2, formatPlanV2 } from "../helpers/plan-v2.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-plan-file-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The error a function throws (fails the test if it returns). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error");
}

/** Replaces the n-th (1-based) line of text. */
function editLine(text: string, lineNo: number, edit: (line: string) => string): string {
  const lines = text.split("\n");
  lines[lineNo - 1] = edit(lines[lineNo - 1] as string);
  return lines.join("\n");
}

/** 1-based line and column of the first occurrence of `needle`. */
function positionOf(text: string, needle: string, from = 0): { line: number; col: number } {
  const at = text.indexOf(needle, from);
  expect(at).toBeGreaterThanOrEqual(0);
  const before = text.slice(0, at).split("\n");
  return { line: before.length, col: (before.at(-1) as string).length + 1 };
}

/** The header's bodySha256, which the writer adds (test/plan/plan-stream.test.ts checks its value). */
const DIGEST = expect.stringMatching(/^[0-9a-f]{64}$/);

describe("writePlan / readPlan", () => {
  it("round-trips a plan deep-equal", async () => {
    const plan = makePlan(40, { skipped: 9 });
    const file = join(dir, "sub", "dir", "rt.yaml");
    await writePlan(file, plan);
    expect(await readPlan(file)).toEqual({ ...plan, bodySha256: DIGEST });
  });

  it("round-trips an empty plan", async () => {
    const plan = makePlan(0);
    const file = join(dir, "empty.yaml");
    await writePlan(file, plan);
    const text = await readFile(file, "utf8");
    expect(text).toContain("mailboxes: []\n");
    expect(await readPlan(file)).toEqual({ ...plan, bodySha256: DIGEST });
  });

  it("writes a reviewable file: leading comment, model key order, no anchors", async () => {
    const plan = makePlan(3, { skipped: 1 });
    const text = formatPlan(plan);
    expect(
      text.startsWith("# guidup plan for pair slot1 — review, then: guidup apply <file>\n"),
    ).toBe(true);
    const topKeys = text
      .split("\n")
      .filter((l) => /^[a-z]+:/.test(l))
      .map((l) => l.split(":")[0]);
    expect(topKeys).toEqual(Object.keys(plan));
    expect(text).not.toMatch(/^[^#]*[&*]\w/m);
    // One line per entry, the file closed by "...".
    expect(text.match(/^ {2}- \{ "name": /gm)).toHaveLength(4);
    expect(text.endsWith("\n...\n")).toBe(true);
  });

  it("writes keys in the model's order whatever the object's order", () => {
    const plan = makePlan(2);
    const shuffled = JSON.parse(JSON.stringify(plan), (_k, v) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.entries(v).reverse())
        : v,
    ) as Plan;
    expect(formatPlan(shuffled)).toBe(formatPlan(plan));
  });

  it("is deterministic: the same plan twice gives identical bytes", async () => {
    const plan = makePlan(25, { skipped: 5 });
    const a = join(dir, "det-a.yaml");
    await writePlan(a, plan);
    const first = await readFile(a);
    await writePlan(a, structuredClone(plan));
    expect((await readFile(a)).equals(first)).toBe(true);
  });

  it("leaves no temporary file behind and replaces an existing plan", async () => {
    const sub = join(dir, "atomic");
    await writePlan(join(sub, "p.yaml"), makePlan(2));
    await writePlan(join(sub, "p.yaml"), makePlan(3));
    expect(await readdir(sub)).toEqual(["p.yaml"]);
    expect((await readPlan(join(sub, "p.yaml"))).mailboxes).toHaveLength(3);
  });

  it("refuses to write an invalid plan (a bug of the caller)", async () => {
    const plan = makePlan(2);
    (plan.mailboxes[0] as { actions: string[] }).actions = ["upgrade"];
    await expect(writePlan(join(dir, "bad.yaml"), plan)).rejects.toBeInstanceOf(InternalError);
  });

  it("quotes what would not read back as the same string", () => {
    const names = [
      "user.a b",
      "user.x: y",
      "user.#hash",
      "true",
      "null",
      "0123",
      "1e5",
      "-dash",
      "user.ü",
      "user.'q'",
      'user."dq"',
      "user.\\back",
      "user.[x]",
      "user.{x}",
      "user.x,y",
      "~",
      "@at",
      "user.\u0085\u2028",
    ].sort();
    const plan = makePlan(0);
    plan.mailboxes = names.map((name, i) => ({ ...makeMailbox(i), name }));
    plan.mailboxes.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
    const text = formatPlan(plan);
    expect(YAML.parse(text)).toEqual({ ...plan, bodySha256: DIGEST });
    expect(parsePlan(text, "q.yaml")).toEqual({ ...plan, bodySha256: DIGEST });
  });
});

describe("the fast reader agrees with the yaml library", () => {
  it("on random mailbox names, partitions and details", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ unit: "binary", minLength: 1, maxLength: 12 }), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.string({ unit: "grapheme", maxLength: 20 }),
        (names, detail) => {
          const plan = makePlan(0, { skipped: 1 });
          const sorted = [...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
          plan.mailboxes = sorted.map((name, i) => ({ ...makeMailbox(i), name, partition: name }));
          plan.skipped = [{ name: "\u0000zz", reason: "excluded", detail }];
          plan.skipped = plan.mailboxes.some((m) => m.name === "\u0000zz") ? [] : plan.skipped;
          const text = formatPlanV2(plan);
          const fast = parseYamlSubset(text);
          expect(fast.ok).toBe(true);
          expect(fast.ok && fast.value).toEqual(YAML.parse(text));
          expect(YAML.parse(text)).toEqual(JSON.parse(JSON.stringify(asV2(plan))));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("on hand-edited style variations, or hands over to the yaml library", () => {
    const base = formatPlanV2(makePlan(2, { skipped: 1 }));
    const variants = [
      base.replace(/^mailboxes:\n[\s\S]*?(?=^skipped:)/m, (section) =>
        section.replace(/^ {2}/gm, ""),
      ),
      base.replace(/^(target: 10)$/m, "$1   # was 9"),
      base.replace(/actions: \[version, guid\]/, "actions:\n      - version\n      - guid"),
      base.replace(/^pair: slot1$/m, "pair: 'slot1'"),
      base.replace(/^pair: slot1$/m, "pair: !!str slot1"),
      base.replace(/^pair: slot1$/m, "pair: &p slot1"),
      base.replace(/^tool: (.*)$/m, "tool: >\n  0.1.0"),
      base.replace(/^target: 10$/m, "target: 10.0"),
      base.replace(/^target: 10$/m, "target: 0xA"),
      `---\n${base}`,
      base.replace(/^format: /m, '"format": '),
      base.replace(/\n\n/, "\n\n# a note\n   # indented note\n\n"),
    ];
    for (const text of variants) {
      const fast = parseYamlSubset(text);
      const full = YAML.parse(text) as unknown;
      if (fast.ok) expect(fast.value).toEqual(full);
    }
    // The first three stay on the fast path.
    expect(variants.slice(0, 4).map((t) => parseYamlSubset(t).ok)).toEqual([
      true,
      true,
      true,
      true,
    ]);
  });

  it("refuses duplicate keys, which YAML forbids", () => {
    const text = formatPlanV2(makePlan(1)).replace(/^pair: slot1$/m, "pair: slot1\npair: slot2");
    expect(parseYamlSubset(text).ok).toBe(false);
    const err = thrown(() => parsePlan(text, "dup.yaml")) as PlanError;
    expect(err).toBeInstanceOf(PlanError);
    expect(err.message).toMatch(/^dup\.yaml:\d+:\d+: .*[Mm]ap keys must be unique/);
  });
});

describe("validatePlan (a guidup-plan/2 file)", () => {
  const plan = asV2(makePlan(6, { skipped: 2 }));
  const text = formatPlanV2(plan);

  it("refuses a bad action with file:line:column", () => {
    // mailboxes[3].actions[0]
    const at = positionOf(text, "actions: [", text.indexOf("name: user.u000003"));
    const bad = editLine(text, at.line, (l) => l.replace("actions: [version", "actions: [upgrade"));
    const err = thrown(() => parsePlan(bad, "plan.yaml")) as PlanError;
    expect(err).toBeInstanceOf(PlanError);
    expect(err.code).toBe("plan");
    expect(err.exitCode).toBe(ExitCode.badInput);
    expect(err.message).toBe(
      `plan.yaml:${at.line}:${at.col + "actions: [".length}: mailboxes[3].actions[0]: must be equal to one of the allowed values: "version", "guid", got "upgrade"`,
    );
  });

  it("refuses a missing field, pointing at the object", () => {
    const start = text.indexOf("name: user.u000002");
    const at = positionOf(text, "fingerprint:", text.indexOf("replica:", start));
    const lines = text.split("\n");
    lines.splice(at.line - 1, 1);
    const err = thrown(() => parsePlan(lines.join("\n"), "plan.yaml")) as PlanError;
    const replica = positionOf(text, "index:", text.indexOf("replica:", start));
    expect(err.message).toBe(
      `plan.yaml:${replica.line}:${replica.col}: mailboxes[2].replica: must have required property 'fingerprint'`,
    );
  });

  it("refuses a bad fingerprint, pointing at the value", () => {
    const at = positionOf(text, "fingerprint: ", text.indexOf("name: user.u000004"));
    const bad = editLine(text, at.line, (l) => l.replace(/"[0-9a-f]{40}"/, '"XYZ"'));
    const err = thrown(() => parsePlan(bad, "plan.yaml")) as PlanError;
    expect(err.message).toBe(
      `plan.yaml:${at.line}:${at.col + "fingerprint: ".length}: mailboxes[4].master.fingerprint: must be a SHA1: 40 lowercase hex digits, got "XYZ"`,
    );
  });

  it("names an unknown key where it is written, with a guess", () => {
    const at = positionOf(text, "partition: p2");
    const bad = editLine(text, at.line, (l) => l.replace("partition:", "partiton:"));
    const err = thrown(() => parsePlan(bad, "plan.yaml")) as PlanError;
    expect(err.message).toBe(
      `plan.yaml:${at.line}:${at.col}: mailboxes[2].partiton: unknown key (did you mean 'partition'?)`,
    );
  });

  it("lists every problem, in file order", () => {
    let bad = text.replace(/^target: 10$/m, "target: 11");
    bad = bad.replace('"guid"]', '"guid"]').replace("actions: [guid]", "actions: [guid, guid]");
    bad = bad.replace(/^format: guidup-plan\/2$/m, "format: guidup-plan/9");
    const err = thrown(() => parsePlan(bad, "p.yaml")) as PlanError;
    const lines = err.message.split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(
      /^p\.yaml:\d+:9: format: must be equal to one of the allowed values: "guidup-plan\/3", "guidup-plan\/2", got "guidup-plan\/9"$/,
    );
    expect(lines[1]).toMatch(/^p\.yaml:\d+:9: target: must be <= 10, got 11$/);
    expect(lines[2]).toMatch(/mailboxes\[4\]\.actions: must NOT have duplicate items/);
    expect(err.detail?.problems).toEqual(lines);
  });

  it("refuses a guidup-plan/1 file with one line saying to plan again", () => {
    const old = text.replace(/^format: guidup-plan\/2$/m, "format: guidup-plan/1");
    const err = thrown(() => parsePlan(old, "old.yaml")) as PlanError;
    expect(err.message).toBe(
      "old.yaml: plan format guidup-plan/1 was written by an older guidup; its entries lack the (uid, GUID) digests apply now checks: run guidup plan again",
    );
  });

  it("applies the rules: sorted, unique, not both planned and skipped", () => {
    const unsorted = structuredClone(plan);
    [unsorted.mailboxes[1], unsorted.mailboxes[2]] = [
      unsorted.mailboxes[2]!,
      unsorted.mailboxes[1]!,
    ];
    expect(() => validatePlan(unsorted)).toThrow(
      'mailboxes[2].name: not sorted by name: "user.u000001" comes after "user.u000002"',
    );
    const dup = structuredClone(plan);
    dup.mailboxes[1]!.name = "user.u000000";
    expect(() => validatePlan(dup)).toThrow(
      'mailboxes[1].name: mailbox "user.u000000" is listed twice',
    );
    const both = structuredClone(plan);
    both.skipped[0]!.name = "user.u000003";
    both.skipped.sort((a, b) => (a.name < b.name ? -1 : 1));
    expect(() => validatePlan(both)).toThrow(
      /skipped\[\d\]\.name: mailbox "user.u000003" is also planned \(mailboxes\[3\]\)/,
    );
  });

  it("locates rule problems in the file", () => {
    const bad = text.replace("name: user.u000001", "name: user.u000009");
    const at = positionOf(text, "name: user.u000002");
    expect(() => parsePlan(bad, "r.yaml")).toThrow(
      `r.yaml:${at.line}:${at.col + "name: ".length}: mailboxes[2].name: not sorted by name: "user.u000002" comes after "user.u000009"`,
    );
  });

  it("locates problems in files outside the fast reader's style too", () => {
    const bad = `${text.replace(/^pair: slot1$/m, "pair: !!str slot1")}`.replace(
      /^target: 10$/m,
      'target: "10"',
    );
    expect(parseYamlSubset(bad).ok).toBe(false);
    const at = positionOf(bad, '"10"');
    expect(() => parsePlan(bad, "t.yaml")).toThrow(
      `t.yaml:${at.line}:${at.col}: target: must be integer, got "10"`,
    );
  });

  it("reports YAML syntax errors with their position", () => {
    const err = thrown(() => parsePlan("format: [\n", "s.yaml")) as PlanError;
    expect(err).toBeInstanceOf(PlanError);
    expect(err.message).toMatch(/^s\.yaml:\d+:\d+: /);
  });

  it("without a source, names only the path", () => {
    expect(() => validatePlan({ ...plan, target: 5 })).toThrow(/^target: must be >= 6, got 5$/);
  });

  it("reads a missing file as FileAccessError", async () => {
    await expect(readPlan(join(dir, "nope.yaml"))).rejects.toMatchObject({ code: "file-access" });
  });
});

describe("a 100,000-entry plan", () => {
  it("is written and read back", async () => {
    const plan = makePlan(100_000, { skipped: 1000 });
    const file = join(dir, "big.yaml");
    const heap = () => `${Math.round(process.memoryUsage().heapUsed / 2 ** 20)} MiB`;
    let t = Date.now();
    await writePlan(file, plan);
    const size = (await readFile(file)).length;
    console.log(
      `100k plan: ${Math.round(size / 2 ** 20)} MiB written in ${Date.now() - t} ms, heap ${heap()}`,
    );
    t = Date.now();
    const back = await readPlan(file);
    console.log(`100k plan: read back in ${Date.now() - t} ms, heap ${heap()}`);
    expect(back.mailboxes).toHaveLength(100_000);
    expect(back.mailboxes[54_321]).toEqual(plan.mailboxes[54_321]);
    expect(back.skipped).toEqual(plan.skipped);
    expect(back.summary).toEqual(plan.summary);
  });

  it("in format /2 with a problem is located without the yaml library", async () => {
    const plan = makePlan(100_000);
    const file = join(dir, "big-bad.yaml");
    await writeFile(file, formatPlanV2(plan));
    const text = (await readFile(file, "utf8")).replace(
      "name: user.u099999\n    actions: [guid]",
      "name: user.u099999\n    actions: [gid]",
    );
    await writeFile(file, text);
    const at = positionOf(text, "[gid]");
    await expect(readPlan(file)).rejects.toThrow(
      `${file}:${at.line}:${at.col + 1}: mailboxes[99999].actions[0]: must be equal to one of the allowed values`,
    );
  });
});
