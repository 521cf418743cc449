// Two measurements through the real CLI and real agents (local transport):
//
// A. `guidup hash` over a generated spool of >= 1 GiB of message bytes (one
//    side only), against `sha1sum` and `openssl dgst -sha1` over exactly the
//    same message files in the same run, plus HashPool with 1 and 2 workers
//    on the same files (the per-core figure: the CLI always uses every core).
//    Page cache warm: one warm-up read first, so this compares hashing and
//    per-file overhead, not the disk. Every contender runs twice; the faster
//    run counts.
//
// B. The seed's headline: per-mailbox lock hold time during apply with the
//    sha1 cache warm (hash --side both first) against cold (no hash), on two
//    identical generated pairs (same seed). apply sends `prepare` to both
//    agents BEFORE locking (cache checks and hashing outside the locks), so a
//    cold cache mostly lengthens prepare, not the lock; both the lock hold
//    (lockHeldMs from the state files, the agent's own lock→unlock figure)
//    and the whole per-mailbox time (state firstStarted → finished: relay,
//    prepare, locks, upgrades, commits, state writes) are reported. apply
//    runs with --concurrency 1 so per-mailbox times are not shared between
//    mailboxes in flight.
//
// Run: `node dist/bench/hash-apply.js [--mb 1024] [--mailboxes 30] [--dir D] [--keep]`
// (build first: npx tsc -p tsconfig.json).

import { spawn } from "node:child_process";
import { copyFile, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { HashPool, isHashFailure } from "../src/agent/hash-pool.js";
import { mailboxFiles } from "../src/agent/mailbox-files.js";
import { readMailbox } from "../src/agent/mailbox-scan.js";
import type { MailboxState } from "../src/apply/state.js";
import { readImapdConf } from "../src/cyrus/imapd-conf.js";
import { generateSpool } from "../src/spoolgen/spool-generator.js";

export interface HashApplyBenchOptions {
  /** Message bytes to generate for part A, in MiB (default 1024; at least that many are made). */
  mb?: number;
  /** Mailboxes of the pair for part B (default 30, a few hundred messages each). */
  mailboxes?: number;
  /** Parent directory of the temporary spools (default os.tmpdir()). */
  dir?: string;
  keep?: boolean;
  /** Skip part A or B (tests, quick runs). */
  skipHash?: boolean;
  skipApply?: boolean;
  log?: (line: string) => void;
}

export interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

export interface HashPart {
  files: number;
  bytes: number;
  generateSeconds: number;
  cpus: number;
  /** MiB/s, best of two runs. */
  rates: Record<string, number>;
  ratios: Record<string, number>;
}

export interface ApplySide {
  mailboxes: number;
  lockHeldMs: { master: Percentiles; replica: Percentiles };
  totalMs: Percentiles;
  /** GUIDs hashed during apply (prepare or upgrade), per side, summed. */
  computed: { master: number; replica: number };
  fromCache: { master: number; replica: number };
  applySeconds: number;
}

export interface ApplyPart {
  messages: number;
  warm: ApplySide;
  cold: ApplySide;
  /** cold / warm of the p50s and p99s. */
  ratios: Record<string, number>;
}

export interface HashApplyBenchResult {
  hash?: HashPart;
  apply?: ApplyPart;
}

const MiB = 1024 * 1024;
const MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil(p * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

function summary(values: number[]): Percentiles {
  const s = [...values].sort((a, b) => a - b);
  return { p50: percentile(s, 0.5), p99: percentile(s, 0.99), max: s[s.length - 1] ?? Number.NaN };
}

function run(
  cmd: string,
  args: string[],
  stdin?: string,
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      out += s;
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      err = (err + s).slice(-4000);
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out, err }));
    child.stdin.end(stdin ?? "");
  });
}

async function guidup(args: string[], okCodes = [0]): Promise<string> {
  const r = await run(process.execPath, [MAIN, ...args]);
  if (!okCodes.includes(r.code ?? -1))
    throw new Error(`guidup ${args.join(" ")} exited with ${r.code}: ${r.err}`);
  return r.out;
}

/** `xargs -0 -n 256 -P1 <tool…>` with output discarded: one process per 256 files, one at a time. */
async function xargsRun(tool: string[], paths: string[]): Promise<void> {
  const r = await new Promise<number | null>((resolve, reject) => {
    const child = spawn("xargs", ["-0", "-n", "256", "-P1", ...tool], {
      stdio: ["pipe", "ignore", "inherit"],
    });
    child.on("error", reject);
    child.on("close", resolve);
    child.stdin.end(paths.join("\0"));
  });
  if (r !== 0) throw new Error(`${tool[0]} exited with ${r}`);
}

