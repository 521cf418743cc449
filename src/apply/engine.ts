// guidup apply's engine: works through a plan's mailboxes with a few lanes in
// flight per pair, writes state, honours batch / filters / failure limits /
// the pause file / signals, and reports. Hosts are reached only through the
// HostConnections it is given (src/transport).

import { stat } from "node:fs/promises";
import type { Plan, PlannedMailbox } from "../plan/model.js";
import type { AgentClientOptions } from "../transport/agent-client.js";
import type { HostConnection } from "../transport/types.js";
import { nameFilter } from "./glob.js";
import { Lane } from "./lanes.js";
import { runMailbox } from "./mailbox-run.js";
import { takePairLock } from "./pair-lock.js";
import type { MailboxState, Phase } from "./state.js";
import { FINAL_PHASES } from "./state.js";
import type { StateStore } from "./state-store.js";

/**
 * OpenSSH's default MaxSessions is 10; one lane uses one channel per host,
 * and the pair lock (src/apply/pair-lock.ts) one more.
 */
export const MAX_CONCURRENCY = 9;
export const DEFAULT_CONCURRENCY = 4;

export interface ApplyOptions {
  plan: Plan;
  store: StateStore;
  connections: { master: HostConnection; replica: HostConnection };
  concurrency: number;
  /** Stop after starting this many mailboxes in this run. */
  batch?: number;
  only: readonly string[];
  exclude: readonly string[];
  /** Stop starting mailboxes after this many failures in this run. */
  maxFailures?: number;
  lockTimeoutMs: number;
  /** While this file exists, start no new mailbox. */
  pauseFile?: string;
  allowDrift: boolean;
  /** See MailboxRunContext.relayCache: off unless the operator asks. */
  relayCache?: boolean;
  relaySample?: number;
  /** When aborted: start nothing new, finish (or roll back) what is in flight. */
  signal: AbortSignal;
  now?: () => Date;
  onEvent?: (event: ApplyEvent) => void;
  clientOptions?: AgentClientOptions;
}

export type ApplyEvent =
  | { type: "start"; total: number; alreadyDone: number; queued: number }
  | { type: "begin"; name: string }
  | { type: "requeued"; name: string; reason: string }
  | { type: "mailbox"; name: string; phase: Phase; state: MailboxState }
  | { type: "paused"; file: string }
  | { type: "resumed" }
  | { type: "note"; name: string; message: string };

export interface ApplyReport {
  /** Outcomes of the mailboxes worked on in this run. */
  outcomes: Partial<Record<Phase, number>>;
  processed: number;
  /** Done before this run started (skipped without contacting the hosts). */
  alreadyDone: number;
  /** Planned mailboxes left for a later run (batch, failure limit, interrupt). */
  remaining: number;
  replicaAhead: string[];
  problems: { name: string; phase: Phase; error?: string }[];
  interrupted: boolean;
  stoppedBy?: "batch" | "max-failures" | "signal";
  elapsedMs: number;
}

interface WorkItem {
  entry: PlannedMailbox;
  previous: MailboxState | undefined;
  retried?: boolean;
}

/** Runs the plan while holding the pair lock on both hosts (refused while another apply has it). */
export async function runApply(options: ApplyOptions): Promise<ApplyReport> {
  const pairLock = await takePairLock(options.connections, options.plan, options.clientOptions);
  try {
    return await runApplyLocked(options);
  } finally {
    await pairLock.release();
  }
}

