// Runs inside a fresh network namespace (`unshare -n node netns-sshds.mjs
// DIR PORT CONFIG...`): brings up its loopback, starts one sshd per config
// file, and bridges the first one (the bastion, on 127.0.0.1:PORT in here)
// to a Unix socket DIR/bastion.sock, which the test reaches from outside.
// Nothing else in the namespace is reachable from outside: a sshd listening
// here can be reached only through the bastion. Prints "ready" when every
// sshd listens; ends them all on SIGTERM or when stdin closes.

import { execFileSync, spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";

const [dir, portText, ...configs] = process.argv.slice(2);
const port = Number(portText);
execFileSync("ip", ["link", "set", "lo", "up"]);

const children = [];
let pending = configs.length;
for (const config of configs) {
  const child = spawn(
    process.env.GUIDUP_TEST_SSHD ?? "/usr/sbin/sshd",
    ["-D", "-e", "-f", config],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  children.push(child);
  let announced = false;
  let partial = "";
  child.stderr.on("data", (chunk) => {
    // Every line carries the name of the sshd that logged it.
    const lines = (partial + chunk.toString()).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) process.stderr.write(`[${path.basename(config)}] ${line}\n`);
    if (!announced && chunk.toString().includes("Server listening")) {
      announced = true;
      if (--pending === 0) bridge();
    }
  });
  child.on("exit", (code, signal) => {
    process.stderr.write(`[${path.basename(config)}] exited (${code ?? signal})\n`);
  });
}

function bridge() {
  const server = net.createServer((outside) => {
    const inside = net.connect(port, "127.0.0.1");
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
  server.listen(path.join(dir, "bastion.sock"), () => process.stdout.write("ready\n"));
}

const stop = () => {
  for (const child of children) child.kill("SIGTERM");
  process.exit(0);
};
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
