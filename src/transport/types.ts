// What a transport is asked for (HostSpec) and what it hands back: a
// HostConnection per host and an AgentChannel per running agent. Channels move
// lines of text and know nothing of the messages inside them.

/** An agent started as a child process on this machine (demo, tests). */
export interface LocalHostSpec {
  transport: "local";
  /**
   * argv of the agent, run without a shell. Default: this Node binary,
   * dist/src/cli/main.js of this package, "serve". `--config <config>` is
   * appended.
   */
  command?: string[];
  /** imapd.conf path on the host, passed to the agent as --config. */
  config: string;
  /** Name in messages and logs; default "local". */
  name?: string;
  /** How long close() waits for the agent to exit once its stdin ends; default 5000. */
  closeTimeoutMs?: number;
}

/**
 * One bastion on the way to a host (OpenSSH ProxyJump): the connection to it
 * is checked and authenticated like any other, and the next hop is reached
 * through a forwarded channel it opens.
 */
export interface SshJumpHop {
  host: string;
  /** Default 22. */
  port?: number;
  /** Default: the local user name. */
  user?: string;
  identityFile?: string;
  /** Use only identityFile, not the ssh-agent's keys. */
  identitiesOnly?: boolean;
  /** Default ~/.ssh/known_hosts. */
  knownHostsFile?: string;
  /** Further known_hosts files, read but never written. */
  moreKnownHostsFiles?: string[];
  /** Name in messages (the alias written in ProxyJump); default the host. */
  name?: string;
}

/** An agent on a host reached over SSH, one exec channel per agent. */
export interface SshHostSpec {
  transport?: "ssh";
  host: string;
  /** Default 22. */
  port?: number;
  /** Default: the local user name, as ssh does. */
  user?: string;
  /** Private key file (unencrypted OpenSSH/PEM); without it, keys from ssh-agent (SSH_AUTH_SOCK). */
  identityFile?: string;
  /** Use only identityFile, not the ssh-agent's keys (OpenSSH IdentitiesOnly). */
  identitiesOnly?: boolean;
  /** Default ~/.ssh/known_hosts. */
  knownHostsFile?: string;
  /**
   * Further known_hosts files, read but never written: OpenSSH's
   * UserKnownHostsFile after the first, and GlobalKnownHostsFile when the
   * ssh config sets it.
   */
  moreKnownHostsFiles?: string[];
  /** Bastions to go through, first hop first (OpenSSH ProxyJump, resolved). */
  jump?: SshJumpHop[];
  /** Seconds between keep-alive probes (OpenSSH ServerAliveInterval); default 15, 0 = none. */
  serverAliveInterval?: number;
  /** Unanswered probes before the peer is declared gone (ServerAliveCountMax); default 3. */
  serverAliveCountMax?: number;
  /**
   * Remote command, used verbatim as the start of the remote command line
   * (it comes from the operator's inventory). Default "guidup serve".
   */
  command?: string;
  /** imapd.conf path on the host; appended shell-quoted as `--config '<config>'`. */
  config: string;
  /** Name in messages and logs; default the host name. */
  name?: string;
  /** Record the key of a host not yet in known_hosts instead of refusing it. Never overrides a changed key. */
  acceptNewHostKeys?: boolean;
  /** TCP connect plus SSH handshake and authentication; default 20000. */
  connectTimeoutMs?: number;
  /** How long close() waits for the agent to exit once its stdin ends; default 5000. */
  closeTimeoutMs?: number;
}

export type HostSpec = LocalHostSpec | SshHostSpec;

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
