// What a transport is asked for (HostSpec, src/host-spec.ts) and what it hands back: a
// HostConnection per host and an AgentChannel per running agent. Channels move
// lines of text and know nothing of the messages inside them.

// The host descriptions live in src/host-spec.ts (the inventory and the plan
// hold them too); import them from there.

/**
 * One running agent. Lines are delivered without their "\n"; callbacks
 * registered after lines arrived still get them, in order (nothing is lost
 * between openAgent resolving and onLine being called).
 */
export interface AgentChannel {
  /** The host's display name, for messages. */
  readonly host: string;
  /**
   * Writes one line to the agent's stdin; a missing final "\n" is added. A
   * line with an embedded "\n" would break the framing and throws, as does a
   * send after close() or after the channel closed.
   */
  send(line: string): void;
  /** Each line the agent writes to stdout (protocol). */
  onLine(cb: (line: string) => void): void;
  /** Each line the agent writes to stderr (JSON logs). */
  onStderrLine(cb: (line: string) => void): void;
  /**
   * Called once when the agent is gone. err is set when it went on its own
   * (exit or crash before close(), a dropped connection, an overlong line) or
   * when close() found it failing (non-zero exit, had to be killed).
   */
  onClose(cb: (err?: Error) => void): void;
  /**
   * Ends the agent's stdin, waits up to closeTimeoutMs for it to exit, then
   * terminates it (SIGTERM, then SIGKILL / closing the channel). Resolves when
   * it is gone; never rejects.
   */
  close(): Promise<void>;
}

/** A way to start agents on one host (for SSH: one authenticated connection). */
export interface HostConnection {
  readonly host: string;
  /** Starts an agent. Over SSH, waits while MAX_SESSIONS_PER_CONNECTION agents are open. */
  openAgent(): Promise<AgentChannel>;
  /**
   * Runs one operator-supplied command from the inventory (the mailbox list,
   * e.g. `ctl_mboxlist -d`) and returns its stdout. Over SSH it is an exec
   * channel; locally `sh -c`. No mailbox name ever goes into such a command.
   * Rejects with TransportError naming the host on a non-zero exit.
   */
  runCommand(command: string): Promise<{ stdout: string }>;
  /** Closes every agent it opened, then the connection. Never rejects. */
  close(): Promise<void>;
}

/**
 * OpenSSH's default MaxSessions: sshd refuses the 11th session on one
 * connection. Agents beyond this wait for a free slot instead of failing.
 * (Here rather than in ssh.ts so that importing it does not load ssh2.)
 */
export const MAX_SESSIONS_PER_CONNECTION = 10;
