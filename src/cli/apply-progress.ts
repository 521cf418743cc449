// What apply's progress line says, computed from the engine's events (pure:
// the clock is given). Counts per outcome by phase name — done, stale,
// lagging, diverged, replica-ahead, failed, and any phase the engine adds —
// never folded into one "failed"; remaining of this run (of this batch with
// --batch); the mailboxes in flight; a rate over the time something was in
// flight (so a pause, or the wait for a lock file, does not dilute it) and an
// ETA only once the rate means something; lock hold p50/p99 per side.

import type { ApplyEvent } from "../apply/engine.js";
import { ERRORS } from "../errors.js";
import { formatLockHold, LockHoldSamples } from "./lock-hold.js";

/** Outcomes in the order they are shown; other phases follow by name. */
const OUTCOME_ORDER = ["done", "stale", "lagging", "diverged", "replica-ahead", "failed"];
/** No ETA before this many mailboxes have finished… */
const ETA_MIN_FINISHED = 5;
/** …and before something has been in flight this long. */
const ETA_MIN_ACTIVE_MS = 3_000;

export class ApplyTally {
  readonly outcomes = new Map<string, number>();
  readonly inFlight = new Set<string>();
  /** Put back on the run's retry queue (lagging replica, busy lock) and not finished since. */
  readonly retryLater = new Set<string>();
  /** Why each of `retryLater` waits: "lagging", "lock timeout", "master busy". */
  readonly retryReasons = new Map<string, string>();
  readonly lockHold = new LockHoldSamples();
  /** Whether the engine began the run (it has the pair lock and its queue). */
  started = false;
  alreadyDone = 0;
  /** Mailboxes this run means to finish: the queue, or at most --batch of it. */
  toDo = 0;
  finished = 0;
  paused: string | undefined;
  /** Set by the command when a signal asked it to stop. */
  stopping: "drain" | "abort" | undefined;
  #activeMs = 0;
  #activeSince: number | undefined;

  constructor(
    private readonly now: () => number,
    private readonly batch?: number,
  ) {}

  event(e: ApplyEvent): void {
    switch (e.type) {
      case "start":
        this.started = true;
        this.alreadyDone = e.alreadyDone;
        this.toDo = this.batch !== undefined ? Math.min(e.queued, this.batch) : e.queued;
        break;
      case "begin":
        if (this.inFlight.size === 0) this.#activeSince = this.now();
        this.inFlight.add(e.name);
        this.retryLater.delete(e.name);
        this.retryReasons.delete(e.name);
        break;
      case "retry":
        this.#leave(e.name);
        this.retryLater.add(e.name);
        this.retryReasons.set(e.name, retryReason(e.state.phase, e.state.lastError?.code));
        break;
      case "mailbox":
        this.#leave(e.name);
        this.retryLater.delete(e.name);
        this.retryReasons.delete(e.name);
        this.finished++;
        this.outcomes.set(e.phase, (this.outcomes.get(e.phase) ?? 0) + 1);
        if (e.phase === "done") this.lockHold.add(e.state.lockHeldMs);
        break;
      case "paused":
        this.paused = `${e.file} ${e.why}`;
        break;
      case "resumed":
        this.paused = undefined;
        break;
      default:
        break;
    }
  }

  #leave(name: string): void {
    if (!this.inFlight.delete(name) || this.inFlight.size > 0) return;
    if (this.#activeSince !== undefined) this.#activeMs += this.now() - this.#activeSince;
    this.#activeSince = undefined;
  }

  /** Milliseconds during which at least one mailbox was in flight. */
  activeMs(): number {
    return this.#activeMs + (this.#activeSince !== undefined ? this.now() - this.#activeSince : 0);
  }

  /** Mailboxes per second of active time; undefined while too early to say. */
  rate(): number | undefined {
    const ms = this.activeMs();
    if (this.finished < ETA_MIN_FINISHED || ms < ETA_MIN_ACTIVE_MS) return undefined;
    return this.finished / (ms / 1000);
  }

  remaining(): number {
    return Math.max(0, this.toDo - this.finished);
  }

  /** One line (a pair's line of a fleet): the counts, then the rate once it means something. */
  line(): string {
    const [counts = ""] = this.text().split("\n");
    const parts = [counts];
    if (this.paused !== undefined && this.stopping === undefined)
      parts.push(`paused: ${this.paused}`);
    const rate = this.rate();
    if (rate !== undefined) parts.push(`${rate.toFixed(1)}/s`);
    return parts.join(" · ");
  }

