// `guidup plan` over SSH: against a real OpenSSH sshd started by the test
// (loopback, its own host key, authorized key and config: test/helpers/sshd.ts)
// and against the in-process ssh2 server (test/helpers/ssh2-server.ts, so the
// essentials need no system sshd). The plan over SSH has the same content as
// the plan over the local transport; host keys are checked through the plan
// command; bad input is one clear line, exit code 2, and no plan file.
//
// Fails, never skips, when sshd is missing (CI installs openssh-server).
// Needs dist/ (npx tsc -p tsconfig.json): the agents run dist/src/cli/main.js.

import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../bench/sshd.js";
import { readPlan } from "../../src/plan/plan-file.js";
import {
  DIST_MAIN,
  errorLines,
  isProgressLine,
  makeFixturePair,
  makeGeneratedPair,
  type PairFixture,
  planContent,
  runCli,
  runCliProcess,
  type SshTarget,
  writeInventory,
} from "../helpers/pair-fixtures.js";
import {
  generateEd25519KeyPair,
  type Ssh2TestServer,
  startSsh2Server,
} from "../helpers/ssh2-server.js";
import { type SshdHandle, startSshd } from "../helpers/sshd.js";

let sshd: SshdHandle;
let ssh2: Ssh2TestServer;
let ssh2Target: SshTarget;
let generated: PairFixture;
let fixture: PairFixture;
let counter = 0;

beforeAll(async () => {
  if (!existsSync(DIST_MAIN))
    throw new Error(`${DIST_MAIN} missing: run npx tsc -p tsconfig.json before these tests`);
  [sshd, ssh2, generated, fixture] = await Promise.all([
    startSshd(),
    startSsh2Server(),
    makeGeneratedPair({
      mailboxes: 40,
      seed: 7,
      largeMailboxes: 1,
      messagesPerMailbox: [0, 10],
      messageBytes: [300, 3000],
    }),
    makeFixturePair("08"),
  ]);
  const ssh2KnownHosts = path.join(ssh2.dir, "known_hosts");
  await writeFile(ssh2KnownHosts, `${ssh2.hostKeyLine}\n`);
  ssh2Target = {
    port: ssh2.port,
    clientKeyPath: ssh2.clientKeyPath,
    user: "tester",
    knownHostsPath: ssh2KnownHosts,
  };
});
afterAll(async () => {
  await Promise.all([sshd?.stop(), ssh2?.stop(), generated?.cleanup(), fixture?.cleanup()]);
});
afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") console.error(`sshd log:\n${sshd?.log()}`);
});

/** A fresh, empty directory for one plan (so "no plan written" can look at all of it). */
async function outDir(pair: PairFixture): Promise<string> {
  const dir = path.join(pair.dir, `out-${++counter}`);
  await mkdir(dir);
  return dir;
}

/** A private copy of known_hosts content for one test. */
async function knownHosts(pair: PairFixture, text: string): Promise<string> {
  const file = path.join(pair.dir, `known_hosts-${++counter}`);
  await writeFile(file, text);
  return file;
}

async function planOk(pair: PairFixture, inventory: string, extra: string[] = []) {
  const file = path.join(await outDir(pair), "plan.yaml");
  const r = await runCli(["plan", "--inventory", inventory, "--out", file, ...extra]);
  if (r.code !== 0) throw new Error(`guidup plan exited ${r.code}:\n${r.err}`);
  expect(errorLines(r.err)).toEqual([]);
  return { plan: await readPlan(file), file, text: await readFile(file, "utf8") };
}

/**
 * Runs a plan that must fail: exit 2, exactly one line on stderr besides the
 * plain progress lines ("plan slot1: connecting"), and nothing written into
 * the output directory (no plan, no temp file). Returns that line.
 */
async function planFails(pair: PairFixture, inventory: string) {
  const dir = await outDir(pair);
  const r = await runCli(["plan", "--inventory", inventory, "--out", path.join(dir, "plan.yaml")]);
  const lines = errorLines(r.err);
  expect(lines, r.err).toHaveLength(1);
  expect(r.code, r.err).toBe(2);
  expect(r.out).toBe("");
  expect(readdirSync(dir)).toEqual([]);
  for (const l of r.err.split("\n").filter((x) => x !== "")) {
    expect(isProgressLine(l) || l === lines[0]).toBe(true);
  }
  return lines[0] as string;
}

/** A port nothing listens on. */
const closedPort = freePort;

