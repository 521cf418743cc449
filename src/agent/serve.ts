// `guidup serve`: the agent's protocol loop (like `borg serve`): an allowlist
// of ops, one request at a time, answers by id. stdout carries protocol lines
// only; logs go to stderr as JSON lines. When stdin ends (the controller went
// away, or the SSH connection dropped) a locked or upgraded mailbox is rolled
// back before the process exits.

import { rm, stat } from "node:fs/promises";
import { hostname } from "node:os";
import type { Readable, Writable } from "node:stream";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import { checkPartitionRoots } from "../cyrus/imapd-conf.js";
import type { Discovery } from "../cyrus/mailbox-list.js";
import { MailboxNameError, validateMailboxName } from "../cyrus/mailbox-path.js";
import { ERRORS, type ErrorCode, errorMessage, GuidupError } from "../errors.js";
import { encodeLine, LineReader } from "../protocol/framing.js";
import {
  type Hello,
  type LogLine,
  type MailboxRef,
  OPS,
  type Op,
  PROTOCOL_VERSION,
  type Request,
  type Requests,
  type Response,
  type WireError,
} from "../protocol/messages.js";
import { timelineMark, timelineThreadCpu } from "../timeline.js";
import { hashMailboxes } from "./hash-op.js";
import { HashPool } from "./hash-pool.js";
import { mailboxFiles } from "./mailbox-files.js";
import type { PairLock } from "./pair-lock.js";
import type { MailboxSession } from "./session.js";
import { isEntryValidFor, readSha1Cache, Sha1Cache, writeSha1Cache } from "./sha1-cache.js";

/** Requests may carry a whole sha1 cache (cache-put): allow big lines. */
const MAX_REQUEST_BYTES = 256 * 1024 * 1024;

type Handler<K extends Op> = (req: Request<K>, ctx: Context) => Promise<Requests[K]["result"]>;

interface Context {
  conf: ImapdConf;
  pool: HashPool;
  /** The mailbox session and the pair lock are made (and their code loaded) on first use. */
  session: () => Promise<MailboxSession>;
  pairLock: () => Promise<PairLock>;
  /** What the last paged discover found, kept for its next pages. */
  discovered: { found?: Discovery };
  progress: (p: Record<string, number | string>) => void;
  signal: AbortSignal;
}

