// Scale of one pair at a REAL million mailboxes per side (issue #11):
// controller time, peak RSS and CPU of `plan`, `show --summary`,
// `apply --batch` and `status` over a real spool, not a grown plan
// (bench/scale.ts measures the "1M shape").
//
// The spool is bench/linked-spool.ts's: every mailbox its own directory and
// name, its identical files hard links to one inode per kind and side, on a
// tmpfs (2 × 1M mailboxes as separate files would take ~24 GiB of tmpfs
// pages, and ext4 here costs 0.1-0.6 ms a file). The first --batch mailboxes
// in plan order have their own header and index, so the apply batch locks
// as on a real spool; after apply the shared index's link count says whether
// apply touched any other. tmpfs counts each hard link against its inode
// limit: 1M per side needs ~9M, more than /dev/shm allows here (3.08M), so
// give it a tmpfs of its own (`mount -t tmpfs -o size=8g,nr_inodes=10m
// guidup-million /mnt/guidup-million`, then --dir /mnt/guidup-million, or
// GUIDUP_BENCH_MILLION_DIR=/mnt/guidup-million for `npm run bench`).
//
// Each command runs as its own process with bench/rss-probe.ts loaded (its
// own peak RSS and CPU, not its agents'), plan through the local transport
// with `mailboxes: { discover: true }`. A watchdog stops a command whose RSS
// passes --rss-limit MiB (default 2048) or when the machine's available
// memory falls under 4 GiB, and the run reports how far it got.
// Goals: controller peak RSS < 256 MiB; show --summary < 1 s; status < 10 s;
// plan >= 5,000 mailboxes/s per side; apply's first mailbox within 5 s of
// launch (GUIDUP_TIMELINE's "first mailbox begins").
//
// Takes well over ten minutes at 1,000,000 (generation alone several
// minutes), so `npm run bench` runs it only with `--only million`.
//
// Run: `node dist/bench/scale-million.js [--mailboxes N] [--batch 2000]
// [--dir /dev/shm] [--rss-limit MiB] [--keep]`; try --mailboxes 10000 first.

import { spawn } from "node:child_process";
import { readFileSync, rmSync, statfsSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { probeFigures, timelineLines } from "./child-run.js";
import { generateLinked } from "./linked-spool.js";
import { goalLine, machineLine } from "./report.js";

const MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const PROBE = pathToFileURL(fileURLToPath(new URL("./rss-probe.js", import.meta.url))).href;
const MiB = 2 ** 20;
/** Below this much available memory a command is stopped (the machine is shared). */
const MIN_AVAILABLE_MIB = 4096;

interface Figures {
  command: string;
  ms: number;
  maxRssBytes: number;
  cpuMs: number;
  code: number | null;
  out: string;
  /** "<ms> <step>" lines of src/timeline.ts. */
  timeline: string[];
  load1: number;
}

/** /proc/meminfo in MiB: what the spool costs (tmpfs pages, dentries and inodes). */
function meminfo(): { available: number; shmem: number; slab: number; used: number } {
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(readFileSync("/proc/meminfo", "utf8"));
    return Number(m?.[1] ?? 0) / 1024;
  };
  return {
    available: kb("MemAvailable"),
    shmem: kb("Shmem"),
    slab: kb("Slab"),
    used: kb("MemTotal") - kb("MemAvailable"),
  };
}

/** Child processes of `pid` (its agents), from /proc; 0 when unknown. */
function childCount(pid: number): number {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean).length;
  } catch {
    return 0;
  }
}

function rssMiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return Number(m?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

class Stopped extends Error {}

/**
 * Runs one guidup command. With `trace`, logs the controller's RSS every
 * `trace` seconds and each change in how many child processes it has (plan:
 * one agent while the master discovers, then the scan's) — where the time and the
 * memory go, as plan prints no timeline.
 */
function run(
  label: string,
  args: string[],
  rssLimitMiB: number,
  okCodes = [0],
  trace?: { everySec: number; log: (s: string) => void },
): Promise<Figures> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(process.execPath, ["--import", PROBE, MAIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, GUIDUP_TIMELINE: "1" },
    });
    let out = "";
    let err = "";
    let stopped: string | undefined;
    let peakSeen = 0;
    let agents = -1;
    let ticks = 0;
    const watchdog = setInterval(() => {
      const rss = rssMiB(child.pid ?? 0);
      peakSeen = Math.max(peakSeen, rss);
      if (trace) {
        ticks++;
        const now = childCount(child.pid ?? 0);
        const at = `${((performance.now() - start) / 1000).toFixed(0).padStart(5)} s`;
        if (now !== agents)
          trace.log(`      ${at}: ${now} child process(es), controller RSS ${rss.toFixed(0)} MiB`);
        else if (ticks % trace.everySec === 0)
          trace.log(
            `      ${at}: controller RSS ${rss.toFixed(0)} MiB (peak so far ${peakSeen.toFixed(0)})`,
          );
        agents = now;
      }
      const available = meminfo().available;
      if (stopped === undefined && (rss > rssLimitMiB || available < MIN_AVAILABLE_MIB)) {
        stopped = `stopped after ${((performance.now() - start) / 1000).toFixed(1)} s: RSS ${rss.toFixed(0)} MiB (limit ${rssLimitMiB}), machine available ${available.toFixed(0)} MiB`;
        child.kill("SIGTERM");
      }
    }, 1000);
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString("utf8");
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString("utf8");
    });
    child.on("error", reject);
    child.on("close", (code) => {
      clearInterval(watchdog);
      const ms = performance.now() - start;
      const timeline = timelineLines(err);
      if (stopped !== undefined) {
        reject(
          new Stopped(
            `guidup ${label} ${stopped}; peak RSS seen ${peakSeen.toFixed(0)} MiB; last output: ${err.slice(-600)}; timeline: ${timeline.slice(-8).join(" · ")}`,
          ),
        );
        return;
      }
      const probe = probeFigures(err, child.pid);
      if (!okCodes.includes(code ?? -1) || !probe) {
        reject(new Error(`guidup ${args.join(" ")} exited ${code}:\n${err.slice(-3000)}`));
        return;
      }
      resolve({
        command: label,
        ms,
        maxRssBytes: probe.maxRssBytes,
        cpuMs: probe.cpuMs,
        code,
        out,
        timeline,
        load1: loadavg()[0] ?? 0,
      });
    });
  });
}

function inventory(root: string): string {
  const host = (side: string) =>
    [
      `    ${side}:`,
      "      transport: local",
      `      config: ${JSON.stringify(join(root, side, "imapd.conf"))}`,
      `      name: ${side}`,
    ].join("\n");
  return `pairs:\n  - name: million\n    mailboxes: { discover: true }\n${host("master")}\n${host("replica")}\n`;
}

function line(f: Figures, extra = ""): string {
  return `  ${f.command.padEnd(20)} ${(f.ms / 1000).toFixed(2).padStart(8)} s  peak RSS ${(f.maxRssBytes / MiB).toFixed(0).padStart(5)} MiB  CPU ${(f.cpuMs / 1000).toFixed(2).padStart(7)} s  load ${f.load1.toFixed(1)} at end${extra}`;
}