async function runApplyLocked(options: ApplyOptions): Promise<ApplyReport> {
  const started = Date.now();
  const now = () => (options.now?.() ?? new Date()).toISOString();
  const emit = options.onEvent ?? (() => {});
  const keep = nameFilter(options.only, options.exclude);

  // Replica-ahead repairs first (the dangerous state should not wait), then
  // the plan's order.
  const repairs: WorkItem[] = [];
  const rest: WorkItem[] = [];
  let alreadyDone = 0;
  for (const entry of options.plan.mailboxes) {
    if (!keep(entry.name)) continue;
    const previous = await options.store.read(entry.name);
    if (previous && FINAL_PHASES.has(previous.phase)) {
      alreadyDone++;
      continue;
    }
    (previous?.phase === "replica-ahead" ? repairs : rest).push({ entry, previous });
  }
  const queue = [...repairs, ...rest];
  emit({ type: "start", total: queue.length + alreadyDone, alreadyDone, queued: queue.length });

  const report: ApplyReport = {
    outcomes: {},
    processed: 0,
    alreadyDone,
    remaining: 0,
    replicaAhead: [],
    problems: [],
    interrupted: false,
    elapsedMs: 0,
  };
  let started_ = 0;
  let failures = 0;
  const retryLater: WorkItem[] = [];

  const stopReason = (): ApplyReport["stoppedBy"] | undefined => {
    if (options.signal.aborted) return "signal";
    if (options.batch !== undefined && started_ >= options.batch) return "batch";
    if (options.maxFailures !== undefined && failures >= options.maxFailures) return "max-failures";
    return undefined;
  };

  const next = async (): Promise<WorkItem | undefined> => {
    for (;;) {
      const reason = stopReason();
      if (reason) {
        report.stoppedBy ??= reason;
        return undefined;
      }
      if (options.pauseFile && (await exists(options.pauseFile))) {
        emit({ type: "paused", file: options.pauseFile });
        while ((await exists(options.pauseFile)) && !options.signal.aborted) await sleep(500);
        emit({ type: "resumed" });
        continue;
      }
      // The pause-file check awaited: other lanes may have started mailboxes
      // meanwhile, so the batch limit is checked again right before taking one.
      const late = stopReason();
      if (late) {
        report.stoppedBy ??= late;
        return undefined;
      }
      const item = queue.shift() ?? retryLater.shift();
      if (item) {
        started_++;
        emit({ type: "begin", name: item.entry.name });
      }
      return item;
    }
  };

  const ctx = {
    target: options.plan.target,
    lockTimeoutMs: options.lockTimeoutMs,
    allowDrift: options.allowDrift,
    ...(options.relayCache ? { relayCache: true } : {}),
    ...(options.relaySample !== undefined ? { relaySample: options.relaySample } : {}),
    now,
    save: (s: MailboxState) => options.store.write(s),
    note: (name: string, message: string) => emit({ type: "note", name, message }),
  };

  const lanes = Array.from(
    { length: Math.max(1, Math.min(options.concurrency, MAX_CONCURRENCY)) },
    () => new Lane(options.connections, options.clientOptions),
  );
  try {
    await Promise.all(
      lanes.map(async (lane) => {
        for (let item = await next(); item; item = await next()) {
          const state = await runMailbox(ctx, lane, item.entry, item.previous);
          // A lock timeout means someone else holds the mailbox right now: try
          // it once more at the end of the run, after everything else.
          if (
            state.phase === "failed" &&
            state.lastError?.code === "lock-timeout" &&
            !item.retried
          ) {
            retryLater.push({ entry: item.entry, previous: state, retried: true });
            started_--;
            emit({ type: "requeued", name: state.name, reason: "lock-timeout" });
            continue;
          }
          report.processed++;
          report.outcomes[state.phase] = (report.outcomes[state.phase] ?? 0) + 1;
          if (state.phase === "replica-ahead") report.replicaAhead.push(state.name);
          if (state.phase !== "done") {
            report.problems.push({
              name: state.name,
              phase: state.phase,
              ...(state.lastError ? { error: state.lastError.message } : {}),
            });
            if (
              state.phase === "failed" ||
              state.phase === "diverged" ||
              state.phase === "replica-ahead"
            )
              failures++;
          }
          emit({ type: "mailbox", name: state.name, phase: state.phase, state });
        }
      }),
    );
  } finally {
    await Promise.all(lanes.map((l) => l.close()));
  }
  report.remaining = queue.length + retryLater.length;
  report.interrupted = options.signal.aborted;
  report.replicaAhead.sort();
  report.problems.sort((a, b) => (a.name < b.name ? -1 : 1));
  report.elapsedMs = Date.now() - started;
  return report;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
