// The writer's side of a live upgrade (issue #9, benchmark): how long the
// Cyrus-2.3-like writer (examples/cyrus-writer.ts: classic fcntl locks,
// deliveries, delayed expunges and flag changes, the replica replaying each
// op 0.5 s later) waits for its locks on the MASTER, at 40 ops/s,
//   1. alone (the baseline, same spool, same run), and
//   2. while `guidup apply PLAN` runs at its default concurrency over the
//      same mailboxes (only the ops that started during the apply count),
//      with half of the ops (--focus-share) aimed at apply's frontier: the
//      mailboxes it has most recently started, in plan order, as counted
//      from its state files every 100 ms. Live mail goes to active
//      mailboxes; uniform traffic over a thousand mailboxes would almost
//      never meet a locked one and would measure nothing.
// Prints p50 / p99 / max of the per-op lock wait (header + index + expunge)
// for both runs, their ratio, and whether the goal (p99 ≤ 25 ms
// during apply) is met, with the machine it ran on.
//
// Run: `node dist/bench/live-traffic.js [--mailboxes 500] [--rate 40]
// [--baseline-seconds 10] [--delay-ms 500] [--focus-share 0.5] [--dir D] [--keep]`
// (build first: `npx tsc -p tsconfig.json`), or `npm run bench -- --only live`.
//
// The spool lives under os.tmpdir() by default (a real disk: the writer
// fsyncs as Cyrus does; /dev/shm would hide that cost). The apply runs as a
// child process with local agents; its own result (done / stale / …) is
// printed but is not what is measured here.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startTraffic, type Traffic } from "../examples/cyrus-writer/driver.js";
import {
  type OpEntry,
  opsOf,
  totalWaitMs,
  type WaitStats,
  waitStats,
} from "../examples/cyrus-writer/journal.js";
import { DEFAULT_CONCURRENCY } from "../src/apply/engine.js";
import { stateDirFor } from "../src/apply/state-store.js";
import { readPlan } from "../src/plan/plan-file.js";
import { generateSpool } from "../src/spoolgen/spool-generator.js";

const MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const GOAL_P99_MS = 25;

export interface LiveTrafficOptions {
  mailboxes?: number;
  rate?: number;
  baselineSeconds?: number;
  delayMs?: number;
  focusShare?: number;
  dir?: string;
  keep?: boolean;
  log?: (line: string) => void;
}

export interface LiveTrafficResult {
  baseline: WaitStats;
  duringApply: WaitStats;
  applySeconds: number;
  applyExit: number | null;
  goalMet: boolean;
}