/** Every op has exactly one handler: a missing one fails to compile. */
const handlers: { [K in Op]: Handler<K> } = {
  scan: async (req, { conf }) => {
    const refs = list(req.mailboxes);
    await checkPartitionRoots(conf, partitionsOf(conf, refs));
    const { scanMailboxFiles } = await import("./session.js");
    return {
      mailboxes: await Promise.all(
        refs.map(async (ref) => {
          try {
            return await scanMailboxFiles(mailboxFiles(conf, ref));
          } catch (err) {
            // Reported per mailbox, so that one bad name costs only itself.
            if (err instanceof MailboxNameError)
              return { name: String(ref?.name), status: "invalid-name", reason: err.message };
            if (err instanceof GuidupError)
              return { name: String(ref?.name), status: "unreadable", reason: err.message };
            throw err;
          }
        }),
      ),
    };
  },
  discover: async (req, { conf, discovered }) => {
    const { discoverMailboxDirs } = await import("../cyrus/mailbox-list.js");
    if (req.page === undefined) return await discoverMailboxDirs(conf);
    const { from, size } = req.page;
    if (!Number.isInteger(from) || from < 0 || !Number.isInteger(size) || size < 1)
      throw new ProtocolRequestError(
        `discover page needs whole numbers from >= 0 and size >= 1, got ${JSON.stringify(req.page)}`,
      );
    if (from === 0) discovered.found = await discoverMailboxDirs(conf);
    const found = discovered.found;
    if (found === undefined)
      throw new ProtocolRequestError("discover page asked before the first (from 0)");
    const end = from + size;
    const more = end < found.mailboxes.length || end < found.invalid.length;
    // The last page lets the list go: the walk is not needed again.
    if (!more) discovered.found = undefined;
    return {
      mailboxes: found.mailboxes.slice(from, end),
      invalid: found.invalid.slice(from, end),
      more,
    };
  },
  hash: (req, { conf, progress, signal }) =>
    hashMailboxes(
      conf,
      confined(conf, list(req.mailboxes)),
      {
        ...(req.maxBytesPerSec ? { maxBytesPerSec: req.maxBytesPerSec } : {}),
        ...(req.lowPriority ? { lowPriority: true } : {}),
        ...(Number.isInteger(req.workers) && req.workers! > 0 ? { workers: req.workers! } : {}),
        signal,
      },
      throttle(PROGRESS_INTERVAL_MS, (p) => progress({ ...p })),
    ),
  "cache-get": async (req, { conf }) => {
    const files = mailboxFiles(conf, req.mailbox);
    const { cache } = await readSha1Cache(files.sha1s);
    // Only entries that still describe this host's files leave it (a file
    // replaced since it was hashed must not lend its old SHA1 to the other
    // side), and they leave marked relayed: the other side must not take
    // these file identities for its own.
    const valid = Sha1Cache.empty();
    for (const entry of cache.entries()) {
      if (entry.origin !== "local") continue;
      const st = await stat(files.messageFile(entry.uid), { bigint: true }).catch(() => undefined);
      if (st && isEntryValidFor(entry, st)) valid.set(entry);
    }
    const relayed = valid.relayedCopy();
    return { entries: relayed.size, data: relayed.encode().toString("base64") };
  },
  "cache-put": async (req, { conf }) => {
    const files = mailboxFiles(conf, req.mailbox);
    const incoming = Sha1Cache.decode(
      Buffer.from(String(req.data), "base64"),
      `cache-put ${files.name}`,
    );
    const { cache } = await readSha1Cache(files.sha1s);
    cache.merge(incoming.relayedCopy());
    const st = await stat(files.index);
    await writeSha1Cache(files.sha1s, cache, { uid: st.uid, gid: st.gid, mode: st.mode });
    return { entries: cache.size };
  },
  "cache-clean": async (req, { conf }) => {
    let removed = 0;
    for (const ref of list(req.mailboxes)) {
      const files = mailboxFiles(conf, ref);
      if (
        await stat(files.sha1s).then(
          () => true,
          () => false,
        )
      ) {
        await rm(files.sha1s, { force: true });
        removed++;
      }
    }
    return { removed };
  },
  prepare: async (req, { session }) => (await session()).prepare(req.mailbox, req.stage),
  lock: async (req, { session }) =>
    (await session()).lock(req.mailbox, Number(req.timeoutMs), req.stage),
  upgrade: async (req, { session }) => (await session()).upgrade(req),
  commit: async (_req, { session }) => (await session()).commit(),
  rollback: async (req, { session }) =>
    (await session()).rollback({ ...(req.pairs ? { pairs: true } : {}) }),
  verify: async (req, { conf, pool }) => {
    const { verifyMailbox } = await import("./verify-op.js");
    const out = [];
    for (const ref of list(req.mailboxes)) {
      out.push(await verifyMailbox(conf, ref, pool, req.sample, req.withPairs === true));
    }
    return { mailboxes: out };
  },
  status: async (req, { session }) => (await session()).status(req.mailbox),
  "pair-lock": async (req, { conf, pairLock }) => {
    if (typeof req.holder !== "object" || req.holder === null)
      throw new ProtocolRequestError("pair-lock needs a holder");
    return (await pairLock()).take(conf, req.holder);
  },
  check: async (req, { conf }) => {
    const refs = req.mailboxes === undefined ? [] : confined(conf, list(req.mailboxes));
    const { checkHost } = await import("./requirements.js");
    return checkHost(conf, refs);
  },
};

/** Progress lines at most this often: one per file would flood the channel. */
const PROGRESS_INTERVAL_MS = 250;

function throttle<T>(ms: number, fn: (v: T) => void): (v: T) => void {
  let last = 0;
  return (v) => {
    const now = Date.now();
    if (now - last >= ms) {
      last = now;
      fn(v);
    }
  };
}

/** The partitions a request's mailboxes are on (the default one where none is named). */
function partitionsOf(conf: ImapdConf, refs: readonly MailboxRef[]): string[] {
  return [...new Set(refs.map((r) => r?.partition ?? conf.defaultPartition))];
}

function list<T>(value: T[] | undefined): T[] {
  if (!Array.isArray(value)) throw new ProtocolRequestError("mailboxes must be a list");
  return value;
}

/**
 * Refuses the whole request (code "mailbox-name") when any name is one Cyrus
 * would not accept or that would leave its partition. Without this, scan
 * reported such a name as an "unreadable" mailbox and hash as a per-mailbox
 * failure, so a hostile name was never refused as such.
 */
function confined(conf: ImapdConf, refs: MailboxRef[]): MailboxRef[] {
  for (const ref of refs) {
    if (typeof ref?.name === "string") validateMailboxName(ref.name, conf);
  }
  return refs;
}

class ProtocolRequestError extends GuidupError {
  override readonly code: ErrorCode = ERRORS.protocol.code;
}

export function toWireError(err: unknown): WireError {
  if (err instanceof GuidupError) {
    return { code: err.code, message: err.message, ...(err.detail ? { detail: err.detail } : {}) };
  }
  return {
    code: ERRORS.internal.code,
    message: `internal error in the agent: ${errorMessage(err)}`,
  };
}

export interface ServeOptions {
  conf: ImapdConf;
  configPath: string;
  tool: string;
  input: Readable;
  output: Writable;
  log: (line: LogLine) => void;
}

