// Speed of `guidup plan` over SSH, and controller memory for a big plan.
//
// Generates a master/replica pair of N small mailboxes per side (default
// 100,000; each a cyrus.header, a cyrus.index of version 6..9 and 0–3 small
// message files, hashed spool), starts a real OpenSSH sshd on loopback, and
// runs `guidup plan` over SSH to it as a separate process. Reports:
//   - mailboxes/s (N / wall time of the plan command, both sides scanned);
//   - the I/O floor: `find <spool> -name cyrus.index -print0 | xargs -0 cat
//     > /dev/null` over both spools on this machine, and plan time / floor;
//   - peak RSS and heap of the controller while planning (scan, build, write
//     of the N-entry plan), and while reading that plan back (readPlan) and
//     writing it again (writePlan), each measured in its own child process.
//
//   - the controller's own CPU per mailbox and side (user + system);
//   - with --baseline DIR (a built checkout of another guidup version, e.g.
//     `git archive <commit> | tar -x -C DIR`, node_modules linked, `npx tsc`):
//     that version's plan over the same spool and sshd, its agents too,
//     alternating with this one --repeat times, and the ratio of the rates.
//
// Run: `node dist/bench/plan.js [--mailboxes N] [--dir D] [--keep]
//        [--baseline DIR] [--repeat N]`
// (build first: `npx tsc -p tsconfig.json`; needs /usr/sbin/sshd, root or a
// user sshd lets in). Everything runs on one machine: the "remote" agents
// compete with the controller and sshd for the same cores.
//
// Why not src/spoolgen/spool-generator.ts: it makes realistic mailboxes
// (messages, caches, COPY links found by scanning earlier mailboxes), and
// that search grows with the spool: 2,000 mailboxes took 1.6 s and 8,000
// took 13 s here, so 100,000 would take far beyond the budget. This
// generator writes only what a scan reads plus the message files.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { encodeCyrusHeader23 } from "../src/cyrus/cyrus-header.js";
import { formatFor, type IndexFormat } from "../src/cyrus/formats/index.js";
import { parseImapdConf } from "../src/cyrus/imapd-conf.js";
import { encodeHeader, encodeRecord, type RecordValues } from "../src/cyrus/index-writer.js";
import { mailboxDataDir } from "../src/cyrus/mailbox-path.js";
import { readPlan, writePlan } from "../src/plan/plan-file.js";
import { type Goal, goalLine, machineInfo, machineLine } from "./report.js";
import { startBenchSshd } from "./sshd.js";

const HERE = fileURLToPath(import.meta.url);
const MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));

export interface PlanBenchOptions {
  /** Mailboxes per side (default 100,000). */
  mailboxes?: number;
  /**
   * Parent of the temp directory. Default /dev/shm when it exists, else
   * os.tmpdir(): on the VM this was written on, creating a file on disk took
   * about 0.5 ms (2 × 100,000 mailboxes ≈ 900,000 files: many minutes), on
   * tmpfs 25 times less. Plan and cat floor read from memory either way (the
   * cache is warm), so the ratio does not depend on it.
   */
  dir?: string;
  keep?: boolean;
  /** A built checkout of another version, planned over the same spool alternately. */
  baseline?: string;
  /** Plan runs of each version (default 1). */
  repeat?: number;
  log?: (line: string) => void;
}

export interface MemoryFigures {
  ms: number;
  /** process.resourceUsage().maxRSS, bytes. */
  maxRssBytes: number;
  /** Highest process.memoryUsage().heapUsed seen (sampled every 10 ms and at the end). */
  peakHeapBytes: number;
  /** The process's own CPU (user + system) while measured, ms. */
  cpuMs?: number;
}

/** One plan run of one version. */
export interface PlanRun {
  version: "this" | "baseline";
  ms: number;
  mailboxesPerSec: number;
  maxRssBytes: number;
  peakHeapBytes: number;
  /** Controller CPU per mailbox and side, µs. */
  cpuUsPerMailboxSide: number;
  load1: number;
}

