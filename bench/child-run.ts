// What the benchmarks that time a guidup child process share: running it
// with its output gathered, and how busy the whole machine was meanwhile.

import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";

export interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Gathers a spawned child's stdout and stderr until it closes. */
export function collectChild(child: ChildProcess): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString("utf8");
    });
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString("utf8");
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs `file args` (no stdin) to its end. */
export function runChild(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<ChildResult> {
  return collectChild(spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], env }));
}

/**
 * The machine's busy and total clock ticks so far (/proc/stat's first line:
 * user … steal; the guest columns are already counted in user).
 */
export function machineTicks(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** What bench/rss-probe.ts printed for the process `pid`: its own peak RSS and CPU. */
export interface ProbeFigures {
  pid: number;
  maxRssBytes: number;
  cpuMs: number;
}

/** The rss-probe line of process `pid` in a child's stderr, if it printed one. */
export function probeFigures(stderr: string, pid: number | undefined): ProbeFigures | undefined {
  return stderr
    .split("\n")
    .filter((l) => l.startsWith("BENCH-PROBE "))
    .map((l) => JSON.parse(l.slice("BENCH-PROBE ".length)) as ProbeFigures)
    .find((p) => p.pid === pid);
}

/** The GUIDUP_TIMELINE=1 lines of a child's stderr ("<ms> <step>"). */
export function timelineLines(stderr: string): string[] {
  return stderr
    .split("\n")
    .filter((l) => l.startsWith("timeline "))
    .map((l) => l.slice("timeline ".length));
}
