// Scale of one pair (issue #11): controller time and peak RSS of `plan`,
// `show --summary`, `apply --batch` and `status` at 10,000 and 100,000 real
// mailboxes per side, and at the 1,000,000 shape.
//
// Real sizes: bench/plan.ts's generator writes a pair of N small mailboxes
// (one spool per side, on /dev/shm), `guidup plan` scans both sides through
// the local transport (an agent process per side), apply really upgrades a
// batch. The 1M shape: a real 10,000-mailbox plan with its apply state,
// grown to a million entries (bench/scale-gen.ts growPlan) whose other
// 990,000 are recorded done in the state journal — what a pair looks like
// near the end of its apply; show, status and apply then read a 1M-entry
// plan file and a 1M-record journal, and apply works on real mailboxes.
//
// Each command runs as its own process; its own peak RSS and CPU come from
// bench/rss-probe.ts (the agents it spawns are not counted). The goal, per
// command and size: controller peak RSS < 256 MiB; show --summary < 1 s;
// status < 10 s at 1M; plan >= 5,000 mailboxes/s per side. The baseline is
// the same commands at 10k in this run (ratios), as the house rules ask.
// The first apply of the 1M plan file (bench/scale-first-apply.ts): launch
// to first mailbox and to exit, the plan as guidup wrote it against the
// same plan without its bodySha256 (every entry checked first), alternating.
//
// `plan` runs twice per size: the list from the generator's file, and from
// the master's discovery (pages from its agent); and once over a list of
// --grow names (reversed) on the smallest real pair, every name beyond it
// scanned missing and skipped: plan's controller at a million listed
// mailboxes. --plan-only measures plan alone (no show/apply/status, no 1M
// plan shape).
//
// Run: `node dist/bench/scale.js [--sizes 10000,100000] [--grow 1000000]
// [--batch 2000] [--first-repeat 2] [--dir D] [--keep] [--plan-only]`.

import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { mkdtemp, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { probeFigures, timelineLines } from "./child-run.js";
import { generate, mailboxName } from "./plan.js";
import { goalLine, machineLine } from "./report.js";
import { firstApplies } from "./scale-first-apply.js";
import { growPlan } from "./scale-gen.js";

const MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const PROBE = pathToFileURL(fileURLToPath(new URL("./rss-probe.js", import.meta.url))).href;
const MiB = 2 ** 20;

interface Figures {
  command: string;
  size: string;
  ms: number;
  maxRssBytes: number;
  cpuMs: number;
  code: number | null;
  out: string;
  /** The command's startup timeline (src/timeline.ts): "<ms> <step>" lines. */
  timeline: string[];
}

function run(size: string, label: string, args: string[], okCodes = [0]): Promise<Figures> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(process.execPath, ["--import", PROBE, MAIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, GUIDUP_TIMELINE: "1" },
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString("utf8");
    });
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString("utf8");
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const ms = performance.now() - start;
      const probe = probeFigures(err, child.pid);
      if (!okCodes.includes(code ?? -1) || !probe) {
        reject(new Error(`guidup ${args.join(" ")} exited ${code}:\n${err.slice(-2000)}`));
        return;
      }
      resolve({
        command: label,
        size,
        ms,
        maxRssBytes: probe.maxRssBytes,
        cpuMs: probe.cpuMs,
        code,
        out,
        timeline: timelineLines(err),
      });
    });
  });
}

/** The pair's inventory, its list from the generator's file or from the master's discovery. */
function inventory(root: string, list: string | "discover"): string {
  const host = (side: string) =>
    [
      `    ${side}:`,
      "      transport: local",
      `      config: ${JSON.stringify(join(root, side, "imapd.conf"))}`,
      `      name: ${side}`,
    ].join("\n");
  const mailboxes =
    list === "discover" ? "{ discover: true }" : `{ file: ${JSON.stringify(list)} }`;
  return `pairs:\n  - name: scale\n    mailboxes: ${mailboxes}\n${host("master")}\n${host("replica")}\n`;
}

function line(f: Figures, extra = ""): string {
  return `  ${f.size.padStart(9)}  ${f.command.padEnd(22)} ${(f.ms / 1000).toFixed(2).padStart(8)} s  peak RSS ${(f.maxRssBytes / MiB).toFixed(0).padStart(4)} MiB  CPU ${(f.cpuMs / 1000).toFixed(2).padStart(7)} s${extra}`;
}

