// A bastion and the host behind it, as two real OpenSSH sshds: both run in
// their own network namespace (test/helpers/netns-sshds.mjs under
// `unshare -n`), the target on 127.0.0.2 in there, and only the bastion is
// bridged out, to a port on 127.0.0.1 here. So the target can be reached
// through the bastion (ProxyJump) and in no other way — as behind a real
// bastion. Needs root (unshare -n), sshd, ssh-keygen and ip.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const RUNNER = fileURLToPath(new URL("./netns-sshds.mjs", import.meta.url));
const START_TIMEOUT_MS = 15_000;

export interface BastionPair {
  /** Port on 127.0.0.1 (here) that reaches the bastion. */
  bastionPort: number;
  /** The bastion's own port inside the namespace (on 127.0.0.1 there): a second hop can use it. */
  insideBastionPort: number;
  /** The target as the bastion sees it: 127.0.0.2:targetPort, inside the namespace. */
  targetHost: string;
  targetPort: number;
  /** known_hosts lines of each. */
  bastionKeyLine: string;
  targetKeyLine: string;
  /** A client key authorized on both. */
  clientKeyPath: string;
  user: string;
  dir: string;
  log(): string;
  stop(): Promise<void>;
}

function keygen(file: string): void {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "guidup-test", "-f", file], {
    stdio: ["ignore", "ignore", "pipe"],
  });
}

function sshdConfig(dir: string, name: string, listen: string, forwarding: boolean): string {
  const hostKey = path.join(dir, `${name}_host_key`);
  keygen(hostKey);
  const file = path.join(dir, `${name}_sshd_config`);
  fs.writeFileSync(
    file,
    [
      `ListenAddress ${listen}`,
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, `${name}.pid`)}`,
      `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
      "StrictModes no",
      "UsePAM no",
      "PermitRootLogin yes",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      `AllowTcpForwarding ${forwarding ? "yes" : "no"}`,
      "X11Forwarding no",
      "Subsystem sftp internal-sftp",
      "PrintMotd no",
      "LogLevel VERBOSE",
      "",
    ].join("\n"),
  );
  return file;
}

function keyLine(dir: string, name: string, hostField: string): string {
  const [type, blob] = fs.readFileSync(path.join(dir, `${name}_host_key.pub`), "utf8").split(/\s+/);
  return `${hostField} ${type} ${blob}`;
}

export async function startBastionPair(): Promise<BastionPair> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-bastion-"));
  const clientKeyPath = path.join(dir, "id_ed25519");
  keygen(clientKeyPath);
  fs.copyFileSync(`${clientKeyPath}.pub`, path.join(dir, "authorized_keys"));
  if (!fs.existsSync("/run/sshd")) fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  // A fresh namespace has every port free.
  const insideBastionPort = 2201;
  const targetPort = 20000 + Math.floor(Math.random() * 20000);
  const bastionConfig = sshdConfig(dir, "bastion", `127.0.0.1:${insideBastionPort}`, true);
  const targetConfig = sshdConfig(dir, "target", `127.0.0.2:${targetPort}`, false);

  let log = "";
  const child: ChildProcess = spawn(
    "unshare",
    ["-n", process.execPath, RUNNER, dir, String(insideBastionPort), bastionConfig, targetConfig],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  child.stderr?.on("data", (c: Buffer) => {
    log += c.toString("utf8");
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new Error(`the bastion pair did not start in ${START_TIMEOUT_MS} ms:\n${log}`)),
        START_TIMEOUT_MS,
      );
      child.stdout?.on("data", (c: Buffer) => {
        if (c.toString().includes("ready")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`the bastion pair exited during start (${code}):\n${log}`));
      });
    });
  } catch (err) {
    child.kill("SIGKILL");
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  const socket = path.join(dir, "bastion.sock");
  const bridge = net.createServer((outside) => {
    const inside = net.connect(socket);
    for (const s of [outside, inside]) {
      s.on("error", () => {});
      s.on("close", () => {
        outside.destroy();
        inside.destroy();
      });
    }
    outside.pipe(inside);
    inside.pipe(outside);
  });
  await new Promise<void>((resolve) => bridge.listen(0, "127.0.0.1", resolve));
  const bastionPort = (bridge.address() as net.AddressInfo).port;

  return {
    bastionPort,
    insideBastionPort,
    targetHost: "127.0.0.2",
    targetPort,
    bastionKeyLine: keyLine(dir, "bastion", `[127.0.0.1]:${bastionPort}`),
    targetKeyLine: keyLine(dir, "target", `[127.0.0.2]:${targetPort}`),
    clientKeyPath,
    user: os.userInfo().username,
    dir,
    log: () => log,
    async stop() {
      // Open bridged connections end when the namespace's processes do.
      bridge.close();
      child.stdin?.end();
      child.kill("SIGTERM");
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
