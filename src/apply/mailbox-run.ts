// The cut-over of one mailbox on a master/replica pair (README "Safety
// rules"; design.md "The two-phase apply"). The seed's six steps define what
// is rolled back when; the order of the locks and what happens under them
// are chosen for a live pair:
//
//   0  state: in-progress (the only state write before the outcome)
//   1  prepare on both sides at once, outside any lock: convert to temporary
//      files, fsync (session.ts)
//   2  lock the REPLICA (may wait up to --lock-timeout: only replication to
//      this mailbox waits meanwhile), compare with the prepared bytes, stage
//   3  lock the MASTER with a short bounded wait (masterLockWaitMs): busy →
//      release the replica, back off, retry later in this run
//      (steps 1–3 are paced by the cut-over gate below: one master window at
//      a time, no prepare started while one is open)
//   4  decide (decide.ts, a pure function of the two answers and the plan
//      entry): done / upgrade / repair one side / stale / lagging / diverged
//   5  commit the replica, then the master (or the one side a repair needs)
//   6  state: the outcome, with paths, drift counts, lock holds
//
// Why replica first: while guidup waits for the replica's lock it holds
// nothing on the master, so users and deliveries never wait on guidup's
// patience. While the replica is locked and the master not yet, the master
// may take deliveries and expunges; replication cannot apply them to the
// replica (it needs the lock guidup holds), so the replica can only be
// BEHIND the master, never ahead — which the comparison under both locks
// sees as `lagging`, releases both, and retries. Nothing is committed unless
// the two staged (uid, GUID) lists are equal.
//
// The master's locked window is: lock + compare (+ convert only what changed),
// one answer, the replica's commit round trip, the master's commit round
// trip. No fsynced controller state write happens inside it: after a crash
// the files decide (both sides at the target → done; replica only → repair
// the master against it; master only → repair the replica), so a state that
// says "in-progress" is all recovery needs.

import { appendFileSync } from "node:fs";
import { ERRORS, type ErrorCode, errorMessage, GuidupError } from "../errors.js";
import type { PlannedMailbox } from "../plan/model.js";
import type { Requests, StageArgs } from "../protocol/messages.js";
import { AgentError } from "../transport/agent-client.js";
import {
  classifyLists,
  type Decision,
  type DriftMode,
  decide,
  driftOf,
  isSideDone,
  refuseActions,
  type SideNow,
} from "./decide.js";
import type { Lane, Side } from "./lanes.js";
import type { MailboxState, Phase, StateError, Step } from "./state.js";

export { isSideDone };

/** The master's lock wait, whatever --lock-timeout is (issue #9: never hold the master hostage). */
export const DEFAULT_MASTER_LOCK_WAIT_MS = 300;

export interface MailboxRunContext {
  target: number;
  lockTimeoutMs: number;
  /** How long to wait for the master's locks (short: see above). */
  masterLockWaitMs?: number;
  drift: DriftMode;
  now: () => string;
  save: (state: MailboxState) => Promise<void>;
  /**
   * Relay the replica's sha1 cache to a master without one (apply
   * --relay-cache). Off by default: relayed SHA1s are checked on the master
   * only by a sample, so a replica file that already differs from the
   * master's could lend both sides the same wrong GUID unnoticed until
   * verify. Without the relay each side hashes its own files (in prepare,
   * outside the locks), and such a difference ends `diverged`.
   */
  relayCache?: boolean;
  /** Relayed entries the master re-hashes before trusting the rest. */
  relaySample?: number;
  /** Limit of prepare's hashing rate per host (apply --max-rate), bytes/s. */
  maxBytesPerSec?: number;
  /** Something worth telling the operator that is not an outcome (cache relay failed, …). */
  note?: (name: string, message: string) => void;
  /** The cut-over gate's bounds (default WINDOW_WAIT_MS, QUIET_WAIT_MS; tests make them long). */
  gateWaitMs?: { window?: number; quiet?: number };
}

