// Helpers for the apply tests (test/apply, test/fault/apply-matrix.test.ts):
// real master/replica spool pairs (generated 2.3 spools or copies of the real
// Cyrus 3.6 fixtures), inventories (local, through test/helpers/fault-proxy.mjs,
// or over a real sshd), the CLI run in-process or as a child process, and the
// invariant every test checks: per mailbox and host, cyrus.index and
// cyrus.expunge are either byte-identical to their copies from before apply
// or exactly the correct v10 upgrade of them — GUIDs the SHA1 of the message
// files, every other byte what the version change alone implies — never a mix.

import { createHash } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { cp, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { expect } from "vitest";
import { stringify } from "yaml";
import { ATTENTION_PHASES } from "../../src/apply/state.js";
import { convertIndex } from "../../src/cyrus/convert.js";
import { formatFor } from "../../src/cyrus/formats/index.js";
import { isOldStyleGuid } from "../../src/cyrus/guid.js";
import { readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { IndexReader } from "../../src/cyrus/index-file.js";
import { mailboxDataDir } from "../../src/cyrus/mailbox-path.js";
import type { HostSpec } from "../../src/host-spec.js";
import { cyrusCheckAvailable, runCyrusGuidCheck } from "../../src/spoolgen/cyrus-check.js";
import {
  type GeneratedMailbox,
  type GenerateOptions,
  generateSpool,
} from "../../src/spoolgen/spool-generator.js";
import { ensureCyrusTools, imapdConfText, MAIN_JS } from "./agent-process.js";
import {
  type FixtureVersion,
  fixtureMailboxes,
  fixturesDir,
  makeTempDir,
  REPO_ROOT,
} from "./fixtures.js";

export const FAULT_PROXY = path.join(REPO_ROOT, "test", "helpers", "fault-proxy.mjs");
export type Side = "master" | "replica";
export const SIDES: readonly Side[] = ["master", "replica"];

export interface PairHost {
  root: string;
  imapdConf: string;
  partitionRoot: string;
}

export interface TestPair {
  dir: string;
  master: PairHost;
  replica: PairHost;
  /** A mailbox list file for the inventory (dump or plain names). */
  mailboxList: string;
  names: string[];
  /** What the generator made (generated pairs only). */
  generated?: GeneratedMailbox[];
  /** A mailbox's directory (data = meta here) on one side. */
  mailboxDir(side: Side, name: string): string;
  cleanup(): Promise<void>;
}

function requireBuild(): void {
  if (!existsSync(MAIN_JS))
    throw new Error(`${MAIN_JS} is missing: build first (npx tsc -p tsconfig.json)`);
}

async function dirResolver(pair: Pick<TestPair, "master" | "replica">) {
  const confs = {
    master: await readImapdConf(pair.master.imapdConf),
    replica: await readImapdConf(pair.replica.imapdConf),
  };
  return (side: Side, name: string) =>
    mailboxDataDir(confs[side], name, confs[side].defaultPartition);
}

/** A generated 2.3 master/replica pair (identical content) in a temp dir. */
export async function generatedPair(
  options: Omit<GenerateOptions, "dir" | "pair">,
): Promise<TestPair> {
  requireBuild();
  const { dir, cleanup } = await makeTempDir("guidup-apply-");
  const g = await generateSpool({ ...options, dir, pair: true });
  if (!g.replica) throw new Error("generateSpool made no replica");
  const pair = { master: g.master, replica: g.replica };
  return {
    dir,
    ...pair,
    mailboxList: g.mailboxList,
    names: g.mailboxes.map((m) => m.name),
    generated: g.mailboxes,
    mailboxDir: await dirResolver(pair),
    cleanup,
  };
}

/** Two copies (master, replica) of the real Cyrus 3.6 fixtures at one version. */
export async function fixturePair(version: FixtureVersion): Promise<TestPair> {
  requireBuild();
  const { dir, cleanup } = await makeTempDir(`guidup-apply-v${version}-`);
  const hosts = {} as Record<Side, PairHost>;
  for (const side of SIDES) {
    const root = path.join(dir, side);
    const partitionRoot = path.join(root, "spool");
    const confDir = path.join(root, "config");
    await mkdir(confDir, { recursive: true });
    // The fixtures are read-only hard links: copy, never link.
    await cp(path.join(fixturesDir(), `v${version}`, "spool"), partitionRoot, {
      recursive: true,
      dereference: true,
    });
    await chmodTree(partitionRoot);
    const imapdConf = path.join(root, "imapd.conf");
    await writeFile(imapdConf, imapdConfText(partitionRoot, confDir));
    hosts[side] = { root, imapdConf, partitionRoot };
  }
  const names = fixtureMailboxes(version).map((m) => m.name);
  const mailboxList = path.join(dir, "mailboxes.txt");
  await writeFile(mailboxList, `${names.join("\n")}\n`);
  return { dir, ...hosts, mailboxList, names, mailboxDir: await dirResolver(hosts), cleanup };
}

async function chmodTree(dir: string): Promise<void> {
  const { chmod } = await import("node:fs/promises");
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await chmodTree(p);
    else await chmod(p, 0o644);
  }
}

// ---- inventories ------------------------------------------------------------

/** argv of fault-proxy.mjs for one host (the controller appends --config X). */
export function proxyCommand(faultDir: string, fault?: string, hook?: string): string[] {
  return [
    process.execPath,
    FAULT_PROXY,
    "--fault-dir",
    faultDir,
    ...(fault ? ["--fault", fault] : []),
    ...(hook ? ["--fault-hook", hook] : []),
  ];
}

export interface SshTarget {
  port: number;
  user: string;
  identityFile: string;
  knownHostsFile: string;
}

export function localHost(pair: TestPair, side: Side, command?: string[]): HostSpec {
  return {
    transport: "local",
    name: side,
    config: pair[side].imapdConf,
    ...(command ? { command } : {}),
  };
}

export function sshHost(pair: TestPair, side: Side, ssh: SshTarget): HostSpec {
  return {
    transport: "ssh",
    host: "127.0.0.1",
    port: ssh.port,
    user: ssh.user,
    identityFile: ssh.identityFile,
    knownHostsFile: ssh.knownHostsFile,
    name: side,
    // The login shell runs this verbatim: this Node, this build.
    command: `${shellQuote(process.execPath)} ${shellQuote(MAIN_JS)} serve`,
    config: pair[side].imapdConf,
  };
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Writes a one-pair inventory and returns its path. */
export async function writeInventory(
  pair: TestPair,
  file: string,
  hosts: { master: HostSpec; replica: HostSpec },
  name = "t",
): Promise<string> {
  await writeFile(
    file,
    stringify({ pairs: [{ name, mailboxes: { file: pair.mailboxList }, ...hosts }] }),
  );
  return file;
}

/** A fresh fault directory per host (the proxy's counters and markers). */
export async function faultDirs(base: string): Promise<Record<Side, string>> {
  const out = {} as Record<Side, string>;
  for (const side of SIDES) {
    out[side] = path.join(base, `fault-${side}`);
    await rm(out[side], { recursive: true, force: true });
    await mkdir(out[side], { recursive: true });
  }
  return out;
}

/** DIR/fired of a fault proxy, parsed (undefined: the fault did not fire). */
export function firedFault(
  faultDir: string,
): { op: string; action: string; mailbox?: string } | undefined {
  const p = path.join(faultDir, "fired");
  return existsSync(p) ? JSON.parse(readFileSync(p, "utf8")) : undefined;
}

/** Waits until every real agent a proxy started has exited (or is a zombie). */
export async function waitAgentsGone(faultDir: string, timeoutMs = 15_000): Promise<void> {
  const file = path.join(faultDir, "agents");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = existsSync(file)
      ? readFileSync(file, "utf8").split("\n").filter(Boolean).map(Number)
      : [];
    const alive = pids.filter(isAlive);
    if (alive.length === 0) return;
    if (Date.now() > deadline) throw new Error(`agents still running: ${alive.join(", ")}`);
    await sleep(50);
  }
}

function isAlive(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return !/^State:\s+Z/m.test(status);
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- running the CLI ----------------------------------------------------------

import { type ChildCli, type CliResult, runCli, spawnCli } from "./pair-fixtures.js";

export { type ChildCli, type CliResult, runCli, spawnCli };

/** Like runCli, but fails the test with the output when the exit code is not `want`. */
export async function cli(argv: string[], want: number): Promise<CliResult> {
  const r = await runCli(argv);
  if (r.code !== want)
    throw new Error(
      `guidup ${argv.join(" ")}: exit ${r.code}, expected ${want}\n--- stdout\n${r.out}\n--- stderr\n${r.err}`,
    );
  return r;
}

export async function waitForFile(file: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${timeoutMs} ms`);
    await sleep(20);
  }
}

export interface StatusJson {
  counts: Record<string, number>;
  mailboxes: { name: string; phase: string; step?: string; error?: string; attempts: number }[];
}

/** status --json; its exit code (0, or 3/4 when mailboxes need a person) is checked against the counts. */
export async function statusOf(plan: string): Promise<StatusJson> {
  const r = await runCli(["status", plan, "--json"]);
  const status = JSON.parse(r.out) as StatusJson;
  const c = status.counts;
  const want =
    (c["replica-ahead"] ?? 0) > 0 ? 3 : [...ATTENTION_PHASES].some((p) => (c[p] ?? 0) > 0) ? 4 : 0;
  if (r.code !== want)
    throw new Error(`guidup status ${plan} --json: exit ${r.code}, expected ${want}\n${r.err}`);
  return status;
}

/** The state file of one mailbox (src/apply/state-store.ts layout). */
export async function stateOf(
  plan: string,
  name: string,
): Promise<Record<string, unknown> | undefined> {
  const h = createHash("sha1").update(name).digest("hex");
  const p = path.join(`${plan}.state`, h.slice(0, 2), `${h}.json`);
  return existsSync(p) ? JSON.parse(await readFile(p, "utf8")) : undefined;
}

export async function planMailboxes(plan: string): Promise<string[]> {
  const { parse } = await import("yaml");
  const doc = parse(await readFile(plan, "utf8")) as { mailboxes: { name: string }[] };
  return doc.mailboxes.map((m) => m.name);
}

/** What most apply and CLI tests generate: one small version-9 pair, no expunge, no large mailbox. */
const SMALL_PAIR = {
  mailboxes: 6,
  versions: [9],
  largeMailboxes: 0,
  expungeFraction: 0,
  messagesPerMailbox: [1, 3],
  messageBytes: [300, 900],
} as const satisfies Omit<GenerateOptions, "dir" | "pair">;

/** A generated pair of SMALL_PAIR (with `generate` over it); `keep` collects it for the file's cleanup. */
export async function smallPair(
  generate: Omit<GenerateOptions, "dir" | "pair"> & { seed: number },
  keep?: TestPair[],
): Promise<TestPair> {
  const pair = await generatedPair({ ...SMALL_PAIR, ...generate });
  keep?.push(pair);
  return pair;
}

export interface PlannedPair {
  pair: TestPair;
  /** <pair.dir>/inventory.yaml: both hosts local. */
  inventory: string;
  /** <pair.dir>/plan.yaml, written by guidup plan (exit 0); absent with { plan: false }. */
  plan: string;
  /** The plan's mailbox names ([] with { plan: false }). */
  planned: string[];
}

/**
 * The set-up of most apply and CLI tests: generate a pair (SMALL_PAIR, with
 * `generate` over it), write a local inventory, run guidup plan. `hosts`
 * gives a side another agent command (fault-proxy.mjs); `keep` collects the
 * pair for the file's afterAll cleanup.
 */
export async function plannedLocalPair(
  generate: Omit<GenerateOptions, "dir" | "pair"> & { seed: number },
  opts: {
    keep?: TestPair[];
    hosts?: Partial<Record<Side, string[]>>;
    plan?: boolean;
  } = {},
): Promise<PlannedPair> {
  const pair = await smallPair(generate, opts.keep);
  const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
    master: localHost(pair, "master", opts.hosts?.master),
    replica: localHost(pair, "replica", opts.hosts?.replica),
  });
  const plan = path.join(pair.dir, "plan.yaml");
  if (opts.plan === false) return { pair, inventory, plan, planned: [] };
  await cli(["plan", "--inventory", inventory, "--out", plan], 0);
  return { pair, inventory, plan, planned: await planMailboxes(plan) };
}

export interface PlannedFleet {
  /** <first pair's dir>/fleet.yaml: one inventory, a pair per name. */
  inventory: string;
  /** The plan of each pair, in the order of the names (written by one guidup plan). */
  plans: string[];
}

/**
 * A fleet's set-up: one inventory naming each pair (local hosts; `hosts(i)`
 * gives a side of pair i another agent command, e.g. fault-proxy.mjs), then
 * one `guidup plan --inventory` (exit 0), which writes a plan per pair into
 * plans/ beside the inventory, named after its pair.
 */
export async function planLocalFleet(
  pairs: readonly TestPair[],
  names: readonly string[],
  hosts?: (index: number) => Partial<Record<Side, string[]>> | undefined,
): Promise<PlannedFleet> {
  const dir = pairs[0]?.dir;
  if (!dir) throw new Error("planLocalFleet: no pairs");
  const inventory = path.join(dir, "fleet.yaml");
  await writeFile(
    inventory,
    stringify({
      pairs: pairs.map((pair, i) => ({
        name: names[i],
        mailboxes: { file: pair.mailboxList },
        master: localHost(pair, "master", hosts?.(i)?.master),
        replica: localHost(pair, "replica", hosts?.(i)?.replica),
      })),
    }),
  );
  await cli(["plan", "--inventory", inventory], 0);
  const files = await readdir(path.join(dir, "plans"));
  const plans = names.map((n) => {
    const f = files.find((x) => x.startsWith(`${n}-`) && x.endsWith(".yaml"));
    if (!f) throw new Error(`no plan for pair ${n} in ${files.join(", ")}`);
    return path.join(dir, "plans", f);
  });
  return { inventory, plans };
}

/** An agent command that holds a request until the test lets it go. */
export interface HeldAgent {
  /** The side's agent command for localHost: the agent behind fault-proxy.mjs, under setsid. */
  command: string[];
  /** Created when the nth request arrives (the agent is held from then on). */
  marker: string;
  /** Create it to let the request through. */
  release: string;
}

/**
 * A side whose agent holds its nth `op` request until `release` exists
 * (files in pair.dir). Under setsid, like an agent over SSH: a terminal's
 * SIGINT does not reach it.
 */
export async function heldAgent(
  pair: TestPair,
  side: Side,
  op: string,
  n: number,
): Promise<HeldAgent> {
  const dirs = await faultDirs(path.join(pair.dir, "faults"));
  const marker = path.join(pair.dir, "held");
  const release = path.join(pair.dir, "release");
  const command = [
    "setsid",
    process.execPath,
    FAULT_PROXY,
    "--fault-dir",
    dirs[side],
    "--fault",
    `request:${op}:${n}:hook`,
    "--fault-hook",
    `touch '${marker}'; while [ ! -e '${release}' ]; do sleep 0.05; done`,
  ];
  return { command, marker, release };
}

// ---- the invariant ------------------------------------------------------------

/** Copies of both sides' spools before apply, to compare against. */
export interface PairSnapshot {
  dir: string;
  pair: TestPair;
  /** Where a mailbox's directory is in the copy. */
  mailboxDir(side: Side, name: string): string;
}

export async function snapshotPair(pair: TestPair, dir: string): Promise<PairSnapshot> {
  await rm(dir, { recursive: true, force: true });
  for (const side of SIDES)
    await cp(pair[side].partitionRoot, path.join(dir, side), { recursive: true });
  return {
    dir,
    pair,
    mailboxDir: (side, name) =>
      path.join(dir, side, path.relative(pair[side].partitionRoot, pair.mailboxDir(side, name))),
  };
}

const V10 = formatFor(10)!;

/**
 * The correct v10 file for `file` (a copy from before apply): convertIndex
 * with every old-style GUID replaced by the SHA1 of `<uid>.` in `dataDir`.
 */
export async function expectedV10(
  file: string,
  kind: "index" | "expunge",
  dataDir: string,
): Promise<Buffer> {
  const reader = await IndexReader.open(file, { kind });
  const tmp = `${file}.expected-${process.pid}`;
  const fd = openSync(tmp, "w+");
  try {
    await convertIndex(reader, fd, {
      target: V10,
      guidFor: (r) =>
        isOldStyleGuid(r.sourceGuid)
          ? createHash("sha1")
              .update(readFileSync(path.join(dataDir, `${r.uid}.`)))
              .digest()
          : undefined,
    });
  } finally {
    closeSync(fd);
    await reader.close();
  }
  const out = await readFile(tmp);
  await rm(tmp);
  return out;
}

export type SideState = "old" | "new" | "both";

export interface MailboxFilesState {
  name: string;
  side: Side;
  state: SideState;
  leftovers: string[];
}

/**
 * Classifies every mailbox of `names` on each side: "old" (byte-identical to
 * the snapshot), "new" (exactly the expected v10 files), "both" (the two are
 * the same). Throws, naming the file, for anything else: a file that is
 * neither, or old and new files mixed within one mailbox.
 */
export async function classifyPair(
  snap: PairSnapshot,
  names: readonly string[],
): Promise<MailboxFilesState[]> {
  const out: MailboxFilesState[] = [];
  for (const name of names) {
    for (const side of SIDES) {
      const live = snap.pair.mailboxDir(side, name);
      const before = snap.mailboxDir(side, name);
      const states: { file: string; s: SideState }[] = [];
      for (const kind of ["index", "expunge"] as const) {
        const f = `cyrus.${kind}`;
        const beforeFile = path.join(before, f);
        if (!existsSync(beforeFile) || readFileSync(beforeFile).length === 0) continue;
        const cur = await readFile(path.join(live, f));
        const old = await readFile(beforeFile);
        const expected = await expectedV10(beforeFile, kind, before);
        const isOld = cur.equals(old);
        const isNew = cur.equals(expected);
        if (!isOld && !isNew)
          throw new Error(
            `${side} ${name} ${f}: neither the file from before apply nor its correct v10 upgrade`,
          );
        states.push({ file: f, s: isOld && isNew ? "both" : isOld ? "old" : "new" });
      }
      const strict = new Set(states.map((x) => x.s).filter((s) => s !== "both"));
      if (strict.size > 1)
        throw new Error(
          `${side} ${name}: MIXED old and new files: ${states.map((x) => `${x.file}=${x.s}`).join(", ")}`,
        );
      // Cyrus's .NEW names, and guidup's own temporary names (agent session.ts).
      const leftovers = (await readdir(live)).filter(
        (f) => f.endsWith(".NEW") || /\.guidup-\d+$/.test(f),
      );
      out.push({ name, side, state: [...strict][0] ?? "both", leftovers });
    }
  }
  return out;
}

/** After a converging run: every mailbox new (or already right) on both sides, no .NEW left. */
export async function expectAllNew(snap: PairSnapshot, names: readonly string[]): Promise<void> {
  const states = await classifyPair(snap, names);
  const bad = states.filter((s) => s.state === "old" || s.leftovers.length > 0);
  if (bad.length > 0)
    throw new Error(
      `not converged: ${bad.map((b) => `${b.side} ${b.name} ${b.state}${b.leftovers.length ? ` leftovers ${b.leftovers.join(",")}` : ""}`).join("; ")}`,
    );
}

/** Cyrus 3.6's own GUID check (reconstruct -n -G, mbexamine -c) on one host; throws unless it passes. */
export async function expectCyrusCheck(host: PairHost, label: string): Promise<void> {
  ensureCyrusTools();
  if (!cyrusCheckAvailable())
    throw new Error(
      "cyrus-check-guids.sh, the Cyrus 3.6 tools or root are missing: this test needs them and does not skip",
    );
  const r = await runCyrusGuidCheck({
    imapdConf: host.imapdConf,
    partitionRoot: host.partitionRoot,
  });
  if (r.code !== 0) throw new Error(`Cyrus check on ${label}: exit ${r.code}\n${r.output}`);
}

// ---- end to end ---------------------------------------------------------------

/**
 * Every file under both hosts' roots but the pair lock: content hash, inode
 * and mtime (what "writes nothing" means).
 */
export async function treeFacts(pair: TestPair): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string) => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      // The pair lock records each apply that takes it: guidup's, not mail.
      else if (e.name !== "guidup.lock") {
        const st = await stat(p);
        const h = createHash("sha1")
          .update(await readFile(p))
          .digest("hex");
        out[p] = `${h} ino=${st.ino} mtime=${st.mtimeMs} size=${st.size}`;
      }
    }
  };
  await walk(pair.master.root);
  await walk(pair.replica.root);
  return out;
}

/**
 * plan → apply → verify over `hosts`, with every check of the issue: all
 * files exactly their v10 upgrade, verify OK, Cyrus's own check on both
 * hosts, and a second apply (from state, then without state) that changes no
 * byte, inode or mtime.
 */
export async function endToEnd(pair: TestPair, hosts: { master: HostSpec; replica: HostSpec }) {
  const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), hosts);
  const plan = path.join(pair.dir, "plan.yaml");
  await cli(["plan", "--inventory", inventory, "--out", plan], 0);
  const planned = await planMailboxes(plan);
  expect(planned.length).toBeGreaterThan(0);
  const snap = await snapshotPair(pair, path.join(pair.dir, "before"));

  const applied = await cli(["apply", plan, "--concurrency", "3"], 0);
  expect(applied.out).toContain(`done ${planned.length}`);
  // Every mailbox (planned or not) is now exactly its correct v10 upgrade.
  await expectAllNew(snap, pair.names);
  const states = await classifyPair(snap, planned);
  expect(states.every((s) => s.state === "new")).toBe(true);
  expect((await statusOf(plan)).counts.done).toBe(planned.length);

  const verified = await cli(["verify", "--inventory", inventory], 0);
  expect(verified.out).toMatch(/: OK/);
  await expectCyrusCheck(pair.master, "master");
  await expectCyrusCheck(pair.replica, "replica");

  // A second apply of the same plan writes nothing: done mailboxes are skipped…
  const facts = await treeFacts(pair);
  const again = await cli(["apply", plan], 0);
  expect(again.out).toContain(`${planned.length} were already done`);
  // …and even without the state files, locking every mailbox again finds it
  // done on both sides and changes no byte, inode or mtime.
  await rm(`${plan}.state`, { recursive: true });
  const fresh = await cli(["apply", plan], 0);
  expect(fresh.out).toContain(`done ${planned.length}`);
  expect(await treeFacts(pair)).toEqual(facts);
  return { planned };
}
