// A timeline for measuring where a command's time goes (bench/scale.ts sets
// GUIDUP_TIMELINE=1): one line per step. Silent otherwise.
//
// GUIDUP_TIMELINE=1: stderr lines "timeline <ms since launch> <step>" of this
// process (the controller's; an agent's stderr goes to its controller).
// GUIDUP_TIMELINE=FILE (an absolute path): every process that inherits the
// variable (the controller, local agents) appends "<epoch ms> <pid> <ms since
// launch> <CPU ms so far, all threads> <step>" lines to FILE, one write each
// (O_APPEND), so the steps of controller and agent can be merged by time;
// each process's first line is its launch.

import { appendFileSync, readdirSync, readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

const setting = process.env.GUIDUP_TIMELINE;
const toStderr = setting === "1";
const file = setting?.startsWith("/") ? setting : undefined;
let launched = false;

/** Notes that `step` was reached, with the time since the process started. */
export function timelineMark(step: string): void {
  if (toStderr) process.stderr.write(`timeline ${performance.now().toFixed(0)} ${step}\n`);
  else if (file !== undefined) {
    let lines = "";
    if (!launched) {
      launched = true;
      lines += `${performance.timeOrigin.toFixed(1)} ${process.pid} 0.0 0 launch (${process.argv[2] ?? ""})\n`;
    }
    const now = performance.now();
    const cpu = process.cpuUsage();
    lines += `${(performance.timeOrigin + now).toFixed(1)} ${process.pid} ${now.toFixed(1)} ${((cpu.user + cpu.system) / 1000).toFixed(0)} ${step}\n`;
    try {
      appendFileSync(file, lines);
    } catch {
      // A measuring aid: never a reason to fail the command.
    }
  }
}

const threadsToo = process.env.GUIDUP_TIMELINE_THREADS === "1";

/**
 * With GUIDUP_TIMELINE=FILE and GUIDUP_TIMELINE_THREADS=1 on Linux: one mark
 * per thread of this process with the CPU it has used so far (user and
 * system, from /proc/self/task/<tid>/stat in clock ticks of 10 ms): which
 * thread the process's CPU went to (main, worker threads, V8's compiler and
 * garbage collector helpers, libuv's pool). Nothing otherwise. Separate
 * from the timeline because it changes what it measures: after these reads
 * the controller took 0.2-1.5 s longer to reap a two-worker agent on the
 * development machine (the kernel's /proc clean-up in wait4).
 */
export function timelineThreadCpu(): void {
  if (file === undefined || !threadsToo) return;
  let tids: string[];
  try {
    tids = readdirSync("/proc/self/task");
  } catch {
    return;
  }
  const main = String(process.pid);
  for (const tid of tids) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
    } catch {
      continue;
    }
    // "tid (comm) state ppid …": fields 14 and 15 (utime, stime) counted after the comm.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const user = Number(fields[11]) * 10;
    const system = Number(fields[12]) * 10;
    if (user + system === 0) continue;
    timelineMark(
      `thread ${tid}${tid === main ? " (main)" : ""}: ${user} ms user, ${system} ms system`,
    );
  }
}