export interface PlanBenchResult {
  mailboxesPerSide: number;
  /** Where the spools were written. */
  dir: string;
  generateMs: number;
  spoolBytesPerSide: number;
  plan: MemoryFigures & { mailboxesPerSec: number; planFileBytes: number; entries: number };
  catFloorMs: number;
  /** plan wall time / cat floor. */
  ratioToFloor: number;
  readBack: MemoryFigures;
  writeAgain: MemoryFigures;
  /** Every plan run, in the order run (this version first in each round). */
  runs: PlanRun[];
}

// --- the spool ---------------------------------------------------------------

const NOW = 1259625600;

/** The imapd.conf of one side of a generated pair under `root` (also bench/linked-spool.ts). */
export function imapdConf(root: string): string {
  return [
    "# guidup bench/plan.ts",
    `configdirectory: ${join(root, "config")}`,
    "defaultpartition: default",
    `partition-default: ${join(root, "spool")}`,
    "hashimapspool: yes",
    "fulldirhash: no",
    "",
  ].join("\n");
}

/** user.<a..z><base36 i> and every second one its .Sent: 26 hash buckets, nested dirs. */
export function mailboxName(i: number): string {
  const user = `${String.fromCharCode(97 + ((i >> 1) % 26))}${(i >> 1).toString(36)}`;
  return i % 2 === 0 ? `user.${user}` : `user.${user}.Sent`;
}

function message(name: string, uid: number): Buffer {
  const body = "x".repeat(100 + ((uid * 37) % 200));
  return Buffer.from(
    `From: a@example.org\r\nTo: ${name.split(".")[1]}@example.org\r\nSubject: ${name} ${uid}\r\n\r\n${body}\r\n`,
  );
}

/** Overrides for other benchmarks (bench/apply.ts); the defaults are this benchmark's mix. */
export interface GenerateShape {
  /** Index minor version of mailbox i (default 6 + (i * 7) % 4). */
  minor?: (i: number) => number;
  /** Message files of mailbox i (default i % 4). */
  messages?: (i: number) => number;
}

/** Writes N mailboxes into master/ and replica/ (same bytes); returns the list file and sizes. */
export function generate(
  root: string,
  n: number,
  shape: GenerateShape = {},
): { list: string; bytesPerSide: number } {
  const sides = ["master", "replica"].map((side) => {
    const sideRoot = join(root, side);
    mkdirSync(join(sideRoot, "config"), { recursive: true });
    mkdirSync(join(sideRoot, "spool"), { recursive: true });
    const text = imapdConf(sideRoot);
    writeFileSync(join(sideRoot, "imapd.conf"), text);
    return parseImapdConf(text, join(sideRoot, "imapd.conf"));
  });
  const names: string[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const name = mailboxName(i);
    names.push(name);
    const minor = shape.minor?.(i) ?? 6 + ((i * 7) % 4);
    const format = formatFor(minor) as IndexFormat;
    const count = shape.messages?.(i) ?? i % 4;
    const uidValidity = NOW - 86400 * (1 + (i % 700));
    const messages = Array.from({ length: count }, (_, k) => message(name, k + 1));
    const records = messages.map((m, k) => {
      const r: RecordValues = {
        uid: k + 1,
        internalDate: uidValidity + k * 60,
        sentDate: uidValidity - (uidValidity % 86400),
        size: m.length,
        headerSize: m.indexOf("\r\n\r\n") + 4,
        contentOffset: m.indexOf("\r\n\r\n") + 4,
        lastUpdated: uidValidity + k * 60,
        contentLines: 1,
        cacheVersion: 2,
        modseq: 1n,
      };
      if (format.recordField("uuid")) r.uuid = Buffer.alloc(12);
      return encodeRecord(format, r);
    });
    const index = Buffer.concat([
      encodeHeader(
        format,
        {
          generation: 1,
          lastAppendDate: uidValidity + count * 60,
          lastUid: count,
          quotaUsed: BigInt(messages.reduce((s, m) => s + m.length, 0)),
          uidValidity,
          highestModseq: 1n,
        },
        count,
      ),
      ...records,
    ]);
    const header = encodeCyrusHeader23({
      uniqueId: `${i.toString(16).padStart(8, "0")}${uidValidity.toString(16)}`,
      userFlags: [],
      acl: `${name.split(".")[1]}\tlrswipkxtecda\t`,
    });
    for (const conf of sides) {
      const dir = mailboxDataDir(conf, name, "default");
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "cyrus.header"), header);
      writeFileSync(join(dir, "cyrus.index"), index);
      messages.forEach((m, k) => {
        writeFileSync(join(dir, `${k + 1}.`), m);
      });
    }
    bytes += header.length + index.length + messages.reduce((s, m) => s + m.length, 0);
  }
  const list = join(root, "mailboxes.txt");
  writeFileSync(list, `${names.sort().join("\n")}\n`);
  return { list, bytesPerSide: bytes };
}

