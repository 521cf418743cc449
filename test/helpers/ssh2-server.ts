// An in-process SSH server (ssh2's Server) on 127.0.0.1 for tests that must
// not need a system sshd. It accepts one client key, and runs each exec
// request as `sh -c <command>` on this machine with stdio piped to the
// channel — only here, in a test. Unlike sshd it cannot deliver "signal"
// requests (see below). Like OpenSSH it refuses more than
// MaxSessions (10 unless told otherwise) sessions on one connection, and it can drop every
// connection abruptly (socket destroyed) to test how clients cope.

import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { ParsedKey } from "ssh2";
import ssh2 from "ssh2";
import { describeProcesses, SERVER_MARKER, waitUntilNoneMarked } from "./test-processes.js";

const { Server, utils } = ssh2;

export interface Ssh2TestServerOptions {
  /** Sessions allowed per connection; default 10, OpenSSH's default MaxSessions. */
  maxSessions?: number;
}

export interface Ssh2TestServer {
  port: number;
  /** Raw public host key blob. */
  hostKeyBlob: Buffer;
  /** The known_hosts line for this server: "[127.0.0.1]:port ssh-ed25519 AAAA…". */
  hostKeyLine: string;
  /** Unencrypted OpenSSH private key file the server accepts (mode 0600). */
  clientKeyPath: string;
  /** A temp directory removed by stop(). */
  dir: string;
  /** Sessions open right now, and the most seen at once, over all connections. */
  stats(): { sessions: number; maxSessions: number; refusedSessions: number };
  /** Destroys every client socket without an SSH disconnect, as a network failure would. */
  dropConnections(): void;
  /** Stops reading from every client socket: the peer goes silent, as behind a dead link. */
  freezeConnections(): void;
  stop(): Promise<void>;
}

/**
 * utils.generateKeyPairSync("ed25519") of ssh2 1.17 writes a key whose first
 * byte is zero with 31 bytes instead of 32 (about 1 key in 256), and then
 * cannot parse it itself. Draw again until the pair parses.
 */
export function generateEd25519KeyPair(options: { passphrase?: string } = {}): {
  private: string;
  public: string;
  publicBlob: Buffer;
} {
  for (;;) {
    const pair =
      options.passphrase === undefined
        ? utils.generateKeyPairSync("ed25519")
        : utils.generateKeyPairSync("ed25519", {
            passphrase: options.passphrase,
            cipher: "aes256-cbc",
            rounds: 16,
          });
    const pub = utils.parseKey(pair.public);
    const priv = utils.parseKey(pair.private, options.passphrase);
    if (pub instanceof Error || priv instanceof Error) continue;
    const publicBlob = (Array.isArray(pub) ? (pub[0] as ParsedKey) : pub).getPublicSSH();
    return { ...pair, publicBlob };
  }
}

/** SIGKILL to the process group of a child started with `detached: true`. */
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // ESRCH: the whole group has exited already.
  }
}

function publicKeyOf(text: string): ParsedKey {
  const parsed = utils.parseKey(text);
  if (parsed instanceof Error) throw parsed;
  return Array.isArray(parsed) ? (parsed[0] as ParsedKey) : parsed;
}

export async function startSsh2Server(
  options: Ssh2TestServerOptions = {},
): Promise<Ssh2TestServer> {
  const maxSessionsPerConnection = options.maxSessions ?? 10;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-ssh2-"));
  const hostKey = generateEd25519KeyPair();
  const clientKey = generateEd25519KeyPair();
  const clientKeyPath = path.join(dir, "id_ed25519");
  fs.writeFileSync(clientKeyPath, clientKey.private, { mode: 0o600 });
  const allowed = publicKeyOf(clientKey.public);
  const hostKeyBlob = hostKey.publicBlob;

  // Every command run here carries this, so stop() can wait for all of them.
  const env = { ...process.env, [SERVER_MARKER]: dir };
  const sockets = new Set<net.Socket>();
  const children = new Set<ChildProcess>();
  let sessions = 0;
  let maxSessions = 0;
  let refusedSessions = 0;

  const server = new Server({ hostKeys: [hostKey.private] }, (conn) => {
    let connSessions = 0;
    conn.on("error", () => {});
    conn.on("authentication", (ctx) => {
      if (
        ctx.method === "publickey" &&
        ctx.key.algo === allowed.type &&
        ctx.key.data.equals(allowed.getPublicSSH()) &&
        (ctx.signature === undefined ||
          (ctx.blob !== undefined &&
            allowed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true))
      ) {
        ctx.accept();
      } else {
        ctx.reject(["publickey"]);
      }
    });
    conn.on("ready", () => {
      conn.on("session", (accept, reject) => {
        if (connSessions >= maxSessionsPerConnection) {
          refusedSessions++;
          reject();
          return;
        }
        connSessions++;
        sessions++;
        maxSessions = Math.max(maxSessions, sessions);
        const session = accept();
        session.on("close", () => {
          connSessions--;
          sessions--;
        });
        session.on("exec", (acceptExec, _reject, info) => {
          const stream = acceptExec();
          // In a process group of its own, like an sshd session, so that
          // killing it reaches what sh started too: sh does not always exec
          // its last command, and killing sh alone leaves that running.
          const proc = spawn("sh", ["-c", info.command], { stdio: "pipe", detached: true, env });
          children.add(proc);
          // ssh2's Server refuses channel requests once exec has started, so
          // "signal" never arrives here (OpenSSH's sshd does act on it). A
          // client that closes the channel gets its process group killed
          // instead, so tests leave nothing running.
          stream.on("close", () => killGroup(proc));
          proc.stdin.on("error", () => {});
          stream.on("data", (chunk: Buffer) => proc.stdin.write(chunk));
          stream.on("end", () => proc.stdin.end());
          stream.on("error", () => {});
          proc.stdout.on("data", (chunk: Buffer) => stream.write(chunk));
          proc.stderr.on("data", (chunk: Buffer) => stream.stderr.write(chunk));
          proc.on("close", (code, signal) => {
            children.delete(proc);
            if (signal !== null) stream.exit(signal.replace(/^SIG/, ""), false, "");
            else stream.exit(code ?? 0);
            stream.end();
          });
        });
      });
    });
  });

  // Our own listener, so the raw sockets are at hand for dropConnections().
  const listener = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    server.injectSocket(socket);
  });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const port = (listener.address() as net.AddressInfo).port;

  return {
    port,
    hostKeyBlob,
    hostKeyLine: `[127.0.0.1]:${port} ssh-ed25519 ${hostKeyBlob.toString("base64")}`,
    clientKeyPath,
    dir,
    stats: () => ({ sessions, maxSessions, refusedSessions }),
    dropConnections() {
      for (const socket of sockets) socket.destroy();
    },
    freezeConnections() {
      for (const socket of sockets) socket.pause();
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      for (const child of children) killGroup(child);
      await new Promise<void>((resolve) => listener.close(() => resolve()));
      const left = await waitUntilNoneMarked(SERVER_MARKER, dir);
      fs.rmSync(dir, { recursive: true, force: true });
      if (left.length > 0) {
        throw new Error(
          `commands run by the ssh2 test server still running after it stopped:\n${describeProcesses(left)}`,
        );
      }
    },
  };
}
