// The SSH transport: one ssh2 connection per host, one exec channel per
// agent. Host keys are checked against known_hosts before authentication;
// authentication is by key file or ssh-agent, never by password. The only
// thing guidup puts into the remote command line besides the operator's own
// `command` is the config path, shell-quoted.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ClientChannel, ConnectConfig, ParsedKey, ServerHostKeyAlgorithm } from "ssh2";
import ssh2 from "ssh2";
import { FileAccessError, UsageError } from "../errors.js";
import { HostUnreachableError, SshAuthError, TransportError } from "./errors.js";
import { knownKeyTypes, verifyHostKey } from "./known-hosts.js";
import { DEFAULT_CLOSE_TIMEOUT_MS, LineChannel } from "./line-channel.js";
import {
  type AgentChannel,
  type HostConnection,
  MAX_SESSIONS_PER_CONNECTION,
  type SshHostSpec,
} from "./types.js";

// ssh2 is CommonJS and Node cannot see its exports by name from ESM.
const { Client, utils } = ssh2;

export { MAX_SESSIONS_PER_CONNECTION };
/** Keep-alive probe interval; a silent peer is declared gone after KEEPALIVE_COUNT_MAX probes. */
export const KEEPALIVE_INTERVAL_MS = 15_000;
export const KEEPALIVE_COUNT_MAX = 3;
export const DEFAULT_CONNECT_TIMEOUT_MS = 20_000;
/** How long close() waits for the server to confirm the end of the connection. */
const DISCONNECT_TIMEOUT_MS = 2_000;
export const DEFAULT_AGENT_COMMAND = "guidup serve";

/** ssh2's default host key algorithms, most preferred first (lib/protocol/constants.js). */
const DEFAULT_HOST_KEY_ALGORITHMS: ServerHostKeyAlgorithm[] = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];

/** Settings tests turn down; production uses the defaults above. */
export interface SshTuning {
  keepaliveIntervalMs?: number;
  keepaliveCountMax?: number;
}

/** Quotes one word for a POSIX shell: inside single quotes nothing is special except the quote itself. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, "'\\''")}'`;
}

/** The remote command line: the operator's command, then `--config` and the quoted config path. */
export function remoteCommand(command: string, config: string): string {
  if (command.trim() === "") throw new UsageError("the agent command is empty");
  // A NUL cannot be passed through a command line; a path never holds one.
  if (config.includes("\0")) throw new UsageError("the config path contains a NUL byte");
  return `${command} --config ${shellQuote(config)}`;
}

/**
 * Host key algorithms to offer, those we have keys on record for first, so a
 * server with several host keys shows the one we can check (as ssh does).
 */
function hostKeyAlgorithms(knownTypes: string[]): ServerHostKeyAlgorithm[] {
  const preferred: ServerHostKeyAlgorithm[] = [];
  for (const type of knownTypes) {
    // An RSA key ("ssh-rsa" in known_hosts) is used with any of three signature algorithms.
    const algos = type === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [type];
    for (const algo of algos) {
      const known = DEFAULT_HOST_KEY_ALGORITHMS.find((a) => a === algo);
      if (known !== undefined && !preferred.includes(known)) preferred.push(known);
    }
  }
  return [...preferred, ...DEFAULT_HOST_KEY_ALGORITHMS.filter((a) => !preferred.includes(a))];
}

/** "host:port", with brackets around an IPv6 address. */
function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Reads and parses the identity file up front, so a bad key is reported as such and not as a failed login. */
function readIdentity(file: string, where: string): Buffer {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new FileAccessError(
      `cannot read identity file ${file} for ${where}: ${(err as Error).message}`,
      {
        path: file,
      },
    );
  }
  const parsed = utils.parseKey(data);
  if (parsed instanceof Error) {
    if (/passphrase|encrypted/i.test(parsed.message)) {
      throw new SshAuthError(
        `identity file ${file} is encrypted and guidup does not ask for passphrases; ` +
          "load it into ssh-agent and leave identityFile unset",
        { path: file },
      );
    }
    throw new SshAuthError(`identity file ${file} is not a usable private key: ${parsed.message}`, {
      path: file,
    });
  }
  // The OpenSSH format can hold several keys; ssh2 (like ssh) uses the first.
  const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey | undefined) : parsed;
  if (key === undefined || !key.isPrivateKey()) {
    throw new SshAuthError(`identity file ${file} holds no private key (a .pub file?)`, {
      path: file,
    });
  }
  return data;
}

