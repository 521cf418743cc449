// A throwaway OpenSSH sshd for benchmarks: 127.0.0.1, a free port, its own
// host key, authorized key and config in a temp dir, foreground (-D), logs
// to stderr (-e). The tests have a fuller one (test/helpers/sshd.ts), which
// tsc does not compile into dist/; this is the part a benchmark needs.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export interface BenchSshd {
  port: number;
  clientKeyPath: string;
  knownHostsPath: string;
  user: string;
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

export async function startBenchSshd(sshdPath = "/usr/sbin/sshd"): Promise<BenchSshd> {
  if (!fs.existsSync(sshdPath))
    throw new Error(`${sshdPath} not found (apt-get install openssh-server openssh-client)`);
  fs.mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-bench-sshd-"));
  const key = (name: string) => {
    const file = path.join(dir, name);
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", file], { stdio: "ignore" });
    return file;
  };
  const hostKey = key("host_key");
  const clientKeyPath = key("id_ed25519");
  const port = await freePort();
  const config = path.join(dir, "sshd_config");
  fs.writeFileSync(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${clientKeyPath}.pub`,
      "StrictModes no",
      "UsePAM no",
      "PermitRootLogin yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "LogLevel ERROR",
      "",
    ].join("\n"),
  );
  const [type, blob] = fs.readFileSync(`${hostKey}.pub`, "utf8").trim().split(/\s+/);
  const knownHostsPath = path.join(dir, "known_hosts");
  fs.writeFileSync(knownHostsPath, `[127.0.0.1]:${port} ${type} ${blob}\n`);

  let log = "";
  const child: ChildProcess = spawn(sshdPath, ["-D", "-e", "-f", config], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString("utf8");
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // LogLevel ERROR prints no "listening" line: poll the port instead.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sshd exited during start:\n${log}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`sshd did not listen on ${port} within 10 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    clientKeyPath,
    knownHostsPath,
    user: os.userInfo().username,
    log: () => log,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
