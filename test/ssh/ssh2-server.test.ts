// The SSH transport against an in-process ssh2 server, so `npm test` needs no
// system sshd. test/ssh/openssh.test.ts repeats the essentials against the
// real OpenSSH sshd.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../bench/sshd.js";
import type { SshHostSpec } from "../../src/host-spec.js";
import {
  HostKeyError,
  HostUnreachableError,
  MAX_SESSIONS_PER_CONNECTION,
  SshAuthError,
  TransportError,
} from "../../src/transport/index.js";
import { hashKnownHostsName } from "../../src/transport/known-hosts.js";
import { connectSsh, remoteCommand, type SshConnection } from "../../src/transport/ssh.js";
import type { AgentChannel, HostConnection } from "../../src/transport/types.js";
import { record, sshSpecFor, trackedConnect } from "../helpers/agent-channel.js";
import {
  generateEd25519KeyPair,
  type Ssh2TestServer,
  startSsh2Server,
} from "../helpers/ssh2-server.js";
import { processGone } from "../helpers/test-processes.js";

const ECHO_AGENT = fileURLToPath(new URL("../helpers/echo-agent.mjs", import.meta.url));
const ECHO_COMMAND = `${process.execPath} ${ECHO_AGENT}`;

let server: Ssh2TestServer;
let knownHosts: string;
const connections: HostConnection[] = [];

beforeAll(async () => {
  server = await startSsh2Server();
});
afterAll(async () => {
  await server.stop();
});
afterEach(async () => {
  await Promise.all(connections.splice(0).map((c) => c.close()));
  server.stats();
});

/** A spec for this server with a private known_hosts file (also in `knownHosts`). */
function spec(extra: Partial<SshHostSpec> = {}): SshHostSpec {
  const base = sshSpecFor(server, {
    user: "tester",
    command: ECHO_COMMAND,
    config: "/etc/imapd.conf",
    name: "replica",
  });
  knownHosts = base.knownHostsFile;
  return { ...base, ...extra };
}

const { connect, connectionError } = trackedConnect(connections);

