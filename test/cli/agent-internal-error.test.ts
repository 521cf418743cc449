// An agent's internal error (a bug in the agent, not bad input) must exit 70
// through the real CLI, as the same bug in the controller would: the wire
// carries the code "internal" and the client maps it through src/errors.ts
// ERRORS. The agent is the real `guidup serve`; the bug is planted the only
// way a real host could show one without a hook in guidup: a --import preload
// that makes the directory walk of `discover` throw a plain TypeError.

import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERRORS } from "../../src/errors.js";
import {
  DIST_MAIN,
  makeFixturePair,
  type PairFixture,
  runCliProcess,
} from "../helpers/pair-fixtures.js";

/** Every Dirent's isDirectory() throws: the agent's directory walk hits a non-guidup error. */
const BUGGY_WALK = `data:text/javascript,${encodeURIComponent(
  'import fs from "node:fs"; fs.Dirent.prototype.isDirectory = function () { throw new TypeError("planted bug in the directory walk"); };',
)}`;

let pair: PairFixture;
beforeAll(async () => {
  pair = await makeFixturePair("08");
});
afterAll(async () => {
  await pair?.cleanup();
});

function inventory(masterCommand?: string[]): string {
  const file = path.join(pair.dir, `internal-${masterCommand ? "buggy" : "plain"}.yaml`);
  const host = (side: "master" | "replica", command?: string[]) => [
    `    ${side}:`,
    "      transport: local",
    `      name: ${side}`,
    `      config: ${JSON.stringify(pair[side].imapdConf)}`,
    ...(command ? [`      command: ${JSON.stringify(command)}`] : []),
  ];
  fs.writeFileSync(
    file,
    [
      "pairs:",
      "  - name: slot1",
      "    mailboxes: { discover: true }",
      ...host("master", masterCommand),
      ...host("replica"),
      "",
    ].join("\n"),
  );
  return file;
}

describe("an agent's internal error", () => {
  it("exits 70 through the real CLI, naming the host and the bug", async () => {
    const buggy = inventory([process.execPath, "--import", BUGGY_WALK, DIST_MAIN, "serve"]);
    const r = await runCliProcess([
      "plan",
      "--inventory",
      buggy,
      "--out",
      path.join(pair.dir, "internal.plan.yaml"),
    ]);
    expect(r.err).toContain(
      "master: internal error in the agent: planted bug in the directory walk",
    );
    expect(r.err).toContain(ERRORS.internal.next);
    expect(r.code).toBe(70);
    expect(fs.existsSync(path.join(pair.dir, "internal.plan.yaml"))).toBe(false);
  });

  it("the same plan without the planted bug succeeds (the exit is the bug's, not the set-up's)", async () => {
    const out = path.join(pair.dir, "plain.plan.yaml");
    const r = await runCliProcess(["plan", "--inventory", inventory(), "--out", out]);
    expect(r.err).not.toContain("internal error");
    expect(r.code).toBe(0);
    expect(fs.existsSync(out)).toBe(true);
  });
});
