// The first apply of a plan file knows every entry good before it touches
// a mailbox. A plan as guidup wrote it (its bodySha256 matches) needs no
// pass checking each entry; an edited one — a reviewer's note, a deleted
// entry, another digest — gets that pass, with a note saying why, and a
// broken entry deep in it is refused before any mailbox is touched.

import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  classifyPair,
  cli,
  expectAllNew,
  plannedLocalPair,
  snapshotPair,
  stateOf,
  type TestPair,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

const EDITED_NOTE =
  "plan edited since guidup wrote it (its bodySha256 differs): checking every entry";

const markerOf = (plan: string) => path.join(`${plan}.state`, "plan-checked");

/** The line of the planned entry of `name` (without its newline). */
function entryLine(text: string, name: string): string {
  const line = text.split("\n").find((l) => l.startsWith(`  - { "name": ${JSON.stringify(name)},`));
  if (line === undefined) throw new Error(`no entry line for ${name}`);
  return line;
}

/** Files under the state directory's per-mailbox subdirectories (xx/<sha1>.json). */
async function mailboxStateFiles(plan: string): Promise<string[]> {
  const dir = `${plan}.state`;
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const sub of await readdir(dir, { withFileTypes: true }))
    if (sub.isDirectory() && /^[0-9a-f]{2}$/.test(sub.name))
      out.push(...(await readdir(path.join(dir, sub.name))));
  return out;
}

describe("apply's first run of a plan file", () => {
  it("skips checking each entry when the plan is as guidup wrote it (bodySha256 matches)", async () => {
    const { plan, planned } = await plannedLocalPair({ seed: 1101, mailboxes: 8 }, { keep: pairs });
    expect(planned).toHaveLength(8);
    expect(await readFile(plan, "utf8")).toMatch(/\nbodySha256: "[0-9a-f]{64}"\nmailboxes:\n/);
    const first = await cli(["apply", plan, "--batch", "2"], 1);
    expect(first.out).toContain("done 2; 0 were already done; 6 left (stopped: batch)");
    expect(first.err).not.toContain("checking every entry");
    expect(await readFile(markerOf(plan), "utf8")).toMatch(
      /\nentries 8 finished-elsewhere 0\nchecked-by bodySha256\n$/,
    );
    const rest = await cli(["apply", plan], 0);
    expect(rest.out).toContain("done 6; 2 were already done; 0 left");
  });

  it("checks every entry of an edited plan first, says why, and applies what it lists", async () => {
    const { pair, plan, planned } = await plannedLocalPair(
      { seed: 1102, mailboxes: 8 },
      { keep: pairs },
    );
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const text = await readFile(plan, "utf8");
    // A reviewer's note above one entry, another entry's line deleted.
    const left = planned[3] as string;
    const edited = text
      .replace(entryLine(text, planned[1] as string), (l) => `  # checked by hand\n${l}`)
      .replace(`${entryLine(text, left)}\n`, "");
    await writeFile(plan, edited);
    const r = await cli(["apply", plan], 0);
    expect(r.err).toContain(`${plan}: ${EDITED_NOTE}`);
    expect(r.out).toContain("done 7; 0 were already done; 0 left");
    expect(await readFile(markerOf(plan), "utf8")).toMatch(
      /\nentries 7 finished-elsewhere 0\nchecked-by entries\n$/,
    );
    await expectAllNew(
      snap,
      planned.filter((n) => n !== left),
    );
    const untouched = await classifyPair(snap, [left]);
    expect(untouched.map((s) => s.state)).toEqual(["old", "old"]);
    expect(await stateOf(plan, left)).toBeUndefined();
  });

  it("refuses a broken entry deep in an edited plan before touching any mailbox; another digest is checked entry by entry", async () => {
    const { pair, plan, planned } = await plannedLocalPair(
      { seed: 1103, mailboxes: 8 },
      { keep: pairs },
    );
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const text = await readFile(plan, "utf8");
    const last = entryLine(text, planned.at(-1) as string);
    const lineNo = text.split("\n").indexOf(last) + 1;
    await writeFile(
      plan,
      text.replace(last, last.replace('"actions": [', '"actions": ["bogus", ')),
    );
    const refused = await cli(["apply", plan], 2);
    expect(refused.err).toMatch(new RegExp(`${plan}:${lineNo}:5: mailboxes\\[7\\]\\.actions`));
    expect(refused.err).toContain(EDITED_NOTE);
    // Nothing touched: no mailbox state, every mailbox as it was on both
    // hosts, and the plan not recorded as checked.
    expect(await mailboxStateFiles(plan)).toEqual([]);
    for (const name of planned) expect(await stateOf(plan, name)).toBeUndefined();
    const states = await classifyPair(snap, planned);
    expect(states.filter((s) => s.state !== "old" || s.leftovers.length > 0)).toEqual([]);
    expect(existsSync(markerOf(plan))).toBe(false);

    // The entries as guidup wrote them under another digest: checked one by one, then applied.
    const digest = /\nbodySha256: "([0-9a-f]{64})"\n/.exec(text)?.[1] as string;
    const other = digest.replace(/.$/, (c) => (c === "a" ? "b" : "a"));
    await writeFile(plan, text.replace(digest, other));
    const r = await cli(["apply", plan], 0);
    expect(r.err).toContain(`${plan}: ${EDITED_NOTE}`);
    expect(r.out).toContain("done 8; 0 were already done; 0 left");
    expect(await readFile(markerOf(plan), "utf8")).toMatch(/\nchecked-by entries\n$/);
    await expectAllNew(snap, planned);
  });
});
