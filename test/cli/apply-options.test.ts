// apply's options and its refusals (issue #10, item 8 and the small ones): a
// bare --lock-timeout number, --batch 0, an inventory given as the plan, an
// --only that matches nothing — each refused with a line that says what to
// do, nothing changed — and --batch N starting exactly N mailboxes even when
// lanes race past the pause-file check ("--batch 150 with a pause ended done
// 152").

import { existsSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cli,
  planMailboxes,
  plannedLocalPair,
  statusOf,
  type TestPair,
} from "../helpers/apply-harness.js";

let pair: TestPair;
let inventory: string;
let plan: string;
beforeAll(async () => {
  ({ pair, inventory, plan } = await plannedLocalPair({
    seed: 61,
    mailboxes: 8,
    messagesPerMailbox: [1, 2],
    messageBytes: [200, 400],
  }));
});
afterAll(async () => {
  await pair?.cleanup();
});

function oneLine(text: string): string {
  const lines = text.trim().split("\n");
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe("apply refuses, changing nothing", () => {
  it("a bare --lock-timeout number: it asks for a unit", async () => {
    const r = await cli(["apply", plan, "--lock-timeout", "30"], 2);
    expect(oneLine(r.err)).toBe(
      "guidup apply: --lock-timeout 30: give a unit, e.g. 30s for seconds or 30ms for milliseconds",
    );
    expect(existsSync(`${plan}.state`)).toBe(false);
  });

  it("--batch 0 and other numbers out of range, in words", async () => {
    const r = await cli(["apply", plan, "--batch", "0"], 2);
    expect(oneLine(r.err)).toBe("guidup apply: --batch 0: give a whole number, at least 1");
    expect(r.err).not.toContain("9007199254740991");
    const c = await cli(["apply", plan, "--concurrency", "11"], 2);
    expect(oneLine(c.err)).toBe("guidup apply: --concurrency 11: give a whole number from 1 to 9");
    const huge = await cli(["apply", plan, "--batch", "99999999999999999999"], 2);
    expect(oneLine(huge.err)).toContain("give a whole number, at least 1");
    expect(existsSync(`${plan}.state`)).toBe(false);
  });

  it("an inventory given as the plan: says so and what to run", async () => {
    const r = await cli(["apply", inventory], 2);
    expect(oneLine(r.err)).toBe(
      `guidup apply: ${inventory} is an inventory, not a plan: make a plan with guidup plan --inventory ${inventory}, then run guidup apply on the plan file it writes`,
    );
    expect(r.err).not.toContain("did you mean");
  });

  it("an --only that matches no mailbox of the plan", async () => {
    const r = await cli(["apply", plan, "--only", "user.nobody*"], 2);
    expect(oneLine(r.err)).toMatch(
      /^guidup apply: --only 'user\.nobody\*' matches none of the 8 mailboxes of .*plan\.yaml \(names look like [^)]+\); check the pattern/,
    );
    expect(existsSync(`${plan}.state`)).toBe(false);
  });
});

describe("apply --batch", () => {
  it("--batch 1 with 4 lanes and a pause file starts exactly one mailbox", async () => {
    // Every lane awaits the pause-file check before taking a mailbox: all four
    // passed the batch check before any took one, and four started.
    const absent = path.join(pair.dir, "no-such-pause-file");
    const r = await cli(
      ["apply", plan, "--batch", "1", "--concurrency", "4", "--pause-file", absent],
      1,
    );
    expect(r.out).toMatch(/: done 1; 0 were already done; 7 left \(stopped: batch\)/);
    const status = await statusOf(plan);
    expect(status.counts.done).toBe(1);
    expect(status.counts.pending).toBe((await planMailboxes(plan)).length - 1);
  });
});