async function warmUp(paths: string[]): Promise<void> {
  const buf = Buffer.allocUnsafe(MiB);
  for (const p of paths) {
    const fh = await open(p, "r");
    try {
      while ((await fh.read(buf, 0, buf.length, null)).bytesRead > 0) {}
    } finally {
      await fh.close();
    }
  }
}

/** Message files behind old-style GUIDs (what hash reads), distinct per mailbox. */
async function oldStyleFiles(
  imapdConf: string,
  names: string[],
): Promise<{ paths: string[]; bytes: number }> {
  const conf = await readImapdConf(imapdConf);
  const paths: string[] = [];
  let bytes = 0;
  for (const name of names) {
    const files = mailboxFiles(conf, { name });
    const hasExpunge = await readFile(files.expunge).then(
      (b) => b.length > 0,
      () => false,
    );
    const read = await readMailbox(
      name,
      { path: files.index, kind: "index" },
      hasExpunge ? { path: files.expunge, kind: "expunge" } : undefined,
    );
    const seen = new Set<number>();
    for (const n of [...read.index.needs, ...(read.expunge?.needs ?? [])]) {
      if (seen.has(n.uid)) continue;
      seen.add(n.uid);
      paths.push(files.messageFile(n.uid));
      bytes += n.size;
    }
  }
  return { paths, bytes };
}

async function removeCaches(root: string): Promise<number> {
  let n = 0;
  const walk = async (dir: string) => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.startsWith("cyrus.sha1s")) {
        await rm(p);
        n++;
      }
    }
  };
  await walk(root);
  return n;
}

async function inventory(
  file: string,
  list: string,
  master: string,
  replica: string,
): Promise<string> {
  await writeFile(
    file,
    `pairs:\n  - name: bench\n    mailboxes: { file: ${JSON.stringify(list)} }\n    master: { transport: local, name: master, config: ${JSON.stringify(master)} }\n    replica: { transport: local, name: replica, config: ${JSON.stringify(replica)} }\n`,
  );
  return file;
}

