// The control file steers a whole fleet (apply PLAN... --control-file F):
// `pairs=1` holds the second pair back (it does not even take its state
// directory), `pause` pauses every running pair, and emptying the file lets
// the fleet finish. Each step is waited for on what apply prints.

import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  planLocalFleet,
  planMailboxes,
  smallPair,
  spawnCli,
  stateOf,
  type TestPair,
} from "../helpers/apply-harness.js";

const made: TestPair[] = [];
afterAll(async () => {
  await Promise.all(made.map((p) => p.cleanup()));
});

describe("apply PLAN... --control-file", () => {
  it("pairs=1 holds the second pair back, pause pauses every pair, an empty file lets the fleet finish", async () => {
    const pairs: TestPair[] = [];
    for (const seed of [91, 92])
      pairs.push(await smallPair({ seed, mailboxes: 4, messagesPerMailbox: [1, 2] }, made));
    const dir = pairs[0]!.dir;
    const { plans } = await planLocalFleet(pairs, ["p0", "p1"]);
    const control = path.join(dir, "control");
    await writeFile(control, "pairs=1\npause\n");
    const run = spawnCli(["apply", ...plans, "--pairs", "2", "--control-file", control]);
    let err = "";
    run.child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const saw = (re: RegExp) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (re.test(err)) resolve();
        };
        run.child.stderr?.on("data", check);
        void run.done.then(() =>
          re.test(err) ? resolve() : reject(new Error(`apply ended without ${re}:\n${err}`)),
        );
        check();
      });

    // One pair in flight, and it is paused; the other has not started.
    await saw(/pairs in flight 2 → 1/);
    await saw(new RegExp(`p0 *: done 0 · .*paused: ${control} says pause`));
    // p1's line may come in a later write than p0's: wait for it.
    await saw(/p1 *: waiting/);
    expect(existsSync(`${plans[1]}.state`)).toBe(false);

    // Both pairs may run now, still paused: the second starts and pauses too.
    await writeFile(control, "pause\n");
    await saw(new RegExp(`p1 *: done 0 · .*paused: ${control} says pause`));
    for (const p of plans)
      expect(await stateOf(p, (await planMailboxes(p))[0]!), p).toBeUndefined();

    await writeFile(control, "");
    const r = await run.done;
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/fleet of 2 pairs: 2 applied, 0 not applied, 0 not started; done 8;/);
    expect(r.err).toContain(`${control}: pairs in flight 1 → 2`);
  });
});
