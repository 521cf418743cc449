// Hashing throughput: HashPool against the command-line tools an operator
// would otherwise script (openssl dgst, sha1sum) over the same message-like
// files. Run: `node dist/bench/hash.js [--mb 1024] [--dir D] [--cold] [--keep]`.
//
// Every run reads the same files. By default all runs use a warm page cache
// (one warm-up read first), so the figures compare hashing and per-file
// overhead, not the disk. With --cold the page cache is dropped before each
// run (needs root and a writable /proc/sys/vm/drop_caches; otherwise the run
// says it stayed warm).

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { HashPool, isHashFailure } from "../src/agent/hash-pool.js";
import { goalLine, machineLine } from "./report.js";

export interface HashBenchOptions {
  /** Total size of the generated files in MiB (default 1024). */
  mb?: number;
  /** Parent directory for the temporary spool (default os.tmpdir()). */
  dir?: string;
  /** Drop the page cache before each run (root only). */
  cold?: boolean;
  /** Keep the generated files. */
  keep?: boolean;
  log?: (line: string) => void;
}

export interface HashBenchRun {
  name: string;
  seconds: number;
  mbPerSec: number;
  cache: "warm" | "cold";
}

export interface HashBenchResult {
  files: number;
  bytes: number;
  cpus: number;
  runs: HashBenchRun[];
  ratios: Record<string, number>;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const MIN_FILE = 20 * KiB;
const MAX_FILE = 2 * MiB;

/** Files like a spool: `<uid>.` names, a few hundred per mailbox directory. */
async function makeSpool(
  root: string,
  totalBytes: number,
): Promise<{ paths: string[]; bytes: number }> {
  // One random pool sliced at random offsets: content that does not compress
  // or deduplicate, without paying for gigabytes of fresh randomness.
  const pool = randomBytes(8 * MiB);
  const paths: string[] = [];
  let bytes = 0;
  let box = -1;
  let dirPath = "";
  while (bytes < totalBytes) {
    if (paths.length % 250 === 0) {
      box++;
      dirPath = join(root, `user.u${box}`);
      await mkdir(dirPath);
    }
    // Log-uniform sizes: many small messages, a few large ones.
    const size = Math.round(MIN_FILE * (MAX_FILE / MIN_FILE) ** Math.random());
    const off = Math.floor(Math.random() * (pool.length - size));
    const path = join(dirPath, `${(paths.length % 250) + 1}.`);
    await writeFile(path, pool.subarray(off, off + size));
    paths.push(path);
    bytes += size;
  }
  return { paths, bytes };
}

/** Reads every file once so that all runs start from the same warm cache. */
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

async function dropCaches(): Promise<boolean> {
  try {
    await run("sync", []);
    await writeFile("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}

function run(cmd: string, args: string[], stdin?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "ignore", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code, sig) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code ?? sig}`)),
    );
    child.stdin.end(stdin ?? "");
  });
}

/** `xargs -0 -n 256 -P1 <tool…>`: one process per 256 files, one at a time. */
function xargsRun(tool: string[], paths: string[]): Promise<void> {
  return run("xargs", ["-0", "-n", "256", "-P1", ...tool], paths.join("\0"));
}

export async function runHashBench(opts: HashBenchOptions = {}): Promise<HashBenchResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const mb = opts.mb ?? 1024;
  const root = await mkdtemp(join(opts.dir ?? tmpdir(), "guidup-hashbench-"));
  try {
    log(`generating ${mb} MiB of message-like files (20 KiB–2 MiB) in ${root} …`);
    const { paths, bytes } = await makeSpool(root, mb * MiB);
    const cpus = availableParallelism();
    log(machineLine());
    log(`${paths.length} files, ${(bytes / MiB).toFixed(0)} MiB, ${cpus} CPUs`);

    let coldOk = false;
    if (opts.cold) {
      coldOk = await dropCaches();
      if (!coldOk) log("cannot drop the page cache (need root and /proc/sys/vm): runs stay warm");
    }
    if (!coldOk) {
      await warmUp(paths);
      log("page cache warm: one warm-up read done; every run below reads from memory");
    } else {
      log("page cache dropped before every run (cold reads)");
    }

    const runs: HashBenchRun[] = [];
    const time = async (name: string, fn: () => Promise<void>) => {
      if (coldOk) await dropCaches();
      const t0 = process.hrtime.bigint();
      await fn();
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const r: HashBenchRun = {
        name,
        seconds,
        mbPerSec: bytes / MiB / seconds,
        cache: coldOk ? "cold" : "warm",
      };
      runs.push(r);
      log(
        `${name.padEnd(22)} ${seconds.toFixed(2).padStart(7)} s ${r.mbPerSec.toFixed(0).padStart(6)} MiB/s (${r.cache})`,
      );
    };
    const pool =
      (workers: number, inline = false) =>
      async () => {
        const p = new HashPool({ workers, inline });
        try {
          let failures = 0;
          for await (const r of p.hashMany(paths)) if (isHashFailure(r)) failures++;
          if (failures > 0) throw new Error(`${failures} files failed to hash`);
        } finally {
          await p.close();
        }
      };

    await time("openssl dgst -sha1", () => xargsRun(["openssl", "dgst", "-sha1"], paths));
    await time("sha1sum", () => xargsRun(["sha1sum"], paths));
    await time("HashPool inline x1", pool(1, true));
    await time("HashPool 1 worker", pool(1));
    await time("HashPool 2 workers", pool(2));
    if (cpus > 2) await time(`HashPool ${cpus} workers`, pool(cpus));

    const rate = (name: string) => runs.find((r) => r.name === name)!.mbPerSec;
    const ratios: Record<string, number> = {
      "pool-1/openssl": rate("HashPool 1 worker") / rate("openssl dgst -sha1"),
      "pool-2/openssl": rate("HashPool 2 workers") / rate("openssl dgst -sha1"),
      "pool-2/sha1sum": rate("HashPool 2 workers") / rate("sha1sum"),
    };
    for (const [k, v] of Object.entries(ratios)) log(`${k.padEnd(22)} ${v.toFixed(2)}`);
    log(
      goalLine({
        name: "HashPool 1 worker / openssl",
        value: ratios["pool-1/openssl"]!,
        op: ">=",
        target: 0.9,
      }),
    );
    log(
      goalLine({
        name: "HashPool 2 workers / openssl",
        value: ratios["pool-2/openssl"]!,
        op: ">=",
        target: 1.6,
      }),
    );
    return { files: paths.length, bytes, cpus, runs, ratios };
  } finally {
    if (!opts.keep) await rm(root, { recursive: true, force: true });
    else log(`kept ${root}`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      mb: { type: "string", default: "1024" },
      dir: { type: "string" },
      cold: { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
    },
  });
  const mb = Number(values.mb);
  if (!(mb > 0)) {
    console.error("--mb must be a positive number");
    process.exit(2);
  }
  const o: HashBenchOptions = { mb, cold: values.cold, keep: values.keep };
  if (values.dir !== undefined) o.dir = values.dir;
  await runHashBench(o);
}
