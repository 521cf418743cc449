// apply's progress line (src/cli/apply-progress.ts), fed engine events with
// a hand-driven clock: counts per outcome by phase name (a phase the engine
// adds, like "lagging", shows under its own name), remaining of this batch,
// in flight, a rate over the time something was in flight only (a pause does
// not dilute it), no ETA before it means something, a lock-timeout requeue
// counted, and lock hold percentiles.

import { describe, expect, it } from "vitest";
import type { ApplyEvent } from "../../src/apply/engine.js";
import type { MailboxState, Phase } from "../../src/apply/state.js";
import { ApplyTally, FleetTally } from "../../src/cli/apply-progress.js";
import { percentile } from "../../src/cli/lock-hold.js";

function finished(
  name: string,
  phase: string,
  lockHeldMs?: MailboxState["lockHeldMs"],
): ApplyEvent {
  const state = {
    name,
    phase: phase as Phase,
    attempts: 1,
    updated: "2026-12-05T00:00:00.000Z",
    ...(lockHeldMs ? { lockHeldMs } : {}),
  };
  return { type: "mailbox", name, phase: phase as Phase, state };
}

describe("ApplyTally", () => {
  it("counts each outcome under its own name and shows remaining of this batch and in flight", () => {
    let t = 0;
    const tally = new ApplyTally(() => t, 6);
    tally.event({ type: "start", total: 100, alreadyDone: 10, queued: 90 });
    for (const n of ["a", "b", "c", "d", "e", "f"]) tally.event({ type: "begin", name: n });
    t = 1000;
    tally.event(finished("a", "done", { master: 4, replica: 2 }));
    tally.event(finished("b", "stale"));
    tally.event(finished("c", "lagging"));
    tally.event(finished("d", "replica-ahead"));
    const [counts] = tally.text().split("\n");
    expect(counts).toBe(
      "done 1 · stale 1 · lagging 1 · replica-ahead 1 · remaining 2 of this batch · in flight 2",
    );
  });

  it("rates over in-flight time only, and gives no ETA before 5 mailboxes and 3 s", () => {
    let t = 0;
    const tally = new ApplyTally(() => t);
    tally.event({ type: "start", total: 20, alreadyDone: 0, queued: 20 });
    const run = (name: string, ms: number) => {
      tally.event({ type: "begin", name });
      t += ms;
      tally.event(finished(name, "done", { master: ms / 2, replica: ms / 4 }));
    };
    run("m1", 1000);
    expect(tally.text()).toContain("ETA after 5 mailboxes");
    // A paused hour with nothing in flight does not count.
    tally.event({ type: "paused", file: "/tmp/pause", why: "exists" });
    expect(tally.text()).toContain("paused: /tmp/pause exists");
    t += 3_600_000;
    tally.event({ type: "resumed" });
    for (const n of ["m2", "m3", "m4", "m5"]) run(n, 1000);
    expect(tally.activeMs()).toBe(5000);
    expect(tally.rate()).toBe(1);
    const pace = tally.text().split("\n")[1];
    expect(pace).toBe("1.0/s · ETA 15s · lock hold p50/p99: master 500/500 ms, replica 250/250 ms");
  });

  it("counts a retry (lock timeout, lagging) until the mailbox runs again", () => {
    let t = 0;
    const tally = new ApplyTally(() => t);
    tally.event({ type: "start", total: 2, alreadyDone: 0, queued: 2 });
    tally.event({ type: "begin", name: "x" });
    const timedOut = finished("x", "failed");
    if (timedOut.type !== "mailbox") throw new Error("unreachable");
    timedOut.state.lastError = { code: "lock-timeout", message: "busy" };
    tally.event({ ...timedOut, type: "retry", attempt: 1, afterMs: 0 });
    tally.event({ type: "begin", name: "y" });
    const lagging = finished("y", "lagging");
    if (lagging.type !== "mailbox") throw new Error("unreachable");
    tally.event({ ...lagging, type: "retry", attempt: 1, afterMs: 2000 });
    expect(tally.text()).toContain(
      "retrying later 2 (lagging 1, lock timeout 1) · remaining 2 · in flight 0",
    );
    tally.event({ type: "begin", name: "x" });
    t = 10;
    tally.event(finished("x", "failed"));
    expect(tally.text().split("\n")[0]).toBe(
      "done 0 · failed 1 · retrying later 1 (lagging 1) · remaining 1 · in flight 0",
    );
  });

  it("percentiles are nearest-rank", () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 0.5)).toBe(50);
    expect(percentile(xs, 0.99)).toBe(99);
    expect(percentile([7], 0.99)).toBe(7);
    expect(percentile([], 0.5)).toBeUndefined();
  });
});

describe("FleetTally (apply PLAN...)", () => {
  it("sums the pairs' outcomes, says which pairs run, end and wait, and rates over the time since the first pair began", () => {
    let t = 0;
    const fleet = new FleetTally(() => t, 3);
    expect(fleet.text()).toBe(
      "pairs: 0 running, 0 ended, 3 waiting · done 0 · remaining 0+ · in flight 0",
    );
    const a = new ApplyTally(() => t);
    const b = new ApplyTally(() => t, 2);
    fleet.start(0, a);
    fleet.start(1, b);
    a.event({ type: "start", total: 4, alreadyDone: 0, queued: 4 });
    b.event({ type: "start", total: 9, alreadyDone: 1, queued: 8 });
    for (const n of ["a1", "a2", "a3", "a4"]) a.event({ type: "begin", name: n });
    b.event({ type: "begin", name: "b1" });
    t = 4000;
    for (const n of ["a1", "a2", "a3", "a4"]) a.event(finished(n, "done"));
    b.event(finished("b1", "failed"));
    fleet.ended[0] = true;
    b.event({ type: "begin", name: "b2" });
    // a: 4 done; b: 1 failed of a batch of 2, 1 in flight; c waits.
    expect(fleet.text()).toBe(
      "pairs: 1 running, 1 ended, 1 waiting · done 4 · failed 1 · remaining 1+ · in flight 1 · 1.3/s",
    );
    // A pair's own line: its counts and, once it means something, its rate.
    expect(a.line()).toBe("done 4 · remaining 0 · in flight 0");
    fleet.stopping = true;
    expect(fleet.text()).toMatch(/^pairs: 1 running, 1 ended, 1 not started · .* remaining 1 · /);
  });
});
