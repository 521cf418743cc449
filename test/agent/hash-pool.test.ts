import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os, { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { threadId } from "node:worker_threads";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  HashPool,
  type HashResult,
  type HashSuccess,
  isHashFailure,
} from "../../src/agent/hash-pool.js";

let dir: string;
/** path → expected SHA1 hex, from node:crypto over the bytes written. */
const files = new Map<string, string>();

async function makeFile(name: string, size: number): Promise<string> {
  const path = join(dir, name);
  const data = randomBytes(size);
  await writeFile(path, data);
  files.set(path, createHash("sha1").update(data).digest("hex"));
  return path;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-hashpool-"));
  await makeFile("empty.", 0);
  await makeFile("1.", 1);
  await makeFile("2.", 20 * 1024);
  await makeFile("3.", (1 << 20) - 1);
  await makeFile("4.", 1 << 20);
  await makeFile("5.", (1 << 20) + 1);
  await makeFile("6.", 5 * (1 << 20) + 12345);
  for (let i = 10; i < 50; i++) await makeFile(`${i}.`, 1000 + i * 997);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function ok(r: HashResult): HashSuccess {
  if (isHashFailure(r)) throw new Error(`unexpected failure: ${r.error}`);
  return r;
}

function opensslSha1(paths: string[]): Map<string, string> {
  const out = execFileSync("openssl", ["dgst", "-sha1", "-r", ...paths], { encoding: "utf8" });
  const m = new Map<string, string>();
  for (const line of out.trim().split("\n")) {
    const [hex, name] = line.split(/ \*?/, 2) as [string, string];
    m.set(name, hex);
  }
  return m;
}

describe("HashPool", () => {
  it("uses worker threads when run from the sources (compiled worker in dist/)", async () => {
    const pool = new HashPool({ workers: 2 });
    expect(pool.mode).toBe("threads");
    await pool.close();
  });

  for (const inline of [false, true]) {
    it(`matches openssl and node:crypto for every file (${inline ? "inline" : "threads"})`, async () => {
      const pool = new HashPool({ workers: 2, inline });
      const paths = [...files.keys()];
      const ref = opensslSha1(paths);
      const results = await Promise.all(paths.map((p) => pool.hash(p)));
      for (const r of results) {
        const s = ok(r);
        expect(s.sha1.toString("hex")).toBe(files.get(s.path));
        expect(s.sha1.toString("hex")).toBe(ref.get(s.path));
        const st = await stat(s.path, { bigint: true });
        expect(s.size).toBe(Number(st.size));
        expect(s.ino).toBe(st.ino);
        expect(s.mtimeNs).toBe(st.mtimeNs);
        expect(Buffer.isBuffer(s.sha1)).toBe(true);
      }
      expect(ok(results[0]!).sha1.toString("hex")).toBe("da39a3ee5e6b4b0d3255bfef95601890afd80709");
      await pool.close();
    });
  }

  it("the known Cyrus test vector", async () => {
    const path = join(dir, "vector.");
    await writeFile(path, "Subject: test\r\n\r\nhello\r\n");
    const pool = new HashPool({ workers: 1 });
    expect(ok(await pool.hash({ path })).sha1.toString("hex")).toBe(
      "2883b4c4916eb4064ee68bd40c1a87257036faf6",
    );
    await pool.close();
  });

  it("reports a missing file as an ENOENT result, not a throw", async () => {
    const pool = new HashPool({ workers: 2 });
    const r = await pool.hash(join(dir, "nope."));
    expect(isHashFailure(r)).toBe(true);
    expect(r).toMatchObject({ error: "ENOENT", code: "ENOENT" });
    await pool.close();
  });

  it("reports unreadable files and directories as failures", async () => {
    const pool = new HashPool({ workers: 1 });
    const sub = join(dir, "adir");
    await mkdir(sub, { recursive: true });
    const r = await pool.hash(sub);
    expect(isHashFailure(r) && r.code).toBe("EISDIR");
    if (process.getuid?.() !== 0) {
      const locked = join(dir, "locked.");
      await writeFile(locked, "x");
      await chmod(locked, 0);
      expect(isHashFailure(await pool.hash(locked))).toBe(true);
    }
    await pool.close();
  });

  it("does not read a file whose size differs from expectedSize", async () => {
    const pool = new HashPool({ workers: 1 });
    const path = join(dir, "2.");
    const r = await pool.hash({ path, expectedSize: 12 });
    expect(r).toMatchObject({ code: "size-mismatch", size: 20 * 1024 });
    expect(ok(await pool.hash({ path, expectedSize: 20 * 1024 })).size).toBe(20 * 1024);
    await pool.close();
  });

  it("keeps both workers busy", async () => {
    const pool = new HashPool({ workers: 2 });
    const paths = [...files.keys()];
    await Promise.all(paths.map((p) => pool.hash(p)));
    const st = pool.stats();
    expect(st.mode).toBe("threads");
    expect(st.threads).toHaveLength(2);
    for (const t of st.threads) {
      expect(t.threadId).toBeGreaterThan(0);
      expect(t.files).toBeGreaterThan(0);
    }
    expect(st.threads.reduce((n, t) => n + t.files, 0)).toBe(paths.length);
    await pool.close();
  });

  it("starts a second worker only when the first has its batches and files still wait", async () => {
    // Small mail: two files fit the first worker's two batches; a second
    // thread would only compete with the agent's main thread for the cores.
    const pool = new HashPool({ workers: 2 });
    const paths = [...files.keys()].slice(0, 2);
    const results = await Promise.all(paths.map((p) => pool.hash(p)));
    expect(results.map((r) => ok(r).sha1.toString("hex"))).toEqual(paths.map((p) => files.get(p)));
    const st = pool.stats();
    expect(st.mode).toBe("threads");
    expect(st.threads).toHaveLength(1);
    expect(st.threads[0]!.files).toBe(2);
    await pool.close();
  });

  it("hashMany yields every result and reports progress", async () => {
    const pool = new HashPool({ workers: 2 });
    const paths = [...files.keys()];
    const progress: [number, number][] = [];
    const seen = new Map<string, string>();
    async function* jobs() {
      for (const p of paths) yield { path: p };
    }
    for await (const r of pool.hashMany(jobs(), (f, b) => progress.push([f, b]))) {
      seen.set(r.path, ok(r).sha1.toString("hex"));
    }
    expect(seen).toEqual(files);
    expect(progress).toHaveLength(paths.length);
    const total = (await Promise.all(paths.map((p) => stat(p)))).reduce((n, s) => n + s.size, 0);
    expect(progress.at(-1)).toEqual([paths.length, total]);
    await pool.close();
  });

  it("respects maxBytesPerSec across workers (lower bound only)", async () => {
    const big = [await makeFile("rate-a.", 4 << 20), await makeFile("rate-b.", 4 << 20)];
    const pool = new HashPool({ workers: 2, maxBytesPerSec: 16 << 20 });
    const t0 = performance.now();
    const rs = await Promise.all(big.map((p) => pool.hash(p)));
    const elapsed = performance.now() - t0;
    for (const r of rs) expect(ok(r).sha1.toString("hex")).toBe(files.get(r.path));
    // Both whole files were read through the shared limit: 8 MiB at 16 MiB/s
    // is 500 ms (a per-worker limit would let it finish in 250 ms); the lower
    // bound leaves room for timer slack. No upper bound: on a loaded machine
    // any wall-clock ceiling is a guess.
    expect(rs.map((r) => ok(r).size)).toEqual([4 << 20, 4 << 20]);
    expect(elapsed).toBeGreaterThan(400);
    await pool.close();
  });

  it("abort stops hashMany early and records nothing half-done", async () => {
    const paths: string[] = [];
    for (let i = 0; i < 40; i++) paths.push(await makeFile(`abort-${i}.`, 256 * 1024));
    // 1 MiB/s: the 40 files (10 MiB) would take ~10 s.
    const pool = new HashPool({ workers: 2, maxBytesPerSec: 1 << 20 });
    const ac = new AbortController();
    const got: HashResult[] = [];
    // Aborted on an event, not a timer: as soon as the first file is done.
    await expect(
      (async () => {
        for await (const r of pool.hashMany(paths, undefined, ac.signal)) {
          got.push(r);
          if (got.length === 1) ac.abort(new Error("stop"));
        }
      })(),
    ).rejects.toThrow("stop");
    // Stopped early: some files done, not all (no wall-clock ceiling needed).
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThan(paths.length);
    for (const r of got) expect(ok(r).sha1.toString("hex")).toBe(files.get(r.path));
    // The pool is still usable after an abort, and closes promptly.
    expect(ok(await pool.hash(join(dir, "1."))).size).toBe(1);
    await pool.close();
  });

  it("a per-job signal drops an in-flight and a queued job", async () => {
    const pool = new HashPool({ workers: 1, maxBytesPerSec: 4 << 20 });
    const first = pool.hash(join(dir, "6."));
    const ac = new AbortController();
    const second = pool.hash(join(dir, "5."), ac.signal);
    const third = pool.hash(join(dir, "4."), ac.signal);
    // One worker takes two files at once: `second` is in flight, `third` queued.
    ac.abort();
    await Promise.all([
      expect(second).rejects.toThrow(/abort/i),
      expect(third).rejects.toThrow(/abort/i),
    ]);
    expect(ok(await first).size).toBe(5 * (1 << 20) + 12345);
    // Only `first` was hashed: the aborted ones were never read to the end.
    expect(pool.stats().threads.reduce((n, t) => n + t.files, 0)).toBe(1);
    await pool.close();
  });

  it("hashWhileStarting: the main thread hashes what waits while the worker boots, then stops; results unchanged", async () => {
    // A worker held at its start: it opens a FIFO and loads the real worker
    // only once the test writes to it. Its first batches wait in its port.
    const gate = join(dir, "worker-gate");
    execFileSync("mkfifo", [gate]);
    const held = join(dir, "held-worker.mjs");
    const real = new URL("../../dist/src/agent/hash-worker.js", import.meta.url);
    await writeFile(
      held,
      `import { readFileSync } from "node:fs";\nreadFileSync(${JSON.stringify(gate)});\nawait import(${JSON.stringify(real.href)});\n`,
    );
    const pool = new HashPool({
      workers: 1,
      hashWhileStarting: true,
      workerUrl: pathToFileURL(held),
    });
    const paths = [...files.keys()];
    // Two files: the worker's two batches of one file each.
    const toWorker = paths.slice(0, 2).map((p) => pool.hash(p));
    await new Promise((resolve) => setImmediate(resolve));
    // The worker is full and not started: these are hashed on the main thread.
    const onMain = await Promise.all(paths.slice(2, 12).map((p) => pool.hash(p)));
    for (const r of onMain) expect(ok(r).sha1.toString("hex")).toBe(files.get(r.path));
    // This thread (vitest may run the file in a worker thread of its own).
    const main = (st: ReturnType<HashPool["stats"]>) =>
      st.threads.find((t) => t.threadId === threadId)?.files ?? 0;
    expect(main(pool.stats())).toBe(10);
    expect(pool.stats().threads).toHaveLength(1);
    // Let the worker start: it answers its batches, then takes everything.
    await writeFile(gate, "go");
    for (const r of await Promise.all(toWorker))
      expect(ok(r).sha1.toString("hex")).toBe(files.get(r.path));
    const later = await Promise.all(paths.slice(12).map((p) => pool.hash(p)));
    for (const r of later) expect(ok(r).sha1.toString("hex")).toBe(files.get(r.path));
    const st = pool.stats();
    expect(st.mode).toBe("threads");
    expect(main(st)).toBe(10);
    const worker = st.threads.find((t) => t.threadId !== threadId);
    expect(worker?.files).toBe(paths.length - 10);
    await pool.close();
  });

  it("falls back to hashing inline when the worker cannot start", async () => {
    const broken = join(dir, "broken-worker.mjs");
    await writeFile(broken, "throw new Error('no worker here');\n");
    const pool = new HashPool({ workers: 2, workerUrl: pathToFileURL(broken) });
    expect(pool.mode).toBe("threads");
    const paths = [...files.keys()].slice(0, 10);
    const rs = await Promise.all(paths.map((p) => pool.hash(p)));
    for (const r of rs) expect(ok(r).sha1.toString("hex")).toBe(files.get(r.path));
    expect(pool.mode).toBe("inline");
    await pool.close();
  });

  it("lowPriority renices the worker threads only", async () => {
    // nice of each thread of this process, by tid. A thread of an earlier
    // pool may still be exiting while we look: its task can vanish.
    const niceByThread = async () => {
      const out = new Map<number, number>();
      for (const tid of await readdir("/proc/self/task")) {
        let stat: string;
        try {
          stat = await readFile(`/proc/self/task/${tid}/stat`, "utf8");
        } catch {
          continue;
        }
        // Field 19 is nice; fields after the ")" of the command name start at 3.
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        out.set(Number(tid), Number(fields[16]));
      }
      return out;
    };
    const mainBefore = (await niceByThread()).get(process.pid);
    const pool = new HashPool({ workers: 2, lowPriority: true });
    const results = await Promise.all([...files.keys()].map((p) => pool.hash(p)));
    const during = await niceByThread();
    const workerTids = new Set(pool.stats().threads.map((t) => t.threadId));
    expect(workerTids.size).toBeGreaterThan(0);
    // At least the pool's two workers run at nice 19 …
    expect([...during.values()].filter((n) => n === 19).length).toBeGreaterThanOrEqual(2);
    // … while the main thread keeps its priority.
    expect(during.get(process.pid)).toBe(mainBefore);
    expect(os.getPriority(0)).toBe(mainBefore);
    expect(results.every((r) => "sha1" in r)).toBe(true);
    await pool.close();
  });

  it("close waits for submitted jobs; later jobs reject", async () => {
    const pool = new HashPool({ workers: 2 });
    const p = pool.hash(join(dir, "6."));
    await pool.close();
    expect(ok(await p).size).toBeGreaterThan(0);
    await expect(pool.hash(join(dir, "1."))).rejects.toThrow(/closed/);
  });
});
