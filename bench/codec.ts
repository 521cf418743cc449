// Codec benchmark (issues: the codec, 12). Converts a 1,000,000-record v9
// index to v10 with GUIDs supplied from memory the way the agent's upgrade
// supplies them (the `guids` map: GUID by UID for old-style records), and
// compares in the same run with
//   - the Perl Cyrus::IndexFile copy of the same records (v10 → v10: the
//     module cannot write v9 correctly), the seed's tool;
//   - `cp` of the same file followed by fsync (the I/O floor).
// Prints records/s, both ratios, and the converter's peak memory, measured in
// a child process (maxRSS, and heap + buffers above the idle baseline).
//
// Run: node dist/bench/codec.js [--records 1000000] [--perl-lib DIR]
//        [--baseline OTHER/dist] (the same conversion with another build's
//        codec, the before of a before/after comparison in one run)
// The Perl module comes from ../shared/tools/get-perl-indexfile.sh DIR.

import { execFileSync, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { convertFileBytes, parseFileBytes, readAllFd } from "../src/agent/index-bytes.js";
import { convertIndex } from "../src/cyrus/convert.js";
import { formatFor } from "../src/cyrus/formats/index.js";
import { IndexReader } from "../src/cyrus/index-file.js";
import { goalLine, machineLine } from "./report.js";

const here = fileURLToPath(import.meta.url);
const repo = resolve(here, "../../..");
const tools = resolve(repo, "../shared/tools");

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

/**
 * In the child: convert and report timing and memory as one JSON line.
 * `dist` is the build whose codec runs (default: this one).
 */
async function child(
  input: string,
  output: string,
  mode: "map" | "table" | "agent",
  dist?: string,
): Promise<void> {
  if (mode === "agent") return agentChild(input, output);
  const idle = process.memoryUsage();
  const codec =
    dist === undefined
      ? { convertIndex, IndexReader, formatFor }
      : {
          ...((await import(
            pathToFileURL(join(dist, "src/cyrus/convert.js")).href
          )) as typeof import("../src/cyrus/convert.js")),
          ...((await import(
            pathToFileURL(join(dist, "src/cyrus/index-file.js")).href
          )) as typeof import("../src/cyrus/index-file.js")),
          ...((await import(
            pathToFileURL(join(dist, "src/cyrus/formats/index.js")).href
          )) as typeof import("../src/cyrus/formats/index.js")),
        };
  const reader = await codec.IndexReader.open(input);
  const n = reader.header.exists;
  // The GUIDs "from memory": one table built before timing, 20 bytes per
  // record, handed over as the agent does (a map by UID, GUIDs as buffers).
  const table = Buffer.allocUnsafe(n * 20);
  for (let i = 0; i < n * 20; i++) table[i] = (i * 2654435761) >>> 24;
  // mode "table": the same GUIDs packed (ConvertOptions.guidTable).
  const guids = new Map<number, Buffer>();
  const uids = new Uint32Array(n);
  for await (const chunk of reader.chunks()) {
    for (let i = 0; i < chunk.count; i++) {
      const k = chunk.first + i;
      uids[k] = chunk.buf.readUInt32BE(i * chunk.recordSize);
      if (mode === "map") guids.set(uids[k]!, table.subarray(k * 20, k * 20 + 20));
    }
  }
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
  const cpu0 = process.cpuUsage();
  const result = await codec.convertIndex(reader, fd, {
    target: codec.formatFor(10)!,
    ...(mode === "map" ? { guids } : { guidTable: { uids, guids: table } }),
  });
  fsyncSync(fd);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  clearInterval(timer);
  closeSync(fd);
  await reader.close();
  sample();
  process.stdout.write(
    `${JSON.stringify({
      records: result.records,
      seconds,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      maxRssMiB: process.resourceUsage().maxRSS / 1024,
      idleRssMiB: idle.rss / 1048576,
      converterHeapMiB: peakHeap / 1048576,
      converterBuffersMiB: peakBuffers / 1048576,
      guidTableMiB: (afterTable.arrayBuffers - idle.arrayBuffers) / 1048576,
    })}\n`,
  );
}

/**
 * In the child: the conversion the agent runs since the cut-over
 * (src/agent/index-bytes.ts: the whole file read into memory, converted there,
 * written in one go, fsynced), with the same GUIDs as a map.
 */
async function agentChild(input: string, output: string): Promise<void> {
  const n = (statSync(input).size - 96) / 80;
  const guids = new Map<number, Buffer>();
  {
    const reader = await IndexReader.open(input);
    const table = Buffer.allocUnsafe(reader.header.exists * 20);
    for (let i = 0; i < table.length; i++) table[i] = (i * 2654435761) >>> 24;
    for await (const chunk of reader.chunks()) {
      for (let i = 0; i < chunk.count; i++) {
        const k = chunk.first + i;
        guids.set(
          chunk.buf.readUInt32BE(i * chunk.recordSize),
          table.subarray(k * 20, k * 20 + 20),
        );
      }
    }
    await reader.close();
  }
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const inFd = openSync(input, "r");
  const fb = parseFileBytes(readAllFd(inFd, input), input, "index");
  closeSync(inFd);
  const converted = convertFileBytes(fb, formatFor(10)!, guids);
  const fd = openSync(output, "w");
  let at = writeSync(fd, converted.header, 0, converted.header.length, 0);
  for (const part of converted.records) {
    for (let done = 0; done < part.length; )
      done += writeSync(fd, part, done, part.length - done, at + done);
    at += part.length;
  }
  fsyncSync(fd);
  closeSync(fd);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(
    `${JSON.stringify({
      records: n,
      seconds,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      maxRssMiB: process.resourceUsage().maxRSS / 1024,
      idleRssMiB: 0,
      converterHeapMiB: 0,
      converterBuffersMiB: 0,
      guidTableMiB: 0,
    })}\n`,
  );
}

function timeIt(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

export async function runCodecBench(
  opts: { records?: number; perlLib?: string; baseline?: string } = {},
): Promise<void> {
  const records = opts.records ?? 1_000_000;
  console.log(machineLine());
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

    // guidup, in a child so its memory is its own; cp + fsync of the same
    // v9 file; interleaved, so a burst of load from elsewhere hits both.
    type ChildResult = {
      seconds: number;
      cpuSeconds: number;
      maxRssMiB: number;
      idleRssMiB: number;
      converterHeapMiB: number;
      converterBuffersMiB: number;
      guidTableMiB: number;
    };
    const runs = 5;
    const ours: ChildResult[] = [];
    const oursMap: ChildResult[] = [];
    const theirs: ChildResult[] = [];
    const cpRuns: number[] = [];
    const cpCpu: number[] = [];
    const agentPath: ChildResult[] = [];
    const convertOnce = (mode: "map" | "table" | "agent", dist?: string): ChildResult => {
      const args = [here, "--child", v9, join(dir, "out.index"), mode];
      if (dist !== undefined) args.push(dist);
      const out = spawnSync(process.execPath, args, { encoding: "utf8" });
      if (out.status !== 0) throw new Error(`child failed: ${out.stderr}`);
      return JSON.parse(out.stdout.trim().split("\n").pop()!);
    };
    for (let i = 0; i < runs; i++) {
      ours.push(convertOnce("table"));
      oursMap.push(convertOnce("map"));
      agentPath.push(convertOnce("agent"));
      if (opts.baseline !== undefined) theirs.push(convertOnce("map", opts.baseline));
      cpRuns.push(
        timeIt(() => {
          execFileSync("cp", [v9, join(dir, "cp.index")]);
          const fd = openSync(join(dir, "cp.index"), "r+");
          fsyncSync(fd);
          closeSync(fd);
        }),
      );
      // The same in CPU time: cp's user + system (bash `times`), plus the fsync's.
      const times = execFileSync(
        "bash",
        ["-c", 'cp "$1" "$2"; times', "bash", v9, join(dir, "cp2.index")],
        { encoding: "utf8" },
      );
      const m = /(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s\s*$/.exec(times.trim());
      const before = process.resourceUsage();
      const fd = openSync(join(dir, "cp2.index"), "r+");
      fsyncSync(fd);
      closeSync(fd);
      const after = process.resourceUsage();
      const fsyncCpu =
        (after.userCPUTime - before.userCPUTime + after.systemCPUTime - before.systemCPUTime) / 1e6;
      cpCpu.push((m ? Number(m[2]) + Number(m[4]) : Number.NaN) + fsyncCpu);
    }
    const fastest = (list: ChildResult[]) => list.reduce((a, b) => (a.seconds < b.seconds ? a : b));
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const best = fastest(ours);
    const bestMap = fastest(oursMap);
    console.log(
      `guidup convert v9→v10 + fsync, GUIDs as a guidTable: ${best.seconds.toFixed(3)} s = ${Math.round(records / best.seconds).toLocaleString("en")} records/s (best of ${runs}; median ${median(ours.map((o) => o.seconds)).toFixed(3)} s; CPU ${Math.min(...ours.map((o) => o.cpuSeconds)).toFixed(3)} s)`,
    );
    console.log(
      `guidup convert v9→v10 + fsync, GUIDs as a map (the agent today): ${bestMap.seconds.toFixed(3)} s (best of ${runs}; median ${median(oursMap.map((o) => o.seconds)).toFixed(3)} s; CPU ${Math.min(...oursMap.map((o) => o.cpuSeconds)).toFixed(3)} s)`,
    );
    console.log(
      `  memory: maxRSS ${best.maxRssMiB.toFixed(1)} MiB (node idle ${best.idleRssMiB.toFixed(1)} MiB, GUID table ${best.guidTableMiB.toFixed(1)} MiB); converter peak heap +${best.converterHeapMiB.toFixed(1)} MiB, buffers +${best.converterBuffersMiB.toFixed(1)} MiB`,
    );
    if (theirs.length > 0) {
      const base = fastest(theirs);
      console.log(
        `baseline build (${opts.baseline}), GUIDs as a map: ${base.seconds.toFixed(3)} s (best of ${runs}; median ${median(theirs.map((o) => o.seconds)).toFixed(3)} s; CPU ${Math.min(...theirs.map((o) => o.cpuSeconds)).toFixed(3)} s); map path ${(base.seconds / bestMap.seconds).toFixed(2)}× faster than the baseline, table ${(base.seconds / best.seconds).toFixed(2)}×`,
      );
    }
    const cp = Math.min(...cpRuns);
    console.log(
      `cp + fsync of the v9 file: ${cp.toFixed(3)} s (best of ${runs}; median ${median(cpRuns).toFixed(3)} s; CPU ${Math.min(...cpCpu).toFixed(3)} s)`,
    );
    console.log(
      goalLine({
        name: "guidup (guidTable) / (cp + fsync)",
        value: best.seconds / cp,
        op: "<=",
        target: 2,
      }),
    );
    console.log(
      `  map path / (cp + fsync) = ${(bestMap.seconds / cp).toFixed(2)}×; in CPU time: table ${(Math.min(...ours.map((o) => o.cpuSeconds)) / Math.min(...cpCpu)).toFixed(2)}×, map ${(Math.min(...oursMap.map((o) => o.cpuSeconds)) / Math.min(...cpCpu)).toFixed(2)}× (less sensitive to load from elsewhere)`,
    );
    if (theirs.length > 0)
      console.log(`  baseline / (cp + fsync) = ${(fastest(theirs).seconds / cp).toFixed(2)}×`);
    const agent = fastest(agentPath);
    console.log(
      `the agent's conversion since the cut-over (src/agent/index-bytes.ts: whole file in memory, one write, fsync; GUIDs as a map): ${agent.seconds.toFixed(3)} s (best of ${runs}; median ${median(agentPath.map((o) => o.seconds)).toFixed(3)} s; CPU ${Math.min(...agentPath.map((o) => o.cpuSeconds)).toFixed(3)} s) = ${(agent.seconds / cp).toFixed(2)}× cp + fsync, maxRSS ${agent.maxRssMiB.toFixed(0)} MiB`,
    );

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
      goalLine({
        name: "Perl / guidup (guidTable)",
        value: perlSeconds / best.seconds,
        op: ">=",
        target: 50,
      }),
    );
    console.log(`  Perl / guidup (map) = ${(perlSeconds / bestMap.seconds).toFixed(1)}×`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === here) {
  if (process.argv[2] === "--child") {
    await child(
      process.argv[3]!,
      process.argv[4]!,
      process.argv[5] === "map" ? "map" : process.argv[5] === "agent" ? "agent" : "table",
      process.argv[6],
    );
  } else {
    await runCodecBench({
      records: Number(arg("records", "1000000")),
      perlLib: arg("perl-lib", "/tmp/perlidx"),
      ...(process.argv.includes("--baseline") ? { baseline: resolve(arg("baseline", "")) } : {}),
    });
  }
}