/** A host step failed; carries which step and side for the state file. */
class StepError extends Error {
  constructor(
    readonly step: Step,
    readonly side: Side | undefined,
    readonly original: unknown,
  ) {
    super(errorMessage(original));
  }
  get code(): ErrorCode {
    return this.original instanceof GuidupError ? this.original.code : ERRORS.internal.code;
  }
}

export async function runMailbox(
  ctx: MailboxRunContext,
  lane: Lane,
  entry: PlannedMailbox,
  previous: MailboxState | undefined,
): Promise<MailboxState> {
  const state: MailboxState = {
    ...(previous ?? { name: entry.name, phase: "pending", attempts: 0, updated: ctx.now() }),
    phase: "in-progress",
    firstStarted: previous?.firstStarted ?? ctx.now(),
  };
  state.attempts++;
  delete state.lastError;
  delete state.finished;
  delete state.path;
  delete state.paths;
  const locked: Record<Side, boolean> = { master: false, replica: false };
  const marks = new WindowMarks(ctx);
  const gate = sharedOf(ctx).gate;
  const mailbox = { name: entry.name, ...(entry.partition ? { partition: entry.partition } : {}) };

  const call = async <K extends keyof Requests>(
    side: Side,
    step: Step,
    op: K,
    args: Requests[K]["args"],
  ): Promise<Requests[K]["result"]> => {
    try {
      const agent = await lane.agent(side);
      marks.sent(step, op);
      try {
        return await agent.request(op, args);
      } finally {
        marks.answered(step, op);
      }
    } catch (err) {
      if (!(err instanceof AgentError)) {
        // The agent or its connection is gone: its locks died with it (the
        // agent rolls back when its input ends). Start a fresh one next time.
        locked[side] = false;
        await lane.discard(side);
      }
      throw new StepError(step, side, err);
    }
  };
  /** Releases a side; with `pairs`, returns its (uid, GUID) list as staged. */
  const rollback = async (side: Side, pairs = false): Promise<Buffer | undefined> => {
    if (!locked[side]) return undefined;
    locked[side] = false;
    try {
      const agent = await lane.agent(side);
      const r = await agent.request("rollback", pairs ? { pairs: true } : {});
      state.lockHeldMs = { ...state.lockHeldMs, [side]: r.lockHeldMs };
      return r.pairs !== undefined ? Buffer.from(r.pairs, "base64") : undefined;
    } catch {
      // Whatever failed (the transport, or the rollback itself, e.g. a file
      // that cannot be removed), that agent's session may still hold the
      // mailbox and would refuse the lane's next one: drop it. Its locks die
      // with it, and the next prepare sweeps what it left.
      await lane.discard(side);
      return undefined;
    }
  };
  const finish = async (phase: Phase, extra: Partial<MailboxState> = {}): Promise<MailboxState> => {
    // Master first: it is the side users wait on.
    await rollback("master");
    gate.leave(marks);
    await rollback("replica");
    Object.assign(state, extra, { phase, updated: ctx.now() });
    if (phase === "done") {
      state.finished = state.updated;
      delete state.step;
    }
    await ctx.save(state);
    marks.write(state);
    return state;
  };
  const stage = (side: Side): StageArgs => ({
    target: ctx.target,
    guids: ctx.target === 10 && entry.actions.includes("guid"),
    upTo: entry[side].index.lastUid,
    ...(ctx.relaySample !== undefined ? { verifySample: ctx.relaySample } : {}),
    ...(ctx.maxBytesPerSec !== undefined ? { maxBytesPerSec: ctx.maxBytesPerSec } : {}),
  });
  const lock = async (side: Side, timeoutMs: number): Promise<SideNow> => {
    const r = await call(side, side === "master" ? "lock-master" : "lock-replica", "lock", {
      mailbox,
      timeoutMs,
      stage: stage(side),
    });
    locked[side] = true;
    state.lockWaitedMs = { ...state.lockWaitedMs, [side]: r.waitedMs };
    return {
      scan: r.scan,
      ...(r.check ? { check: r.check } : {}),
      ...(r.staged ? { staged: r.staged } : {}),
    };
  };
  const commit = async (side: Side): Promise<void> => {
    const c = await call(
      side,
      side === "master" ? "commit-master" : "commit-replica",
      "commit",
      {},
    );
    locked[side] = false;
    state.lockHeldMs = { ...state.lockHeldMs, [side]: c.lockHeldMs };
  };

  const refused = refuseActions(entry, ctx.target);
  if (refused) {
    return finish("stale", {
      lastError: {
        code: "refused",
        message: `${entry.name}: ${refused}; fix the entry or run guidup plan again`,
      },
    });
  }

  try {
    state.step = "prepare";
    state.updated = ctx.now();
    await ctx.save(state);
    await relayCache(ctx, entry, state, call);

    // Outside the locks, on both sides at once (not while another lane's master window is open).
    await gate.quiet();
    const prepared = await Promise.all(
      (["master", "replica"] as const).map((side) =>
        call(side, "prepare", "prepare", { mailbox, stage: stage(side) }),
      ),
    );
    for (const [i, side] of (["master", "replica"] as const).entries()) {
      const scan = prepared[i]!.scan;
      if (scan.status === "unreadable")
        return await finish("failed", {
          lastError: {
            code: "unreadable",
            step: "prepare",
            host: side,
            message: scan.reason ?? "unreadable",
          },
        });
      if (scan.status !== "ok") {
        const d = driftOf(side, entry[side], { scan }, ctx.target, ctx.drift);
        if (d.stale)
          return await finish("stale", {
            lastError: {
              code: "stale",
              step: "prepare",
              host: side,
              message: `${entry.name}: ${d.stale.message}; run guidup plan again`,
            },
          });
      }
    }

    state.step = "lock-replica";
    await gate.quiet();
    const r = await lock("replica", ctx.lockTimeoutMs);
    state.step = "lock-master";
    let m: SideNow;
    await gate.enter(marks);
    try {
      m = await lock(
        "master",
        Math.min(ctx.masterLockWaitMs ?? DEFAULT_MASTER_LOCK_WAIT_MS, ctx.lockTimeoutMs),
      );
    } catch (err) {
      if (err instanceof StepError && err.code === ERRORS.lockTimeout.code) {
        return await finish("failed", {
          lastError: {
            code: ERRORS.lockTimeout.code,
            step: "lock-master",
            host: "master",
            message: `the master's copy is busy (${err.message}); released the replica, will retry`,
          },
        });
      }
      throw err;
    }
    const now = { master: m, replica: r };
    state.paths = {
      ...(m.staged ? { master: m.staged.path } : {}),
      ...(r.staged ? { replica: r.staged.path } : {}),
    };
    state.path = worstPath(m.staged?.path, r.staged?.path);
    state.drift = {
      master: driftOf("master", entry.master, m, ctx.target, "any").counts,
      replica: driftOf("replica", entry.replica, r, ctx.target, "any").counts,
    };
    state.step = "compare";
    const decision: Decision = decide(entry, now, ctx.target, ctx.drift);
    switch (decision.kind) {
      case "done":
        return await finish("done", {
          digests: { master: m.scan.guidDigest!, replica: r.scan.guidDigest! },
        });
      case "stale":
        return await finish("stale", {
          lastError: {
            code: "stale",
            step: "compare",
            ...(decision.side ? { host: decision.side } : {}),
            message: `${entry.name}: ${decision.message}; run guidup plan again (or apply --allow-drift)`,
          },
        });
      case "compare-lists": {
        // Rare: fetch both lists as the rollback answers, then tell lag from divergence.
        const [mp, rp] = await Promise.all([rollback("master", true), rollback("replica", true)]);
        const verdict =
          mp && rp
            ? classifyLists(mp, rp, m.scan.index?.lastUid ?? 0)
            : {
                kind: "diverged" as const,
                message: "master and replica (uid, GUID) lists differ",
                uids: [],
              };
        const error: StateError = {
          code: verdict.kind,
          step: "compare",
          message: verdict.message,
        };
        return await finish(
          verdict.kind === "lagging"
            ? "lagging"
            : decision.ahead === "replica"
              ? "replica-ahead"
              : "diverged",
          {
            lastError: error,
            digests: {
              master:
                (isSideDone(m.scan, ctx.target, entry.actions)
                  ? m.scan.guidDigest
                  : m.staged?.guidDigest) ?? "",
              replica:
                (isSideDone(r.scan, ctx.target, entry.actions)
                  ? r.scan.guidDigest
                  : r.staged?.guidDigest) ?? "",
            },
          },
        );
      }
      case "repair": {
        const other: Side = decision.side === "master" ? "replica" : "master";
        state.step = decision.side === "master" ? "commit-master" : "commit-replica";
        if (other === "master") await rollback("master");
        try {
          await Promise.all([
            commit(decision.side),
            other === "replica" ? rollback("replica") : Promise.resolve(undefined),
          ]);
        } catch (err) {
          if (decision.side === "master") return await replicaAhead(err);
          throw err;
        }
        const digest = now[decision.side].staged?.guidDigest ?? "";
        return await finish("done", {
          digests: { master: digest, replica: digest },
          counts: { ...state.counts, [decision.side]: now[decision.side].staged?.counts },
        });
      }
      case "upgrade": {
        state.counts = {
          ...(m.staged ? { master: m.staged.counts } : {}),
          ...(r.staged ? { replica: r.staged.counts } : {}),
        };
        state.digests = { master: m.staged!.guidDigest, replica: r.staged!.guidDigest };
        state.step = "commit-replica";
        await commit("replica");
        state.step = "commit-master";
        try {
          await commit("master");
        } catch (err) {
          return await replicaAhead(err);
        }
        return await finish("done");
      }
    }
  } catch (err) {
    if (!(err instanceof StepError)) {
      gate.leave(marks);
      throw err;
    }
    if (err.step === "commit-replica" && !(err.original instanceof AgentError)) {
      // The connection went during the replica's commit: it may have
      // committed before. Ask a fresh agent, so that the state does not say
      // "failed" about a mailbox whose replica is ahead of its master.
      const replicaNow = await call("replica", "commit-replica", "status", { mailbox }).then(
        (x) => x.scan,
        () => undefined,
      );
      if (isSideDone(replicaNow, ctx.target, entry.actions)) {
        return finish("replica-ahead", {
          lastError: {
            code: err.code,
            step: "commit-replica",
            host: "replica",
            message: `REPLICA UPGRADED, MASTER NOT: the replica committed but its answer was lost (${err.message}); the next guidup apply repairs it`,
          },
        });
      }
    }
    return finish("failed", {
      lastError: {
        code: err.code,
        message: err.message,
        step: err.step,
        ...(err.side ? { host: err.side } : {}),
      },
    });
  }
  return state;

  async function replicaAhead(err: unknown): Promise<MailboxState> {
    const e = err as StepError;
    return finish("replica-ahead", {
      lastError: {
        code: e instanceof StepError ? e.code : ERRORS.internal.code,
        step: "commit-master",
        host: "master",
        message: `REPLICA UPGRADED, MASTER NOT: ${errorMessage(e)}; the next guidup apply repairs it`,
      },
    });
  }
}

