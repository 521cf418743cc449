// Per-pair and per-controller rates of `guidup apply PLAN...` (issue #11,
// "a fleet from one command"): how many controllers a fleet needs.
//
// For 1, 2 and 4 pairs (each a fresh master/replica pair of N small v9
// mailboxes with warm sha1 caches, made and planned by bench/apply.ts's
// preparePair over SSH on loopback; not timed), one
// `guidup apply P1..Pk --pairs k --concurrency C --json` under
// /usr/bin/time, timed. Reports per run:
//   - fleet mailboxes/s (k × N / wall time of the apply process);
//   - per-pair mailboxes/s (N / that pair's engine time);
//   - the controller's CPU (user + system of the apply process: with SSH the
//     agents are not its children, and ssh2 runs in it) per mailbox, and its
//     peak RSS;
//   - how busy the machine was (/proc/stat).
// The baseline is the 1-pair run of the same session. Goal: the fleet costs
// the controller nothing per mailbox — its CPU per mailbox at 4 pairs within
// 1.25× of 1 pair's. Everything (agents, sshd, controller) shares this
// machine's cores, so the fleet rate here is a floor: with the hosts
// elsewhere, a controller's ceiling is cores / (controller CPU per mailbox),
// printed as such.
//
// Run: `node dist/bench/fleet.js [--mailboxes N] [--concurrency C] [--json]`
// (build first; needs /usr/sbin/sshd and /usr/bin/time).