/** Why a connection attempt failed, as one line, in the class the operator can act on. */
function connectError(
  err: Error & { level?: string; code?: unknown },
  where: string,
  timeoutMs: number,
  user: string,
  auth: string,
): Error {
  const code = typeof err.code === "string" ? err.code : undefined;
  const unreachable = (reason: string) =>
    new HostUnreachableError(`cannot reach ${where}: ${reason}`, {
      host: where,
      cause: err.message,
    });
  if (err.level === "client-authentication") {
    return new SshAuthError(
      `ssh login as ${user} to ${where} failed with ${auth}; ` +
        `check that the public key is in ${user}'s authorized_keys there`,
      { host: where, user },
    );
  }
  if (err.level === "client-timeout") {
    return unreachable(
      `no SSH handshake within ${timeoutMs} ms (host down, or a firewall dropping packets?)`,
    );
  }
  switch (code) {
    case "ECONNREFUSED":
      return unreachable("connection refused (is sshd running on that port?)");
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return unreachable("host name not found");
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return unreachable("no route to host");
    case "ETIMEDOUT":
      return unreachable("connection timed out");
    case "ECONNRESET":
      return unreachable("connection reset during the SSH handshake");
  }
  if (err.level === "client-dns") return unreachable("host name not found");
  if (err.message === "Connection lost before handshake") {
    return unreachable(
      "the connection closed before the SSH handshake (not an SSH server, or sshd refused us: see its log)",
    );
  }
  return new TransportError(`ssh to ${where} failed: ${err.message}`, { host: where });
}

/**
 * Sends a "signal" channel request (RFC 4254 6.9; OpenSSH acts on it since
 * 8.1). close() needs it after it has sent EOF, but ssh2's Channel.signal()
 * sends nothing once the channel is no longer writable, although EOF only
 * ends the data stream (RFC 4254 5.3). So the request goes through ssh2's
 * protocol object; if its internals ever change shape, Channel.signal() is
 * the fallback and close() still ends with closing the channel.
 */
function sendSignal(stream: ClientChannel, name: "TERM" | "KILL"): void {
  const internals = stream as unknown as {
    _client?: { _protocol?: { signal?: (channelId: number, signal: string) => void } };
    outgoing?: { id?: unknown; state?: unknown };
  };
  const protocol = internals._client?._protocol;
  const id = internals.outgoing?.id;
  const state = internals.outgoing?.state;
  if (typeof protocol?.signal === "function" && typeof id === "number") {
    // Only on a channel the server has not closed: a request for a dead id is a protocol error.
    if (state === "open" || state === "eof") protocol.signal(id, name);
    return;
  }
  stream.signal(name);
}

class SshChannel extends LineChannel {
  constructor(
    host: string,
    what: string,
    private readonly stream: ClientChannel,
    closeTimeoutMs: number,
  ) {
    super(host, what, closeTimeoutMs);
    // Both streams are read all the time: a full stderr window would stall
    // the agent and keep the channel from ever closing.
    stream.on("data", (chunk: Buffer) => this.receiveStdout(chunk));
    stream.stderr.on("data", (chunk: Buffer) => this.receiveStderr(chunk));
    // Write-after-close and the like: the close that follows tells the story.
    stream.on("error", () => {});
    stream.stderr.on("error", () => {});
    const exit = { code: null as number | null, signal: null as string | null };
    stream.on("exit", (code: number | null, signal?: string) => {
      exit.code = code;
      exit.signal = signal === undefined || signal === null ? null : `SIG${signal}`;
    });
    // ssh2 emits the channel's "close" after stdout ended and stderr's
    // "close" after stderr ended; wait for both so no line is cut off.
    let channelClosed = false;
    let stderrClosed = false;
    const done = () => {
      if (channelClosed && stderrClosed) this.exited(exit);
    };
    stream.on("close", () => {
      channelClosed = true;
      done();
    });
    stream.stderr.on("close", () => {
      stderrClosed = true;
      done();
    });
  }

