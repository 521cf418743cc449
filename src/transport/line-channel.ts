// The part of an AgentChannel that does not depend on how the agent is
// reached: line framing of stdout and stderr, callbacks that may be
// registered late, the close sequence with its timeouts, and the wording of
// "the agent went away" errors. local.ts and ssh.ts supply the byte pipes.

import { InternalError } from "../errors.js";
import { LineReader } from "../protocol/framing.js";
import { TransportError } from "./errors.js";
import type { AgentChannel } from "./types.js";

/** How long close() waits for the agent to exit after its stdin ends, by default. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;
/** After asking the agent to terminate, how long before it is killed outright. */
export const TERMINATE_TIMEOUT_MS = 2_000;
/** After killing, how long to wait for confirmation before giving up on it. */
export const KILL_TIMEOUT_MS = 2_000;
/**
 * stderr lines kept while nobody listens; older ones are dropped. Logs are
 * not worth unbounded memory, unlike stdout lines, which are the protocol.
 */
const MAX_PENDING_STDERR_LINES = 1_000;

/** How an agent ended as far as the transport can see; both null when unknown (channel closed without a status). */
export interface AgentExit {
  code: number | null;
  signal: string | null;
}

type Listeners<T> = { cbs: ((value: T) => void)[]; pending: T[]; flushQueued: boolean };

export abstract class LineChannel implements AgentChannel {
  private readonly stdout = new LineReader();
  private readonly stderr = new LineReader();
  private readonly lines: Listeners<string> = { cbs: [], pending: [], flushQueued: false };
  private readonly stderrLines: Listeners<string> = { cbs: [], pending: [], flushQueued: false };
  private readonly closeCbs: ((err?: Error) => void)[] = [];
  private lastStderrLine: string | undefined;
  /** close() was called: an exit from now on is expected. */
  private closing = false;
  /** close() had to terminate or kill the agent. */
  private forced: string | undefined;
  private closePromise: Promise<void> | undefined;
  private finished = false;
  private finishError: Error | undefined;
  private readonly finishWaiters: (() => void)[] = [];
  /** Whether the agent's first stdout line (its hello) has been seen. */
  private sawFirstLine = false;
  /** Where the agent runs as its hello says, so a stuck one can be found and ended. */
  private identity: { host: string; pid: number } | undefined;

  constructor(
    readonly host: string,
    /** What the agent is, for messages: "agent on imap1", "agent `guidup serve` on imap1". */
    protected readonly what: string,
    private readonly closeTimeoutMs: number,
  ) {}

  /** Writes text (whole lines) to the agent's stdin. */
  protected abstract write(text: string): void;
  /** Ends the agent's stdin (EOF). */
  protected abstract endInput(): void;
  /** Asks the agent to stop (SIGTERM). Returns the name of what was sent. */
  protected abstract terminate(): string;
  /** Stops the agent without asking (SIGKILL, closing the channel). Returns the name of what was done. */
  protected abstract kill(): string;

  send(line: string): void {
    if (this.finished || this.closing) {
      throw new TransportError(`cannot send to the ${this.what}: it is closed`, {
        host: this.host,
      });
    }
    // One scan for a newline; a line that already ends with its "\n" (as
    // encodeLine makes them) is written as is, without a copy.
    const nl = line.indexOf("\n");
    if (nl === -1) {
      this.write(`${line}\n`);
      return;
    }
    if (nl !== line.length - 1) {
      // A caller bug: JSON lines from encodeLine never contain a raw newline.
      throw new InternalError("a protocol line to send contains a newline inside it");
    }
    this.write(line);
  }

  onLine(cb: (line: string) => void): void {
    this.listen(this.lines, cb);
  }

  onStderrLine(cb: (line: string) => void): void {
    this.listen(this.stderrLines, cb);
  }

  onClose(cb: (err?: Error) => void): void {
    if (this.finished) {
      // After any lines still queued for late listeners (microtasks run in order).
      queueMicrotask(() => cb(this.finishError));
      return;
    }
    this.closeCbs.push(cb);
  }

  close(): Promise<void> {
    this.closePromise ??= this.runClose();
    return this.closePromise;
  }

  private async runClose(): Promise<void> {
    if (this.finished) return;
    this.closing = true;
    try {
      this.endInput();
    } catch {
      // Already gone; the exit (or the timeout below) tells the rest.
    }
    if (await this.waitFinished(this.closeTimeoutMs)) return;
    this.forced = this.terminate();
    if (await this.waitFinished(TERMINATE_TIMEOUT_MS)) return;
    this.forced = this.kill();
    if (await this.waitFinished(KILL_TIMEOUT_MS)) return;
    // No word from it even after the kill: an SSH channel on a dead
    // connection never confirms, and sshd does not pass signals to sessions
    // of root (no privilege separation there), so a stuck agent outlives the
    // channel. Stop waiting and say so.
    const left = this.identity;
    const where =
      left === undefined
        ? "it may still be running there (its pid is unknown: it never said hello)"
        : `process ${left.pid} on ${left.host} may still be running and holding mailbox locks; ` +
          `end it there (kill -KILL ${left.pid})`;
    this.finish(
      new TransportError(
        `the ${this.what} did not exit within ${this.closeTimeoutMs} ms of its stdin closing; ` +
          `${this.forced}, and it has still not exited; giving up on it: ${where}`,
        {
          host: this.host,
          ...(left === undefined ? {} : { agentHost: left.host, agentPid: left.pid }),
        },
      ),
    );
  }

