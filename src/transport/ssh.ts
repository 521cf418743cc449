// The SSH transport: one ssh2 connection per host, one exec channel per
// agent. Host keys are checked against known_hosts before authentication;
// authentication is by key file or ssh-agent, never by password. The only
// thing guidup puts into the remote command line besides the operator's own
// `command` is the config path, shell-quoted.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Duplex, Readable } from "node:stream";
import type {
  ClientChannel,
  ConnectConfig,
  ParsedKey,
  ServerHostKeyAlgorithm,
  SFTPWrapper,
} from "ssh2";
import ssh2 from "ssh2";
import { FileAccessError, InternalError, UsageError } from "../errors.js";
import type { SshHostSpec, SshJumpHop } from "../host-spec.js";
import { HostUnreachableError, SshAuthError, TransportError } from "./errors.js";
import {
  fingerprintSha256,
  keyTypeOfBlob,
  knownHostsName,
  knownKeyTypes,
  verifyHostKey,
} from "./known-hosts.js";
import { DEFAULT_CLOSE_TIMEOUT_MS, LineChannel } from "./line-channel.js";
import { type AgentChannel, type HostConnection, MAX_SESSIONS_PER_CONNECTION } from "./types.js";

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
/** Files SFTP copies at once: enough to hide round trips, few enough for a small server. */
const SFTP_PARALLEL_FILES = 8;

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
      // ssh2 already names it "SIGKILL" (the wire says "KILL").
      exit.signal =
        signal === undefined || signal === null
          ? null
          : signal.startsWith("SIG")
            ? signal
            : `SIG${signal}`;
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
  private readonly bastions: { client: InstanceType<typeof Client>; closed: Promise<void> }[];

  constructor(
    readonly host: string,
    /** "imap1 (10.0.0.1:22)" or "10.0.0.1:22": what messages call this connection. */
    private readonly where: string,
    private readonly client: InstanceType<typeof Client>,
    private readonly command: string,
    private readonly closeTimeoutMs: number,
    /** Connections to the ProxyJump hops, first hop first; closed after this one. */
    bastions: InstanceType<typeof Client>[] = [],
  ) {
    this.bastions = bastions.map((bastion) => {
      // A bastion that drops takes the forwarded connection with it; that
      // connection's close reports it.
      bastion.on("error", () => {});
      return {
        client: bastion,
        closed: new Promise<void>((resolve) => bastion.once("close", () => resolve())),
      };
    });
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

  /**
   * Copies local files to the host over one SFTP session (`agent install`),
   * a few at a time; remote directories must exist. Rejects with a
   * TransportError naming the first file that failed.
   */
  async putFiles(files: readonly { local: string; remote: string }[]): Promise<void> {
    await this.acquireSession(false);
    try {
      const sftp = await new Promise<SFTPWrapper>((resolve, reject) =>
        this.client.sftp((err, s) => (err ? reject(err) : resolve(s))),
      ).catch((err: Error) => {
        throw new TransportError(
          `cannot open SFTP to ${this.where}: ${err.message} (is the sftp Subsystem enabled in its sshd_config?)`,
          { host: this.where },
        );
      });
      try {
        let next = 0;
        const worker = async () => {
          while (next < files.length) {
            const file = files[next++]!;
            await new Promise<void>((resolve, reject) =>
              sftp.fastPut(file.local, file.remote, (err) => (err ? reject(err) : resolve())),
            ).catch((err: Error) => {
              throw new TransportError(
                `cannot copy ${file.local} to ${this.where}:${file.remote}: ${err.message}`,
                { host: this.where },
              );
            });
          }
        };
        await Promise.all(Array.from({ length: SFTP_PARALLEL_FILES }, worker));
      } finally {
        sftp.end();
      }
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
    // Innermost first: each bastion carried the connection after it.
    for (const bastion of [...this.bastions].reverse()) {
      bastion.client.end();
      const stop = setTimeout(() => bastion.client.destroy(), DISCONNECT_TIMEOUT_MS);
      await bastion.closed;
      clearTimeout(stop);
    }
  }
}

/** Where host key notices go (a key recorded under --accept-new-host-keys); stderr unless a command says otherwise. */
let hostKeyNotice: (line: string) => void = (line) => process.stderr.write(`${line}\n`);

/** Sends the notices of recorded host keys somewhere else (a command's own output); returns the previous sink. */
export function setHostKeyNotice(sink: (line: string) => void): (line: string) => void {
  const previous = hostKeyNotice;
  hostKeyNotice = sink;
  return previous;
}

/** One machine to log in to: the host itself or a bastion on the way. */
interface Endpoint {
  host: string;
  port: number;
  user: string;
  identityFile: string | undefined;
  identitiesOnly: boolean;
  knownHostsFile: string;
  moreKnownHostsFiles: string[];
  /** What messages call it: "imap1 (10.0.0.1:22)", "10.0.0.1:22", "… via bastion (…)". */
  where: string;
}

function endpoint(spec: SshJumpHop, via: string | undefined): Endpoint {
  const port = spec.port ?? 22;
  const address = formatAddress(spec.host, port);
  const named =
    spec.name !== undefined && spec.name !== spec.host ? `${spec.name} (${address})` : address;
  return {
    host: spec.host,
    port,
    user: spec.user ?? os.userInfo().username,
    identityFile: spec.identityFile,
    identitiesOnly: spec.identitiesOnly === true,
    knownHostsFile: spec.knownHostsFile ?? path.join(os.homedir(), ".ssh", "known_hosts"),
    moreKnownHostsFiles: spec.moreKnownHostsFiles ?? [],
    where: via === undefined ? named : `${named} via ${via}`,
  };
}

/**
 * Connects and authenticates, through each ProxyJump hop in turn (a
 * forwarded channel from one to the next, each hop's host key checked
 * against its own known_hosts like the host's). Rejects with HostKeyError
 * (key unknown, changed or revoked), HostUnreachableError, SshAuthError,
 * FileAccessError (identity or known_hosts file unreadable) or UsageError.
 */
export async function connectSsh(
  spec: SshHostSpec,
  tuning: SshTuning = {},
): Promise<SshConnection> {
  const label = spec.name ?? spec.host;
  const command = remoteCommand(spec.command ?? DEFAULT_AGENT_COMMAND, spec.config);
  const timeoutMs = spec.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const keepalive = {
    intervalMs:
      tuning.keepaliveIntervalMs ??
      (spec.serverAliveInterval === undefined
        ? KEEPALIVE_INTERVAL_MS
        : spec.serverAliveInterval * 1000),
    countMax: tuning.keepaliveCountMax ?? spec.serverAliveCountMax ?? KEEPALIVE_COUNT_MAX,
  };
  const acceptNew = spec.acceptNewHostKeys === true;

  // Every hop's credentials are read before the first connection is made.
  const hops: Endpoint[] = [];
  let via: string | undefined;
  for (const hop of spec.jump ?? []) {
    const e = endpoint(hop, via);
    hops.push(e);
    via = hop.name ?? hop.host;
  }
  const target = endpoint(spec, via);
  const steps = [...hops, target].map((e) => ({ endpoint: e, auth: credentials(e) }));

  const bastions: InstanceType<typeof Client>[] = [];
  let sock: Duplex | undefined;
  try {
    for (const [i, step] of steps.entries()) {
      const client = await openClient(step.endpoint, step.auth, {
        sock,
        timeoutMs,
        keepalive,
        acceptNew,
      });
      const next = steps[i + 1];
      if (next === undefined) {
        return new SshConnection(
          label,
          target.where,
          client,
          command,
          spec.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS,
          bastions,
        );
      }
      bastions.push(client);
      sock = await forwardTo(client, step.endpoint, next.endpoint);
    }
  } catch (err) {
    for (const client of bastions) client.destroy();
    throw err;
  }
  throw new InternalError("connectSsh: no endpoint to connect to");
}

interface Credentials {
  key: Buffer | undefined;
  agentSocket: string | undefined;
  description: string;
}

/** The key file and/or ssh-agent an endpoint logs in with; an error when it has neither. */
function credentials(e: Endpoint): Credentials {
  const socket = process.env.SSH_AUTH_SOCK;
  const key = e.identityFile === undefined ? undefined : readIdentity(e.identityFile, e.where);
  const agentSocket =
    socket !== undefined && socket !== "" && !(e.identitiesOnly && key !== undefined)
      ? socket
      : undefined;
  if (key === undefined && agentSocket === undefined) {
    throw new SshAuthError(
      `no SSH credentials for ${e.where}: set identityFile for it in the inventory or the ssh config, or start ssh-agent (SSH_AUTH_SOCK)`,
      { host: e.where },
    );
  }
  const description = [
    ...(e.identityFile === undefined ? [] : [`identity file ${e.identityFile}`]),
    ...(agentSocket !== undefined ? ["the ssh-agent keys"] : []),
  ].join(" and ");
  return { key, agentSocket, description };
}

/** Asks a connected bastion for a channel to the next hop (OpenSSH `direct-tcpip`, what ProxyJump uses). */
function forwardTo(
  client: InstanceType<typeof Client>,
  bastion: Endpoint,
  next: Endpoint,
): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    client.forwardOut("127.0.0.1", 0, next.host, next.port, (err, channel) => {
      if (err) {
        reject(
          new HostUnreachableError(
            `cannot reach ${next.where}: the bastion ${bastion.where} could not open a connection to ${formatAddress(next.host, next.port)} (${err.message}; is AllowTcpForwarding on there, and the address right?)`,
            { host: next.where, via: bastion.where },
          ),
        );
      } else resolve(channel);
    });
  });
}

