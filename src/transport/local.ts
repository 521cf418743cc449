// The local transport: the agent as a child process of the controller, with
// stdin/stdout/stderr pipes and no shell in between. Used by the demo and by
// tests, which then run the real agent without an sshd. Each openAgent()
// starts a new process.

import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { LocalHostSpec } from "../host-spec.js";
import { TransportError } from "./errors.js";
import { DEFAULT_CLOSE_TIMEOUT_MS, LineChannel } from "./line-channel.js";
import type { AgentChannel, HostConnection } from "./types.js";

/**
 * argv of this package's own agent: `node dist/src/cli/main.js serve`. From
 * the compiled dist/src/transport/local.js that is ../cli/main.js; from the
 * TypeScript source (run by vitest) it is the built copy under dist/, as
 * Node cannot run src/cli/main.ts itself.
 */
export function defaultLocalCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  const dir = path.dirname(here);
  const main = here.endsWith(".js")
    ? path.resolve(dir, "..", "cli", "main.js")
    : path.resolve(dir, "..", "..", "dist", "src", "cli", "main.js");
  return [process.execPath, main, "serve"];
}

class LocalChannel extends LineChannel {
  constructor(
    host: string,
    private readonly child: ChildProcessWithoutNullStreams,
    closeTimeoutMs: number,
  ) {
    super(host, `agent on ${host} (pid ${child.pid})`, closeTimeoutMs);
    child.stdout.on("data", (chunk: Buffer) => this.receiveStdout(chunk));
    child.stderr.on("data", (chunk: Buffer) => this.receiveStderr(chunk));
    // EPIPE when the agent exits while we write: the exit itself is reported
    // through "close", which carries the code; the write error adds nothing.
    child.stdin.on("error", () => {});
    // "close", not "exit": it comes after stdout and stderr have ended, so
    // every line the agent wrote has been delivered first.
    child.on("close", (code, signal) => this.exited({ code, signal }));
  }

  protected write(text: string): void {
    this.child.stdin.write(text);
  }

  protected endInput(): void {
    this.child.stdin.end();
  }

  protected terminate(): string {
    this.child.kill("SIGTERM");
    return "sent it SIGTERM";
  }

  protected kill(): string {
    this.child.kill("SIGKILL");
    return "sent it SIGKILL";
  }
}

/** Starts agents as child processes; `close` stops all that are still running. */
export class LocalConnection implements HostConnection {
  readonly host: string;
  private readonly argv: string[];
  private readonly closeTimeoutMs: number;
  private readonly open = new Set<AgentChannel>();
  private closed = false;

  constructor(spec: LocalHostSpec) {
    this.host = spec.name ?? "local";
    const command = spec.command ?? defaultLocalCommand();
    if (command.length === 0 || command[0] === "") {
      throw new TransportError(`the agent command for ${this.host} is empty`, { host: this.host });
    }
    this.argv = [...command, "--config", spec.config];
    this.closeTimeoutMs = spec.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  }

  /** Resolves once the process has started; rejects with TransportError if it cannot be (ENOENT, EACCES). */
  openAgent(): Promise<AgentChannel> {
    if (this.closed) {
      return Promise.reject(
        new TransportError(`connection to ${this.host} is closed`, { host: this.host }),
      );
    }
    const [file, ...args] = this.argv as [string, ...string[]];
    return new Promise((resolve, reject) => {
      const child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"], shell: false });
      const onError = (err: NodeJS.ErrnoException) => {
        reject(
          new TransportError(
            `cannot start the agent on ${this.host}: ${file}: ${spawnReason(err)}`,
            { host: this.host, command: this.argv, errno: err.code },
          ),
        );
      };
      child.once("error", onError);
      child.once("spawn", () => {
        child.off("error", onError);
        // Later process errors (a failed kill) surface as the exit; keep Node
        // from treating them as unhandled.
        child.on("error", () => {});
        const channel = new LocalChannel(this.host, child, this.closeTimeoutMs);
        this.open.add(channel);
        channel.onClose(() => this.open.delete(channel));
        resolve(channel);
      });
    });
  }

  runCommand(command: string): Promise<{ stdout: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn("sh", ["-c", command], { stdio: ["ignore", "pipe", "pipe"] });
      const out: Buffer[] = [];
      let err = "";
      child.stdout.on("data", (d: Buffer) => out.push(d));
      child.stderr.on("data", (d: Buffer) => {
        err = (err + d.toString("utf8")).slice(-2000);
      });
      child.on("error", (e) =>
        reject(
          new TransportError(`\`${command}\` on ${this.host}: ${e.message}`, { host: this.host }),
        ),
      );
      child.on("close", (code) => {
        if (code === 0) resolve({ stdout: Buffer.concat(out).toString("utf8") });
        else {
          const last = err.trim().split("\n").pop() ?? "";
          reject(
            new TransportError(
              `\`${command}\` on ${this.host} failed (exit ${code})${last ? `: ${last}` : ""}`,
              {
                host: this.host,
              },
            ),
          );
        }
      });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.open].map((channel) => channel.close()));
  }
}

function spawnReason(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case "ENOENT":
      return "no such file or command (ENOENT); check the agent command";
    case "EACCES":
      return "permission denied (EACCES); is it executable?";
    default:
      return err.message;
  }
}