async function hashPart(root: string, mb: number, log: (l: string) => void): Promise<HashPart> {
  const dir = join(root, "hash");
  // ~22 MiB of messages per mailbox with these settings (measured); 10% margin.
  const mailboxes = Math.max(2, Math.ceil((mb * 1.1) / 20));
  log(
    `A. generating one side (no replica): ${mailboxes} mailboxes of v9 indexes, 50–400 kB messages …`,
  );
  const t0 = Date.now();
  const spool = await generateSpool({
    dir,
    pair: false,
    mailboxes,
    seed: 42,
    versions: [9],
    largeMailboxes: 0,
    messagesPerMailbox: [100, 200],
    messageBytes: [50_000, 400_000],
    expungeFraction: 0.1,
  });
  const generateSeconds = (Date.now() - t0) / 1000;
  const { paths, bytes } = await oldStyleFiles(
    spool.master.imapdConf,
    spool.mailboxes.map((m) => m.name),
  );
  const cpus = availableParallelism();
  log(
    `   ${paths.length} message files behind old-style GUIDs, ${(bytes / MiB).toFixed(0)} MiB, generated in ${generateSeconds.toFixed(1)} s (${(bytes / MiB / generateSeconds).toFixed(0)} MiB/s); ${cpus} CPUs`,
  );
  if (bytes < mb * MiB) log(`   NOTE: fewer than the ${mb} MiB asked for`);
  // hash --side master reads the master only; the inventory still needs a
  // distinct replica entry, so it names a copy of the same imapd.conf.
  const alias = join(dir, "alias-imapd.conf");
  await copyFile(spool.master.imapdConf, alias);
  const inv = await inventory(
    join(dir, "inventory.yaml"),
    spool.mailboxList,
    spool.master.imapdConf,
    alias,
  );

  await warmUp(paths);
  log("   page cache warm (one warm-up read); every run below reads from memory");
  const rates: Record<string, number> = {};
  const time = async (name: string, fn: () => Promise<number | undefined>) => {
    let best = Number.POSITIVE_INFINITY;
    let inner: number | undefined;
    for (let i = 0; i < 2; i++) {
      const t = process.hrtime.bigint();
      const reported = await fn();
      const s = Number(process.hrtime.bigint() - t) / 1e9;
      if (s < best) {
        best = s;
        inner = reported;
      }
    }
    rates[name] = bytes / MiB / best;
    log(
      `   ${name.padEnd(26)} ${best.toFixed(2).padStart(6)} s ${rates[name]!.toFixed(0).padStart(6)} MiB/s${inner !== undefined ? `   (its own figure, scan excluded: ${(bytes / MiB / inner).toFixed(0)} MiB/s)` : ""}`,
    );
  };
  await time("sha1sum", async () => {
    await xargsRun(["sha1sum"], paths);
    return undefined;
  });
  await time("openssl dgst -sha1", async () => {
    await xargsRun(["openssl", "dgst", "-sha1"], paths);
    return undefined;
  });
  const pool = (workers: number) => async () => {
    const p = new HashPool({ workers });
    try {
      let failures = 0;
      for await (const r of p.hashMany(paths)) if (isHashFailure(r)) failures++;
      if (failures > 0) throw new Error(`${failures} files failed to hash`);
    } finally {
      await p.close();
    }
    return undefined;
  };
  await time("HashPool 1 worker", pool(1));
  await time("HashPool 2 workers", pool(2));
  await time(`guidup hash (${cpus} workers)`, async () => {
    await removeCaches(join(dir, "master"));
    const out = JSON.parse(await guidup(["hash", "-i", inv, "--side", "master", "--json"])) as {
      hosts: { hashed: number; hashedBytes: number; seconds: number }[];
    };
    const h = out.hosts[0]!;
    if (h.hashed !== paths.length || h.hashedBytes !== bytes)
      throw new Error(
        `guidup hash hashed ${h.hashed} files / ${h.hashedBytes} bytes, expected ${paths.length} / ${bytes}`,
      );
    return h.seconds;
  });
  const cli = rates[`guidup hash (${cpus} workers)`]!;
  const ratios: Record<string, number> = {
    "pool-1/sha1sum (per core)": rates["HashPool 1 worker"]! / rates.sha1sum!,
    "pool-1/openssl (per core)": rates["HashPool 1 worker"]! / rates["openssl dgst -sha1"]!,
    "pool-2/sha1sum": rates["HashPool 2 workers"]! / rates.sha1sum!,
    "guidup-hash/sha1sum": cli / rates.sha1sum!,
    "guidup-hash/openssl": cli / rates["openssl dgst -sha1"]!,
  };
  for (const [k, v] of Object.entries(ratios)) log(`   ${k.padEnd(26)} ${v.toFixed(2)}×`);
  log("   goals: per core >= 0.9× sha1sum; two workers on two cores >= 1.6× sha1sum");
  return { files: paths.length, bytes, generateSeconds, cpus, rates, ratios };
}

async function applyOnce(
  root: string,
  name: "warm" | "cold",
  mailboxes: number,
  log: (l: string) => void,
): Promise<{ side: ApplySide; messages: number }> {
  const dir = join(root, name);
  // Same seed for both: identical spools, apart from where they are.
  const spool = await generateSpool({
    dir,
    mailboxes,
    seed: 7,
    largeMailboxes: 0,
    messagesPerMailbox: [200, 400],
    expungeFraction: 0.2,
  });
  const messages = spool.mailboxes.reduce((n, m) => n + m.records, 0);
  const inv = await inventory(
    join(dir, "inventory.yaml"),
    spool.mailboxList,
    spool.master.imapdConf,
    spool.replica!.imapdConf,
  );
  if (name === "warm") await guidup(["hash", "-i", inv, "--side", "both"]);
  const plan = join(dir, "plans", `${name}.yaml`);
  await guidup(["plan", "-i", inv, "--out", plan]);
  const t0 = Date.now();
  const report = JSON.parse(
    await guidup(["apply", plan, "--json", "--concurrency", "1"], [0, 4]),
  ) as { outcomes: Record<string, number> };
  const applySeconds = (Date.now() - t0) / 1000;
  const states: MailboxState[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith(".json")) states.push(JSON.parse(await readFile(p, "utf8")));
    }
  };
  await walk(`${plan}.state`);
  const done = states.filter((s) => s.phase === "done" && s.lockHeldMs?.master !== undefined);
  if (done.length === 0) throw new Error(`${name}: no mailbox upgraded: ${JSON.stringify(report)}`);
  const sum = (f: (s: MailboxState) => number | undefined) =>
    done.reduce((n, s) => n + (f(s) ?? 0), 0);
  const side: ApplySide = {
    mailboxes: done.length,
    lockHeldMs: {
      master: summary(done.map((s) => s.lockHeldMs!.master!)),
      replica: summary(done.map((s) => s.lockHeldMs!.replica!)),
    },
    totalMs: summary(done.map((s) => Date.parse(s.finished!) - Date.parse(s.firstStarted!))),
    computed: {
      master: sum((s) => s.counts?.master?.computed),
      replica: sum((s) => s.counts?.replica?.computed),
    },
    fromCache: {
      master: sum((s) => s.counts?.master?.fromCache),
      replica: sum((s) => s.counts?.replica?.fromCache),
    },
    applySeconds,
  };
  const p = (x: Percentiles) => `p50 ${x.p50.toFixed(0)} / p99 ${x.p99.toFixed(0)} ms`;
  log(
    `   ${name.padEnd(4)} cache: ${side.mailboxes} mailboxes upgraded in ${applySeconds.toFixed(1)} s; lock hold master ${p(side.lockHeldMs.master)}, replica ${p(side.lockHeldMs.replica)}; whole mailbox ${p(side.totalMs)}; GUIDs hashed during apply: master ${side.computed.master}, replica ${side.computed.replica} (from cache: ${side.fromCache.master} / ${side.fromCache.replica})`,
  );
  return { side, messages };
}