  /**
   * The agent's first line is its hello, which names the machine and pid it
   * runs as (the transport only sees the far end of a pipe or an SSH
   * channel). Kept for the give-up message; anything else is ignored here.
   */
  private noteHello(line: string): void {
    this.sawFirstLine = true;
    let hello: unknown;
    try {
      hello = JSON.parse(line);
    } catch {
      return;
    }
    const { host, pid } = (hello ?? {}) as { host?: unknown; pid?: unknown };
    if (typeof host === "string" && Number.isSafeInteger(pid)) {
      this.identity = { host, pid: pid as number };
    }
  }

  private waitFinished(ms: number): Promise<boolean> {
    if (this.finished) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.finishWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** For subclasses: a chunk of the agent's stdout. */
  protected receiveStdout(chunk: Buffer): void {
    if (this.finished) return;
    let lines: string[];
    try {
      lines = this.stdout.push(chunk);
    } catch (err) {
      this.abort(err);
      return;
    }
    for (const line of lines) {
      if (!this.sawFirstLine) this.noteHello(line);
      this.emit(this.lines, line);
    }
  }

  /** For subclasses: a chunk of the agent's stderr. */
  protected receiveStderr(chunk: Buffer): void {
    if (this.finished) return;
    let lines: string[];
    try {
      lines = this.stderr.push(chunk);
    } catch (err) {
      this.abort(err);
      return;
    }
    for (const line of lines) this.emitStderr(line);
  }

  /**
   * For subclasses: the agent is gone and its stdout and stderr have ended.
   * Decides whether that was expected and finishes the channel.
   */
  protected exited(exit: AgentExit): void {
    if (this.finished) return;
    const out = this.stdout.end();
    if (out !== undefined) this.emit(this.lines, out);
    const err = this.stderr.end();
    if (err !== undefined) this.emitStderr(err);

    if (this.closing && this.forced !== undefined) {
      this.finish(
        new TransportError(
          `the ${this.what} did not exit within ${this.closeTimeoutMs} ms of its stdin closing; ${this.forced}`,
          { host: this.host, ...exit },
        ),
      );
    } else if (this.closing && exit.code === 0) {
      this.finish();
    } else {
      this.finish(
        new TransportError(
          `the ${this.what} ${describeExit(exit, this.closing)}${this.stderrHint()}`,
          {
            host: this.host,
            ...exit,
            ...(this.lastStderrLine === undefined ? {} : { lastStderrLine: this.lastStderrLine }),
          },
        ),
      );
    }
  }

  /**
   * For subclasses: the channel failed from outside (connection dropped).
   * Finishes with err and stops the agent as far as still possible.
   */
  protected fail(err: Error): void {
    if (this.finished) return;
    this.finish(err);
    try {
      this.kill();
    } catch {
      // Best effort: the pipe may be gone already.
    }
  }

  /** The peer broke the framing (overlong line): the stream is useless, stop the agent. */
  private abort(cause: unknown): void {
    const message = cause instanceof Error ? cause.message : String(cause);
    this.fail(new TransportError(`the ${this.what}: ${message}`, { host: this.host }));
  }

  private finish(err?: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.finishError = err;
    for (const waiter of this.finishWaiters.splice(0)) waiter();
    const cbs = this.closeCbs.splice(0);
    // Queued behind any pending line flush so listeners see lines before the close.
    queueMicrotask(() => {
      for (const cb of cbs) cb(err);
    });
  }

  private stderrHint(): string {
    return this.lastStderrLine === undefined ? "" : `; last stderr line: ${this.lastStderrLine}`;
  }

  private emitStderr(line: string): void {
    if (line.trim() !== "") this.lastStderrLine = line;
    this.emit(this.stderrLines, line);
    const pending = this.stderrLines.pending;
    if (pending.length > MAX_PENDING_STDERR_LINES)
      pending.splice(0, pending.length - MAX_PENDING_STDERR_LINES);
  }

  private emit(listeners: Listeners<string>, line: string): void {
    // Keep order: while earlier lines wait for delivery, later ones queue behind them.
    if (listeners.cbs.length === 0 || listeners.pending.length > 0) {
      listeners.pending.push(line);
      return;
    }
    for (const cb of listeners.cbs) cb(line);
  }

  private listen(listeners: Listeners<string>, cb: (line: string) => void): void {
    listeners.cbs.push(cb);
    if (listeners.pending.length === 0 || listeners.flushQueued) return;
    // Deliver what arrived before anyone listened, but not from inside onLine()
    // itself: a callback should never run before its registration returns.
    listeners.flushQueued = true;
    queueMicrotask(() => {
      listeners.flushQueued = false;
      for (const line of listeners.pending.splice(0)) {
        for (const c of listeners.cbs) c(line);
      }
    });
  }
}

/**
 * "exited unexpectedly with code 3", "was killed by SIGTERM after its stdin
 * closed", with a hint for the shell's "cannot run that" codes.
 */
function describeExit(exit: AgentExit, closing: boolean): string {
  const early = closing ? "" : " unexpectedly";
  const late = closing ? " after its stdin closed" : "";
  let text: string;
  if (exit.signal !== null) text = `was killed${early} by ${exit.signal}${late}`;
  else if (exit.code === null) text = `closed${early} without an exit status${late}`;
  else text = `exited${early} with code ${exit.code}${late}`;
  // 127 and 126 are how sh reports a command it cannot find or cannot run.
  if (exit.code === 127) text += " (command not found? check the agent command)";
  if (exit.code === 126) text += " (command not executable? check the agent command)";
  return text;
}