describe("the plan over SSH has the content of the plan over local", () => {
  it.each([
    ["generated spools", () => generated],
    ["real-Cyrus fixtures v08", () => fixture],
  ])("%s: real OpenSSH sshd = local", async (_label, get) => {
    const pair = get();
    const local = await planOk(pair, await writeInventory(pair, { transport: "local" }));
    const overSsh = await planOk(pair, await writeInventory(pair, { ssh: sshd }));
    expect(await planContent(overSsh.plan)).toEqual(await planContent(local.plan));
    expect(local.plan.mailboxes.length).toBeGreaterThan(0);
    // The hosts are where they differ, and the plan records how each was reached.
    expect(overSsh.plan.hosts.master).toMatchObject({
      host: "127.0.0.1",
      port: sshd.port,
      config: pair.master.imapdConf,
    });
    expect(overSsh.plan.hosts.replica).toMatchObject({ config: pair.replica.imapdConf });
    expect(local.plan.hosts.master).toMatchObject({ transport: "local" });
  });

  it("in-process ssh2 server = local (exec runs the real agent through sh -c)", async () => {
    const local = await planOk(generated, await writeInventory(generated, { transport: "local" }));
    const overSsh2 = await planOk(generated, await writeInventory(generated, { ssh: ssh2Target }));
    expect(await planContent(overSsh2.plan)).toEqual(await planContent(local.plan));
    expect(overSsh2.plan.hosts.master).toMatchObject({ port: ssh2.port, user: "tester" });
  });

  it("the mailbox list from a command run over SSH and from discovery give the same plan", async () => {
    const pair = generated;
    const fromFile = await planOk(pair, await writeInventory(pair, { ssh: sshd }));
    const fromCommand = await planOk(
      pair,
      await writeInventory(
        pair,
        { ssh: sshd },
        { mailboxes: { command: `cat '${pair.mailboxList}'` } },
      ),
    );
    const discovered = await planOk(
      pair,
      await writeInventory(pair, { ssh: sshd }, { mailboxes: { discover: true } }),
    );
    expect(await planContent(fromCommand.plan)).toEqual(await planContent(fromFile.plan));
    expect(await planContent(discovered.plan)).toEqual(await planContent(fromFile.plan));
  });
});

describe("host keys, through the plan command (real sshd)", () => {
  it("an unknown host key is refused: exit 2, one line, no plan", async () => {
    const file = await knownHosts(fixture, "# nothing on record\n");
    const line = await planFails(
      fixture,
      await writeInventory(fixture, { ssh: sshd }, { knownHostsFile: file }),
    );
    expect(line).toMatch(
      new RegExp(
        `^guidup plan: host key for \\[127\\.0\\.0\\.1\\]:${sshd.port} is not in ${file} \\(ssh-ed25519 SHA256:.+\\); add it with ssh-keyscan or run with --accept-new-host-keys$`,
      ),
    );
    expect(await readFile(file, "utf8")).toBe("# nothing on record\n");
  });

  it("a changed host key is refused, even with --accept-new-host-keys", async () => {
    const other = generateEd25519KeyPair();
    const file = await knownHosts(
      fixture,
      `[127.0.0.1]:${sshd.port} ssh-ed25519 ${other.publicBlob.toString("base64")}\n`,
    );
    const inventory = await writeInventory(fixture, { ssh: sshd }, { knownHostsFile: file });
    for (const extra of [[], ["--accept-new-host-keys"]]) {
      const dir = await outDir(fixture);
      const r = await runCli([
        "plan",
        "--inventory",
        inventory,
        "--out",
        path.join(dir, "plan.yaml"),
        ...extra,
      ]);
      expect(r.code).toBe(2);
      const lines = errorLines(r.err);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        new RegExp(
          `^guidup plan: HOST KEY FOR \\[127\\.0\\.0\\.1\\]:${sshd.port} HAS CHANGED .* line 1 has another\\) — possible man-in-the-middle`,
        ),
      );
      expect(readdirSync(dir)).toEqual([]);
    }
  });

  it("a hashed known_hosts entry (ssh-keygen -H) is accepted", async () => {
    const file = await knownHosts(fixture, `${sshd.hostKeyLine}\n`);
    execFileSync("ssh-keygen", ["-H", "-f", file], { stdio: "ignore" });
    const text = await readFile(file, "utf8");
    expect(text).toMatch(/^\|1\|[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+ ssh-ed25519 /);
    expect(text).not.toContain("127.0.0.1");
    const { plan } = await planOk(
      fixture,
      await writeInventory(fixture, { ssh: sshd }, { knownHostsFile: file }),
    );
    expect(plan.mailboxes.length).toBe(7);
  });

  it("--accept-new-host-keys records the key, and the plan does not carry the option", async () => {
    const file = path.join(fixture.dir, `fresh-${++counter}`, "known_hosts");
    const inventory = await writeInventory(fixture, { ssh: sshd }, { knownHostsFile: file });
    const { plan, text } = await planOk(fixture, inventory, ["--accept-new-host-keys"]);
    const recorded = (await readFile(file, "utf8")).split("\n").filter((l) => l !== "");
    // Master and replica are the same sshd: one entry, the key sshd really has.
    expect(recorded).toEqual([sshd.hostKeyLine]);
    expect(text).not.toContain("acceptNewHostKeys");
    expect(plan.hosts.master).not.toHaveProperty("acceptNewHostKeys");
    expect(plan.hosts.replica).not.toHaveProperty("acceptNewHostKeys");
    // Now on record: a plain run works.
    await planOk(fixture, inventory);
  });

  it("the in-process ssh2 server's key is checked the same way (unknown → refused)", async () => {
    const file = await knownHosts(generated, "");
    const line = await planFails(
      generated,
      await writeInventory(generated, { ssh: ssh2Target }, { knownHostsFile: file }),
    );
    expect(line).toMatch(/^guidup plan: host key for \[127\.0\.0\.1\]:\d+ is not in /);
  });
});