import { existsSync, readFileSync, rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { preparePair } from "./apply.js";
import { machineTicks, runChild } from "./child-run.js";
import { goalLine, type MachineInfo, machineInfo, machineLine } from "./report.js";
import { startBenchSshd } from "./sshd.js";

const MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const TIME = "/usr/bin/time";
export const FLEET_SIZES = [1, 2, 4] as const;
/** Goal: controller CPU per mailbox at 4 pairs / at 1 pair. */
export const GOAL_CPU_RATIO = 1.25;

export interface FleetRun {
  pairs: number;
  mailboxes: number;
  wallMs: number;
  fleetPerSec: number;
  /** Each pair's mailboxes / its engine time. */
  perPairPerSec: number[];
  controllerCpuS: number;
  controllerCpuMsPerMailbox: number;
  peakRssMiB: number;
  machineBusy: number;
}

export interface FleetBenchResult {
  machine: MachineInfo;
  mailboxesPerPair: number;
  concurrency: number;
  runs: FleetRun[];
  /** cores / controller CPU s per mailbox, from the 4-pair run. */
  controllerCeilingPerSec: number;
  cpuRatio: number;
  totalMs: number;
}

interface PairReport {
  status?: string;
  exitCode?: number;
  outcomes: Record<string, number>;
  elapsedMs: number;
  remaining: number;
}

async function timedFleet(plans: string[], n: number, concurrency: number, timeOut: string) {
  const args = [
    "-f",
    "%e %U %S %M",
    "-o",
    timeOut,
    process.execPath,
    MAIN,
    "apply",
    ...plans,
    "--pairs",
    String(plans.length),
    "--concurrency",
    String(concurrency),
    "--json",
  ];
  const before = machineTicks();
  const start = performance.now();
  const { code, stdout, stderr } = await runChild(TIME, args);
  const wallMs = performance.now() - start;
  const after = machineTicks();
  if (code !== 0)
    throw new Error(`apply of ${plans.length} pairs exited ${code}:\n${stderr.slice(-4000)}`);
  const json = JSON.parse(stdout) as PairReport | { pairs: PairReport[] };
  const reports = "pairs" in json ? json.pairs : [json];
  for (const r of reports)
    if (r.outcomes.done !== n || r.remaining !== 0)
      throw new Error(`a pair did not finish: ${JSON.stringify(r.outcomes)}`);
  const [, user, sys, rssKb] = readFileSync(timeOut, "utf8").trim().split(/\s+/).map(Number);
  const controllerCpuS = (user ?? 0) + (sys ?? 0);
  return {
    pairs: plans.length,
    mailboxes: n * plans.length,
    wallMs,
    fleetPerSec: (n * plans.length) / (wallMs / 1000),
    perPairPerSec: reports.map((r) => n / (r.elapsedMs / 1000)),
    controllerCpuS,
    controllerCpuMsPerMailbox: (controllerCpuS * 1000) / (n * plans.length),
    peakRssMiB: (rssKb ?? 0) / 1024,
    machineBusy: (after.busy - before.busy) / Math.max(1, after.total - before.total),
  };
}

export async function runFleetBench(
  opts: { mailboxes?: number; concurrency?: number; log?: (line: string) => void } = {},
): Promise<FleetBenchResult> {
  if (!existsSync(TIME)) throw new Error(`${TIME} is missing (apt-get install time)`);
  const t0 = performance.now();
  const machine = machineInfo();
  const n = opts.mailboxes ?? 1000;
  const concurrency = opts.concurrency ?? 4;
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const parent = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
  const root = await mkdtemp(join(parent, "guidup-bench-fleet-"));
  const sshd = await startBenchSshd();
  const command = `${process.execPath} ${MAIN} serve`;
  const runs: FleetRun[] = [];
  try {
    for (const k of FLEET_SIZES) {
      log(`${k} pair(s) of ${n} mailboxes: generating, writing caches, planning …`);
      const plans: string[] = [];
      for (let i = 0; i < k; i++) {
        const prepared = await preparePair(join(root, `k${k}-p${i}`), n, sshd, command, `p${i}`);
        plans.push(prepared.plan);
      }
      log(`  applying ${k} pair(s) at --concurrency ${concurrency} …`);
      const run = await timedFleet(plans, n, concurrency, join(root, `time-${k}.txt`));
      log(
        `  ${(run.wallMs / 1000).toFixed(1)} s: ${run.fleetPerSec.toFixed(0)} mailboxes/s; controller ${run.controllerCpuMsPerMailbox.toFixed(2)} ms CPU per mailbox`,
      );
      runs.push(run);
      for (let i = 0; i < k; i++)
        rmSync(join(root, `k${k}-p${i}`), { recursive: true, force: true });
    }
  } finally {
    await sshd.stop();
    rmSync(root, { recursive: true, force: true });
  }
  const one = runs[0] as FleetRun;
  const four = runs[runs.length - 1] as FleetRun;
  return {
    machine,
    mailboxesPerPair: n,
    concurrency,
    runs,
    controllerCeilingPerSec: cpus().length / (four.controllerCpuMsPerMailbox / 1000),
    cpuRatio: four.controllerCpuMsPerMailbox / one.controllerCpuMsPerMailbox,
    totalMs: performance.now() - t0,
  };
}

export function formatFleetBench(r: FleetBenchResult): string {
  const base = r.runs[0] as FleetRun;
  const rows = r.runs.map((x) => {
    const perPair = x.perPairPerSec.map((v) => v.toFixed(0)).join(", ");
    return `  ${String(x.pairs).padStart(2)} pair(s): ${x.fleetPerSec.toFixed(0).padStart(4)} mailboxes/s fleet (${(x.fleetPerSec / base.fleetPerSec).toFixed(2)}× 1 pair); per pair ${perPair}/s; controller ${x.controllerCpuMsPerMailbox.toFixed(2)} ms CPU/mailbox, peak RSS ${x.peakRssMiB.toFixed(0)} MiB; machine ${(x.machineBusy * 100).toFixed(0)}% busy`;
  });
  return [
    `fleet apply: ${r.mailboxesPerPair} mailboxes per pair, --concurrency ${r.concurrency}, SSH on loopback (agents, sshd and controller on this machine)`,
    machineLine(r.machine),
    ...rows,
    `  controller ceiling (hosts elsewhere): ${r.machine.cores} cores / ${(r.runs[r.runs.length - 1] as FleetRun).controllerCpuMsPerMailbox.toFixed(2)} ms = ${r.controllerCeilingPerSec.toFixed(0)} mailboxes/s`,
    goalLine({
      name: "controller CPU per mailbox, 4 pairs / 1 pair",
      value: r.cpuRatio,
      op: "<=",
      target: GOAL_CPU_RATIO,
    }),
    `  total bench time ${(r.totalMs / 1000).toFixed(1)} s`,
  ].join("\n");
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      mailboxes: { type: "string", default: "1000" },
      concurrency: { type: "string", default: "4" },
      json: { type: "boolean", default: false },
    },
  });
  const result = await runFleetBench({
    mailboxes: Number(values.mailboxes),
    concurrency: Number(values.concurrency),
  });
  process.stdout.write(
    values.json ? `${JSON.stringify(result, null, 2)}\n` : `${formatFleetBench(result)}\n`,
  );
}