async function realSize(
  parent: string,
  n: number,
  batch: number,
  planOnly: boolean,
  log: (s: string) => void,
) {
  const root = join(parent, `real-${n}`);
  mkdirSync(root, { recursive: true });
  let t = performance.now();
  const { list } = generate(root, n, { minor: () => 9, messages: () => 1 });
  log(`  ${n}: generated the pair in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const inv = join(root, "inventory.yaml");
  writeFileSync(inv, inventory(root, list));
  const plan = join(root, "plan.yaml");
  const size = String(n);
  const figures: Figures[] = [];
  const p = await run(size, "plan", ["plan", "--inventory", inv, "--out", plan]);
  figures.push(p);
  const perSide = n / (p.ms / 1000);
  log(
    line(
      p,
      `  ${Math.round(perSide)} mailboxes/s per side, controller CPU ${((p.cpuMs * 1000) / n).toFixed(0)} µs/mailbox, plan file ${((await stat(plan)).size / MiB).toFixed(0)} MiB`,
    ),
  );
  // The same pair listed by the master's discovery (pages from the agent).
  const discoverInv = join(root, "inventory-discover.yaml");
  writeFileSync(discoverInv, inventory(root, "discover"));
  const d = await run(size, "plan (discover)", [
    "plan",
    "--inventory",
    discoverInv,
    "--out",
    join(root, "plan-discover.yaml"),
  ]);
  figures.push(d);
  log(line(d, `  ${Math.round(n / (d.ms / 1000))} mailboxes/s per side`));
  if (planOnly) return { root, plan, figures, perSide };
  figures.push(await run(size, "show --summary", ["show", plan, "--summary"]));
  log(line(figures.at(-1) as Figures));
  t = performance.now();
  const a = await run(
    size,
    `apply --batch ${batch}`,
    ["apply", plan, "--batch", String(batch)],
    [0, 1],
  );
  figures.push(a);
  log(line(a, `  ${((batch * 1000) / a.ms).toFixed(0)} mailboxes/s`));
  figures.push(await run(size, "status", ["status", plan], [0, 1]));
  log(line(figures.at(-1) as Figures));
  return { root, plan, figures, perSide };
}

/**
 * `plan` of the real pair at `root` (the generator's first `real` names)
 * through a list of `n` names, written in reverse order: every name beyond
 * the real ones is scanned on both sides, found missing and skipped. The
 * controller sorts the whole list, reads it a window at a time and spills
 * n - real skipped entries: plan's memory at n listed mailboxes, with n
 * real scans' worth of agent work, on a spool that fits.
 */
async function planListShape(root: string, real: number, n: number, log: (s: string) => void) {
  const list = join(root, `list-${n}.txt`);
  const fd = openSync(list, "w");
  try {
    for (let i = n - 1; i >= 0; ) {
      let chunk = "";
      for (let k = 0; k < 10_000 && i >= 0; k++, i--) chunk += `${mailboxName(i)}\n`;
      writeSync(fd, chunk);
    }
  } finally {
    closeSync(fd);
  }
  const inv = join(root, `inventory-${n}.yaml`);
  writeFileSync(inv, inventory(root, list));
  const plan = join(root, `plan-${n}.yaml`);
  const size = `${n / 1_000_000}M list`;
  const f = await run(size, `plan (${real / 1000}k real)`, [
    "plan",
    "--inventory",
    inv,
    "--out",
    plan,
    "--skip-sanity-checks",
  ]);
  log(
    line(
      f,
      `  ${f.out
        .trim()
        .split("\n")
        .at(-1)
        ?.replace(
          /^.*: pair scale, /,
          "",
        )}, plan file ${((await stat(plan)).size / MiB).toFixed(0)} MiB`,
    ),
  );
  rmSync(plan, { force: true });
  return f;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: "string", default: "10000,100000" },
      grow: { type: "string", default: "1000000" },
      batch: { type: "string", default: "2000" },
      "first-repeat": { type: "string", default: "2" },
      dir: { type: "string" },
      keep: { type: "boolean" },
      "plan-only": { type: "boolean" },
    },
  });
  const log = (s: string) => console.log(s);
  log(machineLine());
  const sizes = (values.sizes as string).split(",").map(Number);
  const batch = Number(values.batch);
  const grow = Number(values.grow);
  const parent = await mkdtemp(join(values.dir ?? "/dev/shm", "guidup-scale-"));
  log(
    `dir ${parent}; per command: wall time, controller peak RSS and CPU (its own, not its agents')`,
  );
  const all: Figures[] = [];
  const perSide: number[] = [];
  let small: { root: string; plan: string } | undefined;
  let firstGoals: string[] = [];
  try {
    for (const n of sizes) {
      const r = await realSize(parent, n, batch, values["plan-only"] === true, log);
      all.push(...r.figures);
      perSide.push(r.perSide);
      if (small === undefined) small = r;
    }
    if (grow > 0 && small) all.push(await planListShape(small.root, sizes[0] as number, grow, log));
    if (grow > 0 && small && !values["plan-only"]) {
      const t = performance.now();
      const big = await growPlan(small.plan, join(small.root, "plan-1m.yaml"), grow);
      const size = `${grow / 1_000_000}M shape`;
      log(
        `  ${size}: plan of ${grow} entries and its journal generated in ${((performance.now() - t) / 1000).toFixed(1)} s (plan file ${((await stat(big)).size / MiB).toFixed(0)} MiB)`,
      );
      const firsts = await firstApplies(big, Number(values["first-repeat"]), (label, args, ok) =>
        run(size, label, args, ok),
      );
      for (const l of firsts.lines) log(l);
      firstGoals = firsts.goals;
      for (const [label, args, ok] of [
        ["show --summary", ["show", big, "--summary"], [0]],
        ["status", ["status", big], [0, 1]],
        [`apply --batch ${batch} (1st)`, ["apply", big, "--batch", String(batch)], [0, 1]],
        ["apply --batch 1 (next)", ["apply", big, "--batch", "1"], [0, 1]],
        ["status", ["status", big], [0, 1]],
      ] as [string, string[], number[]][]) {
        const f = await run(size, label, args, ok);
        all.push(f);
        log(line(f));
        if (label.startsWith("apply"))
          log(`      timeline (ms since launch): ${f.timeline.join(" · ")}`);
      }
    }
    log("");
    for (const f of all)
      log(
        goalLine({
          name: `${f.command} at ${f.size}: controller peak RSS`,
          value: f.maxRssBytes / MiB,
          op: "<=",
          target: 256,
          unit: " MiB",
        }),
      );
    for (const f of all.filter((x) => x.command === "show --summary"))
      log(
        goalLine({
          name: `show --summary at ${f.size}`,
          value: f.ms / 1000,
          op: "<=",
          target: 1,
          unit: " s",
        }),
      );
    for (const f of all.filter((x) => x.command === "status" && x.size.includes("M")))
      log(
        goalLine({
          name: `status at ${f.size}`,
          value: f.ms / 1000,
          op: "<=",
          target: 10,
          unit: " s",
        }),
      );
    for (const f of all.filter((x) => x.command.includes("(next)")))
      log(
        goalLine({
          name: `apply at ${f.size}: a batch of 1, launch to exit`,
          value: f.ms / 1000,
          op: "<=",
          target: 5,
          unit: " s",
        }),
      );
    for (const g of firstGoals) log(g);
    perSide.forEach((r, i) => {
      log(
        goalLine({
          name: `plan at ${sizes[i]} (local transport): mailboxes/s per side`,
          value: r,
          op: ">=",
          target: 5000,
          unit: "/s",
        }),
      );
    });
    // Flat memory: plan's peak RSS at the largest size against the smallest,
    // the baseline measured in this run (the list is sorted through files
    // and read a window at a time, so nothing held grows with N).
    for (const command of ["plan", "plan (discover)"]) {
      const rows = all.filter((f) => f.command === command);
      const first = rows[0];
      const last = rows.at(-1);
      if (first && last && first !== last)
        log(
          `${command}: peak RSS ${rows.map((f) => `${(f.maxRssBytes / MiB).toFixed(0)} MiB at ${f.size}`).join(", ")}; ${last.size} / ${first.size} (baseline, this run) = ${(last.maxRssBytes / first.maxRssBytes).toFixed(2)}× for ${(Number(last.size) / Number(first.size)).toFixed(0)}× the mailboxes`,
        );
    }
    const base = all.find((f) => f.command === "status" && f.size === String(sizes[0]));
    const top = all.filter((f) => f.command === "status").at(-1);
    if (base && top && top !== base)
      log(
        `status ${top.size} / status ${base.size} (baseline, this run): ${(top.ms / base.ms).toFixed(1)}× the time, ${(top.maxRssBytes / base.maxRssBytes).toFixed(2)}× the RSS`,
      );
  } finally {
    if (!values.keep) rmSync(parent, { recursive: true, force: true });
    else log(`kept ${parent}`);
  }
}

await main();
