// A real `guidup serve` child process for tests, and real spools for it.
//
// AgentProcess is a deliberately tiny client of the agent protocol: it spawns
// `node dist/src/cli/main.js serve --config X` (the build must exist: `npm
// test` and `npx tsc` make it), reads the hello line, sends requests and
// matches responses by id, keeps progress lines and stderr, and can close
// stdin or kill the process with any signal. It does not depend on the
// controller's client (src/transport), so the agent is tested on its own.
//
// makeFixtureSpool copies one version of the Cyrus 3.6 fixtures into a temp
// dir (the fixtures are read-only hard links: never change them in place) and
// writes an imapd.conf for the copy. writeV9Mailbox builds a small 2.3-style
// mailbox with src/cyrus/index-writer.ts, optionally with a cyrus.expunge.

import {
  type ChildProcess,
  type ChildProcessWithoutNullStreams,
  spawn,
  spawnSync,
} from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, cp, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { encodeCyrusHeader23 } from "../../src/cyrus/cyrus-header.js";
import { formatFor } from "../../src/cyrus/formats/index.js";
import { type ImapdConf, parseImapdConf, readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { IndexReader } from "../../src/cyrus/index-file.js";
import { encodeIndexFile, type RecordValues } from "../../src/cyrus/index-writer.js";
import { mailboxDataDir } from "../../src/cyrus/mailbox-path.js";
import type {
  Hello,
  Op,
  Progress,
  Requests,
  Response,
  WireError,
} from "../../src/protocol/messages.js";
import {
  type GeneratedSpool,
  type GenerateOptions,
  generateSpool,
  removeMailbox,
} from "../../src/spoolgen/spool-generator.js";
import {
  type FixtureVersion,
  fixtureMailboxes,
  fixturesDir,
  makeTempDir,
  REPO_ROOT,
} from "./fixtures.js";

/** The built CLI entry point, resolved from the repository root. */
export const MAIN_JS = path.join(REPO_ROOT, "dist", "src", "cli", "main.js");
/** test/helpers/foreign-locker.py: classic POSIX fcntl locks like Cyrus 2.3. */
export const FOREIGN_LOCKER = path.join(REPO_ROOT, "test", "helpers", "foreign-locker.py");
/** Real Cyrus 3.6 checking every GUID of a spool (on a copy). */
export const CYRUS_CHECK_GUIDS = path.resolve(REPO_ROOT, "../shared/tools/cyrus-check-guids.sh");
export const INSTALL_CYRUS_TOOLS = path.resolve(
  REPO_ROOT,
  "../shared/tools/install-cyrus-tools.sh",
);

/** Any line the agent writes on stdout after hello. */
export type AnyLine = { id: number | null } & Record<string, unknown>;

/** A response that was not ok, as an Error carrying the wire error. */
export class AgentError extends Error {
  constructor(
    readonly op: string,
    readonly error: WireError,
  ) {
    super(`${op}: ${error.code}: ${error.message}`);
  }
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class AgentProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly hello: Hello;
  /** Every stdout line after hello, parsed, in arrival order. */
  readonly lines: AnyLine[] = [];
  /** Progress lines by request id. */
  readonly progress = new Map<number, Progress["progress"][]>();
  readonly exited: Promise<ExitStatus>;
  #stderr: string[] = [];
  #nextId = 1;
  #waiters: (() => void)[] = [];

  private constructor(child: ChildProcessWithoutNullStreams, hello: Hello, rest: AnyLine[]) {
    this.child = child;
    this.hello = hello;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => resolve({ code, signal }));
    });
    this.exited.then(() => this.#wake());
    for (const l of rest) this.#take(l);
  }

  /** Spawns the agent on `configPath` and waits for its hello line. */
  static async start(configPath: string, options: { timeoutMs?: number } = {}) {
    if (!existsSync(MAIN_JS)) {
      throw new Error(`${MAIN_JS} is missing: build first (npx tsc -p tsconfig.json)`);
    }
    const child = spawn(process.execPath, [MAIN_JS, "serve", "--config", configPath], {
      stdio: ["pipe", "pipe", "pipe"],
      cwd: REPO_ROOT,
    });
    const stderr: string[] = [];
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (s: string) => stderr.push(s));
    const early: AnyLine[] = [];
    let tail = "";
    let agent: AgentProcess | undefined;
    let helloResolve: ((h: Hello) => void) | undefined;
    let helloReject: ((e: Error) => void) | undefined;
    const helloPromise = new Promise<Hello>((resolve, reject) => {
      helloResolve = resolve;
      helloReject = reject;
    });
    let hello: Hello | undefined;
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      const parts = (tail + chunk).split("\n");
      tail = parts.pop() ?? "";
      for (const text of parts) {
        if (text.trim() === "") continue;
        let obj: unknown;
        try {
          obj = JSON.parse(text);
        } catch {
          throw new Error(`agent wrote a non-JSON stdout line: ${text}`);
        }
        if (hello === undefined) {
          hello = obj as Hello;
          helloResolve?.(hello);
          continue;
        }
        if (agent) agent.#take(obj as AnyLine);
        else early.push(obj as AnyLine);
      }
    });
    child.once("exit", (code, signal) =>
      helloReject?.(new Error(`agent exited (${code ?? signal}) before hello: ${stderr.join("")}`)),
    );
    const timeoutMs = options.timeoutMs ?? 20_000;
    const timer = setTimeout(
      () => helloReject?.(new Error(`no hello within ${timeoutMs} ms: ${stderr.join("")}`)),
      timeoutMs,
    );
    try {
      hello = await helloPromise;
    } finally {
      clearTimeout(timer);
    }
    agent = new AgentProcess(child, hello, early);
    agent.#stderr = stderr;
    return agent;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Everything the agent wrote on stderr so far (JSON log lines). */
  get stderr(): string {
    return this.#stderr.join("");
  }

  /** Writes one raw line (a newline is added) — for malformed requests. */
  sendRaw(text: string): void {
    this.child.stdin.write(`${text}\n`);
  }

  /** Sends `{id, op, ...args}` and resolves with the response (ok or not). */
  async request<K extends Op>(
    op: K,
    args: Requests[K]["args"],
    options: { timeoutMs?: number } = {},
  ): Promise<Response<K>> {
    const id = this.#nextId++;
    this.child.stdin.write(`${JSON.stringify({ id, op, ...args })}\n`);
    const line = await this.waitFor(
      (l) => l.id === id && "ok" in l,
      options.timeoutMs ?? 50_000,
      `response to ${op} #${id}`,
    );
    return line as unknown as Response<K>;
  }

  /** Like request, but returns the result and throws AgentError on a failure. */
  async call<K extends Op>(
    op: K,
    args: Requests[K]["args"],
    options: { timeoutMs?: number } = {},
  ): Promise<Requests[K]["result"]> {
    const r = await this.request(op, args, options);
    if (!r.ok) throw new AgentError(op, r.error);
    return r.result;
  }

  /** Like request, but expects a failure and returns its wire error. */
  async fail<K extends Op>(
    op: K,
    args: Requests[K]["args"],
    options: { timeoutMs?: number } = {},
  ): Promise<WireError> {
    const r = await this.request(op, args, options);
    if (r.ok) throw new Error(`${op} succeeded, expected an error: ${JSON.stringify(r.result)}`);
    return r.error;
  }

  /** The first stdout line (after hello, in arrival order) matching `pred`, consumed. */
  async waitFor(pred: (l: AnyLine) => boolean, timeoutMs = 20_000, what = "line") {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const at = this.lines.findIndex(pred);
      if (at !== -1) return this.lines.splice(at, 1)[0] as AnyLine;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`agent exited while waiting for ${what}; stderr: ${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Ends stdin (the controller went away) and waits for the exit. */
  async closeStdin(): Promise<ExitStatus> {
    this.child.stdin.end();
    return this.exited;
  }

  /** Sends `signal` (default SIGKILL) unless already gone, and waits for the exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<ExitStatus> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }

  #take(line: AnyLine): void {
    if (typeof line.id === "number" && "progress" in line) {
      const list = this.progress.get(line.id) ?? [];
      list.push(line.progress as Progress["progress"]);
      this.progress.set(line.id, list);
    } else {
      this.lines.push(line);
    }
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

/** Kills every agent in `agents` (SIGKILL) and waits for them: for afterEach. */
export async function killAll(agents: AgentProcess[]): Promise<void> {
  await Promise.all(agents.splice(0).map((a) => a.kill("SIGKILL")));
}

// ---- spools -------------------------------------------------------------

export interface TempSpool {
  /** The temp dir holding spool/, conf/ and imapd.conf. */
  root: string;
  /** partition-default. */
  spool: string;
  /** The imapd.conf written for this spool. */
  conf: string;
  /** Absolute directory of a mailbox (hashimapspool yes, fulldirhash no). */
  dir(mailbox: string): string;
  cleanup(): Promise<void>;
}

/** imapd.conf text for a one-partition spool laid out like the fixtures. */
export function imapdConfText(spool: string, configDir: string, extra = ""): string {
  return [
    `configdirectory: ${configDir}`,
    "defaultpartition: default",
    `partition-default: ${spool}`,
    "hashimapspool: yes",
    "fulldirhash: no",
    "unixhierarchysep: no",
    "virtdomains: off",
    extra,
    "",
  ].join("\n");
}

/** A mailbox's data directory as Cyrus 2.3 places it under `conf`'s default partition. */
function dirFor(conf: ImapdConf): (mailbox: string) => string {
  return (mailbox) => mailboxDataDir(conf, mailbox, conf.defaultPartition);
}

/** An empty temp spool with its imapd.conf. */
export async function makeEmptySpool(prefix = "guidup-spool-"): Promise<TempSpool> {
  const { dir: root, cleanup } = await makeTempDir(prefix);
  const spool = path.join(root, "spool");
  const confDir = path.join(root, "conf");
  await mkdir(spool, { recursive: true });
  await mkdir(confDir, { recursive: true });
  const conf = path.join(root, "imapd.conf");
  const text = imapdConfText(spool, confDir);
  await writeFile(conf, text);
  return { root, spool, conf, dir: dirFor(parseImapdConf(text, conf)), cleanup };
}

/**
 * A spool from src/spoolgen/spool-generator.ts (master only) in a temp dir: 2.3
 * files Cyrus 3.6 cannot write — cyrus.expunge, padded UUIDs, 2.3 headers.
 */
export async function makeGeneratedSpool(
  options: Omit<GenerateOptions, "dir" | "pair">,
): Promise<TempSpool & { generated: GeneratedSpool }> {
  const { dir: root, cleanup } = await makeTempDir("guidup-gen-");
  const generated = await generateSpool({ ...options, dir: root, pair: false });
  const conf = generated.master.imapdConf;
  return {
    root,
    spool: generated.master.partitionRoot,
    conf,
    dir: dirFor(await readImapdConf(conf)),
    cleanup,
    generated,
  };
}

/** UIDs of an index or expunge file, in file order. */
export async function uidsOf(file: string, kind: "index" | "expunge"): Promise<number[]> {
  return (await guidsOf(file, kind)).map((r) => r.uid);
}

/**
 * Mailboxes whose cyrus.expunge cyrus-check-guids.sh cannot judge, removed
 * from a generated spool before a real-Cyrus check (both are limits of the
 * check, not of the files): a UID in both cyrus.index and cyrus.expunge
 * (Cyrus 3.6 unlinks the message files listed in cyrus.expunge when it opens
 * the mailbox, so the index's record then has no file), and DELETED.*
 * mailboxes (3.6's reconstruct/mbexamine print nothing for the scratch
 * "<name>.__expunge_check__" below a DELETED name).
 */
export async function removeUncheckableMailboxes(
  spool: TempSpool & { generated: GeneratedSpool },
): Promise<string[]> {
  const removed: string[] = [];
  for (const m of spool.generated.mailboxes) {
    if (!m.hasExpunge) continue;
    const dir = spool.dir(m.name);
    const index = new Set(await uidsOf(path.join(dir, "cyrus.index"), "index"));
    const overlap = (await uidsOf(path.join(dir, "cyrus.expunge"), "expunge")).some((u) =>
      index.has(u),
    );
    if (overlap || m.name.startsWith("DELETED.")) {
      await removeMailbox(spool.generated.master, m.name);
      removed.push(m.name);
    }
  }
  return removed;
}

/**
 * A writable copy of fixtures/cyrus-3.6/vNN/spool in a temp dir, with an
 * imapd.conf (partition-default: <tmp>/spool, hashimapspool yes, fulldirhash
 * no, configdirectory: <tmp>/conf). Directories 0755, files 0644.
 */
export async function makeFixtureSpool(version: FixtureVersion): Promise<TempSpool> {
  const t = await makeEmptySpool(`guidup-v${version}-`);
  await cp(path.join(fixturesDir(), `v${version}`, "spool"), t.spool, { recursive: true });
  await makeWritable(t.spool);
  // Sanity: the layout the helper assumes is the fixtures' own.
  for (const m of fixtureMailboxes(version)) {
    if (path.join(t.spool, m.dir) !== t.dir(m.name)) {
      throw new Error(`mailboxDir(${m.name}) disagrees with mailboxes.txt (${m.dir})`);
    }
  }
  return t;
}

async function makeWritable(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await makeWritable(p);
    else await chmod(p, 0o644);
  }
}

export interface SmallMessage {
  uid: number;
  /** Contents of `<uid>.`; undefined: the record exists but the file does not. */
  body?: Buffer;
  /** 12-byte UUID for v7–v9 records (default: 12 zero bytes = NULL). */
  uuid?: Buffer;
  /** Record SIZE when there is no body (default 100). */
  size?: number;
}

export function messageBody(mailbox: string, uid: number, bytes = 200): Buffer {
  const head = `From: a@example.org\r\nTo: b@example.org\r\nSubject: ${mailbox} ${uid}\r\n\r\n`;
  const line = `${mailbox} message ${uid} `.repeat(8).slice(0, 70) + "\r\n";
  let body = head;
  while (body.length < bytes) body += line;
  return Buffer.from(body, "latin1");
}

/** A schema-1 style 12-byte UUID: 0x01 then a counter (what a 2.3.7+ master assigned). */
export function paddedUuid(n: number): Buffer {
  const b = Buffer.alloc(12);
  b[0] = 1;
  b.writeUInt32BE(n, 8);
  return b;
}

export function sha1(buf: Buffer): Buffer {
  return createHash("sha1").update(buf).digest();
}

/**
 * Writes a 2.3-style mailbox at `minor` (6..10): cyrus.header (2.3 form),
 * cyrus.index, cyrus.expunge when `expunge` is given (records in the given,
 * possibly unsorted, order), and the message files of every record that has
 * a body. Records get padded UUIDs (v7–v9) or padded GUIDs (v10) unless
 * `sha1Guids` (v10: the real SHA1 of the body).
 */
export async function writeMailbox(
  spool: TempSpool,
  name: string,
  options: {
    minor?: number;
    messages: SmallMessage[];
    expunge?: SmallMessage[];
    sha1Guids?: boolean;
    uidValidity?: number;
  },
): Promise<string> {
  const minor = options.minor ?? 9;
  const format = formatFor(minor);
  if (!format) throw new Error(`no format for minor ${minor}`);
  const dir = spool.dir(name);
  await mkdir(dir, { recursive: true });
  await writeFile(
    path.join(dir, "cyrus.header"),
    encodeCyrusHeader23({
      quotaRoot: name,
      uniqueId: createHash("sha1").update(name).digest("hex").slice(0, 16),
      userFlags: [],
      acl: "anyone\tlrs\t",
    }),
  );
  const written = new Set<number>();
  const record = (m: SmallMessage): RecordValues => {
    const size = m.body?.length ?? m.size ?? 100;
    const r: RecordValues = {
      uid: m.uid,
      internalDate: 1_250_000_000 + m.uid,
      sentDate: 1_250_000_000 + m.uid,
      size,
      headerSize: Math.min(60, size),
      contentOffset: Math.min(60, size),
      cacheOffset: 4,
      lastUpdated: 1_250_000_100 + m.uid,
      systemFlags: 0,
    };
    if (format.recordField("contentLines")) r.contentLines = 3;
    if (format.recordField("cacheVersion")) r.cacheVersion = 2;
    if (format.recordField("modseq")) r.modseq = BigInt(m.uid);
    if (format.recordField("uuid")) r.uuid = m.uuid ?? paddedUuid(m.uid);
    if (format.recordField("guid")) {
      r.guid =
        options.sha1Guids && m.body
          ? sha1(m.body)
          : Buffer.concat([m.uuid ?? paddedUuid(m.uid), Buffer.alloc(8)]);
    }
    return r;
  };
  const all = [...options.messages, ...(options.expunge ?? [])];
  for (const m of all) {
    if (m.body && !written.has(m.uid)) {
      await writeFile(path.join(dir, `${m.uid}.`), m.body);
      written.add(m.uid);
    }
  }
  const lastUid = Math.max(0, ...all.map((m) => m.uid));
  const header = {
    generation: 1,
    lastUid,
    uidValidity: options.uidValidity ?? 1_234_567_890,
    lastAppendDate: 1_250_000_000 + lastUid,
    quotaUsed: 0,
    ...(format.headerField("highestModseq") ? { highestModseq: BigInt(lastUid || 1) } : {}),
  };
  await writeFile(
    path.join(dir, "cyrus.index"),
    encodeIndexFile(format, header, options.messages.map(record)),
  );
  if (options.expunge) {
    await writeFile(
      path.join(dir, "cyrus.expunge"),
      encodeIndexFile(format, header, options.expunge.map(record)),
    );
  }
  // A cyrus.cache whose first 4 bytes are the generation, as Cyrus keeps it.
  const cache = Buffer.alloc(8);
  cache.writeUInt32BE(1, 0);
  await writeFile(path.join(dir, "cyrus.cache"), cache);
  return dir;
}

/** Messages 1..n with bodies. */
export function messages(name: string, uids: number[]): SmallMessage[] {
  return uids.map((uid) => ({ uid, body: messageBody(name, uid, 150 + uid * 7) }));
}

// ---- tools ----------------------------------------------------------------

/** Makes sure the Cyrus 3.6 tools are there (installs them as root); throws if it cannot. */
export function ensureCyrusTools(): void {
  if (existsSync("/usr/lib/cyrus/bin/reconstruct") && existsSync("/usr/lib/cyrus/bin/mbexamine"))
    return;
  const r = spawnSync(INSTALL_CYRUS_TOOLS, { encoding: "utf8" });
  if (r.status !== 0) {
    throw new Error(
      `cannot install the Cyrus tools (${INSTALL_CYRUS_TOOLS} exit ${r.status}): ${r.stderr}${r.stdout}`,
    );
  }
}

/** Runs cyrus-check-guids.sh on a spool; returns its exit code and output. */
export function cyrusCheckGuids(spool: string, conf: string): { status: number; output: string } {
  ensureCyrusTools();
  const r = spawnSync(CYRUS_CHECK_GUIDS, [spool, conf], {
    encoding: "utf8",
    timeout: 120_000,
  });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

// ---- looking at files -----------------------------------------------------

export interface FileSnap {
  sha1: string;
  size: number;
  ino: number;
  uid: number;
  gid: number;
  mode: number;
}

/** Every file below `dir` (relative path → content hash, inode, owner, mode). */
export async function snapshot(dir: string): Promise<Map<string, FileSnap>> {
  const out = new Map<string, FileSnap>();
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const st = await stat(p);
        out.set(path.relative(dir, p), {
          sha1: sha1(await readFile(p)).toString("hex"),
          size: st.size,
          ino: st.ino,
          uid: st.uid,
          gid: st.gid,
          mode: st.mode,
        });
      }
    }
  };
  await walk(dir);
  return out;
}

/** Content-only view of a snapshot (for "byte-identical" comparisons). */
export function contents(snap: Map<string, FileSnap>): Record<string, string> {
  return Object.fromEntries([...snap].map(([k, v]) => [k, v.sha1]).sort());
}

/** The minor version at offset 8 of an index or expunge file. */
export async function minorOf(file: string): Promise<number> {
  return (await readFile(file)).readUInt32BE(8);
}

/** uid → stored GUID (v10) as hex, in file order, of an index or expunge file. */
export async function guidsOf(
  file: string,
  kind: "index" | "expunge" = "index",
): Promise<{ uid: number; guid: string }[]> {
  const reader = await IndexReader.open(file, { kind });
  const out: { uid: number; guid: string }[] = [];
  try {
    for await (const r of reader.records()) {
      const guid = r.get("guid");
      out.push({ uid: r.get("uid") as number, guid: guid ? (guid as Buffer).toString("hex") : "" });
    }
  } finally {
    await reader.close();
  }
  return out;
}

/** Asserts-by-throwing that every GUID of `file` is the SHA1 of `<dir>/<uid>.`. */
export async function expectSha1Guids(dir: string, file: string, kind: "index" | "expunge") {
  for (const { uid, guid } of await guidsOf(file, kind)) {
    const want = sha1(await readFile(path.join(dir, `${uid}.`))).toString("hex");
    if (guid !== want) throw new Error(`${file}: uid ${uid}: GUID ${guid}, SHA1 of file ${want}`);
  }
}

export async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

// ---- a foreign (Cyrus-like) locker ----------------------------------------

/** A running foreign-locker.py (classic POSIX fcntl locks), output collected by line. */
export class ForeignLocker {
  readonly child: ChildProcess;
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  #waiters: (() => void)[] = [];

  constructor(args: string[]) {
    this.child = spawn("python3", [FOREIGN_LOCKER, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#collect(this.child.stdout!, this.stdout);
    this.#collect(this.child.stderr!, this.stderr);
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code) => resolve(code));
      // python3 missing: fail loudly (the waits below see the exit and throw).
      this.child.once("error", (err) => {
        this.stderr.push(`cannot run python3 ${FOREIGN_LOCKER}: ${err.message}`);
        resolve(-1);
      });
    });
    this.exited.then(() => this.#wake());
  }

  /** `hold PATH SECONDS`: resolves once it prints "locked". */
  static async hold(file: string, seconds: number): Promise<ForeignLocker> {
    const f = new ForeignLocker(["hold", file, String(seconds)]);
    await f.line("locked");
    return f;
  }

  /** `try PATH`: "busy" or "acquired". */
  static async try(file: string): Promise<string> {
    const f = new ForeignLocker(["try", file]);
    const code = await f.exited;
    if (code !== 0)
      throw new Error(`foreign-locker try ${file}: exit ${code}: ${f.stderr.join("\n")}`);
    return f.stdout[0] ?? "";
  }

  /** `wait PATH`: resolves once the file is open (the lock request follows at once). */
  static async wait(file: string): Promise<ForeignLocker> {
    const f = new ForeignLocker(["wait", file]);
    await f.line("opened", "stderr");
    return f;
  }

  #collect(stream: NodeJS.ReadableStream, into: string[]): void {
    let tail = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      const parts = (tail + chunk).split("\n");
      tail = parts.pop() ?? "";
      into.push(...parts);
      this.#wake();
    });
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** The first line of `stream` starting with `prefix`; throws if the process exits first. */
  async line(prefix: string, stream: "stdout" | "stderr" = "stdout"): Promise<string> {
    for (;;) {
      const found = this[stream].find((l) => l.startsWith(prefix));
      if (found !== undefined) return found;
      if (
        this.child.exitCode !== null ||
        this.child.signalCode !== null ||
        this.stderr.some((l) => l.startsWith("cannot run python3"))
      ) {
        throw new Error(
          `foreign-locker exited without "${prefix}": stdout=${this.stdout.join("|")} stderr=${this.stderr.join("|")}`,
        );
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  kill(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGTERM");
    return this.exited;
  }
}

/** lock → upgrade → commit of every mailbox `discover` finds; returns their names. */
export async function upgradeAll(agent: AgentProcess, target = 10): Promise<string[]> {
  const { mailboxes } = await agent.call("discover", {});
  for (const mailbox of mailboxes) {
    await agent.call("lock", { mailbox, timeoutMs: 5000 });
    await agent.call("upgrade", { target });
    await agent.call("commit", {});
  }
  return mailboxes.map((m) => m.name);
}
