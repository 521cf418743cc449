// guidup in a real pseudo-terminal (test/helpers/pty-session.py): the command
// is the foreground process group of its own terminal, and a "\x03" written
// to the pty master is a Ctrl-C the line discipline turns into SIGINT for the
// whole group, as at a keyboard. Not a pipe, not `kill`.

import { execFile } from "node:child_process";
import path from "node:path";
import { REPO_ROOT } from "./fixtures.js";

export const PTY_SESSION = path.join(REPO_ROOT, "test", "helpers", "pty-session.py");
export const CTRL_C = "\x03";

export type PtyStep =
  | { waitFile: string }
  | { waitText: string }
  | { send: string }
  /** Creates the file (empty): releases a fault-proxy hook waiting for it. */
  | { touch: string };

export interface PtyResult {
  code: number | null;
  signal: number | null;
  /** Everything the command wrote to the terminal (stdout and stderr), escapes included. */
  output: string;
  stepsDone: number;
  timedOut: boolean;
  termiosRestored: boolean;
  lflag: { ECHO: boolean; ICANON: boolean; ISIG: boolean };
  cursorHidden: boolean;
}

export function runInPty(spec: {
  argv: string[];
  steps: PtyStep[];
  cwd?: string;
  env?: Record<string, string>;
  timeoutSec?: number;
}): Promise<PtyResult> {
  return new Promise((resolve, reject) => {
    execFile(
      "python3",
      [PTY_SESSION, JSON.stringify({ timeoutSec: 120, ...spec })],
      { maxBuffer: 64 * 1024 * 1024, timeout: ((spec.timeoutSec ?? 120) + 30) * 1000 },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`pty-session.py failed: ${error.message}\n${stderr}`));
          return;
        }
        resolve(JSON.parse(stdout) as PtyResult);
      },
    );
  });
}

/** The terminal output without escape sequences and carriage-return redraws, for matching text. */
export function plainText(output: string): string {
  return output
    .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")
    .replace(/\r\n/g, "\n")
    .replace(/\r/g, "\n");
}
