// The two-phase upgrade of one mailbox on a master/replica pair (design.md,
// "The two-phase apply"), with the seed's rollbacks:
//
//   1 master lock · 2 replica lock · 3 master upgrade · 4 replica upgrade ·
//   4b compare (uid, GUID) digests · 5 replica commit · 6 master commit
//
// Before any host step that could change a mailbox, the state file records
// the step. After the locks are taken, the real files decide, not the state
// file: both sides already at the target → done; only one side there (an
// earlier run died at step 6, or replication got there) → repair the other
// side against it; otherwise the full protocol. That is what makes a rerun
// after a crash at any instant converge without repeating a step.

import { errorMessage, GuidupError } from "../errors.js";
import type { PlannedMailbox } from "../plan/model.js";
import type { MailboxScan, Requests } from "../protocol/messages.js";
import { AgentError } from "../transport/agent-client.js";
import type { Lane, Side } from "./lanes.js";
import type { MailboxState, Phase, StateError, Step } from "./state.js";

export interface MailboxRunContext {
  target: number;
  lockTimeoutMs: number;
  allowDrift: boolean;
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
  /** Something worth telling the operator that is not an outcome (cache relay failed, …). */
  note?: (name: string, message: string) => void;
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
  get code(): string {
    return this.original instanceof GuidupError ? this.original.code : "internal";
  }
}

const OTHER: Record<Side, Side> = { master: "replica", replica: "master" };

