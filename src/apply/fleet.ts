// guidup apply PLAN...: a fleet of pairs from one controller. Each pair runs
// the engine (src/apply/engine.ts) as a lone apply would: its own
// connections, state directory and lock, pair lock on both hosts, lanes,
// --batch and --max-failures, retries. Pairs share nothing, so the fleet is
// only a pool of `pairsInFlight` workers taking the next plan; one pair that
// cannot start (another controller holds its pair lock, a host is down) or
// that fails part-way is that pair's outcome, and the others go on.
//
// Signals are the whole fleet's: the first (`signal`) starts no new pair and
// every running engine drains; the second (`hurry`) closes every running
// pair's connections, so each agent rolls back the mailbox it holds. Every
// pair releases its locks (state directory, pair lock) as it ends, whatever
// ended it.

import { ERRORS, ExitCode, errorMessage, GuidupError } from "../errors.js";
import type { HostSpec } from "../host-spec.js";
import type { PlanStream } from "../plan/plan-stream.js";
import { timelineMark } from "../timeline.js";
import type { AgentClientOptions } from "../transport/agent-client.js";
import { connectHosts } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { readControl } from "./control-file.js";
import {
  type ApplyEvent,
  type ApplyOptions,
  type ApplyReport,
  abortableSleep,
  runApply,
} from "./engine.js";
import { StateStore, stateDirFor } from "./state-store.js";

/**
 * Pairs in flight by default. A pair's apply mostly waits on its hosts (lock
 * waits, fsyncs, round trips), so one controller keeps several busy; four
 * keeps a 2-core controller's CPU the limit only past that (README "A fleet
 * from one controller" has the measured rates), keeps 4 × (lanes + 1)
 * agent sessions per side of the fleet, and lets a systematic mistake (a bad
 * option, a wrong host) reach at most four pairs before the operator sees it.
 */
export const DEFAULT_PAIRS_IN_FLIGHT = 4;
export const MAX_PAIRS_IN_FLIGHT = 64;

/** One pair of the fleet: its plan (read and checked) and the hosts to reach. */
export interface FleetPair {
  planPath: string;
  /**
   * How the views name the pair: its name, or with the plan file's name too
   * when another pair of the command has the same name (two inventories
   * may both call a pair "main").
   */
  label: string;
  /** Opened (header read); entries are read as the engine takes them. */
  plan: PlanStream;
  hosts: { master: HostSpec; replica: HostSpec };
}

/** What every pair's engine gets alike (the fleet fills in plan, store, connections, signal, events). */
export type PairApplyOptions = Omit<
  ApplyOptions,
  "plan" | "store" | "connections" | "signal" | "onEvent" | "clientOptions"
>;

export interface FleetOptions {
  pairs: readonly FleetPair[];
  pairsInFlight: number;
  apply: PairApplyOptions;
  /** First signal: no new pair starts, running pairs drain. */
  signal: AbortSignal;
  /** Second signal: running pairs' connections are closed (their mailboxes roll back). */
  hurry: AbortSignal;
  clientOptions?: (pair: FleetPair) => AgentClientOptions;
  onEvent?: (event: FleetEvent) => void;
}

export type FleetEvent =
  | { type: "pair-start"; index: number }
  | { type: "pair"; index: number; event: ApplyEvent }
  | { type: "pair-end"; index: number; result: PairResult }
  /** `pairs=N` in the control file changed how many pairs are in flight. */
  | { type: "note"; message: string };

/**
 * How a pair ended: `applied` (the engine ran; its report says what it
 * did), `error` (it could not start or stopped on an error: pair lock held,
 * host unreachable, state of another plan), `not-started` (a signal came
 * first).
 */
export type PairResult =
  | { status: "applied"; exitCode: ExitCode; report: ApplyReport }
  | {
      status: "error";
      exitCode: ExitCode;
      error: { code: string; message: string };
      cause: unknown;
    }
  | { status: "not-started"; exitCode: ExitCode };

export interface FleetReport {
  results: PairResult[];
  /** The worst of the pairs' exit codes (WORST_FIRST). */
  exitCode: ExitCode;
  interrupted: boolean;
  elapsedMs: number;
}

/**
 * A fleet's exit code is its worst pair's, in this order: interrupted, a
 * replica-ahead mailbox (dangerous until repaired), a bug, mailboxes that
 * need a person, a pair that could not run (bad input, lock held, host
 * down), work left (batch, lagging), all done.
 */
