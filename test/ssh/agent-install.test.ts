// guidup agent install over a real sshd onto a fresh "host": a new directory
// tree with no guidup in it and no node_modules above it, reached over SSH
// and SFTP. Then plan → apply → verify run through the installed agent only
// (the inventory's command points into the installed bundle), with the same
// exactness checks as every other end-to-end test.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { HostSpec } from "../../src/host-spec.js";
import { TOOL_VERSION } from "../../src/version.js";
import {
  endToEnd,
  fixturePair,
  type SshTarget,
  sshHost,
  type TestPair,
  writeInventory,
} from "../helpers/apply-harness.js";
import { runCli } from "../helpers/pair-fixtures.js";
import { type SshdHandle, startSshd } from "../helpers/sshd.js";

let sshd: SshdHandle;
let target: SshTarget;
let pair: TestPair;
let hostRoot: string;

beforeAll(async () => {
  [sshd, pair] = await Promise.all([startSshd(), fixturePair("08")]);
  target = {
    port: sshd.port,
    user: sshd.user,
    identityFile: sshd.clientKeyPath,
    knownHostsFile: sshd.knownHostsPath,
  };
  hostRoot = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-fresh-host-"));
});

afterAll(async () => {
  await pair?.cleanup();
  await sshd?.stop();
  if (hostRoot) fs.rmSync(hostRoot, { recursive: true, force: true });
});

describe("guidup agent install", () => {
  it("installs a verified, self-contained agent, and plan and apply run through it", async () => {
    const dir = path.join(hostRoot, ".guidup", "agent");
    const installed = path.join(dir, TOOL_VERSION);
    const hosts = {
      master: sshHost(pair, "master", target),
      replica: sshHost(pair, "replica", target),
    };
    const inventory = await writeInventory(pair, path.join(pair.dir, "install.yaml"), hosts);
    const args = [
      "agent",
      "install",
      "--inventory",
      inventory,
      "--dir",
      dir,
      "--node",
      process.execPath,
    ];

    const first = await runCli(args);
    expect(first.err).toBe("");
    expect(first.code).toBe(0);
    const lines = first.out.trim().split("\n");
    // Master and replica are one machine and login: one install, two forced commands.
    const command = `${process.execPath} ${installed}/dist/src/cli/main.js serve`;
    expect(lines).toEqual([
      expect.stringMatching(
        new RegExp(
          `^master \\(127\\.0\\.0\\.1\\): guidup ${TOOL_VERSION} installed, \\d+ files, SHA-256 verified in ${installed} \\(linux-x64, Node\\.js v\\d+\\.\\d+\\.\\d+ at ${process.execPath}\\)$`,
        ),
      ),
      `  inventory command: ${JSON.stringify(command)}`,
      `  authorized_keys:   command="${command} --config ${pair.master.imapdConf}",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding ${fs.readFileSync(`${sshd.clientKeyPath}.pub`, "utf8").trim()}`,
      expect.stringMatching(
        /^ {2}authorized_keys: {3}command=".* --config .*replica.*",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding ssh-ed25519 /,
      ),
    ]);
    // What is there: the bundle and its manifest; koffi's prebuilt binary, no C sources.
    const manifest = fs.readFileSync(path.join(installed, "MANIFEST.sha256"), "utf8");
    expect(manifest).toMatch(
      /^[0-9a-f]{64} {2}node_modules\/@koromix\/koffi-linux-x64\/linux_x64\/koffi\.node$/m,
    );
    expect(manifest).not.toMatch(/\.cc$/m);
    expect(JSON.parse(fs.readFileSync(path.join(installed, "package.json"), "utf8")).version).toBe(
      TOOL_VERSION,
    );
    expect(fs.readdirSync(dir)).toEqual([TOOL_VERSION]);

    // Again: nothing copied, the files checked against the manifest.
    const again = await runCli(args);
    expect(again.code).toBe(0);
    expect(again.out).toMatch(/: guidup \S+ already installed, \d+ files verified in /);

    // A damaged file is found and the bundle installed afresh.
    fs.appendFileSync(path.join(installed, "dist", "src", "agent", "serve.js"), "\n// damaged\n");
    const repaired = await runCli(args);
    expect(repaired.out).toMatch(/: guidup \S+ installed, \d+ files, SHA-256 verified in /);
    expect(
      fs.readFileSync(path.join(installed, "dist", "src", "agent", "serve.js"), "utf8"),
    ).not.toContain("damaged");

    // plan → apply → verify through the installed agent.
    const through = (side: "master" | "replica"): HostSpec => {
      const spec = hosts[side];
      if (spec.transport === "local") throw new Error("an ssh host was expected");
      return { ...spec, command };
    };
    await endToEnd(pair, { master: through("master"), replica: through("replica") });

    // The printed authorized_keys line works as it stands: with only it in
    // authorized_keys, sshd starts the installed agent whatever command the
    // controller asks for, and check finds the master fit through it.
    const masterLine = lines[2]?.replace(/^ {2}authorized_keys: {3}/, "") ?? "";
    fs.writeFileSync(path.join(sshd.dir, "authorized_keys"), `${masterLine}\n`);
    const restricted = await writeInventory(pair, path.join(pair.dir, "restricted.yaml"), {
      master: { ...through("master"), command: "never run: the forced command wins" } as HostSpec,
      replica: { transport: "local", name: "replica", config: pair.replica.imapdConf },
    });
    const checked = await runCli(["check", "--inventory", restricted]);
    expect(checked.out).toMatch(
      new RegExp(
        `^ok   t master master \\(127\\.0\\.0\\.1:${sshd.port}\\): guidup ${TOOL_VERSION}, `,
        "m",
      ),
    );
    expect(checked.code, checked.out).toBe(0);
  });
});
