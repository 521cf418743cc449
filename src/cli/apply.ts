// guidup apply PLAN [options]: carries a reviewed plan out, mailbox by
// mailbox, with the two-phase protocol on both hosts (src/apply).

import {
  type ApplyReport,
  DEFAULT_CONCURRENCY,
  MAX_CONCURRENCY,
  runApply,
} from "../apply/engine.js";
import { nameFilter } from "../apply/glob.js";
import { FINAL_PHASES } from "../apply/state.js";
import { StateStore, stateDirFor } from "../apply/state-store.js";
import { ExitCode, UsageError } from "../errors.js";
import { AgentClient } from "../transport/agent-client.js";
import { connectHosts } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import { ApplyTally } from "./apply-progress.js";
import { parseCommandArgs, parseDurationMs, parseIntOption } from "./args.js";
import { installInterrupts } from "./interrupts.js";
import type { Io } from "./io.js";
import type { LockHoldSamples } from "./lock-hold.js";
import { agentLogger, withHostKeyPolicy } from "./pairs.js";
import { openPlanArg, requireOnlyMatchesIn } from "./plan-arg.js";
import { ProgressView } from "./progress.js";

const HELP = `usage: guidup apply PLAN [options]

Upgrades the plan's mailboxes on master and replica with the locked two-phase
protocol, writing state beside the plan (PLAN.state/). A rerun skips done
mailboxes, repairs replica-ahead ones first, and retries the rest.
  --batch N              start at most N mailboxes in this run
  --only GLOB            only mailboxes matching GLOB (repeatable; * and ?)
  --exclude GLOB         skip mailboxes matching GLOB (repeatable)
  --concurrency N        mailboxes in flight (default ${DEFAULT_CONCURRENCY}, at most ${MAX_CONCURRENCY})
  --max-failures N       stop starting mailboxes after N failures
  --lock-timeout DUR     how long to wait for a mailbox's locks, with a unit:
                         500ms, 30s, 2m (default 30s)
  --pause-file PATH      while PATH exists, start no new mailbox
  --control-file PATH    read about once a second while running: a line
                         "concurrency=N" (1..--concurrency) sets how many
                         mailboxes are in flight, "pause" starts no new one
  --allow-drift          upgrade mailboxes whatever changed since the plan
  --exact-plan           any change since the plan (even an append, an expunge)
                         makes a mailbox stale; default: only changes that may
                         make the plan wrong do (README "Safety rules")
  --master-lock-wait DUR how long to wait for the master's locks (default 300ms,
                         never more than --lock-timeout); busy → retried later
  --retries N            retries in this run of a lagging mailbox or a busy
                         master (default 5, back-off doubling from --retry-backoff)
  --retry-backoff DUR    first back-off before such a retry (default 2s)
  --max-rate MB/s        limit the reading rate of the hashing prepare does (per
                         host, outside the locks; cache misses only)
  --max-lock-hold DUR    when the master's lock hold p99 over the last 20
                         mailboxes exceeds DUR, run one mailbox fewer in flight
                         (down to 1); below half of it, one more again
  --relay-cache          give a master without a sha1 cache the replica's, checking
                         only a sample of it by re-hashing (saves hashing on the
                         master; a replica file that differs from the master's is
                         then caught only by that sample or by verify). Default
                         off: each side hashes its own files, outside the locks
  --relay-sample N       relayed entries re-hashed per mailbox (default max(3, 1%))
  --dry-run              connect to both hosts, lock nothing, list what would run
  --accept-new-host-keys record unknown SSH host keys instead of refusing them
  --json                 print the final report as JSON
Ctrl-C (or SIGINT/SIGTERM) once: no new mailbox starts, those in flight
finish, state is written. Twice: those in flight are aborted and roll back
(the report names them). Either way exit 130; run apply again to continue.
Exit codes: 0 all done, 1 stopped early with work left (batch, limit),
2 bad input, 3 a mailbox is replica-ahead (the next apply repairs it),
4 mailboxes failed, diverged or went stale, 130 interrupted; 1 also when
mailboxes are left lagging (replication had not caught up: rerun later).
`;