export const WORST_FIRST: readonly ExitCode[] = [
  ExitCode.interrupted,
  ExitCode.replicaAhead,
  ExitCode.internal,
  ExitCode.incomplete,
  ExitCode.badInput,
  ExitCode.failed,
  ExitCode.ok,
];

export function worstExitCode(codes: readonly ExitCode[]): ExitCode {
  let worst: ExitCode = ExitCode.ok;
  for (const c of codes) if (WORST_FIRST.indexOf(c) < WORST_FIRST.indexOf(worst)) worst = c;
  return worst;
}

/** A lone apply's exit code from its report (README "Exit codes"). */
export function applyExitCode(report: ApplyReport): ExitCode {
  if (report.interrupted) return ExitCode.interrupted;
  if (report.replicaAhead.length > 0) return ExitCode.replicaAhead;
  if (report.problems.some((p) => p.phase !== "lagging")) return ExitCode.incomplete;
  if (report.problems.length > 0) return ExitCode.failed;
  if (report.remaining > 0) return ExitCode.failed;
  return ExitCode.ok;
}

export async function runFleet(options: FleetOptions): Promise<FleetReport> {
  const started = Date.now();
  const emit = options.onEvent ?? (() => {});
  const results: (PairResult | undefined)[] = options.pairs.map(() => undefined);
  let nextPair = 0;

  // `pairs=N` in the control file lowers the pairs in flight (never above
  // --pairs); read at most once a second, like the engine's settings.
  const workers = Math.max(1, Math.min(options.pairsInFlight, options.pairs.length));
  let allowed = workers;
  let controlRead = 0;
  const control = () => {
    const file = options.apply.controlFile;
    if (!file || Date.now() - controlRead < 1000) return;
    controlRead = Date.now();
    const limit = Math.min(readControl(file).pairs ?? workers, workers);
    if (limit !== allowed) {
      emit({ type: "note", message: `${file}: pairs in flight ${allowed} → ${limit}` });
      allowed = limit;
    }
  };

  const runOne = async (index: number): Promise<PairResult> => {
    const pair = options.pairs[index] as FleetPair;
    emit({ type: "pair-start", index });
    try {
      const report = await applyPair(pair, options, (event) =>
        emit({ type: "pair", index, event }),
      );
      return { status: "applied", exitCode: applyExitCode(report), report };
    } catch (err) {
      const exitCode = err instanceof GuidupError ? err.exitCode : ExitCode.internal;
      const code = err instanceof GuidupError ? err.code : ERRORS.internal.code;
      return { status: "error", exitCode, error: { code, message: errorMessage(err) }, cause: err };
    }
  };

  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      for (;;) {
        control();
        while (worker >= allowed && !options.signal.aborted && nextPair < options.pairs.length) {
          await abortableSleep(500, options.signal);
          control();
        }
        if (options.signal.aborted || nextPair >= options.pairs.length) return;
        const index = nextPair++;
        const result = await runOne(index);
        results[index] = result;
        emit({ type: "pair-end", index, result });
      }
    }),
  );
  const final = results.map(
    (r): PairResult => r ?? { status: "not-started", exitCode: ExitCode.interrupted },
  );
  return {
    results: final,
    exitCode: worstExitCode(final.map((r) => r.exitCode)),
    interrupted: options.signal.aborted,
    elapsedMs: Date.now() - started,
  };
}

/** One pair, as a lone apply runs it: connect, take the state directory, run the engine, release. */
async function applyPair(
  pair: FleetPair,
  options: FleetOptions,
  onEvent: (event: ApplyEvent) => void,
): Promise<ApplyReport> {
  const [master, replica] = (await connectHosts([pair.hosts.master, pair.hosts.replica])) as [
    HostConnection,
    HostConnection,
  ];
  timelineMark("connected");
  const close = () => Promise.all([master.close(), replica.close()]);
  // The second signal: closing the connections ends every agent's input; an
  // agent rolls back the mailbox it holds (unless its commit is done), and
  // the engine records each one as it fails.
  const onHurry = () => void close();
  options.hurry.addEventListener("abort", onHurry);
  const store = new StateStore(stateDirFor(pair.planPath), pair.plan.header.id);
  try {
    await store.acquire(pair.plan.header.id);
    timelineMark("state directory taken (journal loaded)");
    try {
      return await runApply({
        ...options.apply,
        plan: pair.plan,
        store,
        connections: { master, replica },
        signal: options.signal,
        ...(options.clientOptions ? { clientOptions: options.clientOptions(pair) } : {}),
        onEvent,
      });
    } finally {
      await store.release();
    }
  } finally {
    options.hurry.removeEventListener("abort", onHurry);
    await close();
  }
}