/** ms since launch of the timeline step containing `step`, if printed. */
function timelineMs(f: Figures, step: string): number | undefined {
  const l = f.timeline.find((t) => t.includes(step));
  return l === undefined ? undefined : Number.parseFloat(l);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      mailboxes: { type: "string", default: "1000000" },
      batch: { type: "string", default: "2000" },
      // npm run bench passes no options: the directory may come from the environment.
      dir: { type: "string", default: process.env.GUIDUP_BENCH_MILLION_DIR ?? "/dev/shm" },
      "rss-limit": { type: "string", default: "2048" },
      keep: { type: "boolean" },
    },
  });
  const n = Number(values.mailboxes);
  const batch = Number(values.batch);
  const rssLimit = Number(values["rss-limit"]);
  if (!Number.isInteger(n) || n < 2 || !Number.isInteger(batch) || batch < 1 || batch > n)
    throw new Error("--mailboxes N (>= 2) and --batch B (1..N) must be integers");
  const log = (s: string) => console.log(s);
  log(machineLine());
  const m0 = meminfo();
  // ~1.8 KiB of dentries and inodes a linked mailbox and side (slab: +3.6 GiB
  // for the 1M pair here), and two 4 KiB tmpfs pages for each one with its
  // own header and index.
  const needMiB = (n * 2 * 2) / 1024 + (batch * 2 * 2 * 4) / 1024;
  if (m0.available - needMiB < 8192)
    throw new Error(
      `not enough memory: ${m0.available.toFixed(0)} MiB available, the spool needs ~${needMiB.toFixed(0)} MiB and 8 GiB must stay free for others`,
    );
  // tmpfs counts every hard link against its inode limit (nr_inodes; on this
  // machine /dev/shm allows 3.08M): a directory and three links a mailbox
  // and side, plus the hash and user directories.
  const inodes = n * 2 * 4 + n + 1000;
  const fs = statfsSync(values.dir);
  if (fs.ffree < inodes)
    throw new Error(
      `${values.dir}: ${fs.ffree} free inodes, the spool needs ~${inodes} (tmpfs counts each hard link): mount a tmpfs of your own, e.g. \`mount -t tmpfs -o size=8g,nr_inodes=10m guidup-million /mnt/guidup-million\`, and pass --dir /mnt/guidup-million`,
    );
  const parent = await mkdtemp(join(values.dir, "guidup-million-"));
  log(
    `dir ${parent}; ${n} mailboxes per side, linked spool (bench/linked-spool.ts), the first ${batch} with their own header and index`,
  );
  const goals: string[] = [];
  const all: Figures[] = [];
  try {
    let t = performance.now();
    const spool = generateLinked(parent, n, batch, (done) =>
      log(`    generated ${done} (${((performance.now() - t) / 1000).toFixed(0)} s)`),
    );
    const genMs = performance.now() - t;
    const m1 = meminfo();
    log(
      `generated the pair in ${(genMs / 1000).toFixed(1)} s (${((genMs * 1000) / (2 * n)).toFixed(1)} µs a mailbox and side); memory: used +${(m1.used - m0.used).toFixed(0)} MiB (shmem +${(m1.shmem - m0.shmem).toFixed(0)}, slab +${(m1.slab - m0.slab).toFixed(0)}), ${m1.available.toFixed(0)} MiB still available`,
    );
    const inv = join(parent, "inventory.yaml");
    writeFileSync(inv, inventory(parent));
    const plan = join(parent, "plan.yaml");

    const p = await run("plan", ["plan", "--inventory", inv, "--out", plan], rssLimit, [0], {
      everySec: 30,
      log,
    });
    all.push(p);
    const perSide = n / (p.ms / 1000);
    log(
      line(
        p,
        `  ${Math.round(perSide)} mailboxes/s per side, controller CPU ${((p.cpuMs * 1000) / n).toFixed(1)} µs/mailbox, plan file ${(statSync(plan).size / MiB).toFixed(0)} MiB`,
      ),
    );
    goals.push(
      goalLine({
        name: `plan at ${n} (local, discover): mailboxes/s per side`,
        value: perSide,
        op: ">=",
        target: 5000,
        unit: "/s",
      }),
    );

    const s = await run("show --summary", ["show", plan, "--summary"], rssLimit);
    all.push(s);
    log(line(s));
    goals.push(
      goalLine({
        name: `show --summary at ${n}`,
        value: s.ms / 1000,
        op: "<=",
        target: 1,
        unit: " s",
      }),
    );

    t = performance.now();
    const a = await run(
      `apply --batch ${batch}`,
      ["apply", plan, "--batch", String(batch)],
      rssLimit,
      [0, 1],
    );
    all.push(a);
    const first = timelineMs(a, "first mailbox begins");
    log(line(a, `  ${((batch * 1000) / a.ms).toFixed(0)} mailboxes/s`));
    log(`      timeline (ms since launch): ${a.timeline.join(" · ")}`);
    if (first !== undefined)
      goals.push(
        goalLine({
          name: `apply at ${n}: launch to first mailbox`,
          value: first / 1000,
          op: "<=",
          target: 5,
          unit: " s",
        }),
      );
    else log("      (no 'first mailbox begins' in apply's timeline)");
    for (const side of ["master", "replica"] as const) {
      const links = statSync(join(spool.templates[side], "cyrus.index")).nlink - 1;
      log(
        `      ${side}: ${links} mailboxes still link the shared index (${n - batch} expected: ${links === n - batch ? "apply touched only the mailboxes with their own files" : "apply converted linked mailboxes too"})`,
      );
    }

    const st = await run("status", ["status", plan], rssLimit, [0, 1]);
    all.push(st);
    log(line(st));
    goals.push(
      goalLine({
        name: `status at ${n}`,
        value: st.ms / 1000,
        op: "<=",
        target: 10,
        unit: " s",
      }),
    );
  } catch (err) {
    if (!(err instanceof Stopped)) throw err;
    log(`STOPPED: ${err.message}`);
    process.exitCode = 1;
  } finally {
    log("");
    for (const f of all)
      log(
        goalLine({
          name: `${f.command} at ${n}: controller peak RSS`,
          value: f.maxRssBytes / MiB,
          op: "<=",
          target: 256,
          unit: " MiB",
        }),
      );
    for (const g of goals) log(g);
    if (!values.keep) {
      const t = performance.now();
      rmSync(parent, { recursive: true, force: true });
      log(`removed ${parent} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    } else log(`kept ${parent}`);
  }
}

try {
  await main();
} catch (err) {
  // A refusal (memory, inodes, arguments) or a command that failed: one
  // message, no stack.
  console.error(`scale-million: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
