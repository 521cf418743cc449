// apply counts what is done and left from the state index and the
// plan-checked marker (no pass over the plan's names after the first run of
// a plan file): the counts must agree with a full pass, also after a
// reviewer deleted the line of a mailbox already done.

import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cli, plannedLocalPair, type TestPair } from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

describe("apply's counts from the index", () => {
  it("agree with a pass over the plan, also after a done entry's line is deleted", async () => {
    const { plan, planned } = await plannedLocalPair(
      { seed: 47, mailboxes: 12, versions: [9], messagesPerMailbox: [0, 2] },
      { keep: pairs },
    );
    expect(planned).toHaveLength(12);
    const marker = path.join(`${plan}.state`, "plan-checked");

    const first = await cli(["apply", plan, "--batch", "4"], 1);
    expect(first.out).toContain("done 4; 0 were already done; 8 left (stopped: batch)");
    expect(await readFile(marker, "utf8")).toMatch(
      /\nentries 12 finished-elsewhere 0\nchecked-by bodySha256\n$/,
    );
    // Counted from the index and the marker.
    const second = await cli(["apply", plan, "--batch", "2"], 1);
    expect(second.out).toContain("done 2; 4 were already done; 6 left (stopped: batch)");

    // The reviewer deletes a done mailbox's line: the changed file is
    // checked and counted again, its done record no longer counts.
    const text = await readFile(plan, "utf8");
    const line = text.split("\n").find((l) => l.includes(`"name": ${JSON.stringify(planned[0])}`));
    expect(line).toBeDefined();
    await writeFile(plan, text.replace(`${line}\n`, ""));
    const third = await cli(["apply", plan, "--batch", "2"], 1);
    expect(third.out).toContain("done 2; 5 were already done; 4 left (stopped: batch)");
    expect(await readFile(marker, "utf8")).toMatch(
      /\nentries 11 finished-elsewhere 1\nchecked-by entries\n$/,
    );
    const fourth = await cli(["apply", plan], 0);
    expect(fourth.out).toContain("done 4; 7 were already done; 0 left");
  });
});
