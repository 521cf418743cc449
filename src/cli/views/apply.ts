// How guidup apply shows a run: live progress on stderr (one pair: its two
// lines, as always; several: a line per pair and the fleet's total), the
// messages a signal prints, and the final report on stdout, human or JSON.
// One plan keeps the lone apply's report and JSON exactly; several plans
// report per pair, then the fleet (README "A fleet from one controller").

import type { DryRunResult } from "../../apply/dry-run.js";
import type { ApplyReport } from "../../apply/engine.js";
import type { FleetEvent, FleetPair, FleetReport, PairResult } from "../../apply/fleet.js";
import { ApplyTally, FleetTally } from "../apply-progress.js";
import type { Io } from "../io.js";
import { ProgressView } from "../progress.js";

// ---- live progress --------------------------------------------------------

export class ApplyProgress {
  readonly #view: ProgressView;
  readonly #fleet: FleetTally;
  readonly #pairs: readonly FleetPair[];
  readonly #batch: number | undefined;
  readonly #ends: (string | undefined)[];
  readonly #single: boolean;
  #stopping: "drain" | "abort" | undefined;

  constructor(io: Io, pairs: readonly FleetPair[], batch: number | undefined) {
    this.#pairs = pairs;
    this.#batch = batch;
    this.#single = pairs.length === 1;
    this.#fleet = new FleetTally(Date.now, pairs.length);
    this.#ends = pairs.map(() => undefined);
    if (this.#single) {
      this.#view = new ProgressView(io, [`apply ${pairs[0]?.label}`]);
      this.#view.follow(0, () => this.#fleet.pairs[0]?.text() ?? "");
    } else {
      const width = Math.max("fleet".length, ...pairs.map((p) => p.label.length));
      this.#view = new ProgressView(io, [
        ...pairs.map((p) => p.label.padEnd(width)),
        "fleet".padEnd(width),
      ]);
      pairs.forEach((_, i) => {
        this.#view.follow(i, () => this.#pairLine(i));
      });
      this.#view.follow(pairs.length, () => this.#fleet.text());
    }
  }

  /** Writes above the live lines (agent warnings, notes). */
  get io(): Io {
    return this.#view.io;
  }

  /** Per pair: how its agents' warnings are prefixed in a fleet. */
  pairIo(index: number): Io {
    if (this.#single) return this.#view.io;
    const name = this.#pairs[index]?.label;
    return { ...this.#view.io, err: (text) => this.#view.notice(`${name}: ${text}`) };
  }

  event(e: FleetEvent): void {
    if (e.type === "note") {
      this.#view.notice(`${e.message}\n`);
      return;
    }
    if (e.type === "pair-start") {
      const tally = new ApplyTally(Date.now, this.#batch);
      tally.stopping = this.#stopping;
      this.#fleet.start(e.index, tally);
      return;
    }
    if (e.type === "pair-end") {
      this.#fleet.ended[e.index] = true;
      this.#ends[e.index] = endLine(e.result);
      return;
    }
    const tally = this.#fleet.pairs[e.index];
    tally?.event(e.event);
    const ev = e.event;
    const who = this.#single ? "" : `${this.#pairs[e.index]?.label}: `;
    if (ev.type === "mailbox" && ev.phase === "replica-ahead")
      this.#view.notice(
        `!!! ${who}${ev.name}: REPLICA AHEAD OF MASTER: ${ev.state.lastError?.message ?? ""}\n`,
      );
    else if (ev.type === "note") this.#view.notice(`${who}${ev.name}: ${ev.message}\n`);
    else if (ev.type === "throttle") this.#view.notice(`${who}throttle: ${ev.message}\n`);
  }

  /** The message for the first signal (drain) or the second (abort). */
  stopping(kind: "drain" | "abort", sig: string): string {
    this.#stopping = kind;
    this.#fleet.stopping = true;
    for (const t of this.#fleet.pairs) if (t) t.stopping = kind;
    const n = this.#fleet.inFlight();
    const pairs = this.#fleet.runningPairs();
    if (kind === "drain") {
      const again = `${sig === "Ctrl-C" ? "Ctrl-C again" : "A second signal"} to abort them instead: they roll back.`;
      return this.#single
        ? `${sig}: starting no new mailboxes; finishing the ${n} in flight (state is written as they end). ${again}`
        : `${sig}: starting no new mailboxes and no new pair; finishing the ${n} in flight in ${pairs} pair(s) (state is written as they end). ${again}`;
    }
    return this.#single
      ? `${sig} again: aborting the ${n} mailbox(es) in flight: their agents are stopped and roll back what is not committed; the report names them.`
      : `${sig} again: aborting the ${n} mailbox(es) in flight in ${pairs} pair(s): their agents are stopped and roll back what is not committed; the report names them.`;
  }

  /** Per pair: what its tally knows that the engine's report does not. */
  runFacts(index: number): RunFacts {
    const t = this.#fleet.pairs[index];
    return {
      notRetried: t ? [...t.retryLater].sort() : [],
      retryReasons: t?.retryReasons ?? new Map(),
    };
  }

  /** Stops the live view; nothing is drawn when no pair began (a refusal is the whole output). */
  end(): void {
    const began = this.#fleet.pairs.some((t) => t?.started);
    this.#view.end({ silent: this.#single ? !began : false });
  }

  #pairLine(index: number): string {
    const end = this.#ends[index];
    if (end !== undefined) return end;
    const t = this.#fleet.pairs[index];
    if (!t) return this.#stopping ? "not started" : "waiting";
    if (!t.started) return "connecting, taking the pair lock";
    return t.line();
  }
}

function endLine(r: PairResult): string {
  if (r.status === "not-started") return "not started";
  if (r.status === "error") return `not applied: ${r.error.message} (exit ${r.exitCode})`;
  const o =
    Object.entries(r.report.outcomes)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ") || "nothing to do";
  return `ended: ${o}; ${r.report.remaining} left (exit ${r.exitCode})`;
}

// ---- the final report -----------------------------------------------------

/**
 * What the progress tally saw of a pair's run, for its report. Lock holds are
 * not here: the engine's report carries them (`lockHold`, with count and max).
 */
export interface RunFacts {
  notRetried: string[];
  retryReasons: ReadonlyMap<string, string>;
}

export interface ApplyReportView {
  /** `aborted`: a second signal came. */
  report(
    pairs: readonly FleetPair[],
    fleet: FleetReport,
    facts: (index: number) => RunFacts,
    aborted: boolean,
  ): void;
  dryRun(pairs: readonly FleetPair[], results: readonly DryRunResult[]): void;
}

export function applyReportView(io: Io, json: boolean): ApplyReportView {
  return json ? new ApplyJsonView(io) : new ApplyHumanView(io);
}

/** Sums over the pairs that ran. */
function fleetTotals(pairs: readonly FleetPair[], fleet: FleetReport) {
  const outcomes: Record<string, number> = {};
  let processed = 0;
  let alreadyDone = 0;
  let remaining = 0;
  let retries = 0;
  const replicaAhead: { pair: string; name: string }[] = [];
  const status = { applied: 0, error: 0, "not-started": 0 };
  fleet.results.forEach((r, i) => {
    status[r.status]++;
    if (r.status !== "applied") return;
    const rep = r.report;
    for (const [k, v] of Object.entries(rep.outcomes)) outcomes[k] = (outcomes[k] ?? 0) + (v ?? 0);
    processed += rep.processed;
    alreadyDone += rep.alreadyDone;
    remaining += rep.remaining;
    retries += rep.retries;
    for (const name of rep.replicaAhead)
      replicaAhead.push({ pair: pairs[i]?.plan.header.pair ?? "", name });
  });
  return {
    pairs: pairs.length,
    applied: status.applied,
    errors: status.error,
    notStarted: status["not-started"],
    exitCode: fleet.exitCode,
    interrupted: fleet.interrupted,
    elapsedMs: fleet.elapsedMs,
    outcomes,
    processed,
    alreadyDone,
    remaining,
    retries,
    replicaAhead,
  };
}

class ApplyJsonView implements ApplyReportView {
  constructor(private readonly io: Io) {}

  report(pairs: readonly FleetPair[], fleet: FleetReport): void {
    const perPair = fleet.results.map((r, i) => {
      const head = { plan: pairs[i]?.planPath, pair: pairs[i]?.plan.header.pair };
      if (r.status === "applied")
        return {
          ...head,
          status: r.status,
          exitCode: r.exitCode,
          ...r.report,
        };
      if (r.status === "error")
        return { ...head, status: r.status, exitCode: r.exitCode, error: r.error };
      return { ...head, status: r.status, exitCode: r.exitCode };
    });
    const first = fleet.results[0];
    const body =
      pairs.length === 1 && first?.status === "applied"
        ? { plan: pairs[0]?.planPath, ...first.report }
        : { pairs: perPair, fleet: fleetTotals(pairs, fleet) };
    this.io.out(`${JSON.stringify(body, null, 2)}\n`);
  }

  dryRun(pairs: readonly FleetPair[], results: readonly DryRunResult[]): void {
    const one = (r: DryRunResult) => ({
      hosts: r.hosts.map((h) => h.hello),
      mailboxes: r.mailboxes,
    });
    const body =
      results.length === 1 && results[0]
        ? { dryRun: true, ...one(results[0]) }
        : {
            dryRun: true,
            pairs: results.map((r, i) => ({
              plan: pairs[i]?.planPath,
              pair: pairs[i]?.plan.header.pair,
              ...one(r),
            })),
          };
    this.io.out(`${JSON.stringify(body, null, 2)}\n`);
  }
}

class ApplyHumanView implements ApplyReportView {
  constructor(private readonly io: Io) {}

  report(
    pairs: readonly FleetPair[],
    fleet: FleetReport,
    facts: (index: number) => RunFacts,
    aborted: boolean,
  ): void {
    fleet.results.forEach((r, i) => {
      const planPath = pairs[i]?.planPath ?? "";
      if (i > 0) this.io.out("\n");
      if (r.status === "applied") this.#pair(r.report, planPath, facts(i), aborted);
      else if (r.status === "error")
        this.io.out(`apply ${planPath}: not applied: ${r.error.message}\n`);
      else this.io.out(`apply ${planPath}: not started (interrupted before its turn)\n`);
    });
    if (pairs.length < 2) return;
    const t = fleetTotals(pairs, fleet);
    const outcomes =
      Object.entries(t.outcomes)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "nothing to do";
    this.io.out(
      `\nfleet of ${t.pairs} pairs: ${t.applied} applied, ${t.errors} not applied, ${t.notStarted} not started; ${outcomes}; ${t.alreadyDone} were already done; ${t.remaining} left; in ${(t.elapsedMs / 1000).toFixed(1)} s; exit ${t.exitCode} (the worst pair's)\n`,
    );
    if (fleet.interrupted)
      this.io.out(
        `interrupted: run guidup apply ${pairs.map((p) => p.planPath).join(" ")} again to continue\n`,
      );
  }

  #pair(report: ApplyReport, planPath: string, run: RunFacts, aborted: boolean): void {
    const io = this.io;
    const outcomes =
      Object.entries(report.outcomes)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ") || "nothing to do";
    io.out(
      `apply ${planPath}: ${outcomes}; ${report.alreadyDone} were already done; ${report.remaining} left${report.stoppedBy ? ` (stopped: ${report.stoppedBy})` : ""} in ${(report.elapsedMs / 1000).toFixed(1)} s\n`,
    );
    for (const p of report.problems)
      io.out(`  ${p.phase.padEnd(13)} ${p.name}: ${p.error ?? ""}\n`);
    // Put back for a retry (lock timeout, lagging replica) that the run then
    // did not reach (a signal, the failure limit): its state file says why.
    for (const name of run.notRetried)
      io.out(
        `  ${"not retried".padEnd(13)} ${name}: ${run.retryReasons.get(name) ?? "retry"}, not retried in this run\n`,
      );
    io.out(`${cutoverSummary(report)}\n`);
    if (report.replicaAhead.length > 0) {
      io.out(
        `\n!!! ${report.replicaAhead.length} mailbox(es) have an upgraded REPLICA and a non-upgraded MASTER:\n${report.replicaAhead.map((n) => `!!!   ${n}\n`).join("")}!!! Run guidup apply ${planPath} again to repair them (it does these first).\n`,
      );
    }
    if (report.interrupted) {
      if (aborted)
        io.out(
          `aborted: the mailboxes that were in flight are listed above; each was rolled back unless it is replica-ahead\n`,
        );
      io.out(
        `interrupted: ${report.remaining} mailbox(es) not started; run guidup apply ${planPath} again to continue\n`,
      );
    }
  }

  dryRun(pairs: readonly FleetPair[], results: readonly DryRunResult[]): void {
    const io = this.io;
    results.forEach((r, i) => {
      if (results.length > 1)
        io.out(`${i > 0 ? "\n" : ""}${pairs[i]?.planPath} (pair ${pairs[i]?.plan.header.pair}):\n`);
      io.out(
        `dry run: both hosts answered (${r.hosts.map((h) => `${h.host}: guidup ${h.hello.tool}`).join(", ")}); nothing was locked\n`,
      );
      for (const w of r.mailboxes)
        io.out(
          `  would ${w.phase === "replica-ahead" ? "repair" : "apply"} ${w.name} [${w.actions.join(", ")}]${w.phase !== "pending" ? ` (${w.phase})` : ""}\n`,
        );
      io.out(`${r.mailboxes.length} mailbox(es) would run\n`);
    });
  }
}

/** Lock holds, cut-over paths, tolerated drift and retries: one line each. */
export function cutoverSummary(report: ApplyReport): string {
  const h = (x: ApplyReport["lockHold"]["master"]) =>
    x.count === 0 ? "none" : `p50 ${x.p50} ms, p99 ${x.p99} ms, max ${x.max} ms (${x.count})`;
  const paths =
    Object.entries(report.paths)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ") || "none";
  const d = report.drift;
  return [
    `  lock hold: master ${h(report.lockHold.master)}; replica ${h(report.lockHold.replica)}`,
    `  cut-over paths: ${paths}`,
    `  since the plan: ${d.appended} appended, ${d.expunged} expunged, ${d.cleanedUp} cleaned up; ${report.retries} retries`,
  ].join("\n");
}
