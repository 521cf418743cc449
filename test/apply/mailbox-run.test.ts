// runMailbox's steps against a scripted fake lane (allowed by issue #9: the
// real-agent fault matrix in test/fault/apply-matrix.test.ts is the
// integration layer). Each side is a tiny model of an agent and its files
// (old / new, locked, staged); a fault is injected at every (side, op) as a
// host error, a dead connection before the host acts, or one after it
// acted. For every point: the outcome is one of the allowed ones, the master
// is never upgraded while the replica is not, no state is written while the
// master is locked, and a plain rerun converges to done on both sides.

import { describe, expect, it } from "vitest";
import type { Lane, Side } from "../../src/apply/lanes.js";
import { type MailboxRunContext, runMailbox } from "../../src/apply/mailbox-run.js";
import type { MailboxState } from "../../src/apply/state.js";
import type { PlannedMailbox } from "../../src/plan/model.js";
import type { FileFacts, MailboxScan } from "../../src/protocol/messages.js";
import { AgentError } from "../../src/transport/agent-client.js";

const OLD = "0".repeat(40);
const NEW = "1".repeat(40);
const SET = "2".repeat(40);
const FP = "3".repeat(40);

function facts(minor: number, oldStyle: number): FileFacts {
  return {
    minor,
    records: 3,
    oldStyle,
    nullGuids: 0,
    oldStyleBytes: 30,
    lastUid: 3,
    uidValidity: 9,
  };
}

const ENTRY: PlannedMailbox = {
  name: "user.x",
  actions: ["version", "guid"],
  master: { index: facts(9, 3), fingerprint: FP, planned: { records: 3, digest: SET } },
  replica: { index: facts(9, 3), fingerprint: FP, planned: { records: 3, digest: SET } },
};

type Op = "prepare" | "lock" | "commit" | "rollback" | "status";
type Kind = "error" | "lock-timeout" | "dead-before" | "dead-after";
interface Fault {
  side: Side;
  op: Op;
  kind: Kind;
}

class FakeSide {
  files: "old" | "new" = "old";
  locked = false;
  /** What this side's staged list would be (a lagging replica differs). */
  stagedDigest = NEW;
  pairs = Buffer.alloc(0);

  scan(): MailboxScan {
    return this.files === "old"
      ? { name: "user.x", status: "ok", index: facts(9, 3), fingerprint: FP, guidDigest: OLD }
      : {
          name: "user.x",
          status: "ok",
          index: facts(10, 0),
          fingerprint: "4".repeat(40),
          guidDigest: NEW,
        };
  }
  answer(op: Op, args: Record<string, unknown>): unknown {
    const check = {
      upTo: 3,
      records: 3,
      digest: this.files === "old" ? SET : "5".repeat(40),
      indexUpTo: 3,
      appended: 0,
    };
    const staged = {
      path: this.files === "old" ? "prepared" : "unchanged",
      files: { index: this.files === "old" ? "prepared" : "unchanged" },
      changed: this.files === "old",
      guidDigest: this.files === "old" ? this.stagedDigest : NEW,
      counts: {
        records: 3,
        expungeRecords: 0,
        computed: 0,
        fromCache: 3,
        relayedVerified: 0,
        kept: 0,
      },
    };
    switch (op) {
      case "prepare":
        return {
          scan: this.scan(),
          check,
          staged,
          needs: 3,
          computed: 0,
          fromCache: 3,
          relayedVerified: 0,
        };
      case "lock":
        if (this.locked) throw new Error("fake: locked twice");
        this.locked = true;
        return { scan: this.scan(), check, staged, removedStale: [], waitedMs: 0 };
      case "commit":
        if (!this.locked) throw new Error("fake: commit without lock");
        this.files = "new";
        this.locked = false;
        return { renamed: [], lockHeldMs: 1 };
      case "rollback":
        this.locked = false;
        return {
          removed: [],
          lockHeldMs: 1,
          ...(args.pairs ? { pairs: this.pairs.toString("base64") } : {}),
        };
      case "status":
        return { session: "idle", scan: this.scan() };
    }
  }
}

function fakeLane(sides: Record<Side, FakeSide>, events: string[], fault?: Fault): Lane {
  let fired = false;
  const agent = (side: Side) => ({
    closed: false,
    async request(op: Op, args: Record<string, unknown>) {
      events.push(`${side}:${op}`);
      if (fault && !fired && fault.side === side && fault.op === op) {
        fired = true;
        if (fault.kind === "error") throw new AgentError(side, "file-access", "EIO (scripted)");
        if (fault.kind === "lock-timeout")
          throw new AgentError(side, "lock-timeout", "busy (scripted)");
        if (fault.kind === "dead-before") {
          sides[side].locked = false; // locks die with the agent
          throw new Error("connection lost (scripted)");
        }
        sides[side].answer(op, args);
        sides[side].locked = false;
        throw new Error("connection lost after the host acted (scripted)");
      }
      return sides[side].answer(op, args);
    },
  });
  return {
    agent: async (side: Side) => agent(side),
    discard: async () => {},
    close: async () => {},
  } as unknown as Lane;
}

