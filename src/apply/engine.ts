// guidup apply's engine: works through a plan's mailboxes with a few lanes in
// flight per pair, writes state, honours batch / filters / failure limits /
// the pause file / signals, and reports. Hosts are reached only through the
// HostConnections it is given (src/transport).

import { stat } from "node:fs/promises";
import { ERRORS } from "../errors.js";
import type { PlannedMailbox } from "../plan/model.js";
import type { PlanStream } from "../plan/plan-stream.js";
import type { CutoverPath } from "../protocol/messages.js";
import { timelineMark } from "../timeline.js";
import type { AgentClientOptions } from "../transport/agent-client.js";
import type { HostConnection } from "../transport/types.js";
import { type ControlSettings, readControl } from "./control-file.js";
import type { DriftCounts, DriftMode } from "./decide.js";
import { nameFilter } from "./glob.js";
import { Lane } from "./lanes.js";
import { type HoldStats, LockHoldSamples, percentile } from "./lock-hold-samples.js";
import { runMailbox } from "./mailbox-run.js";
import { takePairLock } from "./pair-lock.js";
import type { MailboxState, Phase } from "./state.js";
import { FINAL_PHASES } from "./state.js";
import type { PlanCheck, StateStore } from "./state-store.js";

/**
 * OpenSSH's default MaxSessions is 10; one lane uses one channel per host,
 * and the pair lock (src/apply/pair-lock.ts) one more.
 */
export const MAX_CONCURRENCY = 9;
export const DEFAULT_CONCURRENCY = 4;
/** Mailboxes whose master lock hold the throttle looks at. */
export const THROTTLE_WINDOW = 20;

export interface ApplyOptions {
  /** Read entry by entry (src/plan/plan-stream.ts openPlan, or planStreamOf for a plan in memory). */
  plan: PlanStream;
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
  /** Read about once a second: `concurrency=N`, `pause` (src/apply/control-file.ts). */
  controlFile?: string;
  /** contract (default): drift that does not matter is applied; exact: any change is stale; any: no check. */
  drift: DriftMode;
  /** The master's lock wait (short, whatever lockTimeoutMs is). */
  masterLockWaitMs?: number;
  /** Retries in this run of a lagging mailbox or a busy master (default 5). */
  retries?: number;
  /** First back-off before such a retry; doubles each time, capped at 30 s (default 2 s). */
  retryBackoffMs?: number;
  /**
   * Throttle (gh-ost's idea): when the master's lock hold p99 over the last
   * THROTTLE_WINDOW mailboxes exceeds this, run one lane fewer (down to 1)
   * and pause a moment; below half of it, one more again.
   */
  maxLockHoldMs?: number;
  /** Limit of prepare's hashing rate per host, bytes/s (apply --max-rate). */
  maxBytesPerSec?: number;
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
  | { type: "mailbox"; name: string; phase: Phase; state: MailboxState }
  /** `why`: the pause file exists, or the control file says pause. */
  | { type: "paused"; file: string; why: "exists" | "says pause" }
  | { type: "resumed" }
  | { type: "note"; name: string; message: string }
  /** The throttle changed how many mailboxes are in flight. */
  | { type: "throttle"; concurrency: number; masterHoldP99: number; message: string }
  /** A mailbox put back on this run's retry queue (lagging, busy master, lock timeout). */
  | {
      type: "retry";
      name: string;
      phase: Phase;
      state: MailboxState;
      attempt: number;
      afterMs: number;
    };

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
  /** Lock hold per side over this run's attempts that locked. */
  lockHold: { master: HoldStats; replica: HoldStats };
  /** How the mailboxes done in this run were staged (see CutoverPath). */
  paths: Partial<Record<CutoverPath, number>>;
  /** Changes since the plan that did not matter, summed over both sides. */
  drift: DriftCounts;
  /** Retries this run made (lagging, busy master, lock timeout). */
  retries: number;
}

interface WorkItem {
  entry: PlannedMailbox;
  previous: MailboxState | undefined;
  /** Retries made so far in this run. */
  tries: number;
  /** Not before this time (ms since epoch). */
  notBefore: number;
  /** The state that put it on the retry queue. */
  last?: MailboxState;
  /** A replica lock timeout is retried once, at the end. */
  lockRetried?: boolean;
}

/** Whether a state is worth another try in this run, and how. */
function retryKind(state: MailboxState): "backoff" | "once" | undefined {
  if (state.phase === "lagging") return "backoff";
  if (state.phase === "failed" && state.lastError?.code === ERRORS.lockTimeout.code)
    return state.lastError.step === "lock-master" ? "backoff" : "once";
  return undefined;
}

