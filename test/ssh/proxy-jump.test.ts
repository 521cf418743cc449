// ProxyJump through a real bastion: two OpenSSH sshds in their own network
// namespace, the target reachable only through the bastion
// (test/helpers/bastion.ts). Host keys are checked on both hops; the hosts
// are named by alias only and resolved from an OpenSSH client config file.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { SshHostSpec } from "../../src/host-spec.js";
import { loadInventory } from "../../src/plan/inventory.js";
import {
  connectHost,
  connectHosts,
  HostKeyError,
  HostUnreachableError,
} from "../../src/transport/index.js";
import { setHostKeyNotice } from "../../src/transport/ssh.js";
import type { HostConnection } from "../../src/transport/types.js";
import { type BastionPair, startBastionPair } from "../helpers/bastion.js";
import { makeFixturePair, runCli } from "../helpers/pair-fixtures.js";

const ECHO_AGENT = fileURLToPath(new URL("../helpers/echo-agent.mjs", import.meta.url));
const ECHO_COMMAND = `${process.execPath} ${ECHO_AGENT}`;

let pair: BastionPair;
const connections: HostConnection[] = [];
let counter = 0;

beforeAll(async () => {
  pair = await startBastionPair();
});
afterAll(async () => {
  await pair?.stop();
});
afterEach(async (ctx) => {
  await Promise.all(connections.splice(0).map((c) => c.close()));
  if (ctx.task.result?.state === "fail") console.error(`sshd logs:\n${pair.log()}`);
});

function knownHosts(...lines: string[]): string {
  const file = path.join(pair.dir, `known_hosts-${++counter}`);
  fs.writeFileSync(file, lines.map((l) => `${l}\n`).join(""));
  return file;
}

function otherKeyLine(hostField: string): string {
  const file = path.join(pair.dir, `other-${++counter}`);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", file]);
  const [type, blob] = fs.readFileSync(`${file}.pub`, "utf8").split(/\s+/);
  return `${hostField} ${type} ${blob}`;
}

function spec(knownHostsFile: string, extra: Partial<SshHostSpec> = {}): SshHostSpec {
  return {
    host: pair.targetHost,
    port: pair.targetPort,
    user: pair.user,
    identityFile: pair.clientKeyPath,
    knownHostsFile,
    command: ECHO_COMMAND,
    config: "/etc/imapd.conf",
    name: "imap1",
    jump: [
      {
        host: "127.0.0.1",
        port: pair.bastionPort,
        user: pair.user,
        identityFile: pair.clientKeyPath,
        knownHostsFile,
        name: "bastion",
      },
    ],
    ...extra,
  };
}

async function helloOver(conn: HostConnection): Promise<{ argv: string[] }> {
  const channel = await conn.openAgent();
  const hello = await new Promise<string>((resolve) => channel.onLine(resolve));
  await channel.close();
  return JSON.parse(hello) as { argv: string[] };
}

async function failure(s: SshHostSpec): Promise<Error> {
  return connectHost(s).then(
    (c) => {
      connections.push(c);
      throw new Error("connected, but should not have");
    },
    (err: Error) => err,
  );
}

