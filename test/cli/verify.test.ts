// guidup verify (issue #10, "make the long run legible"): --plan PLAN checks
// only that plan's mailboxes on its hosts, --only GLOB narrows, the output is
// a summary per pair (mailboxes per result) with a line per problem mailbox,
// sorted by name, and --details for every problem.

import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeDifference } from "../../src/apply/verify-pair.js";
import { IndexReader } from "../../src/cyrus/index-file.js";
import { cli, plannedLocalPair, runCli, type TestPair } from "../helpers/apply-harness.js";

let pair: TestPair;
let inventory: string;
let plan: string;
let planned: string[];
beforeAll(async () => {
  ({ pair, inventory, plan, planned } = await plannedLocalPair({
    seed: 81,
    messageBytes: [200, 400],
  }));
  // Half of the plan applied.
  await cli(["apply", plan, ...planned.slice(0, 3).flatMap((n) => ["--only", n])], 0);
});
afterAll(async () => {
  await pair?.cleanup();
});

describe("guidup verify", () => {
  it("--plan --only the applied mailboxes: OK", async () => {
    const r = await runCli([
      "verify",
      "--plan",
      plan,
      ...planned.slice(0, 3).flatMap((n) => ["--only", n]),
    ]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^verify t: 3 mailboxes, \d+ \+ \d+ records hashed: OK\n$/);
  });

  it("--plan: a summary by result, then one line per problem mailbox, sorted; --details lists all", async () => {
    const r = await runCli(["verify", "--plan", plan]);
    expect(r.code, r.err).toBe(1);
    const lines = r.out.trimEnd().split("\n");
    expect(lines[0]).toMatch(
      /^verify t: 6 mailboxes, \d+ \+ \d+ records hashed: 3 with problems \(ok 3, not-at-target 3\)$/,
    );
    const named = lines
      .filter((l) => l.startsWith("  not-at-target"))
      .map((l) => /^ {2}not-at-target +(.*?): (?:master|replica): /.exec(l)?.[1]);
    expect(named).toEqual([...planned.slice(3)].sort());
    expect(lines.filter((l) => /^ {4}… and \d+ more problem\(s\)/.test(l))).toHaveLength(3);
    expect(lines).toHaveLength(7);
    const d = await runCli(["verify", "--plan", plan, "--details"]);
    expect(d.out.split("\n").filter((l) => l.startsWith("  not-at-target"))).toHaveLength(6);
    expect(d.out).not.toContain("more problem(s)");
  });

  it("--inventory --only: the pair's mailboxes matching the glob", async () => {
    const r = await runCli(["verify", "--inventory", inventory, "--only", planned[0]!]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^verify t: 1 mailboxes, .*: OK$/m);
  });

  it("a mailbox whose two sides differ names the UIDs to look at", async () => {
    // Another GUID under one UID on the replica's copy of an applied mailbox
    // (what replication of a differing file would leave).
    const name = planned[0]!;
    const index = path.join(pair.mailboxDir("replica", name), "cyrus.index");
    const reader = await IndexReader.open(index, { kind: "index" });
    let uid = 0;
    let guid = Buffer.alloc(0);
    try {
      for await (const chunk of reader.chunks()) {
        uid = chunk.buf.readUInt32BE(0);
        // v10 (88-byte records): the GUID is bytes 60..80, before MODSEQ.
        guid = Buffer.from(chunk.buf.subarray(60, 80));
        break;
      }
    } finally {
      await reader.close();
    }
    const bytes = await readFile(index);
    const at = bytes.indexOf(guid);
    expect(at).toBeGreaterThan(0);
    bytes[at] = (bytes[at]! + 1) & 0xff;
    await writeFile(index, bytes);

    const r = await runCli(["verify", "--plan", plan, "--only", name, "--details"]);
    expect(r.code, r.err).toBe(1);
    expect(r.out).toContain(
      `master and replica (uid, GUID) lists differ: same UID, other GUID: uid ${uid} (1)`,
    );
    expect(r.out).toMatch(new RegExp(`replica: uid ${uid}: GUID [0-9a-f]{40} is not the SHA1`));
  });

  it("describeDifference: other GUIDs, and UIDs on one side only, the first few by number", () => {
    const list = (entries: [number, number][]) => {
      const b = Buffer.alloc(entries.length * 24);
      entries.forEach(([u, g], i) => {
        b.writeUInt32BE(u, i * 24);
        b.fill(g, i * 24 + 4, i * 24 + 24);
      });
      return b.toString("base64");
    };
    const master = list([1, 2, 3, 4, 5, 6, 7, 8].map((u) => [u, u === 2 ? 9 : 1]));
    const replica = list([
      [1, 1],
      [2, 1],
      [3, 1],
      [10, 1],
    ]);
    expect(describeDifference(master, replica)).toBe(
      ": same UID, other GUID: uid 2 (1); only on master: uid 4, 5, 6, 7, 8 (5); only on replica: uid 10 (1)",
    );
    expect(describeDifference(master, master)).toBe("");
    expect(describeDifference(undefined, replica)).toBe("");
  });

  it("refuses --plan with --inventory, and an --only that matches nothing", async () => {
    const both = await runCli(["verify", "--plan", plan, "--inventory", inventory]);
    expect(both.code).toBe(2);
    expect(both.err).toMatch(/give --plan alone/);
    const none = await runCli(["verify", "--plan", plan, "--only", "nobody"]);
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/--only 'nobody' matches none of the 6 mailboxes/);
  });
});