// --- child processes -----------------------------------------------------------

/** Runs in the child: samples the heap while `work` runs, prints the figures as JSON. */
async function measured(work: () => Promise<unknown>): Promise<void> {
  let peakHeap = process.memoryUsage().heapUsed;
  const timer = setInterval(() => {
    peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
  }, 10);
  const start = performance.now();
  const cpu = process.cpuUsage();
  const extra = await work();
  const ms = performance.now() - start;
  const used = process.cpuUsage(cpu);
  clearInterval(timer);
  peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
  const figures: MemoryFigures & { extra?: unknown } = {
    ms,
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
    peakHeapBytes: peakHeap,
    cpuMs: (used.user + used.system) / 1000,
    extra,
  };
  process.stdout.write(`BENCH-RESULT ${JSON.stringify(figures)}\n`);
}

async function childMain(mode: string, args: string[]): Promise<void> {
  if (mode === "plan") {
    // The version's main.js comes first (this one's or a baseline's).
    const [mainPath, ...planArgs] = args;
    const { main } = (await import(pathToFileURL(mainPath as string).href)) as {
      main: (argv: string[], io: unknown) => Promise<number>;
    };
    let err = "";
    await measured(async () => {
      const code = await main(planArgs, {
        out: () => {},
        err: (t: string) => {
          err += t;
        },
        isTTY: false,
        drained: () => Promise.resolve(),
      });
      if (code !== 0) throw new Error(`guidup plan exited ${code}:\n${err}`);
      return code;
    });
    return;
  }
  if (mode === "read") {
    await measured(async () => (await readPlan(args[0] as string)).mailboxes.length);
    return;
  }
  if (mode === "write") {
    // Loaded before the measurement starts: the figures are of writing only
    // (peak heap still includes the loaded plan itself).
    const plan = await readPlan(args[0] as string);
    await measured(() => writePlan(args[1] as string, plan));
    return;
  }
  throw new Error(`unknown child mode ${mode}`);
}

function runChild(mode: string, args: string[]): Promise<MemoryFigures & { extra?: unknown }> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(
      process.execPath,
      ["--max-old-space-size=4096", HERE, "--child", mode, ...args],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    let err = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString("utf8");
    });
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString("utf8");
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const line = out.split("\n").find((l) => l.startsWith("BENCH-RESULT "));
      if (code !== 0 || line === undefined)
        reject(new Error(`bench child ${mode} failed (exit ${code}):\n${err}${out}`));
      else resolve(JSON.parse(line.slice("BENCH-RESULT ".length)));
    });
  });
}

function catFloorMs(spools: string[]): number {
  const script = spools
    .map((s) => `find '${s}' -name cyrus.index -print0 | xargs -0 cat > /dev/null`)
    .join(" && ");
  const start = performance.now();
  execFileSync("sh", ["-c", script], { stdio: "ignore" });
  return performance.now() - start;
}

// --- the benchmark -------------------------------------------------------------

