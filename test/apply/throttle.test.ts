// apply --max-lock-hold: when the master's lock hold p99 over the recent
// mailboxes exceeds the limit, apply runs one mailbox fewer in flight and
// says so; the run still finishes every mailbox. (A limit of 0 ms is always
// exceeded: every hold spans at least the commit round trips.)

import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  cli,
  expectAllNew,
  plannedLocalPair,
  snapshotPair,
  spawnCli,
  statusOf,
  type TestPair,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

describe("apply --max-lock-hold", () => {
  it("lowers the concurrency step by step and says so; every mailbox is done", async () => {
    const { pair, plan, planned } = await plannedLocalPair(
      { seed: 51, mailboxes: 14, versions: [8, 9], expungeFraction: 0.2 },
      { keep: pairs },
    );
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const r = await cli(["apply", plan, "--concurrency", "3", "--max-lock-hold", "0ms"], 0);
    expect(r.err).toMatch(/throttle: master lock hold p99 \d+ ms > 0 ms: concurrency 3 → 2/);
    expect(r.err).toMatch(/concurrency 2 → 1/);
    expect(r.out).toContain(`done ${planned.length}`);
    await expectAllNew(snap, pair.names);
  });

  it("--max-rate limits prepare's hashing (a cold cache: every GUID hashed in prepare); a bad rate is refused", async () => {
    const { pair, plan } = await plannedLocalPair(
      { seed: 52, mailboxes: 4, messagesPerMailbox: [2, 3] },
      { keep: pairs },
    );
    const bad = await cli(["apply", plan, "--max-rate", "0"], 2);
    expect(bad.err).toContain('--max-rate: "0" is not a positive number of MB/s');
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    const r = await cli(["apply", plan, "--max-rate", "1", "--json"], 0);
    const report = JSON.parse(r.out) as { outcomes: Record<string, number> };
    expect(report.outcomes).toEqual({ done: 4 });
    await expectAllNew(snap, pair.names);
  });

  it("--control-file: 'pause' holds new mailboxes, 'concurrency=1' lowers the lanes while it runs, an unknown line is reported", async () => {
    const { pair, plan, planned } = await plannedLocalPair(
      { seed: 53, messagesPerMailbox: [1, 2] },
      { keep: pairs },
    );
    const control = path.join(pair.dir, "control");
    await writeFile(control, "pause\nfoo=bar\n");
    const run = spawnCli(["apply", plan, "--concurrency", "3", "--control-file", control]);
    let err = "";
    const saw = (text: string) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (err.includes(text)) resolve();
        };
        run.child.stderr?.on("data", (d: Buffer) => {
          err += d.toString();
          check();
        });
        void run.done.then(() =>
          err.includes(text)
            ? resolve()
            : reject(new Error(`apply ended without "${text}":\n${err}`)),
        );
        check();
      });
    // Paused by the file (the progress line says so): nothing has started.
    await saw(`paused: ${control} says pause`);
    expect((await statusOf(plan)).counts.done).toBe(0);
    await writeFile(control, "concurrency=1 # one at a time\n");
    const r = await run.done;
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain(
      `${control}: ignoring "foo=bar" (understood: concurrency=N, pairs=N, pause)`,
    );
    expect(r.err).toContain(`${control}: concurrency 3 → 1`);
    expect(r.out).toContain(`done ${planned.length}`);
    expect((await statusOf(plan)).counts.done).toBe(planned.length);
  });
});
