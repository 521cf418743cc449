// guidup status (issue #10, "make the long run legible"): exit non-zero when
// mailboxes need a person, --only, and lock hold percentiles from the state.

import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cli,
  planMailboxes,
  plannedLocalPair,
  runCli,
  sleep,
  spawnCli,
  type TestPair,
  waitForFile,
} from "../helpers/apply-harness.js";

let pair: TestPair;
let plan: string;
let broken: string;
beforeAll(async () => {
  ({ pair, plan } = await plannedLocalPair({ seed: 71, messageBytes: [200, 400] }));
  // One mailbox loses a message file on the replica: apply fails it.
  broken = (await planMailboxes(plan))[2]!;
  const dir = pair.mailboxDir("replica", broken);
  const message = (await readdir(dir)).find((f) => /^\d+\.$/.test(f))!;
  await rm(path.join(dir, message));
  await cli(["apply", plan], 4);
});
afterAll(async () => {
  await pair?.cleanup();
});

/** Waits until `file` contains `text` (the owner note is written after the lock is taken). */
async function waitForText(file: string, text: string): Promise<void> {
  while (!(await readFile(file, "utf8")).includes(text)) await sleep(20);
}

describe("guidup status", () => {
  it("exits 4 when a mailbox needs a person, lists it and says what next; gives lock hold p50/p99", async () => {
    const r = await runCli(["status", plan]);
    expect(r.code, r.err).toBe(4);
    expect(r.out).toMatch(/^ {2}done {10}5$/m);
    expect(r.out).toMatch(/^ {2}failed {8}1$/m);
    expect(r.out).toMatch(
      /^ {2}lock hold p50\/p99: master \d+\/\d+ ms, replica \d+\/\d+ ms \(of 5 done\)$/m,
    );
    expect(r.out).toContain(`failed        ${broken}`);
    expect(r.out).toMatch(/guidup apply .*plan\.yaml retries them/);
    const json = JSON.parse((await runCli(["status", plan, "--json"])).out);
    expect(json.lockHoldMs.master.n).toBe(5);
    expect(json.lockHoldMs.replica.p99).toBeGreaterThanOrEqual(json.lockHoldMs.replica.p50);
    // How many done mailboxes took each cut-over path (nothing changed between prepare and lock).
    expect(json.paths).toEqual({ prepared: 5 });
    expect(r.out).toMatch(/^ {2}cut-over paths: prepared 5$/m);
  });

  it("--only narrows the counts and the exit code to the matching mailboxes", async () => {
    const mine = await runCli(["status", plan, "--only", broken]);
    expect(mine.code).toBe(4);
    expect(mine.out).toContain("1 planned mailboxes of 6, matching --only");
    const others = (await planMailboxes(plan)).filter((n) => n !== broken);
    const rest = await runCli(["status", plan, ...others.flatMap((n) => ["--only", n])]);
    expect(rest.code, rest.out).toBe(0);
    expect(rest.out).toMatch(/^ {2}done {10}5$/m);
    expect(rest.out).not.toContain("failed");
  });

  it("says when an apply of the plan is running, and whose", async () => {
    const idle = await runCli(["status", plan, "--json"]);
    expect(JSON.parse(idle.out).running).toBeNull();
    // A second apply waits on its pause file, holding the state lock.
    const pause = path.join(pair.dir, "pause");
    await writeFile(pause, "");
    const running = spawnCli(["apply", plan, "--pause-file", pause]);
    await waitForFile(path.join(`${plan}.state`, ".owner"));
    await waitForText(path.join(`${plan}.state`, ".owner"), `pid ${running.child.pid}`);
    const r = await runCli(["status", plan]);
    expect(r.out).toMatch(
      new RegExp(`^ {2}an apply of this plan is running: pid ${running.child.pid}, plan t-`, "m"),
    );
    await rm(pause);
    await running.done;
    expect(JSON.parse((await runCli(["status", plan, "--json"])).out).running).toBeNull();
  });

  it("refuses an --only that matches nothing", async () => {
    const r = await runCli(["status", plan, "--only", "nobody.*"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--only 'nobody\.\*' matches none of the 6 mailboxes/);
  });
});