export async function runPlanBench(opts: PlanBenchOptions = {}): Promise<PlanBenchResult> {
  const n = opts.mailboxes ?? 100_000;
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const parent = opts.dir ?? (existsSync("/dev/shm") ? "/dev/shm" : tmpdir());
  const root = await mkdtemp(join(parent, "guidup-bench-plan-"));
  const sshd = await startBenchSshd();
  try {
    log(machineLine());
    log(`generating 2 × ${n} mailboxes in ${root} …`);
    let start = performance.now();
    const { list, bytesPerSide } = generate(root, n);
    const generateMs = performance.now() - start;
    log(`  ${(generateMs / 1000).toFixed(1)} s`);

    const host = (side: string, main: string) =>
      [
        `    ${side}:`,
        "      host: 127.0.0.1",
        `      port: ${sshd.port}`,
        `      user: ${JSON.stringify(sshd.user)}`,
        `      identityFile: ${JSON.stringify(sshd.clientKeyPath)}`,
        `      knownHostsFile: ${JSON.stringify(sshd.knownHostsPath)}`,
        `      command: ${JSON.stringify(`${process.execPath} ${main} serve`)}`,
        `      config: ${JSON.stringify(join(root, side, "imapd.conf"))}`,
        `      name: ${side}`,
      ].join("\n");
    // Each version's agents are its own.
    const inventoryFor = (version: "this" | "baseline", main: string) => {
      const file = join(root, `inventory-${version}.yaml`);
      writeFileSync(
        file,
        `pairs:\n  - name: bench\n    mailboxes: { file: ${JSON.stringify(list)} }\n${host("master", main)}\n${host("replica", main)}\n`,
      );
      return file;
    };
    const versions: { version: "this" | "baseline"; main: string }[] = [
      { version: "this", main: MAIN },
    ];
    if (opts.baseline) {
      const main = join(opts.baseline, "dist/src/cli/main.js");
      if (!existsSync(main)) throw new Error(`--baseline ${opts.baseline}: no ${main} (build it)`);
      versions.push({ version: "baseline", main });
    }

    const spools = [join(root, "master", "spool"), join(root, "replica", "spool")];
    // Warm the page cache the same way for both contenders: one cat pass first.
    catFloorMs(spools);
    log("cat floor …");
    const floorBefore = catFloorMs(spools);

    const planFile = join(root, "plan.yaml");
    const runs: PlanRun[] = [];
    let plan: (MemoryFigures & { extra?: unknown }) | undefined;
    let planWallMs = 0;
    for (let round = 0; round < Math.max(1, opts.repeat ?? 1); round++) {
      for (const { version, main } of versions) {
        log(`guidup plan over ssh (${version === "this" ? "this version" : "baseline"}) …`);
        const out = version === "this" ? planFile : join(root, "plan-baseline.yaml");
        rmSync(out, { force: true });
        rmSync(`${out}.state`, { recursive: true, force: true });
        const load1 = machineInfo().load1;
        start = performance.now();
        const figures = await runChild("plan", [
          main,
          "plan",
          "--inventory",
          inventoryFor(version, main),
          "--out",
          out,
        ]);
        const ms = performance.now() - start;
        runs.push({
          version,
          ms,
          mailboxesPerSec: n / (ms / 1000),
          maxRssBytes: figures.maxRssBytes,
          peakHeapBytes: figures.peakHeapBytes,
          cpuUsPerMailboxSide: ((figures.cpuMs ?? 0) * 1000) / (2 * n),
          load1,
        });
        // This version's figures: its fastest run.
        if (version === "this" && (plan === undefined || ms < planWallMs)) {
          plan = figures;
          planWallMs = ms;
        }
      }
    }
    if (plan === undefined) throw new Error("no plan run");
    const floorAfter = catFloorMs(spools);
    const floor = Math.min(floorBefore, floorAfter);

    log("reading the plan back …");
    const readBack = await runChild("read", [planFile]);
    log("writing it again …");
    const writeAgain = await runChild("write", [planFile, join(root, "plan-again.yaml")]);

    return {
      mailboxesPerSide: n,
      dir: parent,
      generateMs,
      spoolBytesPerSide: bytesPerSide,
      plan: {
        ms: planWallMs,
        maxRssBytes: plan.maxRssBytes,
        peakHeapBytes: plan.peakHeapBytes,
        mailboxesPerSec: n / (planWallMs / 1000),
        planFileBytes: statSync(planFile).size,
        entries: Number(readBack.extra),
      },
      catFloorMs: floor,
      ratioToFloor: planWallMs / floor,
      readBack: strip(readBack),
      writeAgain: strip(writeAgain),
      runs,
    };
  } finally {
    await sshd.stop();
    if (!opts.keep) rmSync(root, { recursive: true, force: true });
    else log(`kept ${root}`);
  }
}

function strip(f: MemoryFigures & { extra?: unknown }): MemoryFigures {
  return { ms: f.ms, maxRssBytes: f.maxRssBytes, peakHeapBytes: f.peakHeapBytes };
}

