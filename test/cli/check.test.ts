// guidup check, the preflight: real agents (local child processes and over a
// real sshd), real spools. An old Node.js and an old kernel are faked the
// only way a real host could show them to the agent: a --import preload that
// makes process.versions.node and os.release() say so (no hook in guidup).

import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIST_MAIN, makeFixturePair, type PairFixture, runCli } from "../helpers/pair-fixtures.js";
import { type SshdHandle, startSshd } from "../helpers/sshd.js";

/** A host that looks like CentOS 7 with Node 18 to the agent. */
const OLD_HOST = `data:text/javascript,${encodeURIComponent(
  'import os from "node:os"; Object.defineProperty(process.versions, "node", { value: "18.20.0" }); os.release = () => "3.10.0-1160.el7.x86_64";',
)}`;

let pair: PairFixture;
let sshd: SshdHandle;
beforeAll(async () => {
  [pair, sshd] = await Promise.all([makeFixturePair("08"), startSshd()]);
});
afterAll(async () => {
  await Promise.all([pair?.cleanup(), sshd?.stop()]);
});

function y(v: unknown): string {
  return JSON.stringify(v);
}

let counter = 0;
function inventory(master: string[], replica: string[], mailboxes = { file: pair.mailboxList }) {
  const file = path.join(pair.dir, `check-inventory-${++counter}.yaml`);
  fs.writeFileSync(
    file,
    [
      "pairs:",
      "  - name: slot1",
      `    mailboxes: ${y(mailboxes)}`,
      "    master:",
      ...master.map((l) => `      ${l}`),
      "    replica:",
      ...replica.map((l) => `      ${l}`),
      "",
    ].join("\n"),
  );
  return file;
}

const local = (side: "master" | "replica", extra: string[] = []) => [
  "transport: local",
  `name: ${side}`,
  `config: ${y(pair[side].imapdConf)}`,
  ...extra,
];

