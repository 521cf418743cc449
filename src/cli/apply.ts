// guidup apply PLAN... [options]: carries reviewed plans out, mailbox by
// mailbox, with the two-phase protocol on both hosts of each pair. Thin:
// options (src/cli/arguments/apply.ts) → the fleet of engines
// (src/apply/fleet.ts) → a view (src/cli/views/apply.ts).

import { basename, resolve } from "node:path";
import { dryRun } from "../apply/dry-run.js";
import { DEFAULT_CONCURRENCY, MAX_CONCURRENCY } from "../apply/engine.js";
import {
  DEFAULT_PAIRS_IN_FLIGHT,
  type FleetPair,
  MAX_PAIRS_IN_FLIGHT,
  runFleet,
} from "../apply/fleet.js";
import { StateStore, stateDirFor } from "../apply/state-store.js";
import { ExitCode, UsageError } from "../errors.js";
import type { HostSpec } from "../host-spec.js";
import { timelineMark } from "../timeline.js";
import { parseApplyArgs } from "./arguments/apply.js";
import { installInterrupts } from "./interrupts.js";
import type { Io } from "./io.js";
import { agentLogger, withHostKeyPolicy } from "./pairs.js";
import { namesOfPlans, openPlanArg, requireOnlyMatchesIn } from "./plan-arg.js";
import { ApplyProgress, applyReportView } from "./views/apply.js";

const HELP = `usage: guidup apply PLAN... [options]

Upgrades the plan's mailboxes on master and replica with the locked two-phase
protocol, writing state beside the plan (PLAN.state/). A rerun skips done
mailboxes, repairs replica-ahead ones first, and retries the rest.
With several plans (a fleet: guidup plan --inventory writes one per pair),
pairs run side by side, each as a lone apply would (its own connections,
lanes, pair lock, state directory, retries); one progress line per pair and
the fleet's total. Two plans that reach the same Cyrus instance (host and
imapd.conf) are refused.
  --pairs N              pairs in flight (default ${DEFAULT_PAIRS_IN_FLIGHT}, at most ${MAX_PAIRS_IN_FLIGHT})
  --batch N              start at most N mailboxes in this run, PER PAIR
  --only GLOB            only mailboxes matching GLOB (repeatable; * and ?)
  --exclude GLOB         skip mailboxes matching GLOB (repeatable)
  --concurrency N        mailboxes in flight (default ${DEFAULT_CONCURRENCY}, at most ${MAX_CONCURRENCY})
  --max-failures N       stop starting mailboxes after N failures, PER PAIR
                         (a pair that stops does not stop the others)
  --lock-timeout DUR     how long to wait for a mailbox's locks, with a unit:
                         500ms, 30s, 2m (default 30s)
  --pause-file PATH      while PATH exists, start no new mailbox
  --control-file PATH    read about once a second while running: a line
                         "concurrency=N" (1..--concurrency) sets how many
                         mailboxes are in flight, "pause" starts no new one,
                         "pairs=N" (1..--pairs) how many pairs are in flight;
                         one file steers every pair of the fleet
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
  --json                 print the final report as JSON. One plan: {"plan",
                         "outcomes", "processed", "alreadyDone", "remaining",
                         "problems", "lockHold": {"master"|"replica": {"count",
                         "p50", "p99", "max"} in ms}, "paths", "retries", …}.
                         Several plans: {"pairs": [{"plan", "pair", "status",
                         "exitCode", …that pair's report}], "fleet": {totals,
                         "exitCode"}}
Ctrl-C (or SIGINT/SIGTERM) once: no new mailbox starts, those in flight
finish, state is written. Twice: those in flight are aborted and roll back
(the report names them). Either way exit 130; run apply again to continue.
Exit codes: 0 all done, 1 stopped early with work left (batch, limit),
2 bad input, 3 a mailbox is replica-ahead (the next apply repairs it),
4 mailboxes failed, diverged or went stale, 70 internal error (a bug: report
it), 130 interrupted; 1 also when mailboxes are left lagging (replication had
not caught up: rerun later).
Several plans: the worst pair's code, in the order 130, 3, 70, 4, 2, 1, 0
(2: a pair that could not run — its pair lock held, a host unreachable).
`;

