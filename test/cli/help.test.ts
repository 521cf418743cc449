// Help texts that promised what guidup does not do (issue #10): hash's said
// apply relays the replica's cache to the master, which is opt-in.

import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/pair-fixtures.js";

describe("--help", () => {
  it("hash: the cache relay is apply's opt-in --relay-cache, hashing both sides the default advice", async () => {
    const r = await runCli(["hash", "--help"]);
    expect(r.code).toBe(0);
    expect(r.out).not.toContain("apply later relays");
    expect(r.out).toContain("--side both");
    expect(r.out).toMatch(/apply --relay-cache .* off by default/s);
  });

  it("apply: --lock-timeout takes a unit; Ctrl-C once drains, twice aborts", async () => {
    const r = await runCli(["apply", "--help"]);
    expect(r.out).toMatch(/--lock-timeout DUR .* with a unit:\s+500ms, 30s, 2m/s);
    expect(r.out).toMatch(/Ctrl-C \(or SIGINT\/SIGTERM\) once: no new mailbox starts/);
  });

  it("apply: several plans, --pairs N; --batch and --max-failures say they are per pair; a bad --pairs is refused by name", async () => {
    const r = await runCli(["apply", "--help"]);
    expect(r.out).toMatch(/^usage: guidup apply PLAN\.\.\. \[options\]/);
    expect(r.out).toMatch(/--pairs N +pairs in flight \(default 4, at most 64\)/);
    expect(r.out).toMatch(/--batch N .* PER PAIR/);
    expect(r.out).toMatch(/--max-failures N .* PER PAIR/);
    expect(r.out).toMatch(/the worst pair's code, in the order 130, 3, 70, 4, 2, 1, 0/);
    const bad = await runCli(["apply", "a.yaml", "b.yaml", "--pairs", "0"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("--pairs 0: give a whole number from 1 to 64");
    const none = await runCli(["apply"]);
    expect(none.code).toBe(2);
    expect(none.err).toContain("apply takes one or more PLAN files");
  });

  it("apply: --json documents the report's one lock-hold summary; exit 70 is named", async () => {
    const r = await runCli(["apply", "--help"]);
    expect(r.out).toMatch(
      /"lockHold": \{"master"\|"replica": \{"count",\s+"p50", "p99", "max"\} in ms\}/,
    );
    expect(r.out).not.toContain("lockHoldMs");
    expect(r.out).toMatch(/70 internal error/);
  });

  it("show: the usage line names --summary", async () => {
    const r = await runCli(["show", "--help"]);
    expect(r.out).toMatch(/^usage: guidup show PLAN \[--summary\]/);
  });

  it("status: several plans and the fleet's JSON shape", async () => {
    const r = await runCli(["status", "--help"]);
    expect(r.out).toMatch(/^usage: guidup status PLAN\.\.\. /);
    expect(r.out).toMatch(/several plans:\s+\{"plans": \[that, per plan\], "fleet"/);
  });
});