/**
 * A "done" line with each request's time, only when GUIDUP_AGENT_DEBUG=1 is
 * in the agent's environment (bench/apply.ts's counting proxy sets it). The
 * controller ignores debug lines, and each one cost a stderr write, an SSH
 * relay and a JSON parse on the controller per request — six per mailbox,
 * two of them inside the master's locked window.
 */
const TIMING_LOG = process.env.GUIDUP_AGENT_DEBUG === "1";

/** Runs the loop until input ends; resolves after any rollback is done. */
export async function serve(options: ServeOptions): Promise<void> {
  const { input, output, log } = options;
  const pool = new HashPool();
  // Loaded on first use: an agent that only hashes (guidup hash) or scans
  // (plan) starts without the upgrade and lock code, a good part of its
  // start-up.
  let session: Promise<MailboxSession> | undefined;
  let pairLock: Promise<PairLock> | undefined;
  const parts = {
    session: () => {
      session ??= import("./session.js").then((m) => new m.MailboxSession(options.conf, pool));
      return session;
    },
    pairLock: () => {
      pairLock ??= import("./pair-lock.js").then((m) => new m.PairLock());
      return pairLock;
    },
  };
  const discovered: { found?: Discovery } = {};
  const abort = new AbortController();
  const send = (obj: unknown) => output.write(encodeLine(obj));
  const hello: Hello = {
    type: "hello",
    protocol: PROTOCOL_VERSION,
    tool: options.tool,
    host: hostname(),
    pid: process.pid,
    config: options.configPath,
  };
  send(hello);
  timelineMark("agent: hello sent");

  const reader = new LineReader({ maxLineBytes: MAX_REQUEST_BYTES });
  const queue: string[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  input.on("data", (chunk: Buffer) => {
    try {
      queue.push(...reader.push(chunk));
    } catch (err) {
      send({ id: null, ok: false, error: toWireError(err) });
      ended = true;
      input.destroy();
    }
    wake?.();
  });
  const onEnd = () => {
    ended = true;
    abort.abort(new Error("controller went away"));
    wake?.();
  };
  input.on("end", onEnd);
  input.on("close", onEnd);
  input.on("error", onEnd);

  try {
    for (;;) {
      const line = queue.shift();
      if (line === undefined) {
        if (ended) break;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
        continue;
      }
      if (line.trim() === "") continue;
      await handleLine(
        line,
        {
          conf: options.conf,
          pool,
          ...parts,
          discovered,
          signal: abort.signal,
          progress: () => {},
        },
        send,
        log,
      );
    }
  } finally {
    await windUp(await session?.catch(() => undefined), log);
    timelineThreadCpu();
    await pool.close();
    await (await pairLock?.catch(() => undefined))?.release();
  }
}

/** At input end: a locked or upgraded mailbox is rolled back, a prepared one's temporary files removed. */
async function windUp(
  session: MailboxSession | undefined,
  log: (line: LogLine) => void,
): Promise<void> {
  if (session === undefined) return;
  if (session.state !== "idle") {
    log({
      level: "warn",
      msg: "input ended with a mailbox in progress: rolling back",
      mailbox: session.mailbox,
    });
    await session
      .abandon()
      .catch((err) => log({ level: "error", msg: `rollback failed: ${errorMessage(err)}` }));
  } else {
    // A prepared conversion nobody will lock: remove its temporary files.
    await session.abandon().catch(() => {});
  }
}

async function handleLine(
  line: string,
  base: Context,
  send: (obj: unknown) => void,
  log: (line: LogLine) => void,
): Promise<void> {
  let req: Request;
  try {
    req = JSON.parse(line) as Request;
  } catch {
    send({
      id: null,
      ok: false,
      error: { code: ERRORS.protocol.code, message: "request is not valid JSON" },
    });
    return;
  }
  const id = typeof req?.id === "number" ? req.id : null;
  if (id === null || typeof req.op !== "string") {
    send({
      id,
      ok: false,
      error: { code: ERRORS.protocol.code, message: "request needs a numeric id and an op" },
    });
    return;
  }
  if (!(OPS as readonly string[]).includes(req.op)) {
    send({
      id,
      ok: false,
      error: { code: ERRORS.unknownOp.code, message: `unknown op "${req.op}"` },
    });
    return;
  }
  const ctx: Context = { ...base, progress: (p) => send({ id, progress: p }) };
  const started = Date.now();
  timelineMark(`agent: ${req.op} request received`);
  try {
    const handler = handlers[req.op] as Handler<Op>;
    const result = await handler(req as never, ctx);
    const response: Response = { id, ok: true, result };
    send(response);
    timelineMark(`agent: ${req.op} answered`);
    if (TIMING_LOG) log({ level: "debug", msg: "done", op: req.op, ms: Date.now() - started });
  } catch (err) {
    const error = toWireError(err);
    if (error.code === ERRORS.internal.code)
      log({ level: "error", msg: error.message, op: req.op, stack: (err as Error)?.stack });
    send({ id, ok: false, error });
  }
}