export async function run(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandArgs("apply", args, {
    batch: { type: "string" },
    only: { type: "string", multiple: true },
    exclude: { type: "string", multiple: true },
    concurrency: { type: "string" },
    "max-failures": { type: "string" },
    "lock-timeout": { type: "string" },
    "pause-file": { type: "string" },
    "control-file": { type: "string" },
    "exact-plan": { type: "boolean" },
    "master-lock-wait": { type: "string" },
    retries: { type: "string" },
    "retry-backoff": { type: "string" },
    "max-lock-hold": { type: "string" },
    "max-rate": { type: "string" },
    "allow-drift": { type: "boolean" },
    "relay-cache": { type: "boolean" },
    "relay-sample": { type: "string" },
    "dry-run": { type: "boolean" },
    "accept-new-host-keys": { type: "boolean" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  const planPath = positionals[0];
  if (!planPath || positionals.length > 1)
    throw new UsageError("apply takes one PLAN file (see guidup apply --help)");
  const concurrency = values.concurrency
    ? parseIntOption(values.concurrency, "concurrency", 1, MAX_CONCURRENCY)
    : DEFAULT_CONCURRENCY;
  const batch = values.batch ? parseIntOption(values.batch, "batch", 1) : undefined;
  const maxFailures = values["max-failures"]
    ? parseIntOption(values["max-failures"], "max-failures", 1)
    : undefined;
  const relaySample = values["relay-sample"]
    ? parseIntOption(values["relay-sample"], "relay-sample", 1)
    : undefined;
  const lockTimeoutMs = values["lock-timeout"]
    ? parseDurationMs(values["lock-timeout"], "lock-timeout")
    : 30_000;
  if (values["allow-drift"] && values["exact-plan"])
    throw new UsageError("--allow-drift and --exact-plan contradict each other: give one");
  const masterLockWaitMs = values["master-lock-wait"]
    ? parseDurationMs(values["master-lock-wait"], "master-lock-wait")
    : undefined;
  const retries = values.retries ? parseIntOption(values.retries, "retries", 0, 100) : undefined;
  const retryBackoffMs = values["retry-backoff"]
    ? parseDurationMs(values["retry-backoff"], "retry-backoff")
    : undefined;
  const maxLockHoldMs = values["max-lock-hold"]
    ? parseDurationMs(values["max-lock-hold"], "max-lock-hold")
    : undefined;
  let maxBytesPerSec: number | undefined;
  if (values["max-rate"] !== undefined) {
    const mb = Number(values["max-rate"]);
    if (!Number.isFinite(mb) || mb <= 0)
      throw new UsageError(`--max-rate: "${values["max-rate"]}" is not a positive number of MB/s`);
    maxBytesPerSec = Math.round(mb * 1024 * 1024);
  }
  const plan = await openPlanArg(planPath, "apply");
  const only = values.only ?? [];
  const exclude = values.exclude ?? [];
  await requireOnlyMatchesIn(only, plan.names(), planPath);
  const hosts = withHostKeyPolicy(plan.header.hosts, values["accept-new-host-keys"] === true);
  const store = new StateStore(stateDirFor(planPath), plan.header.id);

  const [master, replica] = (await connectHosts([hosts.master, hosts.replica])) as [
    HostConnection,
    HostConnection,
  ];
  try {
    if (values["dry-run"])
      return await dryRun(
        io,
        store,
        plan.mailboxes(),
        only,
        exclude,
        master,
        replica,
        values.json === true,
      );
    await store.acquire(plan.header.id);
    const tally = new ApplyTally(Date.now, batch);
    const view = new ProgressView(io, [`apply ${plan.header.pair}`]);
    view.follow(0, () => tally.text());
    const interrupts = installInterrupts(() => (t) => view.notice(t), io, {
      first: (sig) => {
        tally.stopping = "drain";
        return `${sig}: starting no new mailboxes; finishing the ${tally.inFlight.size} in flight (state is written as they end). ${sig === "Ctrl-C" ? "Ctrl-C again" : "A second signal"} to abort them instead: they roll back.`;
      },
      second: (sig) => {
        tally.stopping = "abort";
        return `${sig} again: aborting the ${tally.inFlight.size} mailbox(es) in flight: their agents are stopped and roll back what is not committed; the report names them.`;
      },
    });
    // The second signal: closing the connections ends every agent's input;
    // an agent rolls back the mailbox it holds (unless its commit is done),
    // and the engine records each one as it fails.
    interrupts.hurry.addEventListener("abort", () => {
      void Promise.all([master.close(), replica.close()]);
    });
    let report: ApplyReport;
    try {
      report = await runApply({
        plan,
        store,
        connections: { master, replica },
        concurrency,
        ...(batch !== undefined ? { batch } : {}),
        only,
        exclude,
        ...(maxFailures !== undefined ? { maxFailures } : {}),
        lockTimeoutMs,
        ...(values["pause-file"] ? { pauseFile: values["pause-file"] } : {}),
        ...(values["control-file"] ? { controlFile: values["control-file"] } : {}),
        drift: values["allow-drift"] ? "any" : values["exact-plan"] ? "exact" : "contract",
        ...(masterLockWaitMs !== undefined ? { masterLockWaitMs } : {}),
        ...(retries !== undefined ? { retries } : {}),
        ...(retryBackoffMs !== undefined ? { retryBackoffMs } : {}),
        ...(maxLockHoldMs !== undefined ? { maxLockHoldMs } : {}),
        ...(maxBytesPerSec !== undefined ? { maxBytesPerSec } : {}),
        relayCache: values["relay-cache"] === true,
        ...(relaySample !== undefined ? { relaySample } : {}),
        signal: interrupts.stop,
        clientOptions: { onLog: agentLogger(view.io) },
        onEvent: (e) => {
          tally.event(e);
          if (e.type === "mailbox" && e.phase === "replica-ahead")
            view.notice(
              `!!! ${e.name}: REPLICA AHEAD OF MASTER: ${e.state.lastError?.message ?? ""}\n`,
            );
          else if (e.type === "note") view.notice(`${e.name}: ${e.message}\n`);
          else if (e.type === "throttle") view.notice(`throttle: ${e.message}\n`);
        },
      });
    } finally {
      // Refused before it began (the pair lock, say): the refusal alone is
      // the output, not a progress line of zeros above it.
      view.end({ silent: !tally.started });
      interrupts.uninstall();
      await store.release();
    }
    printReport(io, report, planPath, values.json === true, {
      aborted: interrupts.hurry.aborted,
      lockHold: tally.lockHold,
      notRetried: [...tally.retryLater].sort(),
      retryReasons: tally.retryReasons,
    });
    if (report.interrupted) return ExitCode.interrupted;
    if (report.replicaAhead.length > 0) return ExitCode.replicaAhead;
    if (report.problems.some((p) => p.phase !== "lagging")) return ExitCode.incomplete;
    if (report.problems.length > 0) return ExitCode.failed;
    if (report.remaining > 0) return ExitCode.failed;
    return ExitCode.ok;
  } finally {
    await Promise.all([master.close(), replica.close()]);
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

function printReport(
  io: Io,
  report: ApplyReport,
  planPath: string,
  json: boolean,
  run: {
    aborted: boolean;
    lockHold: LockHoldSamples;
    notRetried: string[];
    retryReasons: ReadonlyMap<string, string>;
  },
): void {
  const lockHold = run.lockHold.percentiles();
  if (json) {
    io.out(`${JSON.stringify({ plan: planPath, ...report, lockHoldMs: lockHold }, null, 2)}\n`);
    return;
  }
  const outcomes =
    Object.entries(report.outcomes)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ") || "nothing to do";
  io.out(
    `apply ${planPath}: ${outcomes}; ${report.alreadyDone} were already done; ${report.remaining} left${report.stoppedBy ? ` (stopped: ${report.stoppedBy})` : ""} in ${(report.elapsedMs / 1000).toFixed(1)} s\n`,
  );
  for (const p of report.problems) io.out(`  ${p.phase.padEnd(13)} ${p.name}: ${p.error ?? ""}\n`);
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
    if (run.aborted)
      io.out(
        `aborted: the mailboxes that were in flight are listed above; each was rolled back unless it is replica-ahead\n`,
      );
    io.out(
      `interrupted: ${report.remaining} mailbox(es) not started; run guidup apply ${planPath} again to continue\n`,
    );
  }
}

async function dryRun(
  io: Io,
  store: StateStore,
  mailboxes: AsyncIterable<{ name: string; actions: string[] }>,
  only: readonly string[],
  exclude: readonly string[],
  master: Parameters<typeof AgentClient.start>[0],
  replica: Parameters<typeof AgentClient.start>[0],
  json: boolean,
): Promise<number> {
  // Prove both hosts answer, as apply would need them to.
  const agents = await Promise.all([AgentClient.start(master), AgentClient.start(replica)]);
  await Promise.all(agents.map((a) => a.close()));
  const keep = nameFilter(only, exclude);
  const would: { name: string; actions: string[]; phase: string }[] = [];
  for await (const mb of mailboxes) {
    if (!keep(mb.name)) continue;
    const st = await store.read(mb.name);
    if (st && FINAL_PHASES.has(st.phase)) continue;
    would.push({ name: mb.name, actions: mb.actions, phase: st?.phase ?? "pending" });
  }
  if (json)
    io.out(
      `${JSON.stringify({ dryRun: true, hosts: agents.map((a) => a.hello), mailboxes: would }, null, 2)}\n`,
    );
  else {
    io.out(
      `dry run: both hosts answered (${agents.map((a) => `${a.host}: guidup ${a.hello.tool}`).join(", ")}); nothing was locked\n`,
    );
    for (const w of would)
      io.out(
        `  would ${w.phase === "replica-ahead" ? "repair" : "apply"} ${w.name} [${w.actions.join(", ")}]${w.phase !== "pending" ? ` (${w.phase})` : ""}\n`,
      );
    io.out(`${would.length} mailbox(es) would run\n`);
  }
  return ExitCode.ok;
}
