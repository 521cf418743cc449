#!/usr/bin/env node
// A fault-injecting stand-in for `guidup serve`, used as the agent `command`
// of a local inventory host. It starts the REAL agent (`node
// dist/src/cli/main.js serve` plus every argument it did not take itself,
// i.e. the `--config X` the controller appends), pipes stdin, stdout and
// stderr through, and reads the protocol lines going both ways. No guidup
// code is changed or mocked: the faults are real process deaths, real pipe
// closes and real file-system states.
//
// Options (before the agent's own arguments):
//   --fault-dir DIR      where the proxy keeps its counters, markers and pids
//                        (one directory per host: master and replica count
//                        separately, across all agent processes of a run)
//   --fault SPEC         WHEN:OP:N:ACTION, e.g. request:commit:1:kill-agent =
//                        on the 1st `commit` request seen on this host.
//                        WHEN: request (controller → agent, before the agent
//                        sees it) or response (agent → controller, after the
//                        agent did it, before the controller hears of it).
//                        ACTION:
//                          kill-agent  SIGKILL the real agent; the line is not
//                                      forwarded; the proxy exits with it
//                          drop        the proxy exits at once (the connection
//                                      drops; the agent only sees its stdin end)
//                          pause       the line is held (never forwarded) and
//                                      DIR/paused is written, so a test can
//                                      SIGKILL the controller at exactly this point
//                          hook        run --fault-hook (sh -c) synchronously,
//                                      then forward the line
//                        A fault fires once per DIR (DIR/fired records it), so
//                        the rerun of the same plan goes through cleanly.
//   --fault-hook CMD     the shell command of the hook action
//   --fault-main FILE    the agent's main.js (default ../../dist/src/cli/main.js)
//
// DIR/agents lists the pid of every real agent started (one per line), so a
// test can wait until all of them are gone; DIR/fired holds JSON naming the
// op, the mailbox the session was working on and the action taken.

import { execSync, spawn } from "node:child_process";
import { appendFileSync, closeSync, existsSync, openSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const own = { dir: undefined, fault: undefined, hook: undefined, main: undefined };
const agentArgs = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--fault-dir") own.dir = argv[++i];
  else if (a === "--fault") own.fault = argv[++i];
  else if (a === "--fault-hook") own.hook = argv[++i];
  else if (a === "--fault-main") own.main = argv[++i];
  else agentArgs.push(a);
}
if (!own.dir) {
  process.stderr.write("fault-proxy: --fault-dir is required\n");
  process.exit(2);
}
const dir = own.dir;
const main =
  own.main ??
  path.resolve(
    path.dirname(fileURLToPath(import.meta.url)),
    "..",
    "..",
    "dist",
    "src",
    "cli",
    "main.js",
  );

let spec;
if (own.fault) {
  const [when, op, n, action] = own.fault.split(":");
  if (
    !["request", "response"].includes(when) ||
    !op ||
    !(Number(n) >= 1) ||
    !["kill-agent", "drop", "pause", "hook"].includes(action)
  ) {
    process.stderr.write(`fault-proxy: bad --fault ${own.fault}\n`);
    process.exit(2);
  }
  spec = { when, op, n: Number(n), action };
}

const agent = spawn(process.execPath, [main, "serve", ...agentArgs], {
  stdio: ["pipe", "pipe", "pipe"],
});
appendFileSync(path.join(dir, "agents"), `${agent.pid}\n`);
agent.stderr.pipe(process.stderr);
agent.stdin.on("error", () => {});
process.stdout.on("error", () => {});

let mailbox;
const opsById = new Map();
let held = false;

/** The nth (1-based) matching line on this host, counted across processes by exclusive creates. */
function countMatch() {
  for (let k = 1; ; k++) {
    try {
      closeSync(openSync(path.join(dir, `count-${spec.when}-${spec.op}-${k}`), "wx"));
      return k;
    } catch (err) {
      if (err.code !== "EEXIST") throw err;
    }
  }
}

/** Whether this line triggers the fault now (and records that it fired). */
function triggers(when, op) {
  if (!spec || spec.when !== when || spec.op !== op) return false;
  if (existsSync(path.join(dir, "fired"))) return false;
  if (countMatch() !== spec.n) return false;
  writeFileSync(
    path.join(dir, "fired"),
    `${JSON.stringify({ ...spec, mailbox, proxyPid: process.pid, agentPid: agent.pid })}\n`,
  );
  return true;
}

/** Carries out the fault; returns whether the line is still to be forwarded. */
function fire() {
  switch (spec.action) {
    case "kill-agent":
      held = true;
      agent.kill("SIGKILL");
      return false;
    case "drop":
      // Abrupt: no flushing of anything still buffered, no goodbye.
      process.exit(99);
      return false;
    case "pause":
      held = true;
      writeFileSync(path.join(dir, "paused"), `${process.pid}\n`);
      return false;
    case "hook":
      execSync(own.hook ?? "true", { stdio: "inherit", shell: "/bin/sh" });
      return true;
  }
  return true;
}

function lines(stream, onLine) {
  let tail = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk) => {
    const parts = (tail + chunk).split("\n");
    tail = parts.pop() ?? "";
    for (const p of parts) onLine(p);
  });
  stream.on("end", () => {
    if (tail !== "") onLine(tail);
    tail = "";
  });
}

lines(process.stdin, (line) => {
  let forward = true;
  try {
    const msg = JSON.parse(line);
    if (msg && typeof msg.op === "string") {
      opsById.set(msg.id, msg.op);
      if (msg.mailbox?.name) mailbox = msg.mailbox.name;
      if (triggers("request", msg.op)) forward = fire();
    }
  } catch {
    // not JSON: the agent will say so
  }
  if (forward && !held) agent.stdin.write(`${line}\n`);
});
process.stdin.on("end", () => agent.stdin.end());

lines(agent.stdout, (line) => {
  let forward = true;
  try {
    const msg = JSON.parse(line);
    if (msg && "ok" in msg) {
      const op = opsById.get(msg.id);
      if (op && triggers("response", op)) forward = fire();
    }
  } catch {
    // forwarded as it is
  }
  if (forward && !held) process.stdout.write(`${line}\n`);
});

agent.on("close", (code, signal) => {
  const status = code ?? (signal ? 128 + 9 : 1);
  if (process.stdout.writableLength === 0) process.exit(status);
  process.stdout.once("drain", () => process.exit(status));
  // A controller that is gone never drains the pipe.
  setTimeout(() => process.exit(status), 1000).unref();
});