describe("guidup check", () => {
  it("passes a fit pair with one ok line per host", async () => {
    const r = await runCli(["check", "--inventory", inventory(local("master"), local("replica"))]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n").sort();
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      new RegExp(
        `^ok   slot1 master master: guidup \\S+, Node\\.js ${process.versions.node}, linux \\S+ \\S+, agent user \\S+, partition-default \\d+ [MG]B free, ${pair.names.length} mailboxes listed$`,
      ),
    );
    expect(lines[1]).toMatch(/^ok {3}slot1 replica replica: guidup /);
  });

  it("fails a host with an old Node.js and a kernel without OFD locks, one line each", async () => {
    const old = [`command: ${y([process.execPath, "--import", OLD_HOST, DIST_MAIN, "serve"])}`];
    const r = await runCli([
      "check",
      "--inventory",
      inventory(local("master", old), local("replica")),
    ]);
    expect(r.code).toBe(1);
    const fails = r.out.split("\n").filter((l) => l.startsWith("FAIL"));
    expect(fails).toEqual([
      expect.stringMatching(
        /^FAIL slot1 master master: Node\.js 18\.20\.0 \(.*\) is too old: guidup needs Node\.js >= 20$/,
      ),
      expect.stringMatching(
        /^FAIL slot1 master master: Linux 3\.10\.0-1160\.el7\.x86_64 has no open file description locks \(F_OFD_SETLK needs Linux >= 3\.15\); guidup refuses to lock Cyrus mailboxes without them$/,
      ),
    ]);
    expect(r.out).toMatch(/^ok {3}slot1 replica replica: /m);
    expect(r.err).toBe("guidup check: 2 problems found\n");
  });

  it("reports every problem of the run at once: host key, partition, mailbox list", async () => {
    const badConf = path.join(pair.dir, "bad-imapd.conf");
    fs.writeFileSync(
      badConf,
      fs
        .readFileSync(pair.master.imapdConf, "utf8")
        .replace(/^partition-default: .*$/m, `partition-default: ${pair.dir}/no-such-spool`),
    );
    const emptyKnownHosts = path.join(pair.dir, "known_hosts-empty");
    fs.writeFileSync(emptyKnownHosts, "");
    const r = await runCli([
      "check",
      "--inventory",
      inventory(
        ["transport: local", "name: master", `config: ${y(badConf)}`],
        [
          "host: 127.0.0.1",
          `port: ${sshd.port}`,
          `user: ${y(sshd.user)}`,
          `identityFile: ${y(sshd.clientKeyPath)}`,
          `knownHostsFile: ${y(emptyKnownHosts)}`,
          `config: ${y(pair.replica.imapdConf)}`,
          "name: replica",
        ],
        { file: path.join(pair.dir, "no-such-list") },
      ),
    ]);
    expect(r.code).toBe(1);
    const fails = r.out
      .split("\n")
      .filter((l) => l.startsWith("FAIL"))
      .sort();
    expect(fails).toEqual([
      expect.stringMatching(
        /^FAIL slot1 master master: cannot read the mailbox list: .*no-such-list/,
      ),
      expect.stringMatching(
        /^FAIL slot1 master master: partition-default .*no-such-spool does not exist or cannot be reached/,
      ),
      expect.stringMatching(
        new RegExp(
          `^FAIL slot1 replica replica \\(127\\.0\\.0\\.1:${sshd.port}\\): host key for \\[127\\.0\\.0\\.1\\]:${sshd.port} is not in `,
        ),
      ),
    ]);
  });

  it("names an imapd.conf the agent cannot parse, with its file and line", async () => {
    const broken = path.join(pair.dir, "broken-imapd.conf");
    fs.writeFileSync(broken, "configdirectory: /var/lib/imap\nthis line is not an option\n");
    const r = await runCli([
      "check",
      "--inventory",
      inventory(["transport: local", "name: master", `config: ${y(broken)}`], local("replica")),
    ]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(
      new RegExp(
        `^FAIL slot1 master master: the agent ended before saying hello .*${broken.replace(/[.]/g, "\\.")}:2: invalid option name`,
        "m",
      ),
    );
  });

  it("fails a partition without room for the new index files", async () => {
    // The master's spool on a filesystem that is full: a tmpfs mounted in a
    // private mount namespace of the agent alone (gone when it exits).
    const mountPoint = path.join(pair.dir, "full-fs");
    fs.mkdirSync(mountPoint);
    const conf = path.join(pair.dir, "full-imapd.conf");
    fs.writeFileSync(
      conf,
      fs
        .readFileSync(pair.master.imapdConf, "utf8")
        .replace(/^partition-default: .*$/m, `partition-default: ${mountPoint}/spool`),
    );
    const script = [
      'mount -t tmpfs -o size=4m tmpfs "$0"',
      `cp -a ${JSON.stringify(pair.master.partitionRoot)} "$0/spool"`,
      'head -c 8m /dev/zero > "$0/filler" 2>/dev/null',
      `exec ${JSON.stringify(process.execPath)} ${JSON.stringify(DIST_MAIN)} serve "$@"`,
    ].join("; ");
    const wrapped = [
      "transport: local",
      "name: master",
      `config: ${y(conf)}`,
      `command: ${y(["unshare", "-m", "--propagation", "private", "sh", "-c", script, mountPoint])}`,
    ];
    const r = await runCli(["check", "--inventory", inventory(wrapped, local("replica"))]);
    expect(r.code).toBe(1);
    expect(r.out.split("\n").filter((l) => l.startsWith("FAIL"))).toEqual([
      expect.stringMatching(
        new RegExp(
          `^FAIL slot1 master master: partition-default ${mountPoint}/spool has 0 KB free; the new index files of its mailboxes may need up to [1-9]\\d* KB$`,
        ),
      ),
    ]);
    // The agent's namespace is gone: nothing stays mounted here.
    expect(fs.readFileSync("/proc/self/mounts", "utf8")).not.toContain(mountPoint);
  });

  it("names an agent of another guidup version and how to fix it", async () => {
    // Another release: the same code, another version in its package.json.
    const other = path.join(pair.dir, "guidup-9.9.9");
    fs.cpSync(path.dirname(path.dirname(DIST_MAIN)), path.join(other, "dist", "src"), {
      recursive: true,
    });
    fs.writeFileSync(
      path.join(other, "package.json"),
      JSON.stringify({ name: "guidup", version: "9.9.9", type: "module" }),
    );
    fs.symlinkSync(path.resolve("node_modules"), path.join(other, "node_modules"));
    const command = [
      `command: ${y([process.execPath, path.join(other, "dist", "src", "cli", "main.js"), "serve"])}`,
    ];
    const r = await runCli([
      "check",
      "--inventory",
      inventory(local("master"), local("replica", command)),
    ]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(
      /^FAIL slot1 replica replica: the agent there is guidup 9\.9\.9 \(protocol \d+\) and this controller is guidup \S+ \(protocol \d+\); they must be the same version: run `guidup agent install --inventory FILE` to put this version on the host, then use the command it prints \(README, Install\)$/m,
    );
  });

  it("records an unknown host key with --accept-new-host-keys and says so", async () => {
    const knownHosts = path.join(pair.dir, "known_hosts-accept");
    fs.writeFileSync(knownHosts, "");
    const ssh = [
      "host: 127.0.0.1",
      `port: ${sshd.port}`,
      `user: ${y(sshd.user)}`,
      `identityFile: ${y(sshd.clientKeyPath)}`,
      `knownHostsFile: ${y(knownHosts)}`,
      `command: ${y(`${process.execPath} ${DIST_MAIN} serve`)}`,
      `config: ${y(pair.replica.imapdConf)}`,
      "name: replica",
    ];
    const r = await runCli([
      "check",
      "--inventory",
      inventory(local("master"), ssh),
      "--accept-new-host-keys",
    ]);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(
      new RegExp(
        `^recorded the host key of \\[127\\.0\\.0\\.1\\]:${sshd.port} \\(ssh-ed25519 SHA256:\\S+\\) in ${knownHosts}\\n$`,
      ),
    );
    expect(fs.readFileSync(knownHosts, "utf8")).toBe(`${sshd.hostKeyLine}\n`);
  });
});
