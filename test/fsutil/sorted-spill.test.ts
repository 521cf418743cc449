// The external sort behind plan's mailbox list and skipped entries: more
// records than a run are written to run files and merged back in key order,
// stable for equal keys, in the plan's byte order of UTF-8 names; its files
// are gone afterwards.

import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SortedSpill, type SpillRecord } from "../../src/fsutil/sorted-spill.js";
import { compareNames } from "../../src/plan/build.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-spill-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect(spill: SortedSpill): Promise<SpillRecord[]> {
  const out: SpillRecord[] = [];
  for await (const r of spill.sorted()) out.push(r);
  return out;
}

describe("SortedSpill", () => {
  it("merges many runs into key order, equal keys in the order added, and removes its run files", async () => {
    const spill = new SortedSpill({
      pathPrefix: join(dir, "s"),
      compare: compareNames,
      runRecords: 7,
    });
    const added: SpillRecord[] = [];
    // Keys repeat (each three times, far apart) and come in no order;
    // values say which copy each is.
    for (let copy = 0; copy < 3; copy++)
      for (let i = 0; i < 50; i++) {
        const key = `user.u${String((i * 37) % 50).padStart(3, "0")}`;
        const record = [key, `copy ${copy}`, 'with "quotes", a tab\tand ünïcödé'];
        added.push(record);
        await spill.add(record);
      }
    expect(spill.count).toBe(150);
    expect(spill.runs).toBe(21);
    expect((await readdir(dir)).length).toBe(21);
    const expected = [...added].sort((a, b) => compareNames(a[0] as string, b[0] as string));
    expect(await collect(spill)).toEqual(expected);
    expect(await readdir(dir)).toEqual([]);
  });

  it("orders by the UTF-8 bytes of the keys, not UTF-16 code units", async () => {
    // U+FF01 sorts before U+1F600 in UTF-8 bytes (EF.. < F0..), after it in
    // UTF-16 code units (FF01 > D83D).
    const keys = ["user.a\u{1F600}", "user.a\uFF01", "user.a~", "user.a", "user.a\u00e9"];
    for (const runRecords of [100, 2]) {
      const spill = new SortedSpill({
        pathPrefix: join(dir, `k${runRecords}`),
        compare: compareNames,
        runRecords,
      });
      for (const k of keys) await spill.add([k]);
      expect((await collect(spill)).map((r) => r[0])).toEqual([
        "user.a",
        "user.a~",
        "user.a\u00e9",
        "user.a\uFF01",
        "user.a\u{1F600}",
      ]);
    }
  });

  it("holds few records in memory without writing a file, and discard removes written runs", async () => {
    const small = new SortedSpill({ pathPrefix: join(dir, "small"), compare: compareNames });
    await small.add(["b"]);
    await small.add(["a"]);
    expect(small.runs).toBe(0);
    expect(await collect(small)).toEqual([["a"], ["b"]]);

    const dropped = new SortedSpill({
      pathPrefix: join(dir, "dropped"),
      compare: compareNames,
      runRecords: 1,
    });
    await dropped.add(["x"]);
    await dropped.add(["y"]);
    expect((await readdir(dir)).length).toBe(2);
    await dropped.discard();
    expect(await readdir(dir)).toEqual([]);
  });

  it("a merge stopped early removes the run files too", async () => {
    const spill = new SortedSpill({
      pathPrefix: join(dir, "early"),
      compare: compareNames,
      runRecords: 2,
    });
    for (const k of ["d", "c", "b", "a", "e"]) await spill.add([k]);
    for await (const r of spill.sorted()) {
      expect(r).toEqual(["a"]);
      break;
    }
    expect(await readdir(dir)).toEqual([]);
  });
});