/**
 * A plan file's first run: every planned name given to `count`, and every
 * entry known good before the first mailbox — by the body's digest, hashed
 * as the names are read, when the file is as guidup wrote it, else by checking each
 * entry against the schema (PlanError on the first broken one), with a note
 * saying why this start is slower.
 */
async function checkEntries(
  plan: PlanStream,
  count: (name: string) => void,
  note: (message: string) => void,
): Promise<PlanCheck> {
  if (plan.header.bodySha256 !== undefined) {
    const verdict = await plan.namesAndBody(count);
    if (verdict === "matches") {
      timelineMark("names counted, plan body as guidup wrote it (bodySha256)");
      return "bodySha256";
    }
    note("plan edited since guidup wrote it (its bodySha256 differs): checking every entry");
    for await (const _ of plan.mailboxes()) {
    }
    timelineMark("every entry checked");
    return "entries";
  }
  note("plan has no bodySha256 (written by an older guidup): checking every entry");
  for await (const m of plan.mailboxes()) count(m.name);
  timelineMark("names counted, every entry checked");
  return "entries";
}

/** Runs the plan while holding the pair lock on both hosts (refused while another apply has it). */
export async function runApply(options: ApplyOptions): Promise<ApplyReport> {
  const pairLock = await takePairLock(
    options.connections,
    options.plan.header,
    options.clientOptions,
  );
  timelineMark("pair lock taken");
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

  // What is done and left, for the progress view and `remaining`. The first
  // time a plan file is applied, every entry must be known good before any
  // mailbox is touched (a broken entry is refused first): one pass over the
  // names counts while the plan's body is hashed, and when it is still what
  // guidup wrote (its bodySha256: the writer checked every entry) that is
  // all; an edited plan, or one without the digest, has every entry checked
  // in a pass of its own. Later runs count from the index and the
  // plan-checked marker, without reading the plan — unless a filter or a
  // replica-ahead mailbox needs the names (finished mailboxes are known from
  // the index either way, without reading their files).
  const plan = options.plan;
  const store = options.store;
  let alreadyDone = 0;
  let queued = 0;
  const repairs = new Set<string>();
  const checked = await store.checkedPlan(plan.file);
  const counts = store.indexCounts() ?? {};
  const finishedIndexed = [...FINAL_PHASES].reduce((sum, p) => sum + (counts[p] ?? 0), 0);
  const filtered = options.only.length > 0 || options.exclude.length > 0;
  if (
    checked?.entries !== undefined &&
    checked.finishedElsewhere !== undefined &&
    !filtered &&
    (counts["replica-ahead"] ?? 0) === 0
  ) {
    alreadyDone = Math.max(0, finishedIndexed - checked.finishedElsewhere);
    queued = Math.max(0, checked.entries - alreadyDone);
  } else {
    let entries = 0;
    let finishedHere = 0;
    const count = (name: string) => {
      entries++;
      const finished = store.isFinished(name);
      if (finished) finishedHere++;
      if (!keep(name)) return;
      if (finished) {
        alreadyDone++;
        return;
      }
      queued++;
      if (store.indexedPhase(name) === "replica-ahead") repairs.add(name);
    };
    let checkedBy: PlanCheck | undefined;
    if (checked) for await (const name of plan.names()) count(name);
    else {
      checkedBy = await checkEntries(plan, count, (message) =>
        emit({ type: "note", name: plan.file, message }),
      );
    }
    if (checked?.entries === undefined)
      await store.markPlanChecked(plan.file, {
        entries,
        finishedElsewhere: Math.max(0, finishedIndexed - finishedHere),
        ...(checkedBy ? { checkedBy } : {}),
      });
  }
  timelineMark("names counted");
  // Replica-ahead repairs first (the dangerous state should not wait), then
  // the plan's order; entries are read as lanes take them.
  const entries = (async function* (): AsyncGenerator<PlannedMailbox> {
    // Filtered by name before an entry is even parsed: a done mailbox costs
    // one index lookup.
    if (repairs.size > 0) yield* plan.mailboxes((name) => repairs.has(name));
    yield* plan.mailboxes((name) => keep(name) && !repairs.has(name) && !store.isFinished(name));
  })();
  let taken = 0;
  let entriesLeft = true;
  const queueLength = () => (entriesLeft ? Math.max(0, queued - taken) : 0);
  const takeEntry = async (): Promise<WorkItem | undefined> => {
    for (;;) {
      const r = await entries.next();
      if (r.done) {
        entriesLeft = false;
        return undefined;
      }
      taken++;
      const previous = await store.read(r.value.name);
      if (previous && FINAL_PHASES.has(previous.phase)) {
        // The index was behind this file (now caught up).
        alreadyDone++;
        continue;
      }
      return { entry: r.value, previous, tries: 0, notBefore: 0 };
    }
  };
  emit({ type: "start", total: queued + alreadyDone, alreadyDone, queued });

  const report: ApplyReport = {
    outcomes: {},
    processed: 0,
    alreadyDone,
    remaining: 0,
    replicaAhead: [],
    problems: [],
    interrupted: false,
    elapsedMs: 0,
    lockHold: new LockHoldSamples().holdStats(),
    paths: {},
    drift: { appended: 0, expunged: 0, cleanedUp: 0 },
    retries: 0,
  };
  const holds = new LockHoldSamples();
  const retries = options.retries ?? 5;
  const backoff = options.retryBackoffMs ?? 2000;
  let started_ = 0;
  let firstBegun = false;
  let failures = 0;
  const retryLater: WorkItem[] = [];

  // The batch limits how many NEW mailboxes this run starts; retries of
  // mailboxes already started are served whatever the batch (issue #10.8).
  const stopReason = (): ApplyReport["stoppedBy"] | undefined => {
    if (options.signal.aborted) return "signal";
    if (options.maxFailures !== undefined && failures >= options.maxFailures) return "max-failures";
    return undefined;
  };
  const batchReached = () => options.batch !== undefined && started_ >= options.batch;

  // The control file, read at most once a second; what changed is said once.
  let controlRead = 0;
  let controlNow: ControlSettings = { pause: false, unknown: [] };
  const reportedUnknown = new Set<string>();
  const control = (): ControlSettings => {
    if (!options.controlFile || Date.now() - controlRead < 1000) return controlNow;
    controlRead = Date.now();
    controlNow = readControl(options.controlFile);
    for (const line of controlNow.unknown)
      if (!reportedUnknown.has(line)) {
        reportedUnknown.add(line);
        emit({
          type: "note",
          name: options.controlFile,
          message: `ignoring "${line}" (understood: concurrency=N, pairs=N, pause)`,
        });
      }
    const limit = Math.min(controlNow.concurrency ?? lanes.length, lanes.length);
    if (limit !== controlled) {
      emit({
        type: "note",
        name: options.controlFile,
        message: `concurrency ${controlled} → ${limit}`,
      });
      controlled = limit;
    }
    return controlNow;
  };

  const next = async (): Promise<WorkItem | undefined> => {
    for (;;) {
      const reason = stopReason();
      if (reason) {
        report.stoppedBy ??= reason;
        return undefined;
      }
      if (options.pauseFile && (await exists(options.pauseFile))) {
        emit({ type: "paused", file: options.pauseFile, why: "exists" });
        while ((await exists(options.pauseFile)) && !options.signal.aborted) await sleep(500);
        emit({ type: "resumed" });
        continue;
      }
      if (options.controlFile && control().pause) {
        emit({ type: "paused", file: options.controlFile, why: "says pause" });
        while (control().pause && !options.signal.aborted) await sleep(500);
        emit({ type: "resumed" });
        continue;
      }
      if (entriesLeft && !batchReached()) {
        // Counted before the wait for the entry, so lanes asking at once
        // never start more than the batch.
        started_++;
        const item = await takeEntry();
        if (item) {
          if (!firstBegun) timelineMark("first mailbox begins");
          firstBegun = true;
          emit({ type: "begin", name: item.entry.name });
          return item;
        }
        started_--;
        continue;
      }
      if (queueLength() > 0) report.stoppedBy ??= "batch";
      if (retryLater.length === 0) return undefined;
      retryLater.sort((a, b) => a.notBefore - b.notBefore);
      const item = retryLater.shift() as WorkItem;
      const wait = item.notBefore - Date.now();
      if (wait > 0) await abortableSleep(wait, options.signal);
      if (options.signal.aborted) {
        retryLater.push(item);
        continue;
      }
      emit({ type: "begin", name: item.entry.name });
      return item;
    }
  };

  const record = (state: MailboxState) => {
    report.processed++;
    report.outcomes[state.phase] = (report.outcomes[state.phase] ?? 0) + 1;
    if (state.phase === "replica-ahead") report.replicaAhead.push(state.name);
    if (state.phase === "done" && state.path)
      report.paths[state.path] = (report.paths[state.path] ?? 0) + 1;
    if (state.phase !== "done") {
      report.problems.push({
        name: state.name,
        phase: state.phase,
        ...(state.lastError ? { error: state.lastError.message } : {}),
      });
      if (state.phase === "failed" || state.phase === "diverged" || state.phase === "replica-ahead")
        failures++;
    }
    emit({ type: "mailbox", name: state.name, phase: state.phase, state });
  };

  const ctx = {
    target: options.plan.header.target,
    lockTimeoutMs: options.lockTimeoutMs,
    drift: options.drift,
    ...(options.maxBytesPerSec !== undefined ? { maxBytesPerSec: options.maxBytesPerSec } : {}),
    ...(options.masterLockWaitMs !== undefined
      ? { masterLockWaitMs: options.masterLockWaitMs }
      : {}),
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
  // The throttle: lanes at index ≥ `allowed` wait before starting a mailbox.
  let allowed = lanes.length;
  // The operator's limit from the control file, if any (capped by the lanes).
  let controlled = lanes.length;
  const recent: number[] = [];
  const throttle = (masterHeld: number | undefined) => {
    const max = options.maxLockHoldMs;
    if (max === undefined || masterHeld === undefined) return;
    recent.push(masterHeld);
    if (recent.length > THROTTLE_WINDOW) recent.shift();
    if (recent.length < Math.min(THROTTLE_WINDOW, 5)) return;
    const p99 =
      percentile(
        [...recent].sort((a, b) => a - b),
        0.99,
      ) ?? 0;
    const before = allowed;
    if (p99 > max && allowed > 1) allowed--;
    else if (p99 <= max / 2 && allowed < lanes.length) allowed++;
    if (allowed !== before) {
      recent.length = 0;
      emit({
        type: "throttle",
        concurrency: allowed,
        masterHoldP99: p99,
        message: `master lock hold p99 ${p99} ms ${allowed < before ? ">" : "<="} ${allowed < before ? max : max / 2} ms: concurrency ${before} → ${allowed}`,
      });
    }
  };
  // A throttled lane waits before taking work (never holding an item), and
  // gives up once nothing is left for it.
  const waitTurn = async (index: number) => {
    control();
    while (
      index >= Math.min(allowed, controlled) &&
      !options.signal.aborted &&
      (queueLength() > 0 || retryLater.length > 0)
    ) {
      await abortableSleep(200, options.signal);
      control();
    }
  };
  try {
    await Promise.all(
      lanes.map(async (lane, index) => {
        for (;;) {
          await waitTurn(index);
          const item = await next();
          if (!item) break;
          const state = await runMailbox(ctx, lane, item.entry, item.last ?? item.previous);
          throttle(state.lockHeldMs?.master);
          holds.add(state.lockHeldMs);
          for (const side of ["master", "replica"] as const) {
            const d = state.drift?.[side];
            if (d && state.phase === "done") {
              report.drift.appended += d.appended;
              report.drift.expunged += d.expunged;
              report.drift.cleanedUp += d.cleanedUp;
            }
          }
          // Someone else holds the mailbox right now, or the replica has not
          // caught up: put it back and revisit it later in this run.
          const kind = retryKind(state);
          const again =
            kind === "backoff" ? item.tries < retries : kind === "once" ? !item.lockRetried : false;
          if (again && !options.signal.aborted) {
            const afterMs = kind === "backoff" ? Math.min(30_000, backoff * 2 ** item.tries) : 0;
            report.retries++;
            retryLater.push({
              ...item,
              last: state,
              tries: item.tries + (kind === "backoff" ? 1 : 0),
              notBefore: Date.now() + afterMs,
              lockRetried: item.lockRetried || kind === "once",
            });
            emit({
              type: "retry",
              name: state.name,
              phase: state.phase,
              state,
              attempt: item.tries + 1,
              afterMs,
            });
            continue;
          }
          record(state);
        }
      }),
    );
  } finally {
    await Promise.all(lanes.map((l) => l.close()));
  }
  // Retries the run stopped before revisiting end with their last outcome:
  // every mailbox started in this run is counted exactly once.
  for (const item of retryLater.splice(0)) if (item.last) record(item.last);
  report.remaining = entriesLeft ? Math.max(0, queued - taken) : 0;
  await entries.return(undefined);
  report.lockHold = holds.holdStats();
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

/** Resolves after `ms`, or at once when `signal` aborts (the fleet waits with it too). */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
