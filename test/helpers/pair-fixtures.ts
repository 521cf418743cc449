// Master/replica pairs for plan (and apply) tests, inventories that reach
// them locally or over SSH, and the CLI run in-process or as a process.
//
//   makeFixturePair("09")     a copy of the real-Cyrus fixture tree
//                             ../shared/fixtures/cyrus-3.6/v09 as master and as
//                             replica, each with its own imapd.conf
//   makeGeneratedPair(opts)   src/spoolgen/spool-generator.ts's generateSpool
//   writeInventory(pair, …)   an inventory.yaml for the pair: transport local,
//                             or SSH to a test sshd (startSshd) or ssh2 server
//   runCli(argv)              guidup's main() in this process, output captured
//   runCliProcess(argv)       `node dist/src/cli/main.js …` as a child process
//   planContent(plan)         a plan without id, created and hosts, to compare
//
// Both kinds of pair have the same shape (PairFixture), so the spool
// generator's appendMessage / replaceMessageFile / removeMailbox work on
// either side of either kind.

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Io } from "../../src/cli/io.js";
import { main } from "../../src/cli/main.js";
import type { Plan } from "../../src/plan/model.js";
import { readPlan } from "../../src/plan/plan-file.js";
import {
  type GeneratedHost,
  type GeneratedMailbox,
  type GenerateOptions,
  generateSpool,
} from "../../src/spoolgen/spool-generator.js";
import { shellQuote } from "../../src/transport/ssh.js";
import { type FixtureVersion, fixtureMailboxes, fixturesDir, REPO_ROOT } from "./fixtures.js";

/** dist/src/cli/main.js: what agents run (build first: npx tsc -p tsconfig.json). */
export const DIST_MAIN: string = path.join(REPO_ROOT, "dist", "src", "cli", "main.js");

/**
 * The agent command for an SSH inventory: absolute node and main.js, as the
 * sshd session's PATH need not hold node. Shell-quoted: the remote side runs
 * it through the login shell.
 */
export const SSH_AGENT_COMMAND = `${shellQuote(process.execPath)} ${shellQuote(DIST_MAIN)} serve`;

export interface PairFixture {
  /** Temp root holding master/, replica/ and the mailbox list files; removed by cleanup(). */
  dir: string;
  master: GeneratedHost;
  replica: GeneratedHost;
  /** Every mailbox name of the pair, sorted by code unit (= byte order for these names). */
  names: string[];
  /** One name per line. */
  plainList: string;
  /** `ctl_mboxlist -d` form (name TAB mbtype partition acl), so entries carry partition "default". */
  mailboxList: string;
  /** For a generated pair: what the generator wrote, per mailbox, sorted by name. */
  generated?: GeneratedMailbox[];
  cleanup(): Promise<void>;
}