describe("bad input: one clear line, exit 2, no plan written", () => {
  it("an unreachable host (closed port)", async () => {
    const port = await closedPort();
    const line = await planFails(fixture, await writeInventory(fixture, { ssh: sshd }, { port }));
    expect(line).toBe(
      `guidup plan: cannot reach master (127.0.0.1:${port}): connection refused (is sshd running on that port?)`,
    );
  });

  it("one side unreachable, as a real process: it exits (the other side's connection is closed)", async () => {
    const port = await closedPort();
    const inventory = path.join(fixture.dir, `inventory-half-${++counter}.yaml`);
    const good = await writeInventory(fixture, { ssh: sshd });
    // The replica on a closed port, the master on the live sshd.
    const text = (await readFile(good, "utf8")).split("\n");
    const replicaAt = text.indexOf("    replica:");
    const patched = text.map((l, i) =>
      i > replicaAt && l.startsWith("      port: ") ? `      port: ${port}` : l,
    );
    await writeFile(inventory, patched.join("\n"));
    const dir = await outDir(fixture);
    const r = await runCliProcess(
      ["plan", "--inventory", inventory, "--out", path.join(dir, "plan.yaml")],
      { timeoutMs: 20_000 },
    );
    expect(r.code).toBe(2);
    expect(errorLines(r.err)).toEqual([
      `guidup plan: cannot reach replica (127.0.0.1:${port}): connection refused (is sshd running on that port?)`,
    ]);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("a wrong agent command", async () => {
    const line = await planFails(
      fixture,
      await writeInventory(fixture, { ssh: sshd }, { command: "/nonexistent/guidup serve" }),
    );
    expect(line).toMatch(
      /^guidup plan: (master|replica): the agent ended before saying hello \(the agent `\/nonexistent\/guidup serve --config '[^']+'` on (master|replica) \(127\.0\.0\.1:\d+\) exited unexpectedly with code 127 \(command not found\? check the agent command\); last stderr line: .*\/nonexistent\/guidup: (not found|No such file or directory)\); is guidup installed there and is the command right\? \(guidup agent install --inventory FILE puts it there\)$/,
    );
  });

  it("a host without the imapd.conf", async () => {
    const missing = path.join(fixture.dir, "no-such-dir", "imapd.conf");
    const line = await planFails(
      fixture,
      await writeInventory(fixture, { ssh: sshd }, { config: { replica: missing } }),
    );
    expect(line).toMatch(/^guidup plan: replica: the agent ended before saying hello \(/);
    // The agent's own words, once, and no "is guidup installed?": it is.
    expect(line).toContain(
      `exited unexpectedly with code 2; last stderr line: guidup serve: cannot read Cyrus config ${missing}: ENOENT: no such file or directory, open '${missing}')`,
    );
    expect(line.split("cannot read Cyrus config")).toHaveLength(2);
    expect(line).not.toContain("is guidup installed");
  });

  it("a schema error in the inventory", async () => {
    const good = await writeInventory(fixture, { ssh: sshd });
    const bad = path.join(fixture.dir, `inventory-bad-${++counter}.yaml`);
    await writeFile(bad, (await readFile(good, "utf8")).replace(/port: \d+/, "port: seventy"));
    const line = await planFails(fixture, bad);
    expect(line).toBe(
      `guidup plan: ${bad}:6:13: pairs[0].master.port: must be integer, got "seventy"`,
    );
  });

  it("a schema error in a plan read back (show)", async () => {
    const { file } = await planOk(fixture, await writeInventory(fixture, { ssh: sshd }));
    const text = await readFile(file, "utf8");
    const bad = path.join(path.dirname(file), "bad.yaml");
    await writeFile(
      bad,
      text.replace('  - { "name": "user.alice", ', '  - { "nme": "user.alice", '),
    );
    const r = await runCli(["show", bad]);
    expect(r.code).toBe(2);
    const lines = r.err.split("\n").filter((l) => l !== "");
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines[0]).toMatch(/^guidup show: .*bad\.yaml:\d+:\d+: mailboxes\[0\]/);
  });
});