/** The best rate of a version's runs. */
function bestRate(r: PlanBenchResult, version: PlanRun["version"]): number | undefined {
  const rates = r.runs.filter((x) => x.version === version).map((x) => x.mailboxesPerSec);
  return rates.length === 0 ? undefined : Math.max(...rates);
}

/** The goals of issue #11 for plan, and this version against the baseline when there is one. */
export function planBenchGoals(r: PlanBenchResult): Goal[] {
  const mine = bestRate(r, "this") ?? 0;
  const baseline = bestRate(r, "baseline");
  const worstRss = Math.max(
    ...r.runs.filter((x) => x.version === "this").map((x) => x.maxRssBytes),
  );
  return [
    { name: "plan mailboxes/s per side over SSH", value: mine, op: ">=", target: 5000, unit: "/s" },
    {
      name: "controller peak RSS while planning",
      value: worstRss / 1024 / 1024,
      op: "<=",
      target: 256,
      unit: " MiB",
    },
    ...(baseline === undefined
      ? []
      : [
          {
            name: "plan rate / baseline's (best runs, same run)",
            value: mine / baseline,
            op: ">=" as const,
            target: 1,
          },
        ]),
  ];
}

const mib = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MiB`;
const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

export function formatPlanBench(r: PlanBenchResult): string {
  return [
    `guidup plan over SSH (loopback OpenSSH sshd), ${r.mailboxesPerSide.toLocaleString("en")} mailboxes per side`,
    `  spool per side:     ${mib(r.spoolBytesPerSide)} of headers, indexes and messages under ${r.dir} (generated in ${sec(r.generateMs)})`,
    `  plan:               ${sec(r.plan.ms)} wall = ${Math.round(r.plan.mailboxesPerSec).toLocaleString("en")} mailboxes/s (each scanned on master and replica)`,
    `  cat floor:          ${sec(r.catFloorMs)}  (find … -name cyrus.index | xargs cat, both spools, warm cache)`,
    `  plan / floor:       ${r.ratioToFloor.toFixed(1)}×`,
    `  plan file:          ${r.plan.entries.toLocaleString("en")} entries, ${mib(r.plan.planFileBytes)}`,
    `  controller memory   peak RSS   peak heap   time`,
    `    plan (scan+write) ${mib(r.plan.maxRssBytes).padStart(8)}   ${mib(r.plan.peakHeapBytes).padStart(9)}   ${sec(r.plan.ms)}`,
    `    read back         ${mib(r.readBack.maxRssBytes).padStart(8)}   ${mib(r.readBack.peakHeapBytes).padStart(9)}   ${sec(r.readBack.ms)}`,
    `    write again       ${mib(r.writeAgain.maxRssBytes).padStart(8)}   ${mib(r.writeAgain.peakHeapBytes).padStart(9)}   ${sec(r.writeAgain.ms)}  (plan already loaded)`,
    `  plan runs (in order; load = 1-minute load average at its start)`,
    ...r.runs.map(
      (x) =>
        `    ${x.version.padEnd(8)}  ${sec(x.ms).padStart(8)}  ${Math.round(x.mailboxesPerSec).toLocaleString("en").padStart(6)} mailboxes/s per side  controller CPU ${x.cpuUsPerMailboxSide.toFixed(1)} µs per mailbox and side  peak RSS ${mib(x.maxRssBytes)}  load ${x.load1.toFixed(1)}`,
    ),
    ...planBenchGoals(r).map((g) => `  ${goalLine(g)}`),
  ].join("\n");
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === "--child") {
    await childMain(process.argv[3] as string, process.argv.slice(4));
  } else {
    const { values } = parseArgs({
      options: {
        mailboxes: { type: "string", default: "100000" },
        dir: { type: "string" },
        keep: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        baseline: { type: "string" },
        repeat: { type: "string", default: "1" },
      },
    });
    const n = Number(values.mailboxes);
    if (!Number.isInteger(n) || n < 1) throw new Error("--mailboxes N: a positive integer");
    const result = await runPlanBench({
      mailboxes: n,
      ...(values.dir ? { dir: values.dir } : {}),
      keep: values.keep,
      ...(values.baseline ? { baseline: values.baseline } : {}),
      repeat: Number(values.repeat),
    });
    process.stdout.write(
      values.json ? `${JSON.stringify(result, null, 2)}\n` : `${formatPlanBench(result)}\n`,
    );
  }
}
