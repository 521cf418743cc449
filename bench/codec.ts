// Codec benchmark (issue: the codec). Converts a 1,000,000-record v9 index to
// v10 with GUIDs supplied from memory, and compares in the same run with
//   - the Perl Cyrus::IndexFile copy of the same records (v10 → v10: the
//     module cannot write v9 correctly), the seed's tool;
//   - `cp` of the same file followed by fsync (the I/O floor).
// Prints records/s, both ratios, and the converter's peak memory, measured in
// a child process (maxRSS, and heap + buffers above the idle baseline).
//
// Run: node dist/bench/codec.js [--records 1000000] [--perl-lib DIR]
// The Perl module comes from ../shared/tools/get-perl-indexfile.sh DIR.

import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { convertIndex } from "../src/cyrus/convert.js";
import { formatFor } from "../src/cyrus/formats/index.js";
import { IndexReader } from "../src/cyrus/index-file.js";

const here = fileURLToPath(import.meta.url);
const repo = resolve(here, "../../..");
const tools = resolve(repo, "../shared/tools");

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

/** In the child: convert and report timing and memory as one JSON line. */
async function child(input: string, output: string): Promise<void> {
  const idle = process.memoryUsage();
  const reader = await IndexReader.open(input);
  const n = reader.header.exists;
  // The GUIDs "from memory": one table built before timing, 20 bytes per uid.
  const table = Buffer.allocUnsafe(n * 20);
  for (let i = 0; i < n * 20; i++) table[i] = (i * 2654435761) >>> 24;
  const afterTable = process.memoryUsage();
  let peakHeap = 0;
  let peakBuffers = 0;
  const sample = () => {
    const m = process.memoryUsage();
    peakHeap = Math.max(peakHeap, m.heapUsed - afterTable.heapUsed);
    peakBuffers = Math.max(peakBuffers, m.arrayBuffers - afterTable.arrayBuffers);
  };
  const timer = setInterval(sample, 5);
  const fd = openSync(output, "w");
  const t0 = performance.now();
  let k = 0;
  const result = await convertIndex(reader, fd, {
    target: formatFor(10)!,
    guidFor: (r) => {
      if ((++k & 0xffff) === 0) sample();
      return table.subarray((r.msgno - 1) * 20, r.msgno * 20);
    },
  });
  fsyncSync(fd);
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(timer);
  closeSync(fd);
  await reader.close();
  sample();
  process.stdout.write(
    `${JSON.stringify({
      records: result.records,
      seconds,
      maxRssMiB: process.resourceUsage().maxRSS / 1024,
      idleRssMiB: idle.rss / 1048576,
      converterHeapMiB: peakHeap / 1048576,
      converterBuffersMiB: peakBuffers / 1048576,
      guidTableMiB: (afterTable.arrayBuffers - idle.arrayBuffers) / 1048576,
    })}\n`,
  );
}

function timeIt(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

export async function runCodecBench(
  opts: { records?: number; perlLib?: string } = {},
): Promise<void> {
  const records = opts.records ?? 1_000_000;
  const dir = mkdtempSync(join(tmpdir(), "guidup-codec-bench-"));
  try {
    const v10 = join(dir, "v10.index");
    const v9 = join(dir, "v9.index");
    execFileSync("python3", [join(tools, "make-synthetic-v10-index.py"), v10, String(records)]);
    {
      // The v9 input: the same records downgraded (UUID slot NULL, MODSEQ at 72).
      const reader = await IndexReader.open(v10);
      const fd = openSync(v9, "w");
      await convertIndex(reader, fd, { target: formatFor(9)! });
      closeSync(fd);
      await reader.close();
    }
    const size = statSync(v9).size;
    console.log(
      `input: ${records} records, v9 ${(size / 1048576).toFixed(1)} MiB (v10 ${(statSync(v10).size / 1048576).toFixed(1)} MiB)`,
    );

    // guidup, in a child so its memory is its own.
    const runs = 3;
    const ours: {
      seconds: number;
      maxRssMiB: number;
      idleRssMiB: number;
      converterHeapMiB: number;
      converterBuffersMiB: number;
      guidTableMiB: number;
    }[] = [];
    for (let i = 0; i < runs; i++) {
      const out = spawnSync(process.execPath, [here, "--child", v9, join(dir, "out.index")], {
        encoding: "utf8",
      });
      if (out.status !== 0) throw new Error(`child failed: ${out.stderr}`);
      ours.push(JSON.parse(out.stdout.trim().split("\n").pop()!));
    }
    const best = ours.reduce((a, b) => (a.seconds < b.seconds ? a : b));
    console.log(
      `guidup convert v9→v10 + fsync: ${best.seconds.toFixed(3)} s = ${Math.round(records / best.seconds).toLocaleString("en")} records/s (best of ${runs})`,
    );
    console.log(
      `  memory: maxRSS ${best.maxRssMiB.toFixed(1)} MiB (node idle ${best.idleRssMiB.toFixed(1)} MiB, GUID table ${best.guidTableMiB.toFixed(1)} MiB); converter peak heap +${best.converterHeapMiB.toFixed(1)} MiB, buffers +${best.converterBuffersMiB.toFixed(1)} MiB`,
    );

    // cp + fsync of the same v9 file.
    const cpRuns = [0, 1, 2].map(() =>
      timeIt(() => {
        execFileSync("cp", [v9, join(dir, "cp.index")]);
        const fd = openSync(join(dir, "cp.index"), "r+");
        fsyncSync(fd);
        closeSync(fd);
      }),
    );
    const cp = Math.min(...cpRuns);
    console.log(`cp + fsync of the v9 file: ${cp.toFixed(3)} s (best of 3)`);
    console.log(`  ratio guidup / (cp+fsync) = ${(best.seconds / cp).toFixed(2)}× (goal ≤ 2×)`);

    // Perl Cyrus::IndexFile copy, v10 → v10.
    const perlLib = opts.perlLib ?? "/tmp/perlidx";
    if (!existsSync(join(perlLib, "Cyrus/IndexFile.pm"))) {
      execFileSync("bash", [join(tools, "get-perl-indexfile.sh"), perlLib], { stdio: "inherit" });
    }
    const perl = spawnSync("perl", [join(tools, "perl-indexfile-bench.pl"), v10, "1", dir], {
      encoding: "utf8",
      env: { ...process.env, PERL5LIB: perlLib },
    });
    const copy = /write_loop\s*:\s*(\d+) records in\s*([\d.]+) s = \s*(\d+) records\/s/.exec(
      perl.stdout,
    );
    if (!copy) throw new Error(`perl bench output not understood:\n${perl.stdout}\n${perl.stderr}`);
    const perlSeconds = Number(copy[2]);
    console.log(
      `Perl Cyrus::IndexFile copy (write_loop, v10→v10): ${perlSeconds.toFixed(2)} s = ${Number(copy[3]).toLocaleString("en")} records/s`,
    );
    console.log(
      `  ratio Perl / guidup = ${(perlSeconds / best.seconds).toFixed(1)}× faster (goal ≥ 20×)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === here) {
  if (process.argv[2] === "--child") {
    await child(process.argv[3]!, process.argv[4]!);
  } else {
    await runCodecBench({
      records: Number(arg("records", "1000000")),
      perlLib: arg("perl-lib", "/tmp/perlidx"),
    });
  }
}
