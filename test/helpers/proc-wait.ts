// Waiting for what the kernel shows about another process, instead of
// sleeping and hoping it got there: a file it has open (/proc/PID/fd), a lock
// it is blocked on (/proc/locks). Each polls until the event is visible; the
// test's own timeout bounds the wait.

import { readdir, readFile, readlink } from "node:fs/promises";

const POLL_MS = 5;
const tick = () => new Promise((r) => setTimeout(r, POLL_MS));

/** Whether process `pid` ("self": this one) has `file` open on some fd now. */
export async function hasOpen(pid: number | "self", file: string): Promise<boolean> {
  const fdDir = `/proc/${pid}/fd`;
  for (const fd of await readdir(fdDir).catch(() => [] as string[])) {
    if ((await readlink(`${fdDir}/${fd}`).catch(() => "")) === file) return true;
  }
  return false;
}

/** Resolves once process `pid` ("self": this one) has `file` open: it has reached the file. */
export async function untilOpen(pid: number | "self", file: string): Promise<void> {
  while (!(await hasOpen(pid, file))) await tick();
}

/** Resolves once /proc/locks lists process `pid` as blocked waiting for a lock ("->"). */
export async function untilBlockedOnLock(pid: number): Promise<void> {
  const blocked = new RegExp(`^\\d+: -> \\S+\\s+\\S+\\s+\\S+\\s+${pid} `, "m");
  while (!blocked.test(await readFile("/proc/locks", "utf8"))) await tick();
}