/**
 * The cut-over gate: CPU for the lane that holds a master's lock.
 *
 * Measured (bench/apply.ts, 2 cores, concurrency 4): a master window is three
 * request legs — the master's lock answer, the replica's commit round trip,
 * the master's commit round trip — each of which wakes the controller, two
 * sshd processes and an agent. Alone they take about 1 ms in all; when other
 * lanes' prepares (read, convert, write and fsync a whole index, on both
 * hosts) run at the same time, every wake-up waits for a core, and the
 * window's p99 grows several-fold. So, within one apply run, master windows
 * (a lane's master lock request to its master commit answer or rollback)
 * go before prepares:
 *   - one lane at a time is inside a master window; before it sends the
 *     master's lock request it waits for the other lanes' prepares already
 *     in flight to answer. A lane waiting for its window holds only its
 *     replica's lock, and waits at most WINDOW_WAIT_MS in all — then it goes
 *     anyway (the gate orders work, it never decides what is safe);
 *   - no lane STARTS a prepare or a replica lock while a window is open or
 *     waiting; it waits at most QUIET_WAIT_MS (a master that makes guidup
 *     wait for its lock must not stall the other lanes long).
 * Measured alternately with and without it on the 2-core machine under heavy
 * outside load (README, Speed): the master's hold p50 fell by half or more
 * and its p99 by about a third at concurrency 4 (not at 8), for 20–40 % fewer
 * mailboxes/s and a longer replica hold: the master's users come first. The
 * order of the locks and commits, and
 * everything the safety rules say, are untouched: the gate only delays when
 * a request is sent. GUIDUP_CUTOVER_GATE=off turns it off (the benchmark's
 * before/after).
 */