  /** Two lines: counts, then pace. */
  text(): string {
    const counts = [...this.outcomes.keys()]
      .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1))
      .map((k) => `${k} ${this.outcomes.get(k)}`);
    if (!this.outcomes.has("done")) counts.unshift("done 0");
    if (this.retryLater.size > 0) {
      const why = new Map<string, number>();
      for (const r of this.retryReasons.values()) why.set(r, (why.get(r) ?? 0) + 1);
      const detail = [...why.entries()].sort().map(([r, n]) => `${r} ${n}`);
      counts.push(`retrying later ${this.retryLater.size} (${detail.join(", ")})`);
    }
    const of = this.batch !== undefined ? " of this batch" : "";
    counts.push(`remaining ${this.remaining()}${of}`, `in flight ${this.inFlight.size}`);
    const pace: string[] = [];
    if (this.stopping === "drain")
      pace.push(`stopping: finishing ${this.inFlight.size} in flight, starting none`);
    else if (this.stopping === "abort") pace.push("aborting the mailboxes in flight");
    else if (this.paused !== undefined) pace.push(`paused: ${this.paused}`);
    const rate = this.rate();
    if (rate === undefined) pace.push(`ETA after ${ETA_MIN_FINISHED} mailboxes`);
    else {
      pace.push(`${rate.toFixed(1)}/s`);
      if (this.remaining() > 0) pace.push(`ETA ${formatSeconds(this.remaining() / rate)}`);
    }
    const locks = formatLockHold(this.lockHold.percentiles());
    if (locks) pace.push(locks);
    return `${counts.join(" · ")}\n${pace.join(" · ")}`;
  }
}

/** How the progress line names a retry's cause. */
function retryReason(phase: string, code: string | undefined): string {
  if (phase === "lagging") return "lagging";
  if (code === ERRORS.lockTimeout.code) return "lock timeout";
  return code ?? phase;
}

function rank(phase: string): number {
  const i = OUTCOME_ORDER.indexOf(phase);
  return i < 0 ? OUTCOME_ORDER.length : i;
}

export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
    : s >= 60
      ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
      : `${s}s`;
}

/**
 * The fleet's total line over its pairs' tallies: pairs by where they are,
 * mailbox outcomes summed, in flight, left, and a rate over the time since
 * the first pair began (what the controller achieves as a whole).
 */
export class FleetTally {
  /** Per pair: undefined until it starts. */
  readonly pairs: (ApplyTally | undefined)[];
  readonly ended: boolean[];
  /** Set by the command when a signal asked it to stop: waiting pairs will not start. */
  stopping = false;
  #since: number | undefined;

  constructor(
    private readonly now: () => number,
    pairCount: number,
  ) {
    this.pairs = Array.from({ length: pairCount }, () => undefined);
    this.ended = Array.from({ length: pairCount }, () => false);
  }

  start(index: number, tally: ApplyTally): void {
    this.pairs[index] = tally;
    this.#since ??= this.now();
  }

  inFlight(): number {
    return this.pairs.reduce((n, t, i) => n + (t && !this.ended[i] ? t.inFlight.size : 0), 0);
  }

  runningPairs(): number {
    return this.pairs.filter((t, i) => t !== undefined && !this.ended[i]).length;
  }

  text(): string {
    const started = this.pairs.filter((t) => t !== undefined) as ApplyTally[];
    const ended = this.ended.filter(Boolean).length;
    const outcomes = new Map<string, number>();
    let finished = 0;
    let remaining = 0;
    for (const t of started) {
      for (const [k, v] of t.outcomes) outcomes.set(k, (outcomes.get(k) ?? 0) + v);
      finished += t.finished;
      remaining += t.remaining();
    }
    const counts = [...outcomes.keys()]
      .sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1))
      .map((k) => `${k} ${outcomes.get(k)}`);
    if (!outcomes.has("done")) counts.unshift("done 0");
    const waiting = this.pairs.length - started.length;
    const parts = [
      `pairs: ${this.runningPairs()} running, ${ended} ended, ${waiting} ${this.stopping ? "not started" : "waiting"}`,
      ...counts,
      // A waiting pair's queue is not known until it starts: "10+".
      `remaining ${remaining}${waiting > 0 && !this.stopping ? "+" : ""}`,
      `in flight ${this.inFlight()}`,
    ];
    const ms = this.#since === undefined ? 0 : this.now() - this.#since;
    if (finished >= ETA_MIN_FINISHED && ms >= ETA_MIN_ACTIVE_MS)
      parts.push(`${(finished / (ms / 1000)).toFixed(1)}/s`);
    return parts.join(" · ");
  }
}
