// A throwaway OpenSSH sshd on 127.0.0.1, for the benchmarks and the tests
// (test/helpers/sshd.ts builds on this one: bench/ is compiled into dist/
// without test/, so the shared part lives here). A free port, its own host
// key, authorized key and config in a temp dir, in the foreground (-D)
// logging to stderr (-e). Needs /usr/sbin/sshd (Debian: openssh-server) and
// ssh-keygen (openssh-client), and root or the current user as login.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

/** Privilege separation directory sshd refuses to start without. */
const PRIVSEP_DIR = "/run/sshd";
// Generous: under heavy load (several test runs on 2 cores) sshd took over 10 s
// to say it listens; on a quiet machine it takes well under a second.
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 3_000;

export interface BenchSshd {
  port: number;
  /** known_hosts line for this sshd: "[127.0.0.1]:port ssh-ed25519 AAAA…". */
  hostKeyLine: string;
  /** Unencrypted ed25519 private key in authorized_keys. */
  clientKeyPath: string;
  /** A known_hosts file holding hostKeyLine. */
  knownHostsPath: string;
  /** User to log in as (the one running this process). */
  user: string;
  /** Temp directory of this sshd, removed by stop(). */
  dir: string;
  /** What sshd has logged so far, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

export interface SshdOptions {
  /** Default /usr/sbin/sshd. */
  sshdPath?: string;
  /** What to say when sshd is missing, after "<path> not found: ". */
  missingHint?: string;
  /** Default INFO (the least that logs the "Server listening" line the start waits for). */
  logLevel?: "INFO" | "VERBOSE" | "DEBUG";
  /** The environment sshd runs in, given its temp dir; default this process's. */
  env?: (dir: string) => NodeJS.ProcessEnv;
  /** More sshd_config lines, given that environment. */
  moreConfig?: (env: NodeJS.ProcessEnv) => string[];
  /**
   * Runs in stop() once sshd has exited, before its directory is removed;
   * what it throws, stop() throws after the removal.
   */
  afterExit?: (dir: string) => Promise<void>;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it now). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

function keygen(file: string, comment: string): void {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file], {
    stdio: ["ignore", "ignore", "pipe"],
  });
}

export async function startBenchSshd(options: SshdOptions = {}): Promise<BenchSshd> {
  const sshdPath = options.sshdPath ?? "/usr/sbin/sshd";
  if (!fs.existsSync(sshdPath)) {
    throw new Error(
      `${sshdPath} not found: ${options.missingHint ?? "apt-get install openssh-server openssh-client"}`,
    );
  }
  if (!fs.existsSync(PRIVSEP_DIR)) fs.mkdirSync(PRIVSEP_DIR, { recursive: true, mode: 0o755 });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-sshd-"));
  const hostKey = path.join(dir, "ssh_host_ed25519_key");
  const clientKeyPath = path.join(dir, "id_ed25519");
  const authorizedKeys = path.join(dir, "authorized_keys");
  const knownHostsPath = path.join(dir, "known_hosts");
  keygen(hostKey, "guidup-test-host");
  keygen(clientKeyPath, "guidup-test-client");
  fs.copyFileSync(`${clientKeyPath}.pub`, authorizedKeys);

  const port = await freePort();
  const env = options.env?.(dir) ?? process.env;
  const config = path.join(dir, "sshd_config");
  fs.writeFileSync(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${authorizedKeys}`,
      // The temp dir is not owned the way StrictModes wants; PAM is not set up in containers.
      "StrictModes no",
      "UsePAM no",
      "PermitRootLogin yes",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "AllowTcpForwarding no",
      "X11Forwarding no",
      // guidup agent install copies the agent bundle over SFTP.
      "Subsystem sftp internal-sftp",
      "PrintMotd no",
      // The OpenSSH default, written out because the session-limit test relies on it.
      "MaxSessions 10",
      `LogLevel ${options.logLevel ?? "INFO"}`,
      ...(options.moreConfig?.(env) ?? []),
      "",
    ].join("\n"),
  );

  const [type, blob] = fs.readFileSync(`${hostKey}.pub`, "utf8").trim().split(/\s+/);
  const hostKeyLine = `[127.0.0.1]:${port} ${type} ${blob}`;
  fs.writeFileSync(knownHostsPath, `${hostKeyLine}\n`);

  let log = "";
  const child: ChildProcess = spawn(sshdPath, ["-D", "-e", "-f", config], {
    stdio: ["ignore", "ignore", "pipe"],
    env,
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    log += chunk.toString("utf8");
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new Error(`sshd did not start listening within ${START_TIMEOUT_MS} ms:\n${log}`)),
        START_TIMEOUT_MS,
      );
      const check = () => {
        if (log.includes(`Server listening on 127.0.0.1 port ${port}`)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stderr?.on("data", check);
      child.once("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${sshdPath}: ${err.message}`));
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`sshd exited during start (code ${code}, signal ${signal}):\n${log}`));
      });
    });
  } catch (err) {
    child.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    port,
    hostKeyLine,
    clientKeyPath,
    knownHostsPath,
    user: os.userInfo().username,
    dir,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      let failure: unknown;
      try {
        await options.afterExit?.(dir);
      } catch (err) {
        failure = err;
      }
      fs.rmSync(dir, { recursive: true, force: true });
      if (failure !== undefined) throw failure;
    },
  };
}
