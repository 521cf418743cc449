// vitest globalSetup: marks every process of the run and fails the run if any
// is still alive at its end. The marker is GUIDUP_TEST_RUN=<random id> in the
// environment, set here before the workers start, so every worker and every
// process a test starts inherits it (sshd sessions get it through SetEnv in
// test/helpers/sshd.ts). Each test must end what it starts; what is left is
// a leak: it is named, killed, and the run fails.

import { randomBytes } from "node:crypto";
import {
  describeProcesses,
  endProcess,
  type MarkedProcess,
  markedProcesses,
  RUN_MARKER,
} from "./helpers/test-processes.js";

/** vitest's own worker processes: direct children of this process that run vitest. */
function isVitestWorker(p: MarkedProcess): boolean {
  return p.ppid === process.pid && p.file === undefined && /\bvitest\b/.test(p.command);
}

export default function setup(): () => Promise<void> {
  const runId = randomBytes(8).toString("hex");
  process.env[RUN_MARKER] = runId;
  return async function teardown() {
    const left = markedProcesses(RUN_MARKER, runId).filter((p) => !isVitestWorker(p));
    if (left.length === 0) return;
    await Promise.all(left.map((p) => endProcess(p.pid)));
    // vitest only logs an error thrown here; the exit code is ours to set.
    process.exitCode = 1;
    throw new Error(
      `${left.length} process(es) started by the tests were still running after them ` +
        `(now killed; every test must end what it starts):\n${describeProcesses(left)}`,
    );
  };
}
