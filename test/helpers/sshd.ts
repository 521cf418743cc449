// A real OpenSSH sshd for tests: started on 127.0.0.1 on a free port with its
// own host key, its own authorized key and its own config in a temp dir, in
// the foreground (-D) logging to stderr (-e). Needs /usr/sbin/sshd (Debian:
// openssh-server) and ssh-keygen (openssh-client), and root or the current
// user as login. Missing binaries are an error, not a skip: CI installs them.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import {
  describeProcesses,
  FILE_MARKER,
  RUN_MARKER,
  SERVER_MARKER,
  waitUntilNoneMarked,
} from "./test-processes.js";

const SSHD = process.env.GUIDUP_TEST_SSHD ?? "/usr/sbin/sshd";
/** Privilege separation directory sshd refuses to start without. */
const PRIVSEP_DIR = "/run/sshd";
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 3_000;

export interface SshdHandle {
  port: number;
  /** known_hosts line for this sshd: "[127.0.0.1]:port ssh-ed25519 AAAA…". */
  hostKeyLine: string;
  /** Unencrypted ed25519 private key in authorized_keys. */
  clientKeyPath: string;
  /** A known_hosts file holding hostKeyLine. */
  knownHostsPath: string;
  /** User to log in as (the one running the tests). */
  user: string;
  /** Temp directory of this sshd, removed by stop(). */
  dir: string;
  /** What sshd has logged so far, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
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

/** A SetEnv line handing the process markers in env to every session. */
function markerSetEnv(env: NodeJS.ProcessEnv): string {
  const pairs = [RUN_MARKER, FILE_MARKER, SERVER_MARKER]
    .filter((name) => env[name] !== undefined)
    .map((name) => `"${name}=${env[name]!.replace(/["\\]/g, "_")}"`);
  return `SetEnv ${pairs.join(" ")}`;
}

export async function startSshd(): Promise<SshdHandle> {
  if (!fs.existsSync(SSHD)) {
    throw new Error(
      `${SSHD} not found: the OpenSSH tests need a real sshd ` +
        "(apt-get install openssh-server openssh-client); they do not skip",
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
  // sshd, each connection's sshd and (through SetEnv) each session carry
  // this, so stop() can wait for all of them.
  const env = { ...process.env, [SERVER_MARKER]: dir };
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
      "LogLevel VERBOSE",
      // sshd gives sessions a clean environment: pass on the markers that
      // let the run find any process a test left behind.
      markerSetEnv(env),
      "",
    ].join("\n"),
  );

  const [type, blob] = fs.readFileSync(`${hostKey}.pub`, "utf8").trim().split(/\s+/);
  const hostKeyLine = `[127.0.0.1]:${port} ${type} ${blob}`;
  fs.writeFileSync(knownHostsPath, `${hostKeyLine}\n`);

  let log = "";
  const child: ChildProcess = spawn(SSHD, ["-D", "-e", "-f", config], {
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
        reject(new Error(`cannot start ${SSHD}: ${err.message}`));
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
      // Stopping the listener leaves each connection's sshd and its session
      // to wind down on their own (the clients have closed by now); a
      // session still running after that is one a test left behind.
      const left = await waitUntilNoneMarked(SERVER_MARKER, dir);
      fs.rmSync(dir, { recursive: true, force: true });
      if (left.length > 0) {
        throw new Error(
          `processes of the test sshd on port ${port} still running after it stopped:\n${describeProcesses(left)}`,
        );
      }
    },
  };
}
