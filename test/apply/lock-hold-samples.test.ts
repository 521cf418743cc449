// The histogram that apply's report, its progress and status take lock hold
// percentiles from gives what the nearest-rank percentile of the raw samples
// gives, for any samples (apply's report kept every sample in an array
// before: 16 MB at a million mailboxes).

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LockHoldSamples, percentile } from "../../src/apply/lock-hold-samples.js";

describe("LockHoldSamples", () => {
  it("has the percentiles and max of the samples it was given, per side", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 500 }), { maxLength: 300 }),
        fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 300 }),
        (master, replica) => {
          const h = new LockHoldSamples();
          for (let i = 0; i < Math.max(master.length, replica.length); i++)
            h.add({ master: master[i], replica: replica[i] });
          const stats = h.holdStats();
          for (const [side, xs] of [
            ["master", master],
            ["replica", replica],
          ] as const) {
            const sorted = [...xs].sort((a, b) => a - b);
            expect(stats[side]).toEqual({
              count: xs.length,
              p50: percentile(sorted, 0.5) ?? 0,
              p99: percentile(sorted, 0.99) ?? 0,
              max: sorted.at(-1) ?? 0,
            });
            expect(h.percentiles()[side]?.n).toBe(xs.length === 0 ? undefined : xs.length);
          }
        },
      ),
    );
  });

  it("ignores absent and non-finite holds", () => {
    const h = new LockHoldSamples();
    h.add(undefined);
    h.add({ master: Number.NaN, replica: 4 });
    expect(h.holdStats()).toEqual({
      master: { count: 0, p50: 0, p99: 0, max: 0 },
      replica: { count: 1, p50: 4, p99: 4, max: 4 },
    });
  });
});
