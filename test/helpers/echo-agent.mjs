#!/usr/bin/env node
// A stand-in agent for transport tests: speaks newline-delimited JSON like
// `guidup serve`, but only echoes. It starts with a hello line carrying its
// host name and pid (as the real hello does) and its argv (so tests can see
// `--config <path>` arrive intact), answers each stdin line with
// {"echo": line}, and logs to stderr as JSON. A few commands make it
// misbehave on purpose:
//   {"cmd":"stderr","text":T}           write T (plus "\n") to stderr
//   {"cmd":"raw","text":T}              write T to stdout as is (no newline added)
//   {"cmd":"big","bytes":N}             answer {"big":"xxx…"} with N x's
//   {"cmd":"exit","code":N,"stderr":T}  write T to stderr, exit with code N
//   {"cmd":"kill","signal":S}           kill itself with signal S
// Flags: --ignore-eof (keep running after stdin ends), --ignore-term
// (ignore SIGTERM), --exit-code-on-eof N, --agent-hello PROTOCOL TOOL (open
// with the real agent's hello shape, so the controller's AgentClient takes
// it).

import os from "node:os";
import process from "node:process";
import readline from "node:readline";

const argv = process.argv.slice(2);
const ignoreEof = argv.includes("--ignore-eof");
const ignoreTerm = argv.includes("--ignore-term");
const eofCodeAt = argv.indexOf("--exit-code-on-eof");
const eofCode = eofCodeAt === -1 ? 0 : Number(argv[eofCodeAt + 1]);

if (ignoreTerm) process.on("SIGTERM", () => log("ignoring SIGTERM"));

function log(msg) {
  process.stderr.write(`${JSON.stringify({ level: "info", msg })}\n`);
}

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const agentHelloAt = argv.indexOf("--agent-hello");
if (agentHelloAt === -1) out({ hello: true, host: os.hostname(), pid: process.pid, argv });
else
  out({
    type: "hello",
    protocol: Number(argv[agentHelloAt + 1]),
    tool: argv[agentHelloAt + 2],
    host: os.hostname(),
    pid: process.pid,
    config: "/etc/imapd.conf",
  });
log("echo agent started");

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
rl.on("line", (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    msg = undefined;
  }
  switch (msg?.cmd) {
    case "stderr":
      process.stderr.write(`${msg.text}\n`);
      return;
    case "raw":
      process.stdout.write(msg.text);
      return;
    case "big":
      out({ big: "x".repeat(msg.bytes) });
      return;
    case "exit":
      if (msg.stderr !== undefined) process.stderr.write(`${msg.stderr}\n`);
      // Let stdout/stderr drain before exiting.
      process.stdout.write("", () => process.exit(msg.code));
      return;
    case "kill":
      process.kill(process.pid, msg.signal);
      return;
    default:
      out({ echo: line });
  }
});
rl.on("close", () => {
  log("stdin closed");
  if (ignoreEof) {
    setInterval(() => {}, 1000);
    return;
  }
  process.exitCode = eofCode;
});