/** Whether one side's files are all at the target with no old-style GUIDs left. */
export function isSideDone(scan: MailboxScan | undefined, target: number): boolean {
  if (scan?.status !== "ok" || !scan.index) return false;
  const files = [scan.index, scan.expunge].filter((f) => f !== undefined);
  return files.every((f) => f.minor === target && (target < 10 || f.oldStyle === 0));
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
  const locked: Record<Side, boolean> = { master: false, replica: false };
  const mailbox = { name: entry.name, ...(entry.partition ? { partition: entry.partition } : {}) };

  const call = async <K extends keyof Requests>(
    side: Side,
    step: Step,
    op: K,
    args: Requests[K]["args"],
  ): Promise<Requests[K]["result"]> => {
    try {
      const agent = await lane.agent(side);
      return await agent.request(op, args);
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
  const rollback = async (side: Side): Promise<void> => {
    if (!locked[side]) return;
    locked[side] = false;
    try {
      const agent = await lane.agent(side);
      await agent.request("rollback", {});
    } catch {
      // Whatever failed (the transport, or the rollback itself, e.g. a .NEW
      // file that cannot be removed), that agent's session may still hold the
      // mailbox and would refuse the lane's next one: drop it. Its locks die
      // with it, and the next lock removes any .NEW file left behind.
      await lane.discard(side);
    }
  };
  const finish = async (phase: Phase, extra: Partial<MailboxState> = {}): Promise<MailboxState> => {
    await rollback("replica");
    await rollback("master");
    Object.assign(state, extra, { phase, updated: ctx.now() });
    if (phase === "done") {
      state.finished = state.updated;
      delete state.step;
    }
    await ctx.save(state);
    return state;
  };
  const setStep = async (step: Step) => {
    state.step = step;
    state.updated = ctx.now();
    await ctx.save(state);
  };
  const lock = async (side: Side): Promise<MailboxScan> => {
    const r = await call(side, side === "master" ? "lock-master" : "lock-replica", "lock", {
      mailbox,
      timeoutMs: ctx.lockTimeoutMs,
    });
    locked[side] = true;
    return r.scan;
  };

  /**
   * One side is at the target, the other is not: bring the behind side to the
   * target under its lock and commit it only if its (uid, GUID) digest equals
   * the ahead side's committed one.
   */
  const repair = async (
    behind: Side,
    aheadScan: MailboxScan,
    behindLocked: boolean,
  ): Promise<MailboxState> => {
    await setStep("repair");
    if (!behindLocked) {
      if (ctx.target === 10) await call(behind, "repair", "prepare", { mailbox });
      await lock(behind);
    }
    const up = await call(behind, "repair", "upgrade", { target: ctx.target });
    if (up.guidDigest !== aheadScan.guidDigest) {
      await rollback(behind);
      const error: StateError = {
        code: "diverged",
        step: "repair",
        host: behind,
        message: `${behind} upgraded to a different (uid, GUID) list than the ${OTHER[behind]} already has; not committed`,
      };
      const phase: Phase = behind === "master" ? "replica-ahead" : "diverged";
      return finish(phase, {
        lastError: error,
        digests: { [behind]: up.guidDigest, [OTHER[behind]]: aheadScan.guidDigest },
      });
    }
    const c = await call(behind, "repair", "commit", {});
    locked[behind] = false;
    return finish("done", {
      digests: { master: up.guidDigest, replica: up.guidDigest },
      counts: { ...state.counts, [behind]: up.counts },
      lockHeldMs: { ...state.lockHeldMs, [behind]: c.lockHeldMs },
    });
  };

  try {
    await relayCache(ctx, entry, state, call);

    if (previous?.phase === "replica-ahead") {
      // The seed's danger point, repaired: lock the master alone, upgrade,
      // check against the replica's committed GUIDs, commit.
      const replicaNow = (await call("replica", "repair", "status", { mailbox })).scan;
      if (isSideDone(replicaNow, ctx.target)) return await repair("master", replicaNow!, false);
      // The replica is not upgraded after all: run the full protocol.
    }

    // Outside the locks, on both sides at once: check cache entries and hash
    // what is missing, so the locked window below holds no hashing.
    if (ctx.target === 10 && entry.actions.includes("guid")) {
      await Promise.all(
        (["master", "replica"] as const).map((side) =>
          call(side, "prepare", "prepare", {
            mailbox,
            ...(ctx.relaySample !== undefined ? { verifySample: ctx.relaySample } : {}),
          }),
        ),
      );
    }
    await setStep("lock-master");
    const m = await lock("master");
    await setStep("lock-replica");
    const r = await lock("replica");

    const mDone = isSideDone(m, ctx.target);
    const rDone = isSideDone(r, ctx.target);
    if (mDone && rDone) {
      if (m.guidDigest !== r.guidDigest) {
        return await finish("diverged", {
          lastError: {
            code: "diverged",
            step: "compare",
            message:
              "both sides are at the target but their (uid, GUID) lists differ; check replication",
          },
          digests: { master: m.guidDigest!, replica: r.guidDigest! },
        });
      }
      return await finish("done", { digests: { master: m.guidDigest!, replica: r.guidDigest! } });
    }
    if (rDone) {
      await rollback("replica");
      return await repair("master", r, true);
    }
    if (mDone) {
      await rollback("master");
      return await repair("replica", m, true);
    }
    if (!ctx.allowDrift) {
      const drifted = (["master", "replica"] as const).filter(
        (side) => (side === "master" ? m : r).fingerprint !== entry[side].fingerprint,
      );
      if (drifted.length > 0) {
        return await finish("stale", {
          lastError: {
            code: "stale",
            step: "lock-replica",
            message: `${entry.name} changed on ${drifted.join(" and ")} since the plan was made; run guidup plan again (or apply --allow-drift)`,
          },
        });
      }
    }

    await setStep("upgrade-master");
    const mUp = await call("master", "upgrade-master", "upgrade", { target: ctx.target });
    await setStep("upgrade-replica");
    const rUp = await call("replica", "upgrade-replica", "upgrade", { target: ctx.target });
    state.counts = { master: mUp.counts, replica: rUp.counts };
    state.digests = { master: mUp.guidDigest, replica: rUp.guidDigest };
    if (mUp.guidDigest !== rUp.guidDigest) {
      return await finish("diverged", {
        lastError: {
          code: "diverged",
          step: "compare",
          message:
            "master and replica would get different (uid, GUID) lists; rolled back both; check the message files on both sides (guidup verify)",
        },
      });
    }

    await setStep("commit-replica");
    const rc = await call("replica", "commit-replica", "commit", {});
    locked.replica = false;
    state.lockHeldMs = { replica: rc.lockHeldMs };
    await setStep("commit-master");
    try {
      const mc = await call("master", "commit-master", "commit", {});
      locked.master = false;
      state.lockHeldMs.master = mc.lockHeldMs;
    } catch (err) {
      const e = err as StepError;
      return await finish("replica-ahead", {
        lastError: {
          code: e.code,
          step: "commit-master",
          host: "master",
          message: `REPLICA UPGRADED, MASTER NOT: ${e.message}; the next guidup apply repairs it`,
        },
      });
    }
    return await finish("done");
  } catch (err) {
    if (!(err instanceof StepError)) throw err;
    if (err.step === "commit-replica" && !(err.original instanceof AgentError)) {
      // The connection went during the replica's commit: it may have
      // committed before. Ask a fresh agent, so that the state does not say
      // "failed" about a mailbox whose replica is ahead of its master.
      const replicaNow = await call("replica", "commit-replica", "status", { mailbox }).then(
        (r) => r.scan,
        () => undefined,
      );
      if (isSideDone(replicaNow, ctx.target)) {
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
    return finish(phaseAfterFailure(state), {
      lastError: {
        code: err.code,
        message: err.message,
        step: err.step,
        ...(err.side ? { host: err.side } : {}),
      },
    });
  }
}

/** A failure after the replica committed leaves the replica ahead; before, nothing changed. */
function phaseAfterFailure(state: MailboxState): Phase {
  return state.step === "commit-master" ? "replica-ahead" : "failed";
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
