import os from "node:os";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { InternalError } from "../../src/errors.js";
import { PROTOCOL_VERSION } from "../../src/protocol/messages.js";
import { AgentClient } from "../../src/transport/agent-client.js";
import { connectHost, TransportError } from "../../src/transport/index.js";
import { defaultLocalCommand } from "../../src/transport/local.js";
import type { HostConnection } from "../../src/transport/types.js";
import { TOOL_VERSION } from "../../src/version.js";
import { record } from "../helpers/agent-channel.js";
import { endProcess, processGone } from "../helpers/test-processes.js";

const ECHO_AGENT = fileURLToPath(new URL("../helpers/echo-agent.mjs", import.meta.url));

/** Collects everything a channel reports, with a way to wait for the n-th stdout line. */

const connections: HostConnection[] = [];
async function connect(args: string[] = [], extra: { closeTimeoutMs?: number } = {}) {
  const conn = await connectHost({
    transport: "local",
    command: [process.execPath, ECHO_AGENT, ...args],
    config: "/etc/imapd.conf",
    name: "imap-test",
    ...extra,
  });
  connections.push(conn);
  return conn;
}

afterEach(async () => {
  await Promise.all(connections.splice(0).map((c) => c.close()));
});

describe("local transport", () => {
  it("starts the agent with --config appended and moves lines both ways", async () => {
    const conn = await connect();
    expect(conn.host).toBe("imap-test");
    const channel = await conn.openAgent();
    expect(channel.host).toBe("imap-test");
    const rec = record(channel);
    const [hello] = await rec.waitLines(1);
    expect(JSON.parse(hello!).argv).toEqual(["--config", "/etc/imapd.conf"]);

    channel.send('{"op":"ping"}');
    channel.send("Grüße 🦀\n");
    const lines = await rec.waitLines(3);
    expect(lines.slice(1).map((l) => JSON.parse(l).echo)).toEqual(['{"op":"ping"}', "Grüße 🦀"]);
    // Its log line comes on stderr, another pipe: it may arrive after the echoes.
    const started = await rec.waitStderr((l) => JSON.parse(l).msg === "echo agent started");
    expect(JSON.parse(started).msg).toBe("echo agent started");

    await channel.close();
    expect(await rec.closed).toBeUndefined();
    expect(rec.stderr.map((l) => JSON.parse(l).msg)).toContain("stdin closed");
    expect(() => channel.send("late")).toThrow(TransportError);
  });

  it("passes the config path as one argv element, whatever it contains", async () => {
    const conn = await connectHost({
      transport: "local",
      command: [process.execPath, ECHO_AGENT],
      config: '/tmp/it\'s a $(path) `with` "quotes"\n.conf',
    });
    connections.push(conn);
    expect(conn.host).toBe("local");
    const rec = record(await conn.openAgent());
    const [hello] = await rec.waitLines(1);
    expect(JSON.parse(hello!).argv).toEqual([
      "--config",
      '/tmp/it\'s a $(path) `with` "quotes"\n.conf',
    ]);
  });

  it("delivers lines that arrived before anyone listened, in order", async () => {
    const conn = await connect();
    const channel = await conn.openAgent();
    channel.send("a");
    channel.send("b");
    // The agent answers in order and its stdout is a pipe (written
    // synchronously): once its stderr line after the two echoes is here, the
    // echoes were readable too, and are read in the same turn of the loop.
    channel.send(JSON.stringify({ cmd: "stderr", text: "after the echoes" }));
    await new Promise<void>((resolve) =>
      channel.onStderrLine((line) => {
        if (line === "after the echoes") resolve();
      }),
    );
    await new Promise((resolve) => setImmediate(resolve));
    const rec = record(channel);
    const lines = await rec.waitLines(3);
    expect(lines.map((l) => Object.keys(JSON.parse(l))[0])).toEqual(["hello", "echo", "echo"]);
  });

  it("reads CRLF and multi-chunk lines from the agent", async () => {
    const conn = await connect();
    const channel = await conn.openAgent();
    const rec = record(channel);
    channel.send(JSON.stringify({ cmd: "raw", text: '{"crlf":1}\r\n{"part' }));
    channel.send(JSON.stringify({ cmd: "raw", text: 'ial":2}\n' }));
    channel.send(JSON.stringify({ cmd: "big", bytes: 300_000 }));
    const lines = await rec.waitLines(4);
    expect(lines[1]).toBe('{"crlf":1}');
    expect(lines[2]).toBe('{"partial":2}');
    expect(JSON.parse(lines[3]!).big).toHaveLength(300_000);
  });

  it("refuses a line with a newline inside it", async () => {
    const channel = await (await connect()).openAgent();
    expect(() => channel.send("a\nb")).toThrow(InternalError);
  });

  it("reports an agent command that does not exist in one line", async () => {
    const conn = await connectHost({
      transport: "local",
      command: ["/nonexistent/guidup", "serve"],
      config: "/etc/imapd.conf",
      name: "imap-test",
    });
    connections.push(conn);
    const err = await conn.openAgent().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TransportError);
    expect((err as TransportError).code).toBe("transport");
    expect((err as Error).message).toBe(
      "cannot start the agent on imap-test: /nonexistent/guidup: no such file or command (ENOENT); check the agent command",
    );
  });

  it("reports an agent that exits before close, with host, code and last stderr line", async () => {
    const channel = await (await connect()).openAgent();
    const rec = record(channel);
    channel.send(JSON.stringify({ cmd: "exit", code: 3, stderr: "cannot open /etc/imapd.conf" }));
    const err = await rec.closed;
    expect(err).toBeInstanceOf(TransportError);
    expect(err!.message).toMatch(
      /^the agent on imap-test \(pid \d+\) exited unexpectedly with code 3; last stderr line: cannot open \/etc\/imapd.conf$/,
    );
    // close() after the fact is harmless.
    await channel.close();
  });

  it("names the signal when the agent is killed", async () => {
    const channel = await (await connect()).openAgent();
    const rec = record(channel);
    channel.send(JSON.stringify({ cmd: "kill", signal: "SIGKILL" }));
    const err = await rec.closed;
    expect(err!.message).toMatch(/was killed unexpectedly by SIGKILL/);
  });

  it("hints at the agent command when the shell reports 127", async () => {
    const conn = await connectHost({
      transport: "local",
      command: ["sh", "-c", "guidup-no-such-command serve", "sh"],
      config: "/etc/imapd.conf",
    });
    connections.push(conn);
    const rec = record(await conn.openAgent());
    const err = await rec.closed;
    expect(err!.message).toMatch(
      /exited unexpectedly with code 127 \(command not found\? check the agent command\); last stderr line: .*not found/,
    );
  });

  it("reports a non-zero exit after stdin closed as an error, but close() resolves", async () => {
    const channel = await (await connect(["--exit-code-on-eof", "4"])).openAgent();
    const rec = record(channel);
    await channel.close();
    const err = await rec.closed;
    expect(err!.message).toMatch(/exited with code 4 after its stdin closed/);
  });

  it("terminates an agent that ignores EOF, then kills one that ignores SIGTERM", async () => {
    const conn = await connect(["--ignore-eof"], { closeTimeoutMs: 200 });
    const polite = record(await conn.openAgent());
    const stubborn = await (
      await connect(["--ignore-eof", "--ignore-term"], { closeTimeoutMs: 200 })
    ).openAgent();
    const stubbornRec = record(stubborn);
    await polite.waitLines(1);
    await stubbornRec.waitLines(1);

    await conn.close();
    expect((await polite.closed)!.message).toMatch(
      /did not exit within 200 ms of its stdin closing; sent it SIGTERM/,
    );

    await stubborn.close();
    expect((await stubbornRec.closed)!.message).toMatch(/sent it SIGKILL/);
  });

  it("gives up on an agent a wrapper left behind, naming its host and pid", async () => {
    // A wrapper that does not exec: killing it leaves the agent it started
    // holding the pipes, so the channel never closes. Only the hello knows
    // the agent's own pid.
    const conn = await connectHost({
      transport: "local",
      command: [
        "sh",
        "-c",
        '"$@"; exit $?',
        "sh",
        process.execPath,
        ECHO_AGENT,
        "--ignore-eof",
        "--ignore-term",
      ],
      config: "/etc/imapd.conf",
      name: "imap-test",
      closeTimeoutMs: 200,
    });
    connections.push(conn);
    const rec = record(await conn.openAgent());
    const hello = JSON.parse((await rec.waitLines(1))[0]!) as { host: string; pid: number };
    try {
      await conn.close();
      const err = await rec.closed;
      expect(err).toBeInstanceOf(TransportError);
      expect(err!.message).toMatch(
        /^the agent on imap-test \(pid \d+\) did not exit within 200 ms of its stdin closing; sent it SIGKILL, and it has still not exited; giving up on it: /,
      );
      expect(err!.message).toContain(
        `giving up on it: process ${hello.pid} on ${os.hostname()} may still be running and holding mailbox locks; end it there (kill -KILL ${hello.pid})`,
      );
      expect((err as TransportError).detail).toMatchObject({
        agentHost: os.hostname(),
        agentPid: hello.pid,
      });
      expect(processGone(hello.pid)).toBe(false);
    } finally {
      await endProcess(hello.pid);
    }
  });

  it("an AgentClient that gives up on its agent warns the operator, naming host and pid", async () => {
    // The same wrapper as above, with an agent that opens like the real one:
    // what the channel knows must reach the operator, not only the tests.
    const conn = await connectHost({
      transport: "local",
      command: [
        "sh",
        "-c",
        '"$@"; exit $?',
        "sh",
        process.execPath,
        ECHO_AGENT,
        "--ignore-eof",
        "--ignore-term",
        "--agent-hello",
        String(PROTOCOL_VERSION),
        TOOL_VERSION,
      ],
      config: "/etc/imapd.conf",
      name: "imap-test",
      closeTimeoutMs: 200,
    });
    connections.push(conn);
    const warnings: string[] = [];
    const agent = await AgentClient.start(conn, {
      onLog: (host, line) => {
        if (line.level === "warn") warnings.push(`${host}: ${line.msg}`);
      },
    });
    try {
      await agent.close();
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/^imap-test: .*giving up on it: process \d+ on /);
      expect(warnings[0]).toContain(
        `process ${agent.hello.pid} on ${os.hostname()} may still be running and holding mailbox locks; end it there (kill -KILL ${agent.hello.pid})`,
      );
    } finally {
      await endProcess(agent.hello.pid);
    }
  });

  it("closes every agent of a connection and refuses new ones", async () => {
    const conn = await connect();
    const recs = await Promise.all([conn.openAgent(), conn.openAgent(), conn.openAgent()]).then(
      (cs) => cs.map(record),
    );
    await conn.close();
    for (const rec of recs) expect(await rec.closed).toBeUndefined();
    await expect(conn.openAgent()).rejects.toThrow(/connection to imap-test is closed/);
  });

  it("defaults to this package's built CLI with the serve command", () => {
    const [node, main, serve] = defaultLocalCommand();
    expect(node).toBe(process.execPath);
    expect(main).toMatch(/\/dist\/src\/cli\/main\.js$/);
    expect(serve).toBe("serve");
  });
});