export const WINDOW_WAIT_MS = 50;
export const QUIET_WAIT_MS = 20;

class CutoverGate {
  readonly enabled = process.env.GUIDUP_CUTOVER_GATE !== "off";
  readonly #windowWaitMs: number;
  readonly #quietWaitMs: number;
  constructor(waits: MailboxRunContext["gateWaitMs"] = {}) {
    this.#windowWaitMs = waits.window ?? WINDOW_WAIT_MS;
    this.#quietWaitMs = waits.quiet ?? QUIET_WAIT_MS;
  }
  #holder: object | undefined;
  #windows: { who: object; go: () => void }[] = [];
  #quiet: (() => void)[] = [];
  #preparing = 0;
  #drained: (() => void) | undefined;

  /** Waits until no window is open or waiting (at most QUIET_WAIT_MS). */
  async quiet(): Promise<void> {
    if (!this.enabled || (this.#holder === undefined && this.#windows.length === 0)) return;
    await new Promise<void>((resolve) => {
      const go = () => {
        clearTimeout(timer);
        const i = this.#quiet.indexOf(go);
        if (i >= 0) this.#quiet.splice(i, 1);
        resolve();
      };
      const timer = setTimeout(go, this.#quietWaitMs);
      this.#quiet.push(go);
    });
  }

  /** A prepare request is sent / answered (or failed). */
  prepareSent(): void {
    this.#preparing++;
  }
  prepareDone(): void {
    this.#preparing--;
    if (this.#preparing === 0) this.#drained?.();
  }

  /**
   * Opens the window for `who`: waits for another lane's window, then for
   * the prepares in flight, at most WINDOW_WAIT_MS in all.
   */
  async enter(who: object): Promise<void> {
    if (!this.enabled) return;
    const deadline = Date.now() + this.#windowWaitMs;
    if (this.#holder === undefined && this.#windows.length === 0) this.#holder = who;
    else {
      await new Promise<void>((resolve) => {
        const entry = {
          who,
          go: () => {
            clearTimeout(timer);
            const i = this.#windows.indexOf(entry);
            if (i >= 0) this.#windows.splice(i, 1);
            resolve();
          },
        };
        // Waited long enough: go without the window (as if there were no gate).
        const timer = setTimeout(entry.go, this.#windowWaitMs);
        this.#windows.push(entry);
      });
    }
    if (this.#holder !== who || this.#preparing === 0) return;
    const left = deadline - Date.now();
    if (left <= 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, left);
      const drained = () => done();
      this.#drained = drained;
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
    this.#drained = undefined;
  }

  /** Closes `who`'s window (if it has it): the next window first, else the waiting starts. */
  leave(who: object): void {
    if (this.#holder !== who) return;
    this.#holder = undefined;
    this.#drained = undefined;
    const next = this.#windows[0];
    if (next) {
      this.#holder = next.who;
      next.go();
      return;
    }
    for (const go of this.#quiet.splice(0)) go();
  }
}

/** What the lanes of one apply run share: keyed by the run's context object. */
interface RunShared {
  gate: CutoverGate;
  /** Lanes whose prepare request is in flight. */
  preparing: number;
  /** Traces of master windows open now (between the master's lock request and its commit answer). */
  open: Set<WindowMarks>;
}
const runShared = new WeakMap<MailboxRunContext, RunShared>();
function sharedOf(ctx: MailboxRunContext): RunShared {
  let s = runShared.get(ctx);
  if (!s) {
    s = { gate: new CutoverGate(ctx.gateWaitMs), preparing: 0, open: new Set() };
    runShared.set(ctx, s);
  }
  return s;
}

/**
 * Where the master's locked window goes, for the benchmark: with
 * GUIDUP_WINDOW_TRACE=FILE, one JSON line per mailbox attempt with the
 * controller's clock (ms) at each request sent/answered, how many other lanes'
 * prepares were in flight when the master's lock was asked for, and how many
 * started inside the window. Nothing is measured or written without it.
 */
class WindowMarks {
  readonly #file = process.env.GUIDUP_WINDOW_TRACE;
  readonly #shared: RunShared;
  readonly #t: Record<string, number> = {};
  prepInFlightAtLock = 0;
  prepStartedInWindow = 0;

  constructor(ctx: MailboxRunContext) {
    this.#shared = sharedOf(ctx);
  }

  sent(step: Step, op: string): void {
    if (op === "prepare") {
      this.#shared.gate.prepareSent();
      this.#shared.preparing++;
      for (const w of this.#shared.open) w.prepStartedInWindow++;
    }
    if (step === "lock-master" && op === "lock") {
      this.prepInFlightAtLock = this.#shared.preparing;
      this.#shared.open.add(this);
    }
    if (this.#file) this.#t[`${step}>`] = performance.now();
  }

  answered(step: Step, op: string): void {
    if (op === "prepare") {
      this.#shared.gate.prepareDone();
      this.#shared.preparing--;
    }
    if (step === "commit-master") this.#shared.open.delete(this);
    if (this.#file) this.#t[`${step}<`] = performance.now();
  }

  write(state: MailboxState): void {
    this.#shared.open.delete(this);
    if (!this.#file) return;
    try {
      appendFileSync(
        this.#file,
        `${JSON.stringify({
          name: state.name,
          phase: state.phase,
          path: state.path,
          held: state.lockHeldMs,
          t: this.#t,
          prepInFlightAtLock: this.prepInFlightAtLock,
          prepStartedInWindow: this.prepStartedInWindow,
        })}\n`,
      );
    } catch {
      // a trace is best effort
    }
  }
}

function worstPath(
  a: MailboxState["path"] | undefined,
  b: MailboxState["path"] | undefined,
): MailboxState["path"] | undefined {
  const rank = ["unchanged", "prepared", "appended", "reconverted"] as const;
  const ia = a ? rank.indexOf(a) : -1;
  const ib = b ? rank.indexOf(b) : -1;
  const i = Math.max(ia, ib);
  return i < 0 ? undefined : rank[i];
}

/**
 * With --relay-cache, before anything is locked: if the master's sha1 cache
 * is cold and the replica's is not, relay the replica's (the seed: "fetch it
 * from the replica"). Best effort: a failed relay only means the master
 * hashes its own files in prepare.
 */
async function relayCache(
  ctx: MailboxRunContext,
  entry: PlannedMailbox,
  state: MailboxState,
  call: <K extends keyof Requests>(
    side: Side,
    step: Step,
    op: K,
    args: Requests[K]["args"],
  ) => Promise<Requests[K]["result"]>,
): Promise<void> {
  if (!ctx.relayCache || ctx.target !== 10 || !entry.actions.includes("guid")) return;
  const oldStyle = (s: PlannedMailbox["master"]) => s.index.oldStyle + (s.expunge?.oldStyle ?? 0);
  const masterCold = (entry.master.cached ?? 0) < oldStyle(entry.master);
  if (!masterCold || (entry.replica.cached ?? 0) === 0) return;
  const mailbox = { name: entry.name, ...(entry.partition ? { partition: entry.partition } : {}) };
  state.step = "relay-cache";
  try {
    const got = await call("replica", "relay-cache", "cache-get", { mailbox });
    if (got.entries > 0)
      await call("master", "relay-cache", "cache-put", { mailbox, data: got.data });
  } catch (err) {
    ctx.note?.(
      entry.name,
      `sha1 cache relay failed (${errorMessage(err)}); the master hashes instead`,
    );
  }
}