function ctx(
  events: string[],
  saved: MailboxState[],
  sides?: Record<Side, FakeSide>,
): MailboxRunContext {
  return {
    target: 10,
    lockTimeoutMs: 1000,
    drift: "contract",
    now: () => new Date(0).toISOString(),
    save: async (s) => {
      // Never a state write while the master is locked (issue #9).
      if (sides) expect(sides.master.locked, events.join(" ")).toBe(false);
      events.push(`save:${s.phase}`);
      saved.push(structuredClone(s));
    },
  };
}

const ALLOWED: Record<string, string[]> = {
  done: ["new/new"],
  failed: ["old/old", "new/new"],
  // new/new: the master committed but its answer was lost; the rerun sees it done.
  "replica-ahead": ["old/new", "new/new"],
};

describe("runMailbox against a scripted fake lane: every failure point", () => {
  const points: Fault[] = [];
  for (const side of ["master", "replica"] as Side[])
    for (const op of ["prepare", "lock", "commit", "rollback"] as Op[])
      for (const kind of ["error", "dead-before", "dead-after"] as Kind[])
        points.push({ side, op, kind });

  for (const fault of points) {
    it(`${fault.kind} at ${fault.side} ${fault.op}`, async () => {
      const sides = { master: new FakeSide(), replica: new FakeSide() };
      const events: string[] = [];
      const saved: MailboxState[] = [];
      const first = await runMailbox(
        ctx(events, saved, sides),
        fakeLane(sides, events, fault),
        ENTRY,
        undefined,
      );
      const files = `${sides.master.files}/${sides.replica.files}`;
      expect(ALLOWED[first.phase], `${first.phase} with ${files}: ${events.join(" ")}`).toContain(
        files,
      );
      expect(files).not.toBe("new/old"); // never the master ahead of its replica
      expect(sides.master.locked || sides.replica.locked).toBe(false);
      expect(saved.length).toBeLessThanOrEqual(2); // before the locks, the outcome

      // A plain rerun: the files decide.
      const again = await runMailbox(ctx([], []), fakeLane(sides, []), ENTRY, first);
      expect(again.phase, JSON.stringify(again.lastError)).toBe("done");
      expect(`${sides.master.files}/${sides.replica.files}`).toBe("new/new");
    });
  }

  it("the replica is locked first, the master with the short wait, and released first", async () => {
    const sides = { master: new FakeSide(), replica: new FakeSide() };
    const events: string[] = [];
    const st = await runMailbox(ctx(events, []), fakeLane(sides, events), ENTRY, undefined);
    expect(st.phase).toBe("done");
    expect(events.filter((e) => !e.startsWith("save"))).toEqual([
      "master:prepare",
      "replica:prepare",
      "replica:lock",
      "master:lock",
      "replica:commit",
      "master:commit",
    ]);
    expect(events.filter((e) => e.startsWith("save"))).toEqual(["save:in-progress", "save:done"]);
  });

  it("a busy master: the replica is released, the outcome asks for a retry (lock-timeout at lock-master)", async () => {
    const sides = { master: new FakeSide(), replica: new FakeSide() };
    const events: string[] = [];
    const st = await runMailbox(
      ctx(events, []),
      fakeLane(sides, events, { side: "master", op: "lock", kind: "lock-timeout" }),
      ENTRY,
      undefined,
    );
    expect(st).toMatchObject({
      phase: "failed",
      lastError: { code: "lock-timeout", step: "lock-master" },
    });
    expect(events).toContain("replica:rollback");
    expect(sides.replica.locked).toBe(false);
  });

  it("a lagging replica: both released, phase lagging with the missing UIDs; done once it caught up", async () => {
    const sides = { master: new FakeSide(), replica: new FakeSide() };
    sides.replica.stagedDigest = "6".repeat(40);
    const pair = (uid: number) => {
      const b = Buffer.alloc(24);
      b.writeUInt32BE(uid);
      b.fill(7, 4);
      return b;
    };
    sides.master.pairs = Buffer.concat([pair(1), pair(2), pair(3), pair(4)]);
    sides.replica.pairs = Buffer.concat([pair(1), pair(2), pair(3)]);
    const st = await runMailbox(ctx([], []), fakeLane(sides, []), ENTRY, undefined);
    expect(st).toMatchObject({
      phase: "lagging",
      lastError: {
        code: "lagging",
        message: "replica behind by 1 UIDs (uid 4); waiting for replication",
      },
    });
    expect(`${sides.master.files}/${sides.replica.files}`).toBe("old/old");
    sides.replica.stagedDigest = NEW;
    expect((await runMailbox(ctx([], []), fakeLane(sides, []), ENTRY, st)).phase).toBe("done");
  });

  it("same UID, different GUID: diverged naming the UID, nothing committed", async () => {
    const sides = { master: new FakeSide(), replica: new FakeSide() };
    sides.replica.stagedDigest = "6".repeat(40);
    const pair = (uid: number, g: number) => {
      const b = Buffer.alloc(24);
      b.writeUInt32BE(uid);
      b.fill(g, 4);
      return b;
    };
    sides.master.pairs = Buffer.concat([pair(1, 7), pair(2, 7)]);
    sides.replica.pairs = Buffer.concat([pair(1, 7), pair(2, 8)]);
    const st = await runMailbox(ctx([], []), fakeLane(sides, []), ENTRY, undefined);
    expect(st.phase).toBe("diverged");
    expect(st.lastError?.message).toMatch(
      /^same UID, different GUID on master and replica: uid 2;/,
    );
    expect(`${sides.master.files}/${sides.replica.files}`).toBe("old/old");
  });
});