async function tempRoot(prefix: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The imapd.conf of one side of a fixture pair (the fixtures' own layout: hashed, no fulldirhash). */
function fixtureImapdConf(root: string): string {
  return [
    "# guidup test: one side of a copied cyrus-3.6 fixture tree",
    `configdirectory: ${path.join(root, "config")}`,
    "defaultpartition: default",
    `partition-default: ${path.join(root, "spool")}`,
    "hashimapspool: yes",
    "fulldirhash: no",
    "unixhierarchysep: no",
    "virtdomains: off",
    "",
  ].join("\n");
}

async function writeLists(
  dir: string,
  names: readonly string[],
): Promise<{ plainList: string; mailboxList: string }> {
  const plainList = path.join(dir, "mailboxes.txt");
  const mailboxList = path.join(dir, "mailboxes.dump");
  await writeFile(plainList, names.map((n) => `${n}\n`).join(""));
  await writeFile(mailboxList, names.map((n) => `${n}\t0 default anyone\tlrs\t\n`).join(""));
  return { plainList, mailboxList };
}

/**
 * The fixture tree of one index version (`vNN/spool`), copied twice: master
 * and replica with identical content. Each side gets an imapd.conf
 * (partition-default = its spool, hashimapspool yes, fulldirhash no, its own
 * configdirectory); the lists hold the names of `vNN/mailboxes.txt`.
 */
export async function makeFixturePair(version: FixtureVersion): Promise<PairFixture> {
  const source = path.join(fixturesDir(), `v${version}`, "spool");
  const dir = await tempRoot(`guidup-fixture-v${version}-`);
  const host = async (side: "master" | "replica"): Promise<GeneratedHost> => {
    const root = path.join(dir, side);
    const partitionRoot = path.join(root, "spool");
    await mkdir(path.join(root, "config"), { recursive: true });
    // A real copy (cp follows no links and keeps none): the fixtures are hard
    // links shared by all versions and must never change.
    await cp(source, partitionRoot, { recursive: true });
    const imapdConf = path.join(root, "imapd.conf");
    await writeFile(imapdConf, fixtureImapdConf(root));
    return { root, imapdConf, partitionRoot };
  };
  const [master, replica] = [await host("master"), await host("replica")];
  const names = fixtureMailboxes(version)
    .map((m) => m.name)
    .sort(byCodeUnit);
  return {
    dir,
    master,
    replica,
    names,
    ...(await writeLists(dir, names)),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** generateSpool into a fresh temp dir (pair: true). */
export async function makeGeneratedPair(
  opts: Omit<GenerateOptions, "dir" | "pair"> = {},
): Promise<PairFixture> {
  const dir = await tempRoot("guidup-generated-");
  const spool = await generateSpool({ ...opts, dir, pair: true });
  if (spool.replica === undefined) throw new Error("generateSpool wrote no replica");
  return {
    dir,
    master: spool.master,
    replica: spool.replica,
    names: spool.mailboxes.map((m) => m.name),
    plainList: spool.plainList,
    mailboxList: spool.mailboxList,
    generated: spool.mailboxes,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** What an SSH inventory needs of a test server: startSshd()'s handle fits, so does an ssh2 test server plus a known_hosts file. */
export interface SshTarget {
  port: number;
  clientKeyPath: string;
  /** Default: the user running the tests (sshd logs in as them; the ssh2 server takes anyone). */
  user?: string;
  /** known_hosts holding the server's key; writeInventory's knownHostsFile option overrides it. */
  knownHostsPath?: string;
}

/** The inventory's `mailboxes:` entry. */
export type MailboxesSpec = { file: string } | { command: string } | { discover: true };

export interface InventoryOptions {
  /** Pair name; default "slot1". */
  name?: string;
  /** Default { file: pair.mailboxList }. */
  mailboxes?: MailboxesSpec;
  /** Where to write it; default <pair.dir>/inventory-<n>.yaml. */
  file?: string;
  /** SSH only: known_hosts file (default the target's knownHostsPath). */
  knownHostsFile?: string;
  /** SSH only: the agent command (default SSH_AGENT_COMMAND). */
  command?: string;
  /** SSH only: the host to connect to (default 127.0.0.1). */
  host?: string;
  /** SSH only: the port (default the target's). */
  port?: number;
  /** Per side: the imapd.conf path to give (default the side's imapdConf). */
  config?: { master?: string; replica?: string };
}

export type InventoryTransport = { transport: "local" } | { ssh: SshTarget };

let inventoryCounter = 0;

/** YAML of one value: JSON is YAML, and quotes every string safely. */
function y(value: unknown): string {
  return JSON.stringify(value);
}

/** Writes an inventory for the pair and returns its path. */
export async function writeInventory(
  pair: PairFixture,
  how: InventoryTransport,
  opts: InventoryOptions = {},
): Promise<string> {
  const file = opts.file ?? path.join(pair.dir, `inventory-${++inventoryCounter}.yaml`);
  const mailboxes = opts.mailboxes ?? { file: pair.mailboxList };
  const hostLines = (side: "master" | "replica"): string[] => {
    const config = opts.config?.[side] ?? pair[side].imapdConf;
    if ("transport" in how) {
      return [
        `    ${side}:`,
        "      transport: local",
        `      name: ${side}`,
        `      config: ${y(config)}`,
      ];
    }
    const ssh = how.ssh;
    const knownHosts = opts.knownHostsFile ?? ssh.knownHostsPath;
    if (knownHosts === undefined)
      throw new Error("writeInventory: an SSH target needs a knownHostsPath or knownHostsFile");
    return [
      `    ${side}:`,
      `      host: ${y(opts.host ?? "127.0.0.1")}`,
      `      port: ${opts.port ?? ssh.port}`,
      `      user: ${y(ssh.user ?? process.env.USER ?? "root")}`,
      `      identityFile: ${y(ssh.clientKeyPath)}`,
      `      knownHostsFile: ${y(knownHosts)}`,
      `      command: ${y(opts.command ?? SSH_AGENT_COMMAND)}`,
      `      config: ${y(config)}`,
      `      name: ${side}`,
    ];
  };
  const text = [
    "pairs:",
    `  - name: ${y(opts.name ?? "slot1")}`,
    `    mailboxes: ${y(mailboxes)}`,
    ...hostLines("master"),
    ...hostLines("replica"),
    "",
  ].join("\n");
  await writeFile(file, text);
  return file;
}

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** guidup's main() in this process, with stdout and stderr captured (isTTY false: plain progress). */
export async function runCli(argv: string[]): Promise<CliResult> {
  let out = "";
  let err = "";
  const io: Io = {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    isTTY: false,
    drained: () => Promise.resolve(),
  };
  const code = await main(argv, io);
  return { code, out, err };
}

export interface ChildCli {
  child: ChildProcess;
  done: Promise<CliResult & { signal: NodeJS.Signals | null }>;
}

/** `node dist/src/cli/main.js ARGV` as a child process (signals to the controller, real exit codes). */
export function spawnCli(argv: string[], opts: { cwd?: string } = {}): ChildCli {
  if (!existsSync(DIST_MAIN))
    throw new Error(`${DIST_MAIN} is missing: build first (npx tsc -p tsconfig.json)`);
  const child = spawn(process.execPath, [DIST_MAIN, ...argv], {
    cwd: opts.cwd ?? process.cwd(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const done = new Promise<CliResult & { signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code: code ?? -1, signal, out, err })),
  );
  return { child, done };
}

/**
 * `node dist/src/cli/main.js …` run to its end: the real exit code, and
 * proof that nothing (a leaked connection, a stray agent) keeps it alive.
 * Rejects (after SIGKILL) if it is still running after timeoutMs.
 */
export async function runCliProcess(
  argv: string[],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const { child, done } = spawnCli(argv, opts);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const r = await done;
  clearTimeout(timer);
  if (timedOut)
    throw new Error(
      `guidup ${argv.join(" ")} did not exit within ${timeoutMs} ms; stderr:\n${r.err}`,
    );
  return { code: r.code, out: r.out, err: r.err };
}

/** Progress lines of the plain (non-TTY) renderer: "<UTC time> plan <pair>: connecting" and the like. */
export function isProgressLine(line: string): boolean {
  return /^(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ )?plan [A-Za-z0-9._-]+: (connecting|listing mailboxes|scanned )/.test(
    line,
  );
}

/** stderr without the progress lines, as non-empty lines. */
export function errorLines(err: string): string[] {
  return err.split("\n").filter((l) => l.trim() !== "" && !isProgressLine(l));
}

/** What two plans of the same spools must agree on: the plan without id, created and hosts. */
export type PlanContent = Omit<Plan, "id" | "created" | "hosts">;

/** A plan (or plan file) without id, created and hosts. */
export async function planContent(plan: Plan | string): Promise<PlanContent> {
  const p = typeof plan === "string" ? await readPlan(plan) : plan;
  const { id: _id, created: _created, hosts: _hosts, ...rest } = p;
  return rest;
}

/** A plan file's text without its id and created lines (the only lines that may differ between two runs). */
export async function planTextWithoutIdAndTime(file: string): Promise<string> {
  const text = await readFile(file, "utf8");
  return text
    .split("\n")
    .filter((l) => !/^(id|created): /.test(l))
    .join("\n");
}

/**
 * Expected actions of a generated mailbox planned to version 10: `version`
 * unless it is at 10 already, `guid` when any record of index or expunge has
 * an old-style (all-zero or padded) GUID. Empty = up to date.
 */
export function expectedActions(m: GeneratedMailbox, target = 10): ("version" | "guid")[] {
  const actions: ("version" | "guid")[] = [];
  if (m.minor !== target) actions.push("version");
  // Below v10 an upgrade to 10 plans GUIDs even for an empty mailbox: mail
  // appended before apply arrives with old-style GUIDs.
  if (target === 10 && (m.guidKinds.null + m.guidKinds.padded > 0 || m.minor < 10))
    actions.push("guid");
  return actions;
}
