// A real OpenSSH sshd for tests: bench/sshd.ts's (127.0.0.1, a free port, its
// own keys and config in a temp dir) with what a test run adds: it logs
// VERBOSE, hands every session the run's process markers (SetEnv), and its
// stop() fails when a session it served is still running. Missing binaries
// are an error, not a skip (npm test installs them: test/provision.mjs).

import { type BenchSshd, startBenchSshd } from "../../bench/sshd.js";
import {
  describeProcesses,
  FILE_MARKER,
  RUN_MARKER,
  SERVER_MARKER,
  waitUntilNoneMarked,
} from "./test-processes.js";

export type SshdHandle = BenchSshd;

/** A SetEnv line handing the process markers in env to every session. */
function markerSetEnv(env: NodeJS.ProcessEnv): string {
  const pairs = [RUN_MARKER, FILE_MARKER, SERVER_MARKER]
    .filter((name) => env[name] !== undefined)
    .map((name) => `"${name}=${env[name]!.replace(/["\\]/g, "_")}"`);
  return `SetEnv ${pairs.join(" ")}`;
}

export function startSshd(): Promise<SshdHandle> {
  let port = 0;
  return startBenchSshd({
    sshdPath: process.env.GUIDUP_TEST_SSHD ?? "/usr/sbin/sshd",
    missingHint:
      "the OpenSSH tests need a real sshd (apt-get install openssh-server openssh-client); they do not skip",
    logLevel: "VERBOSE",
    // sshd, each connection's sshd and (through SetEnv) each session carry
    // this, so stop() can wait for all of them; sshd gives sessions a clean
    // environment, hence SetEnv for the run's markers.
    env: (dir) => ({ ...process.env, [SERVER_MARKER]: dir }),
    moreConfig: (env) => [markerSetEnv(env)],
    // Stopping the listener leaves each connection's sshd and its session
    // to wind down on their own (the clients have closed by now); a
    // session still running after that is one a test left behind.
    afterExit: async (dir) => {
      const left = await waitUntilNoneMarked(SERVER_MARKER, dir);
      if (left.length > 0) {
        throw new Error(
          `processes of the test sshd on port ${port} still running after it stopped:\n${describeProcesses(left)}`,
        );
      }
    },
  }).then((sshd) => {
    port = sshd.port;
    return sshd;
  });
}
