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
});