  protected write(text: string): void {
    this.stream.write(text);
  }

  protected endInput(): void {
    this.stream.end();
  }

  protected terminate(): string {
    sendSignal(this.stream, "TERM");
    return "sent it SIGTERM over SSH";
  }

  protected kill(): string {
    try {
      sendSignal(this.stream, "KILL");
    } finally {
      this.stream.close();
    }
    return "sent it SIGKILL over SSH and closed the channel";
  }

  /** The connection under the channel is gone. */
  connectionLost(err: Error): void {
    this.fail(err);
  }
}

type Waiter = { resolve: () => void; reject: (err: Error) => void };

/**
 * Channel open failure reasons that mean "no session for you (now)":
 * ADMINISTRATIVELY_PROHIBITED (1), and CONNECT_FAILED (2), which is what
 * OpenSSH's sshd answers when MaxSessions is reached.
 */
const SESSION_REFUSED_REASONS: readonly unknown[] = [1, 2];

function isSessionRefused(err: unknown): boolean {
  return SESSION_REFUSED_REASONS.includes((err as { reason?: unknown }).reason);
}
/**
 * Retries of a refused session open. sshd frees a session slot only after it
 * has processed our channel close, which can be just after our next open
 * arrives; a short wait covers that.
 */
const SESSION_RETRY_DELAYS_MS = [10, 25, 50, 100, 200, 400, 800];

/** One authenticated SSH connection to a host; agents are exec channels on it. */
export class SshConnection implements HostConnection {
  private readonly channels = new Set<SshChannel>();
  /** Channels open or being opened. */
  private sessions = 0;
  /**
   * Most sessions at once: OpenSSH's default, lowered if this sshd refuses
   * sessions below it (a smaller MaxSessions) while others are open.
   */
  private sessionLimit = MAX_SESSIONS_PER_CONNECTION;
  private readonly waiting: Waiter[] = [];
  private state: "open" | "closing" | "gone" = "open";
  private goneError: Error | undefined;
  private lastError: Error | undefined;
  private readonly closedPromise: Promise<void>;

  constructor(
    readonly host: string,
    /** "imap1 (10.0.0.1:22)" or "10.0.0.1:22": what messages call this connection. */
    private readonly where: string,
    private readonly client: InstanceType<typeof Client>,
    private readonly command: string,
    private readonly closeTimeoutMs: number,
  ) {
    client.on("error", (err: Error) => {
      this.lastError = err;
    });
    this.closedPromise = new Promise((resolve) => {
      client.on("close", () => {
        this.onClientClose();
        resolve();
      });
    });
  }

  private onClientClose(): void {
    const unexpected = this.state === "open";
    const reason = this.lastError === undefined ? "" : `: ${this.lastError.message}`;
    const err = unexpected
      ? new TransportError(`connection to ${this.where} dropped${reason}`, { host: this.where })
      : new TransportError(`connection to ${this.where} is closed`, { host: this.where });
    this.state = "gone";
    this.goneError = err;
    for (const waiter of this.waiting.splice(0)) waiter.reject(err);
    // The connection-level reason, before ssh2 closes each channel with a
    // bare "no exit status".
    for (const channel of this.channels) channel.connectionLost(err);
  }