async function applyPart(
  root: string,
  mailboxes: number,
  log: (l: string) => void,
): Promise<ApplyPart> {
  log(
    `B. apply, sha1 cache warm vs cold: two identical generated pairs of ${mailboxes} mailboxes (200–400 messages each), apply --concurrency 1`,
  );
  const warm = await applyOnce(root, "warm", mailboxes, log);
  const cold = await applyOnce(root, "cold", mailboxes, log);
  const r = (a: number, b: number) => a / Math.max(b, 0.5);
  const ratios: Record<string, number> = {
    "lock master p50 cold/warm": r(
      cold.side.lockHeldMs.master.p50,
      warm.side.lockHeldMs.master.p50,
    ),
    "lock master p99 cold/warm": r(
      cold.side.lockHeldMs.master.p99,
      warm.side.lockHeldMs.master.p99,
    ),
    "lock replica p50 cold/warm": r(
      cold.side.lockHeldMs.replica.p50,
      warm.side.lockHeldMs.replica.p50,
    ),
    "lock replica p99 cold/warm": r(
      cold.side.lockHeldMs.replica.p99,
      warm.side.lockHeldMs.replica.p99,
    ),
    "whole mailbox p50 cold/warm": r(cold.side.totalMs.p50, warm.side.totalMs.p50),
    "whole mailbox p99 cold/warm": r(cold.side.totalMs.p99, warm.side.totalMs.p99),
  };
  for (const [k, v] of Object.entries(ratios)) log(`   ${k.padEnd(28)} ${v.toFixed(2)}×`);
  log(
    "   lock hold = the agent's lockHeldMs (lock granted → last unlock); whole mailbox = state firstStarted → finished (relay, prepare, locks, upgrades, commits, state writes).",
  );
  log(
    "   prepare hashes outside the locks, so a cold sha1 cache shows up in the whole-mailbox time, not in the lock hold; the page cache is warm here (files just written), so cold hashing costs CPU only — on a real disk the cold whole-mailbox time is longer.",
  );
  return { messages: warm.messages, warm: warm.side, cold: cold.side, ratios };
}

export async function runHashApplyBench(
  opts: HashApplyBenchOptions = {},
): Promise<HashApplyBenchResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const root = await mkdtemp(join(opts.dir ?? tmpdir(), "guidup-hash-apply-"));
  const result: HashApplyBenchResult = {};
  try {
    if (!opts.skipHash) result.hash = await hashPart(root, opts.mb ?? 1024, log);
    if (!opts.skipApply) result.apply = await applyPart(root, opts.mailboxes ?? 30, log);
    return result;
  } finally {
    if (opts.keep) log(`kept ${root}`);
    else await rm(root, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      mb: { type: "string", default: "1024" },
      mailboxes: { type: "string", default: "30" },
      dir: { type: "string" },
      keep: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
    },
  });
  const mb = Number(values.mb);
  const mailboxes = Number(values.mailboxes);
  if (!(mb > 0) || !(Number.isInteger(mailboxes) && mailboxes > 0)) {
    console.error("--mb must be a positive number and --mailboxes a positive integer");
    process.exit(2);
  }
  const o: HashApplyBenchOptions = { mb, mailboxes, keep: values.keep };
  if (values.dir !== undefined) o.dir = values.dir;
  const r = await runHashApplyBench(o);
  if (values.json) console.log(JSON.stringify(r, null, 2));
}
