// Finding and ending the processes a test run started. Every process started
// under `vitest run` carries markers in its environment: GUIDUP_TEST_RUN (set
// by test/global-process-check.ts, inherited by every descendant) and
// GUIDUP_TEST_FILE (set per test file by test/helpers/mark-test-file.ts);
// the test SSH servers add GUIDUP_TEST_SERVER to what they start, so that
// stopping one can wait for all of it. sshd clears the environment of its
// sessions, so test/helpers/sshd.ts hands the markers on with SetEnv.
// Linux only: reads /proc.

import fs from "node:fs";

export const RUN_MARKER = "GUIDUP_TEST_RUN";
export const FILE_MARKER = "GUIDUP_TEST_FILE";
export const SERVER_MARKER = "GUIDUP_TEST_SERVER";

export interface MarkedProcess {
  pid: number;
  ppid: number;
  /** The command line, arguments joined by spaces. */
  command: string;
  /** The test file it was started under, if its environment says so. */
  file: string | undefined;
}

/** The environment of a process, or undefined if it is gone, a zombie, or not ours to read. */
function environOf(pid: number): Map<string, string> | undefined {
  let raw: string;
  try {
    raw = fs.readFileSync(`/proc/${pid}/environ`, "utf8");
  } catch {
    return undefined;
  }
  const env = new Map<string, string>();
  for (const entry of raw.split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return env;
}

/** State letter and parent pid from /proc/PID/stat, or undefined if the process is gone. */
function statOf(pid: number): { state: string; ppid: number } | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0] ?? "", ppid: Number(fields[1]) };
}

/** Live (not zombie) processes other than this one whose environment has name=value. */
export function markedProcesses(name: string, value: string): MarkedProcess[] {
  const found: MarkedProcess[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const env = environOf(pid);
    if (env?.get(name) !== value) continue;
    const stat = statOf(pid);
    if (stat === undefined || stat.state === "Z") continue;
    let command: string;
    try {
      command = fs
        .readFileSync(`/proc/${pid}/cmdline`, "utf8")
        .replace(/\0$/, "")
        .split("\0")
        .join(" ");
    } catch {
      continue;
    }
    found.push({ pid, ppid: stat.ppid, command, file: env.get(FILE_MARKER) });
  }
  return found;
}

/** True once the process has exited (gone from /proc, or a zombie nobody has reaped yet). */
export function processGone(pid: number): boolean {
  const stat = statOf(pid);
  return stat === undefined || stat.state === "Z";
}

/**
 * Waits until no live process has name=value in its environment, for at most
 * timeoutMs. Resolves with those still running then (none, normally).
 */
export async function waitUntilNoneMarked(
  name: string,
  value: string,
  timeoutMs = 10_000,
): Promise<MarkedProcess[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = markedProcesses(name, value);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** "pid 123 (from test/x.test.ts): node agent.mjs --config …", one per line, for messages. */
export function describeProcesses(processes: MarkedProcess[]): string {
  return processes
    .map((p) => `  pid ${p.pid} (from ${p.file ?? "outside any test file"}): ${p.command}`)
    .join("\n");
}

/**
 * Sends SIGKILL to a process that is not our child (so no "exit" event will
 * come) and waits until /proc shows it has exited. Rejects if it has not
 * within timeoutMs.
 */
export async function endProcess(pid: number, timeoutMs = 10_000): Promise<void> {
  try {
    process.kill(pid, "SIGKILL");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return;
    throw err;
  }
  const deadline = Date.now() + timeoutMs;
  while (!processGone(pid)) {
    if (Date.now() > deadline)
      throw new Error(`pid ${pid} did not exit within ${timeoutMs} ms of SIGKILL`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