describe("ssh transport (in-process ssh2 server)", () => {
  it("connects when the host key is in known_hosts and runs the agent over exec", async () => {
    const conn = await connect(spec());
    expect(conn.host).toBe("replica");
    const channel = await conn.openAgent();
    const rec = record(channel);
    const [hello] = await rec.waitLines(1);
    expect(JSON.parse(hello!).argv).toEqual(["--config", "/etc/imapd.conf"]);
    channel.send('{"op":"ping"}');
    channel.send("Grüße 🦀");
    const lines = await rec.waitLines(3);
    expect(lines.slice(1).map((l) => JSON.parse(l).echo)).toEqual(['{"op":"ping"}', "Grüße 🦀"]);
    await channel.close();
    expect(await rec.closed).toBeUndefined();
    expect(rec.stderr.map((l) => JSON.parse(l).msg)).toEqual([
      "echo agent started",
      "stdin closed",
    ]);
  });

  it("passes a hostile config path through the remote shell unchanged", async () => {
    const config = '/tmp/it\'s $(touch /tmp/pwned) `id` "q" ; rm -rf x\n&.conf';
    expect(remoteCommand("guidup serve", config)).toBe(
      `guidup serve --config '/tmp/it'\\''s $(touch /tmp/pwned) \`id\` "q" ; rm -rf x\n&.conf'`,
    );
    const conn = await connect(spec({ config }));
    const rec = record(await conn.openAgent());
    const [hello] = await rec.waitLines(1);
    expect(JSON.parse(hello!).argv).toEqual(["--config", config]);
  });

  it("refuses an unknown host key", async () => {
    const s = spec();
    fs.writeFileSync(knownHosts, "");
    const err = await connectionError(s);
    expect(err).toBeInstanceOf(HostKeyError);
    expect(err.message).toMatch(
      new RegExp(
        `^host key for \\[127\\.0\\.0\\.1\\]:${server.port} is not in ${knownHosts} \\(ssh-ed25519 SHA256:[A-Za-z0-9+/]{43}\\); add it with ssh-keyscan or run with --accept-new-host-keys$`,
      ),
    );
  });

  it("refuses a changed host key, even with acceptNewHostKeys", async () => {
    const s = spec({ acceptNewHostKeys: true });
    const other = generateEd25519KeyPair();
    fs.writeFileSync(
      knownHosts,
      `# mine\n[127.0.0.1]:${server.port} ssh-ed25519 ${other.publicBlob.toString("base64")}\n`,
    );
    const err = await connectionError(s);
    expect(err).toBeInstanceOf(HostKeyError);
    expect(err.message).toMatch(
      new RegExp(
        `^HOST KEY FOR \\[127\\.0\\.0\\.1\\]:${server.port} HAS CHANGED .*line 2.* possible man-in-the-middle`,
      ),
    );
  });

  it("accepts a hashed entry, our own and ssh-keygen -H's", async () => {
    const s = spec();
    const blob = server.hostKeyBlob.toString("base64");
    fs.writeFileSync(
      knownHosts,
      `${hashKnownHostsName(`[127.0.0.1]:${server.port}`, randomBytes(20))} ssh-ed25519 ${blob}\n`,
    );
    await connect(s);

    const s2 = spec();
    execFileSync("ssh-keygen", ["-H", "-f", knownHosts], { stdio: "ignore" });
    expect(fs.readFileSync(knownHosts, "utf8")).toMatch(/^\|1\|/);
    await connect(s2);
  });

  it("records a new host key with acceptNewHostKeys, and matches it next time", async () => {
    const s = spec({ acceptNewHostKeys: true });
    const file = path.join(server.dir, "fresh", ".ssh", "known_hosts");
    await connect({ ...s, knownHostsFile: file });
    expect(fs.readFileSync(file, "utf8")).toBe(`${server.hostKeyLine}\n`);
    await connect({ ...s, knownHostsFile: file, acceptNewHostKeys: false });
    expect(fs.readFileSync(file, "utf8")).toBe(`${server.hostKeyLine}\n`);
  });

  it(`queues agents beyond ${MAX_SESSIONS_PER_CONNECTION} per connection instead of failing`, async () => {
    const conn = (await connectSsh(spec())) as SshConnection;
    connections.push(conn);
    const opened: AgentChannel[] = [];
    const pending = Array.from({ length: 12 }, () =>
      conn.openAgent().then((c) => {
        opened.push(c);
        return c;
      }),
    );
    await expect.poll(() => opened.length).toBe(10);
    // A round trip on the same connection after the tenth: a channel open the
    // client had (wrongly) sent before it would have been answered by now.
    const last = record(opened[9]!);
    await last.waitLines(1);
    opened[9]!.send("after the tenth");
    expect(JSON.parse((await last.waitLines(2))[1]!).echo).toBe("after the tenth");
    expect(opened.length).toBe(10);
    expect(server.stats().maxSessions).toBe(10);
    expect(conn.sessionStats).toEqual({ open: 10, waiting: 2, limit: 10 });

    await opened[0]!.close();
    await opened[1]!.close();
    const all = await Promise.all(pending);
    expect(all).toHaveLength(12);
    for (const channel of all.slice(10)) {
      const rec = record(channel);
      expect(JSON.parse((await rec.waitLines(1))[0]!).hello).toBe(true);
    }
    expect(server.stats().refusedSessions).toBe(0);
    expect(server.stats().maxSessions).toBeLessThanOrEqual(10);
    await conn.close();
    expect(conn.sessionStats).toEqual({ open: 0, waiting: 0, limit: 10 });
  });

  it("keeps to a smaller MaxSessions it runs into", async () => {
    const small = await startSsh2Server({ maxSessions: 3 });
    try {
      const s = spec();
      fs.writeFileSync(knownHosts, `${small.hostKeyLine}\n`);
      const conn = (await connectSsh({
        ...s,
        port: small.port,
        identityFile: small.clientKeyPath,
      })) as SshConnection;
      connections.push(conn);
      const opened: AgentChannel[] = [];
      const pending = Array.from({ length: 5 }, () =>
        conn.openAgent().then((c) => {
          opened.push(c);
          return c;
        }),
      );
      await expect
        .poll(() => conn.sessionStats, { timeout: 10_000 })
        .toEqual({ open: 3, waiting: 2, limit: 3 });
      expect(opened).toHaveLength(3);
      await opened[0]!.close();
      await opened[1]!.close();
      const all = await Promise.all(pending);
      const rec = record(all[4]!);
      expect(JSON.parse((await rec.waitLines(1))[0]!).hello).toBe(true);
      expect(small.stats().maxSessions).toBe(3);
    } finally {
      await Promise.all(connections.splice(0).map((c) => c.close()));
      await small.stop();
    }
  });

  it("closes every open channel with an error naming the host when the connection drops", async () => {
    const conn = (await connectSsh(spec())) as SshConnection;
    connections.push(conn);
    const recs = await Promise.all(
      Array.from({ length: 3 }, async () => record(await conn.openAgent())),
    );
    await Promise.all(recs.map((r) => r.waitLines(1)));
    server.dropConnections();
    for (const rec of recs) {
      const err = await rec.closed;
      expect(err).toBeInstanceOf(TransportError);
      expect(err!.message).toMatch(
        new RegExp(`^connection to replica \\(127\\.0\\.0\\.1:${server.port}\\) dropped`),
      );
    }
    await expect(conn.openAgent()).rejects.toThrow(/connection to replica .* dropped/);
  });

  it("notices a silent peer through keep-alives", async () => {
    const conn = await connectSsh(spec(), { keepaliveIntervalMs: 200, keepaliveCountMax: 2 });
    connections.push(conn);
    const rec = record(await conn.openAgent());
    await rec.waitLines(1);
    server.freezeConnections();
    const err = await rec.closed;
    expect(err!.message).toMatch(
      /^connection to replica \(127\.0\.0\.1:\d+\) dropped: Keepalive timeout$/,
    );
  });

  it("reports a wrong agent command in one line naming the host", async () => {
    const conn = await connect(spec({ command: "/nonexistent/guidup serve" }));
    const rec = record(await conn.openAgent());
    const err = await rec.closed;
    expect(err).toBeInstanceOf(TransportError);
    expect(err!.message).toMatch(
      new RegExp(
        `^the agent \`/nonexistent/guidup serve --config '/etc/imapd.conf'\` on replica \\(127\\.0\\.0\\.1:${server.port}\\) exited unexpectedly with code 127 \\(command not found\\? check the agent command\\); last stderr line: .*not found$`,
      ),
    );
    expect(err!.message).not.toContain("\n");
  });

  it("closes the channel of an agent that ignores EOF", async () => {
    // ssh2's Server drops the SIGTERM request (see the helper), so close()
    // goes on to its last step; openssh.test.ts sees SIGTERM work.
    const conn = await connect(
      spec({ command: `${ECHO_COMMAND} --ignore-eof`, closeTimeoutMs: 200 }),
    );
    const channel = await conn.openAgent();
    const rec = record(channel);
    const { pid } = JSON.parse((await rec.waitLines(1))[0]!) as { pid: number };
    await channel.close();
    expect((await rec.closed)!.message).toMatch(
      /did not exit within 200 ms of its stdin closing; sent it SIGKILL over SSH and closed the channel$/,
    );
    // The server killed the whole session, not only the `sh -c` around the agent.
    await expect.poll(() => processGone(pid), { timeout: 10_000 }).toBe(true);
  });

  it("reports an unreachable host in one line", async () => {
    const closedPort = await freePort(); // nothing listens there now
    const refused = await connectionError(spec({ port: closedPort, name: undefined }));
    expect(refused).toBeInstanceOf(HostUnreachableError);
    expect((refused as HostUnreachableError).code).toBe("host-unreachable");
    expect(refused.message).toBe(
      `cannot reach 127.0.0.1:${closedPort}: connection refused (is sshd running on that port?)`,
    );

    const unknown = await connectionError(
      spec({ host: "no-such-host.invalid", port: 22, name: "imap9" }),
    );
    expect(unknown).toBeInstanceOf(HostUnreachableError);
    expect(unknown.message).toBe(
      "cannot reach imap9 (no-such-host.invalid:22): host name not found",
    );
  });

  it("times out on a host that accepts TCP but never speaks SSH", async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as net.AddressInfo;
    try {
      const err = await connectionError(spec({ port, connectTimeoutMs: 300, name: undefined }));
      expect(err).toBeInstanceOf(HostUnreachableError);
      expect(err.message).toMatch(/^cannot reach 127\.0\.0\.1:\d+: no SSH handshake within 300 ms/);
    } finally {
      silent.close();
    }
  });

  it("reports a refused key as an authentication failure", async () => {
    const wrongKey = path.join(server.dir, "wrong_key");
    fs.writeFileSync(wrongKey, generateEd25519KeyPair().private, { mode: 0o600 });
    const err = await connectionError(spec({ identityFile: wrongKey }));
    expect(err).toBeInstanceOf(SshAuthError);
    expect(err.message).toBe(
      `ssh login as tester to replica (127.0.0.1:${server.port}) failed with identity file ${wrongKey}; check that the public key is in tester's authorized_keys there`,
    );
  });

  it("says so when there are no credentials at all", async () => {
    const saved = process.env.SSH_AUTH_SOCK;
    delete process.env.SSH_AUTH_SOCK;
    try {
      const err = await connectionError(spec({ identityFile: undefined }));
      expect(err).toBeInstanceOf(SshAuthError);
      expect(err.message).toMatch(/^no SSH credentials for replica .*: set identityFile/);
    } finally {
      if (saved !== undefined) process.env.SSH_AUTH_SOCK = saved;
    }
  });

  it("refuses an encrypted identity file with a hint", async () => {
    const encrypted = path.join(server.dir, "encrypted_key");
    fs.writeFileSync(encrypted, generateEd25519KeyPair({ passphrase: "secret" }).private, {
      mode: 0o600,
    });
    const err = await connectionError(spec({ identityFile: encrypted }));
    expect(err).toBeInstanceOf(SshAuthError);
    expect(err.message).toMatch(/is encrypted .* load it into ssh-agent/);
  });
});