  async openAgent(): Promise<AgentChannel> {
    await this.acquireSession(false);
    let stream: ClientChannel;
    for (;;) {
      try {
        stream = await this.execRetrying();
        break;
      } catch (err) {
        this.sessions--;
        const refused = isSessionRefused(err);
        if (refused && this.state === "open" && this.channels.size > 0) {
          // This sshd allows fewer sessions than we assumed: keep to the
          // number of agents it did let us start (not counting other opens
          // in flight, which may be refused too) and wait, at the head of
          // the line, for one of them to end.
          this.sessionLimit = Math.min(this.sessionLimit, this.channels.size);
          this.pump();
          await this.acquireSession(true);
          continue;
        }
        this.pump();
        if (this.state !== "open" && this.goneError !== undefined) throw this.goneError;
        throw new TransportError(
          `cannot start the agent on ${this.where}: ${(err as Error).message}` +
            (refused ? " (sshd refused the session: see its log, MaxSessions, ForceCommand)" : ""),
          { host: this.where },
        );
      }
    }
    if (this.state !== "open") {
      // close() began while this exec was under way and did not see it.
      stream.close();
      this.sessions--;
      throw (
        this.goneError ??
        new TransportError(`connection to ${this.where} is closed`, { host: this.where })
      );
    }
    const channel = new SshChannel(
      this.host,
      `agent \`${this.command}\` on ${this.where}`,
      stream,
      this.closeTimeoutMs,
    );
    this.channels.add(channel);
    channel.onClose(() => {
      this.channels.delete(channel);
      this.sessions--;
      this.pump();
    });
    return channel;
  }

  private exec(): Promise<ClientChannel> {
    return new Promise<ClientChannel>((resolve, reject) => {
      this.client.exec(this.command, (err, s) => (err ? reject(err) : resolve(s)));
    });
  }

  /** exec, retried while sshd refuses the session and the connection is up. */
  async runCommand(command: string): Promise<{ stdout: string }> {
    await this.acquireSession(false);
    try {
      const stream = await new Promise<ClientChannel>((resolve, reject) =>
        this.client.exec(command, (err, s) => (err ? reject(err) : resolve(s))),
      );
      return await collectCommand(stream, `\`${command}\` on ${this.where}`, this.where);
    } finally {
      this.sessions--;
      this.pump();
    }
  }