export async function run(args: string[], io: Io): Promise<number> {
  const options = parseApplyArgs(args);
  if (options.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  timelineMark("apply command loaded");
  const pairs = await readPairs(options.plans, options.acceptNewHostKeys);
  timelineMark("plan header read");
  await requireOnlyMatchesIn(
    options.engine.only,
    namesOfPlans(pairs.map((p) => p.plan)),
    pairs.length === 1 ? (pairs[0]?.planPath ?? "") : `the ${pairs.length} plans`,
  );
  const view = applyReportView(io, options.json);
  if (options.dryRun) {
    const results = [];
    for (const p of pairs)
      results.push(
        await dryRun(
          p.hosts,
          new StateStore(stateDirFor(p.planPath), p.plan.header.id),
          p.plan.mailboxes(),
          options.engine.only,
          options.engine.exclude,
        ),
      );
    view.dryRun(pairs, results);
    return ExitCode.ok;
  }

  const progress = new ApplyProgress(io, pairs, options.engine.batch);
  const interrupts = installInterrupts(() => (t) => progress.io.err(t), io, {
    first: (sig) => progress.stopping("drain", sig),
    second: (sig) => progress.stopping("abort", sig),
  });
  const index = new Map(pairs.map((p, i) => [p, i]));
  let fleet: Awaited<ReturnType<typeof runFleet>>;
  try {
    fleet = await runFleet({
      pairs,
      pairsInFlight: options.pairs,
      apply: options.engine,
      signal: interrupts.stop,
      hurry: interrupts.hurry,
      clientOptions: (p) => ({ onLog: agentLogger(progress.pairIo(index.get(p) ?? 0)) }),
      onEvent: (e) => progress.event(e),
    });
  } finally {
    progress.end();
    interrupts.uninstall();
  }
  // A lone plan that could not run is the command's error, as it always was.
  const only = fleet.results[0];
  if (pairs.length === 1 && only?.status === "error") throw only.cause;
  view.report(pairs, fleet, (i) => progress.runFacts(i), interrupts.hurry.aborted);
  return fleet.exitCode;
}

/**
 * Reads every plan first (a bad one is refused before any pair starts); one
 * plan per pair: two plans that reach the same Cyrus instance (host and
 * imapd.conf) would take the same pair lock, so the second is refused here
 * rather than fail at its start. Pairs of the same name from different
 * inventories (other hosts) run side by side, labelled with their plan
 * file.
 */
async function readPairs(
  paths: readonly string[],
  acceptNewHostKeys: boolean,
): Promise<FleetPair[]> {
  const pairs: Omit<FleetPair, "label">[] = [];
  const byInstance = new Map<string, string>();
  const byFile = new Map<string, string>();
  for (const planPath of paths) {
    const plan = await openPlanArg(planPath, "apply");
    const { pair, hosts } = plan.header;
    // The same file however it is spelled (plans/a.yaml, ./plans/a.yaml).
    const file = resolve(planPath);
    const given = byFile.get(file);
    if (given !== undefined)
      throw new UsageError(
        given === planPath
          ? `${planPath} is given twice: give each plan once`
          : `${given} and ${planPath} are the same plan: give each plan once`,
      );
    byFile.set(file, planPath);
    const instances = [...new Set([instanceOf(hosts.master), instanceOf(hosts.replica)])];
    for (const instance of instances) {
      const other = byInstance.get(instance);
      if (other !== undefined)
        throw new UsageError(
          `${other} and ${planPath} (pair ${pair}) both reach ${instance}: give one plan per pair (they would take the same pair lock)`,
        );
    }
    for (const instance of instances) byInstance.set(instance, planPath);
    pairs.push({ planPath, plan, hosts: withHostKeyPolicy(hosts, acceptNewHostKeys) });
  }
  const named = new Map<string, number>();
  for (const p of pairs) named.set(p.plan.header.pair, (named.get(p.plan.header.pair) ?? 0) + 1);
  return pairs.map((p) => ({
    ...p,
    label:
      (named.get(p.plan.header.pair) ?? 0) > 1
        ? `${p.plan.header.pair} (${basename(p.planPath)})`
        : p.plan.header.pair,
  }));
}

/** The Cyrus instance a host spec reaches, as the pair lock sees it: the machine and its imapd.conf. */
function instanceOf(host: HostSpec): string {
  return host.transport === "local"
    ? `${host.config} on this machine`
    : `${host.config} on ${host.host}:${host.port ?? 22}`;
}
