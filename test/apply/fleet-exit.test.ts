// A fleet's exit code is its worst pair's (src/apply/fleet.ts), in the order
// the README and `apply --help` give: 130 › 3 › 70 › 4 › 2 › 1 › 0. And a lone
// apply's code from its report, which every pair's comes from.

import { describe, expect, it } from "vitest";
import type { ApplyReport } from "../../src/apply/engine.js";
import { applyExitCode, WORST_FIRST, worstExitCode } from "../../src/apply/fleet.js";
import { ExitCode } from "../../src/errors.js";

function report(over: Partial<ApplyReport>): ApplyReport {
  const none = { count: 0, p50: 0, p99: 0, max: 0 };
  return {
    outcomes: {},
    processed: 0,
    alreadyDone: 0,
    remaining: 0,
    replicaAhead: [],
    problems: [],
    interrupted: false,
    elapsedMs: 0,
    lockHold: { master: none, replica: none },
    paths: {},
    drift: { appended: 0, expunged: 0, cleanedUp: 0 },
    retries: 0,
    ...over,
  };
}

describe("fleet exit codes", () => {
  it("the worst pair's, in the documented order, whatever the pairs' order", () => {
    expect(WORST_FIRST).toEqual([130, 3, 70, 4, 2, 1, 0]);
    expect(worstExitCode([])).toBe(ExitCode.ok);
    expect(worstExitCode([0, 1, 0])).toBe(1);
    expect(worstExitCode([1, 2, 0])).toBe(2);
    expect(worstExitCode([2, 4, 1])).toBe(4);
    expect(worstExitCode([4, 70, 2])).toBe(70);
    expect(worstExitCode([70, 3, 4])).toBe(3);
    expect(worstExitCode([0, 3, 130])).toBe(130);
    expect(worstExitCode([130, 0])).toBe(130);
  });

  it("a pair's code from its report: interrupted, replica-ahead, problems, lagging only, work left, done", () => {
    expect(applyExitCode(report({ interrupted: true, replicaAhead: ["x"] }))).toBe(130);
    expect(applyExitCode(report({ replicaAhead: ["x"] }))).toBe(3);
    expect(applyExitCode(report({ problems: [{ name: "x", phase: "stale" }] }))).toBe(4);
    expect(applyExitCode(report({ problems: [{ name: "x", phase: "lagging" }] }))).toBe(1);
    expect(applyExitCode(report({ remaining: 5 }))).toBe(1);
    expect(applyExitCode(report({ outcomes: { done: 3 }, processed: 3 }))).toBe(0);
  });
});