  private async execRetrying(): Promise<ClientChannel> {
    for (const delayMs of SESSION_RETRY_DELAYS_MS) {
      try {
        return await this.exec();
      } catch (err) {
        if (!isSessionRefused(err) || this.state !== "open") throw err;
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
    return this.exec();
  }

  /** Takes a session slot, waiting in line if none is free; front: go to the head of the line. */
  private acquireSession(front: boolean): Promise<void> {
    if (this.state !== "open") {
      return Promise.reject(
        this.goneError ??
          new TransportError(`connection to ${this.where} is closed`, { host: this.where }),
      );
    }
    if (this.sessions < this.sessionLimit && this.waiting.length === 0) {
      this.sessions++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (front) this.waiting.unshift(waiter);
      else this.waiting.push(waiter);
    });
  }

  /** Hands free slots to waiting openAgent calls, in order. */
  private pump(): void {
    while (this.sessions < this.sessionLimit && this.waiting.length > 0) {
      this.sessions++;
      this.waiting.shift()?.resolve();
    }
  }

  /** Sessions open or being opened, openAgent calls waiting, and the current limit (for tests and diagnostics). */
  get sessionStats(): { open: number; waiting: number; limit: number } {
    return { open: this.sessions, waiting: this.waiting.length, limit: this.sessionLimit };
  }

  async close(): Promise<void> {
    if (this.state === "open") {
      this.state = "closing";
      const err = new TransportError(`connection to ${this.where} is closed`, {
        host: this.where,
      });
      for (const waiter of this.waiting.splice(0)) waiter.reject(err);
      await Promise.all([...this.channels].map((channel) => channel.close()));
      this.client.end();
    }
    const timer = setTimeout(() => this.client.destroy(), DISCONNECT_TIMEOUT_MS);
    await this.closedPromise;
    clearTimeout(timer);
  }
}

/**
 * Connects and authenticates. Rejects with HostKeyError (key unknown,
 * changed or revoked), HostUnreachableError, SshAuthError, FileAccessError
 * (identity or known_hosts file unreadable) or UsageError.
 */
export async function connectSsh(
  spec: SshHostSpec,
  tuning: SshTuning = {},
): Promise<SshConnection> {
  const port = spec.port ?? 22;
  const address = formatAddress(spec.host, port);
  const where =
    spec.name !== undefined && spec.name !== spec.host ? `${spec.name} (${address})` : address;
  const label = spec.name ?? spec.host;
  const user = spec.user ?? os.userInfo().username;
  const knownHostsFile = spec.knownHostsFile ?? path.join(os.homedir(), ".ssh", "known_hosts");
  const timeoutMs = spec.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const command = remoteCommand(spec.command ?? DEFAULT_AGENT_COMMAND, spec.config);

  const agentSocket = process.env.SSH_AUTH_SOCK;
  const key = spec.identityFile === undefined ? undefined : readIdentity(spec.identityFile, where);
  const useAgent = agentSocket !== undefined && agentSocket !== "";
  if (key === undefined && !useAgent) {
    throw new SshAuthError(
      `no SSH credentials for ${where}: set identityFile for it in the inventory, or start ssh-agent (SSH_AUTH_SOCK)`,
      { host: where },
    );
  }
  const authDescription = [
    ...(spec.identityFile === undefined ? [] : [`identity file ${spec.identityFile}`]),
    ...(useAgent ? ["the ssh-agent keys"] : []),
  ].join(" and ");

  const algorithms = hostKeyAlgorithms(knownKeyTypes(knownHostsFile, spec.host, port));
  let hostKeyError: Error | undefined;
  const config: ConnectConfig = {
    host: spec.host,
    port,
    username: user,
    // Exactly these methods, in this order: no "none", no password, no keyboard-interactive.
    authHandler: [
      ...(key === undefined ? [] : ["publickey" as const]),
      ...(useAgent ? ["agent" as const] : []),
    ],
    ...(key === undefined ? {} : { privateKey: key }),
    ...(useAgent ? { agent: agentSocket } : {}),
    hostVerifier: (keyBlob: Buffer): boolean => {
      try {
        verifyHostKey({
          knownHostsFile,
          host: spec.host,
          port,
          keyBlob,
          acceptNew: spec.acceptNewHostKeys === true,
        });
        return true;
      } catch (err) {
        hostKeyError = err as Error;
        return false;
      }
    },
    algorithms: { serverHostKey: algorithms },
    readyTimeout: timeoutMs,
    keepaliveInterval: tuning.keepaliveIntervalMs ?? KEEPALIVE_INTERVAL_MS,
    keepaliveCountMax: tuning.keepaliveCountMax ?? KEEPALIVE_COUNT_MAX,
  };

  const client = new Client();
  return new Promise<SshConnection>((resolve, reject) => {
    let settled = false;
    let firstError: Error | undefined;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      client.removeAllListeners("ready");
      client.on("error", () => {});
      client.destroy();
      reject(err);
    };
    const onError = (err: Error) => {
      firstError ??= err;
      // Errors after the host key was refused are ssh2's echo of that refusal.
      fail(hostKeyError ?? connectError(err, where, timeoutMs, user, authDescription));
    };
    client.on("error", onError);
    client.once("close", () => {
      fail(
        hostKeyError ??
          connectError(
            firstError ?? new Error("Connection lost before handshake"),
            where,
            timeoutMs,
            user,
            authDescription,
          ),
      );
    });
    client.once("ready", () => {
      if (settled) return;
      settled = true;
      client.off("error", onError);
      resolve(
        new SshConnection(
          label,
          where,
          client,
          command,
          spec.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS,
        ),
      );
    });
    try {
      client.connect(config);
    } catch (err) {
      fail(
        new TransportError(`ssh to ${where} failed: ${(err as Error).message}`, { host: where }),
      );
    }
  });
}

/** Collects stdout of a finished exec channel; a non-zero exit is a TransportError. */
function collectCommand(
  stream: ClientChannel,
  what: string,
  host: string,
): Promise<{ stdout: string }> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    let err = "";
    let code: number | null = null;
    stream.on("data", (d: Buffer) => out.push(d));
    stream.stderr.on("data", (d: Buffer) => {
      err = (err + d.toString("utf8")).slice(-2000);
    });
    stream.on("exit", (c: number | null) => {
      code = c;
    });
    stream.on("close", () => {
      if (code === 0) resolve({ stdout: Buffer.concat(out).toString("utf8") });
      else {
        const last = err.trim().split("\n").pop() ?? "";
        reject(
          new TransportError(
            `${what} failed (exit ${code ?? "unknown"})${last ? `: ${last}` : ""}`,
            { host },
          ),
        );
      }
    });
    stream.end();
  });
}
