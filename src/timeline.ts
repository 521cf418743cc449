// A startup timeline for measuring where a command's time goes before its
// first real work (bench/scale.ts sets GUIDUP_TIMELINE=1): one stderr line
// per step, "timeline <ms since launch> <step>". Silent otherwise.

import { performance } from "node:perf_hooks";

const enabled = process.env.GUIDUP_TIMELINE === "1";

/** Notes that `step` was reached, with the time since the process started. */
export function timelineMark(step: string): void {
  if (enabled) process.stderr.write(`timeline ${performance.now().toFixed(0)} ${step}\n`);
}