interface OpenOptions {
  sock: Duplex | undefined;
  timeoutMs: number;
  keepalive: { intervalMs: number; countMax: number };
  acceptNew: boolean;
}

/** One SSH login: host key checked before authentication, then key and/or agent. */
function openClient(
  e: Endpoint,
  auth: Credentials,
  options: OpenOptions,
): Promise<InstanceType<typeof Client>> {
  const { timeoutMs } = options;
  const algorithms = hostKeyAlgorithms(
    knownKeyTypes([e.knownHostsFile, ...e.moreKnownHostsFiles], e.host, e.port),
  );
  let hostKeyError: Error | undefined;
  const config: ConnectConfig = {
    host: e.host,
    port: e.port,
    username: e.user,
    // Exactly these methods, in this order: no "none", no password, no keyboard-interactive.
    authHandler: [
      ...(auth.key === undefined ? [] : ["publickey" as const]),
      ...(auth.agentSocket !== undefined ? ["agent" as const] : []),
    ],
    ...(auth.key === undefined ? {} : { privateKey: auth.key }),
    ...(auth.agentSocket !== undefined ? { agent: auth.agentSocket } : {}),
    ...(options.sock === undefined ? {} : { sock: options.sock as Readable }),
    hostVerifier: (keyBlob: Buffer): boolean => {
      try {
        const outcome = verifyHostKey({
          knownHostsFile: e.knownHostsFile,
          moreKnownHostsFiles: e.moreKnownHostsFiles,
          host: e.host,
          port: e.port,
          keyBlob,
          acceptNew: options.acceptNew,
        });
        if (outcome === "added") {
          hostKeyNotice(
            `recorded the host key of ${knownHostsName(e.host, e.port)} (${keyTypeOfBlob(keyBlob)} ${fingerprintSha256(keyBlob)}) in ${e.knownHostsFile}`,
          );
        }
        return true;
      } catch (err) {
        hostKeyError = err as Error;
        return false;
      }
    },
    algorithms: { serverHostKey: algorithms },
    readyTimeout: timeoutMs,
    keepaliveInterval: options.keepalive.intervalMs,
    keepaliveCountMax: options.keepalive.countMax,
  };

  const client = new Client();
  return new Promise((resolve, reject) => {
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
      fail(hostKeyError ?? connectError(err, e.where, timeoutMs, e.user, auth.description));
    };
    client.on("error", onError);
    client.once("close", () => {
      fail(
        hostKeyError ??
          connectError(
            firstError ?? new Error("Connection lost before handshake"),
            e.where,
            timeoutMs,
            e.user,
            auth.description,
          ),
      );
    });
    client.once("ready", () => {
      if (settled) return;
      settled = true;
      client.off("error", onError);
      resolve(client);
    });
    try {
      client.connect(config);
    } catch (err) {
      fail(
        new TransportError(`ssh to ${e.where} failed: ${(err as Error).message}`, {
          host: e.where,
        }),
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