function runGuidup(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString("utf8");
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString("utf8");
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const ms = (n: number) => `${n.toFixed(1).padStart(7)} ms`;
const row = (label: string, s: WaitStats) =>
  `  ${label.padEnd(22)} ops ${String(s.count).padStart(5)}   p50 ${ms(s.p50)}   p99 ${ms(s.p99)}   max ${ms(s.max)}`;

export async function runLiveTrafficBench(o: LiveTrafficOptions = {}): Promise<LiveTrafficResult> {
  const log = o.log ?? console.log;
  const mailboxes = o.mailboxes ?? 500;
  const focusShare = o.focusShare ?? 0.5;
  const rate = o.rate ?? 40;
  const baselineSeconds = o.baselineSeconds ?? 10;
  const delayMs = o.delayMs ?? 500;
  const cpu = cpus();
  log(`machine: ${cpu.length} cores, ${cpu[0]?.model ?? "unknown CPU"}; node ${process.version}`);
  const root = await mkdtemp(join(o.dir ?? tmpdir(), "guidup-bench-live-"));
  const started: Traffic[] = [];
  try {
    let t = performance.now();
    const spool = await generateSpool({
      dir: root,
      seed: 1,
      mailboxes,
      pair: true,
      versions: [6, 7, 8, 9, 10],
      expungeFraction: 0.3,
      largeMailboxes: 0,
      messagesPerMailbox: [2, 20],
      messageBytes: [300, 5000],
    });
    if (!spool.replica) throw new Error("generateSpool made no replica");
    log(
      `spool: ${mailboxes} mailboxes (master + replica) in ${((performance.now() - t) / 1000).toFixed(1)} s at ${root}`,
    );
    const focusFile = join(root, "frontier.txt");
    const traffic = (name: string, durationS = 0) => {
      const dir = join(root, name);
      mkdirSync(dir);
      const t = startTraffic({
        focusFile,
        focusShare,
        masterConf: spool.master.imapdConf,
        replicaConf: (spool.replica as { imapdConf: string }).imapdConf,
        mailboxesFile: spool.plainList,
        dir,
        rate,
        seed: name === "baseline" ? 11 : 12,
        delayMs,
        durationS,
      });
      started.push(t);
      return t;
    };

    // 1. The writer alone.
    log(
      `\nbaseline: the writer alone, ${rate} ops/s for ${baselineSeconds} s, replica ${delayMs} ms behind`,
    );
    const alone = traffic("baseline", baselineSeconds);
    await alone.exited;
    const baseline = waitStats(opsOf(alone.masterEntries()));

    // 2. The writer during a plain apply at the default concurrency.
    const inventory = join(root, "inventory.yaml");
    writeFileSync(
      inventory,
      [
        "pairs:",
        "  - name: live",
        `    mailboxes: ${JSON.stringify({ file: spool.plainList })}`,
        "    master:",
        "      transport: local",
        `      config: ${JSON.stringify(spool.master.imapdConf)}`,
        "    replica:",
        "      transport: local",
        `      config: ${JSON.stringify(spool.replica.imapdConf)}`,
        "",
      ].join("\n"),
    );
    const plan = join(root, "plan.yaml");
    const planned = await runGuidup(["plan", "--inventory", inventory, "--out", plan]);
    if (planned.code !== 0)
      throw new Error(`guidup plan exited ${planned.code}:\n${planned.stderr}`);
    log(
      `\nwith apply: the writer at ${rate} ops/s while \`guidup apply PLAN\` runs (default concurrency ${DEFAULT_CONCURRENCY}), ${Math.round(focusShare * 100)} % of the ops on its frontier`,
    );
    const order = (await readPlan(plan)).mailboxes.map((m) => m.name);
    const stateDir = stateDirFor(plan);
    const startedCount = () => {
      if (!existsSync(stateDir)) return 0;
      let n = 0;
      for (const sub of readdirSync(stateDir, { withFileTypes: true }))
        if (sub.isDirectory())
          n += readdirSync(join(stateDir, sub.name)).filter((f) => f.endsWith(".json")).length;
      return n;
    };
    const frontier = setInterval(() => {
      const n = startedCount();
      const names = order.slice(Math.max(0, n - DEFAULT_CONCURRENCY), n + 1);
      writeFileSync(focusFile, names.map((x) => `${x}\n`).join(""));
    }, 100);
    const busy = traffic("with-apply");
    await busy.waitForOps(Math.ceil(rate / 2));
    t = performance.now();
    const applyStart = Date.now();
    const applied = await runGuidup(["apply", plan]).finally(() => clearInterval(frontier));
    const applyEnd = Date.now();
    const applySeconds = (performance.now() - t) / 1000;
    await busy.stop();
    const during = opsOf(busy.masterEntries()).filter(
      (e: OpEntry) => e.t0 >= applyStart && e.t0 <= applyEnd,
    );
    const duringApply = waitStats(during);
    const summary =
      applied.stdout.split("\n").find((l) => l.startsWith("apply ")) ?? "(no summary)";
    log(`  apply exit ${applied.code} in ${applySeconds.toFixed(1)} s: ${summary}`);

    const waited = during.filter((e) => totalWaitMs(e) > 1);
    log(
      `  ${waited.length} of ${during.length} ops during apply waited more than 1 ms for their locks`,
    );
    log("\nwriter's master-side lock wait per op (header + index + expunge):");
    log(row("baseline (no guidup)", baseline));
    log(row("during guidup apply", duringApply));
    const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(1)}×` : "n/a");
    log(
      `  ratio during/baseline: p50 ${ratio(duringApply.p50, baseline.p50)}, p99 ${ratio(duringApply.p99, baseline.p99)}, max ${ratio(duringApply.max, baseline.max)}`,
    );
    const goalMet = duringApply.count > 0 && duringApply.p99 <= GOAL_P99_MS;
    log(
      `  goal (issue #9): p99 during apply <= ${GOAL_P99_MS} ms: ${goalMet ? "MET" : "NOT MET"} (${duringApply.p99.toFixed(1)} ms over ${duringApply.count} ops)`,
    );
    return { baseline, duringApply, applySeconds, applyExit: applied.code, goalMet };
  } finally {
    for (const t of started) t.kill();
    if (o.keep) log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({
    options: {
      mailboxes: { type: "string" },
      rate: { type: "string" },
      "baseline-seconds": { type: "string" },
      "delay-ms": { type: "string" },
      "focus-share": { type: "string" },
      dir: { type: "string" },
      keep: { type: "boolean" },
    },
  });
  await runLiveTrafficBench({
    ...(values.mailboxes ? { mailboxes: Number(values.mailboxes) } : {}),
    ...(values.rate ? { rate: Number(values.rate) } : {}),
    ...(values["baseline-seconds"] ? { baselineSeconds: Number(values["baseline-seconds"]) } : {}),
    ...(values["delay-ms"] ? { delayMs: Number(values["delay-ms"]) } : {}),
    ...(values["focus-share"] ? { focusShare: Number(values["focus-share"]) } : {}),
    ...(values.dir ? { dir: values.dir } : {}),
    ...(values.keep ? { keep: true } : {}),
  });
}
