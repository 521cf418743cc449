// What a host is, as the inventory names it, the plan records it and a
// transport reaches it: an agent started locally, or over SSH (with
// bastions). Plain data with no behaviour, so every layer may know it (the
// plan is data and reaches no transport). Each type's fields are also listed
// once, in the order a plan writes them; the lists are Records over the
// type's keys, so a field added to a type but not to its list fails to
// compile (the plan would silently drop it and apply would reach the host
// another way).

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
  /** Name in messages and logs (a hop's: the alias written in ProxyJump); default the host name. */
  name?: string;
}

/** An agent on a host reached over SSH (logged in to like a hop), one exec channel per agent. */
export interface SshHostSpec extends SshJumpHop {
  transport?: "ssh";
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
  /** Record the key of a host not yet in known_hosts instead of refusing it. Never overrides a changed key. */
  acceptNewHostKeys?: boolean;
  /** TCP connect plus SSH handshake and authentication; default 20000. */
  connectTimeoutMs?: number;
  /** How long close() waits for the agent to exit once its stdin ends; default 5000. */
  closeTimeoutMs?: number;
}

export type HostSpec = LocalHostSpec | SshHostSpec;

/** Every field of a LocalHostSpec, in the order a plan writes them. */
const LOCAL_HOST_FIELDS: Record<keyof LocalHostSpec, true> = {
  transport: true,
  command: true,
  config: true,
  name: true,
  closeTimeoutMs: true,
};

/** Every field of an SshHostSpec, in the order a plan writes them. */
const SSH_HOST_FIELDS: Record<keyof SshHostSpec, true> = {
  transport: true,
  host: true,
  port: true,
  user: true,
  identityFile: true,
  identitiesOnly: true,
  knownHostsFile: true,
  moreKnownHostsFiles: true,
  jump: true,
  serverAliveInterval: true,
  serverAliveCountMax: true,
  command: true,
  config: true,
  name: true,
  acceptNewHostKeys: true,
  connectTimeoutMs: true,
  closeTimeoutMs: true,
};

/** Every field of an SshJumpHop, in the order a plan writes them. */
const JUMP_HOP_FIELDS: Record<keyof SshJumpHop, true> = {
  host: true,
  port: true,
  user: true,
  identityFile: true,
  identitiesOnly: true,
  knownHostsFile: true,
  moreKnownHostsFiles: true,
  name: true,
};

export const LOCAL_HOST_KEYS = Object.keys(LOCAL_HOST_FIELDS) as (keyof LocalHostSpec)[];
export const SSH_HOST_KEYS = Object.keys(SSH_HOST_FIELDS) as (keyof SshHostSpec)[];
export const JUMP_HOP_KEYS = Object.keys(JUMP_HOP_FIELDS) as (keyof SshJumpHop)[];