describe("the cut-over gate: master windows go before prepares (src/apply/mailbox-run.ts)", () => {
  /**
   * Four lanes share one run context, each with its own mailbox; every fake
   * agent answers on a later turn of the event loop, so the lanes interleave.
   * Records, on one timeline, every request sent and answered.
   */
  async function runLanes(): Promise<{ log: string[]; phases: string[] }> {
    const log: string[] = [];
    // Bounds no stalled test machine reaches: the order, not the clock, is checked.
    const shared = { ...ctx([], []), gateWaitMs: { window: 60_000, quiet: 60_000 } };
    const lane = (i: number): Lane => {
      const sides = { master: new FakeSide(), replica: new FakeSide() };
      const agent = (side: Side) => ({
        closed: false,
        async request(op: Op, args: Record<string, unknown>) {
          log.push(`${i}>${side}:${op}`);
          await new Promise((r) => setImmediate(r));
          // prepares are the slow requests (a whole index read, converted, written)
          if (op === "prepare")
            for (let k = 0; k < 3; k++) await new Promise((r) => setImmediate(r));
          const result = sides[side].answer(op, args);
          log.push(`${i}<${side}:${op}`);
          return result;
        },
      });
      return {
        agent: async (side: Side) => agent(side),
        discard: async () => {},
        close: async () => {},
      } as unknown as Lane;
    };
    const states = await Promise.all(
      [0, 1, 2, 3].map(async (i) => {
        const l = lane(i);
        const out: string[] = [];
        for (let k = 0; k < 3; k++)
          out.push(
            (await runMailbox(shared, l, { ...ENTRY, name: `user.l${i}m${k}` }, undefined)).phase,
          );
        return out;
      }),
    );
    return { log, phases: states.flat() };
  }

  /** Lanes inside a master window (master lock sent → master commit answered) at each event. */
  function violations(log: string[]): { overlap: number; prepareInWindow: number } {
    const open = new Set<string>();
    let overlap = 0;
    let prepareInWindow = 0;
    for (const e of log) {
      const lane = e[0] as string;
      if (e.endsWith(">master:lock")) {
        if (open.size > 0) overlap++;
        open.add(lane);
      }
      if (e.endsWith("<master:commit") || e.endsWith("<master:rollback")) open.delete(lane);
      if (e.endsWith(">master:prepare") && [...open].some((l) => l !== lane)) prepareInWindow++;
    }
    return { overlap, prepareInWindow };
  }

  it("with the gate, no two master windows overlap and no prepare starts inside one; every mailbox done", async () => {
    const { log, phases } = await runLanes();
    expect(
      phases.every((p) => p === "done"),
      phases.join(","),
    ).toBe(true);
    expect(log.filter((e) => e.endsWith(">master:lock"))).toHaveLength(12);
    expect(violations(log)).toEqual({ overlap: 0, prepareInWindow: 0 });
  });

  it("GUIDUP_CUTOVER_GATE=off: the same lanes do overlap (the check above can fail)", async () => {
    const before = process.env.GUIDUP_CUTOVER_GATE;
    process.env.GUIDUP_CUTOVER_GATE = "off";
    try {
      const { log, phases } = await runLanes();
      expect(phases.every((p) => p === "done")).toBe(true);
      const v = violations(log);
      expect(v.overlap + v.prepareInWindow).toBeGreaterThan(0);
    } finally {
      if (before === undefined) delete process.env.GUIDUP_CUTOVER_GATE;
      else process.env.GUIDUP_CUTOVER_GATE = before;
    }
  });
});