describe("ProxyJump through a bastion (two real sshds)", () => {
  it("the target cannot be reached directly", async () => {
    const file = knownHosts(pair.bastionKeyLine, pair.targetKeyLine);
    const { jump: _jump, ...direct } = spec(file);
    const err = await failure(direct);
    expect(err).toBeInstanceOf(HostUnreachableError);
    expect(err.message).toMatch(/connection refused/);
  });

  it("runs the agent on the target through the bastion, both host keys checked", async () => {
    const conn = await connectHost(spec(knownHosts(pair.bastionKeyLine, pair.targetKeyLine)));
    connections.push(conn);
    expect((await helloOver(conn)).argv).toEqual(["--config", "/etc/imapd.conf"]);
    // Both sshds logged our key: the login went to each of them.
    expect(pair.log()).toMatch(/\[bastion_sshd_config\] Accepted publickey/);
    expect(pair.log()).toMatch(/\[target_sshd_config\] Accepted publickey/);
  });

  it("goes through two hops, each hop's key checked under its own name", async () => {
    // Hop 2 is the bastion again, reached from inside the namespace: another
    // address, so another known_hosts entry.
    const [, type, blob] = pair.bastionKeyLine.split(" ");
    const innerName = `[127.0.0.1]:${pair.insideBastionPort}`;
    const inner = {
      host: "127.0.0.1",
      port: pair.insideBastionPort,
      user: pair.user,
      identityFile: pair.clientKeyPath,
      name: "inner",
    };
    const good = knownHosts(
      pair.bastionKeyLine,
      `${innerName} ${type} ${blob}`,
      pair.targetKeyLine,
    );
    const base = spec(good);
    const conn = await connectHost({
      ...base,
      jump: [...(base.jump ?? []), { ...inner, knownHostsFile: good }],
    });
    connections.push(conn);
    expect((await helloOver(conn)).argv).toEqual(["--config", "/etc/imapd.conf"]);

    const wrongInner = knownHosts(pair.bastionKeyLine, otherKeyLine(innerName), pair.targetKeyLine);
    const refused = spec(wrongInner);
    const err = await failure({
      ...refused,
      jump: [...(refused.jump ?? []), { ...inner, knownHostsFile: wrongInner }],
    });
    expect(err).toBeInstanceOf(HostKeyError);
    expect(err.message).toMatch(
      new RegExp(`^HOST KEY FOR \\[127\\.0\\.0\\.1\\]:${pair.insideBastionPort} HAS CHANGED`),
    );
  });

  it("refuses a wrong key on the bastion and never reaches the target", async () => {
    const before = (pair.log().match(/\[target_sshd_config\].*Connection from/g) ?? []).length;
    const wrong = otherKeyLine(`[127.0.0.1]:${pair.bastionPort}`);
    const err = await failure(spec(knownHosts(wrong, pair.targetKeyLine)));
    expect(err).toBeInstanceOf(HostKeyError);
    expect(err.message).toMatch(
      new RegExp(`^HOST KEY FOR \\[127\\.0\\.0\\.1\\]:${pair.bastionPort} HAS CHANGED`),
    );
    const after = (pair.log().match(/\[target_sshd_config\].*Connection from/g) ?? []).length;
    expect(after).toBe(before);
  });

  it("refuses a wrong key on the target behind a good bastion, naming the way", async () => {
    const wrong = otherKeyLine(`[127.0.0.2]:${pair.targetPort}`);
    const err = await failure(spec(knownHosts(pair.bastionKeyLine, wrong)));
    expect(err).toBeInstanceOf(HostKeyError);
    expect(err.message).toMatch(
      new RegExp(`^HOST KEY FOR \\[127\\.0\\.0\\.2\\]:${pair.targetPort} HAS CHANGED`),
    );
  });

  it("records new keys of both hops with acceptNewHostKeys and says what it recorded", async () => {
    const file = knownHosts();
    const notices: string[] = [];
    setHostKeyNotice((line) => notices.push(line));
    try {
      const conn = await connectHost(spec(file, { acceptNewHostKeys: true }));
      connections.push(conn);
    } finally {
      setHostKeyNotice((line) => process.stderr.write(`${line}\n`));
    }
    expect(notices).toEqual([
      expect.stringMatching(
        new RegExp(
          `^recorded the host key of \\[127\\.0\\.0\\.1\\]:${pair.bastionPort} \\(ssh-ed25519 SHA256:\\S+\\) in ${file}$`,
        ),
      ),
      expect.stringMatching(
        new RegExp(`^recorded the host key of \\[127\\.0\\.0\\.2\\]:${pair.targetPort} `),
      ),
    ]);
    const recorded = fs.readFileSync(file, "utf8");
    expect(recorded).toContain(pair.bastionKeyLine);
    expect(recorded).toContain(pair.targetKeyLine);
  });

  it("reports every host with an unknown key at once", async () => {
    const empty = knownHosts();
    const err = await connectHosts([
      spec(empty, { name: "master" }),
      spec(knownHosts(pair.bastionKeyLine), { name: "replica" }),
    ]).then(
      () => {
        throw new Error("connected, but should not have");
      },
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(HostKeyError);
    const lines = err.message.split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^host key for \[127\.0\.0\.1\]:\d+ is not in /);
    expect(lines[1]).toMatch(/^host key for \[127\.0\.0\.2\]:\d+ is not in /);
  });

  it("resolves alias-only inventory hosts from an ssh config file, ProxyJump included", async () => {
    const file = knownHosts(pair.bastionKeyLine, pair.targetKeyLine);
    const config = path.join(pair.dir, `ssh_config-${++counter}`);
    fs.writeFileSync(
      config,
      [
        "Host jumpbox",
        "  HostName 127.0.0.1",
        `  Port ${pair.bastionPort}`,
        "Host imap-*",
        "  ProxyJump jumpbox",
        "  ServerAliveInterval 7",
        "Host imap-master",
        "  HostName 127.0.0.2",
        `  Port ${pair.targetPort}`,
        "Host imap-replica",
        "  HostName %h.invalid",
        "Host *",
        `  User ${pair.user}`,
        `  IdentityFile ${path.join(pair.dir, "missing_key")}`,
        `  IdentityFile ${pair.clientKeyPath}`,
        "  IdentitiesOnly yes",
        `  UserKnownHostsFile ${file} ${file}.second`,
        "",
      ].join("\n"),
    );
    const inventoryFile = path.join(pair.dir, `inventory-${counter}.yaml`);
    fs.writeFileSync(
      inventoryFile,
      [
        `sshConfig: ${config}`,
        "pairs:",
        "  - name: p",
        "    mailboxes: { command: 'true' }",
        "    master: { host: imap-master, config: /etc/imapd.conf, command: " +
          JSON.stringify(ECHO_COMMAND) +
          " }",
        "    replica: { host: imap-replica, port: 2222, config: /etc/imapd.conf }",
        "",
      ].join("\n"),
    );
    const inventory = await loadInventory(inventoryFile);
    const [p] = inventory.pairs;
    const jumpbox = {
      host: "127.0.0.1",
      port: pair.bastionPort,
      user: pair.user,
      identityFile: pair.clientKeyPath,
      identitiesOnly: true,
      knownHostsFile: file,
      moreKnownHostsFiles: [`${file}.second`],
      name: "jumpbox",
    };
    expect(p?.master).toEqual({
      host: "127.0.0.2",
      port: pair.targetPort,
      user: pair.user,
      identityFile: pair.clientKeyPath,
      identitiesOnly: true,
      knownHostsFile: file,
      moreKnownHostsFiles: [`${file}.second`],
      name: "imap-master",
      jump: [jumpbox],
      serverAliveInterval: 7,
      config: "/etc/imapd.conf",
      command: ECHO_COMMAND,
    });
    // An explicit field wins over the config; %h is the alias.
    expect(p?.replica).toMatchObject({ host: "imap-replica.invalid", port: 2222 });
    const conn = await connectHost(p!.master);
    connections.push(conn);
    expect((await helloOver(conn)).argv).toEqual(["--config", "/etc/imapd.conf"]);
  });

  it("installs the agent through the bastion, plans by alias, and apply reaches the same hosts from the plan alone", async () => {
    const fixture = await makeFixturePair("08");
    try {
      const file = knownHosts(pair.bastionKeyLine, pair.targetKeyLine);
      const config = path.join(fixture.dir, "ssh_config");
      fs.writeFileSync(
        config,
        [
          "Host jumpbox",
          "  HostName 127.0.0.1",
          `  Port ${pair.bastionPort}`,
          "Host imap-*",
          "  HostName 127.0.0.2",
          `  Port ${pair.targetPort}`,
          "  ProxyJump jumpbox",
          "Host *",
          `  User ${pair.user}`,
          `  IdentityFile ${pair.clientKeyPath}`,
          `  UserKnownHostsFile ${file}`,
          "",
        ].join("\n"),
      );
      const inventoryFile = path.join(fixture.dir, "inventory.yaml");
      const writeInventory = (command: string) =>
        fs.writeFileSync(
          inventoryFile,
          [
            `sshConfig: ${config}`,
            "pairs:",
            "  - name: slot1",
            `    mailboxes: { file: ${JSON.stringify(fixture.mailboxList)} }`,
            `    master: { host: imap-master, command: ${JSON.stringify(command)}, config: ${JSON.stringify(fixture.master.imapdConf)} }`,
            `    replica: { host: imap-replica, command: ${JSON.stringify(command)}, config: ${JSON.stringify(fixture.replica.imapdConf)} }`,
            "",
          ].join("\n"),
        );
      // The agent goes over SFTP through the bastion into a fresh directory.
      writeInventory("not installed yet");
      const installDir = path.join(fixture.dir, "host-home", ".guidup", "agent");
      const installed = await runCli([
        "agent",
        "install",
        "--inventory",
        inventoryFile,
        "--dir",
        installDir,
        "--node",
        process.execPath,
      ]);
      expect(installed.code, installed.out).toBe(0);
      expect(installed.out).toMatch(/^imap-master \(127\.0\.0\.2\): guidup \S+ installed, /);
      const command = JSON.parse(
        /inventory command: (".*")/.exec(installed.out)?.[1] ?? '""',
      ) as string;
      expect(command).toContain(installDir);
      writeInventory(command);
      const planFile = path.join(fixture.dir, "plan.yaml");
      const planned = await runCli(["plan", "--inventory", inventoryFile, "--out", planFile]);
      expect(planned.code, planned.err).toBe(0);
      const text = fs.readFileSync(planFile, "utf8");
      expect(text).toContain(`    host: "127.0.0.2"\n    port: ${pair.targetPort}\n`);
      expect(text).toContain(
        `    jump:\n      - host: "127.0.0.1"\n        port: ${pair.bastionPort}\n`,
      );
      // The plan alone says how to get there.
      fs.rmSync(config);
      const applied = await runCli(["apply", planFile]);
      expect(applied.code, applied.err).toBe(0);
      expect(applied.out).toMatch(/done [1-9]\d*/);
    } finally {
      await fixture.cleanup();
    }
  });
});
