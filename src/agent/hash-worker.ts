// The hashing code of HashPool, and the worker-thread entry point that runs
// it. Kept to node built-ins only: every worker thread loads this module on
// its own, so anything imported here is paid once per thread. HashPool also
// imports it to hash on the main thread when no worker file can be found
// (e.g. running from TypeScript sources without a build): the main thread
// uses the async twin of the workers' blocking read loop, same algorithm.

import { createHash, type Hash } from "node:crypto";
import { type BigIntStats, closeSync, fstatSync, openSync, readSync } from "node:fs";
import { open } from "node:fs/promises";
import { setPriority } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { isMainThread, parentPort, threadId, workerData } from "node:worker_threads";

/** Bytes per read: large reads, few syscalls (same as sha1File in src/cyrus/guid.ts). */
export const HASH_READ_BYTES = 1 << 20;

/** Marker in workerData, so importing this module in some other worker starts nothing. */
export const WORKER_MARK = "guidup-hash-worker/1";

export interface WorkerInit {
  mark: typeof WORKER_MARK;
  /** Shared token-bucket state (see RateLimiter), or undefined for no limit. */
  rate?: { state: SharedArrayBuffer; bytesPerSec: number };
  lowPriority: boolean;
  /** Shared with the main thread: cancel table and wake counter (see runWorker). */
  control: Int32Array;
}

export interface HashOk {
  ok: true;
  sha1: Buffer;
  size: number;
  dev: bigint;
  ino: bigint;
  mtimeNs: bigint;
}
export interface HashErr {
  ok: false;
  /** "ENOENT" for a missing file; otherwise a message. */
  error: string;
  /** errno code ("ENOENT", "EACCES", …), "size-mismatch", "changed" or "aborted". */
  code: string;
  /** The file's size, when it was opened. */
  size?: number;
}

/** Main thread → worker. Cancellation goes through shared memory (runWorker). */
export interface WorkerRequest {
  type: "hash";
  id: number;
  path: string;
  expectedSize?: number;
}

/** Worker → main thread. */
export type WorkerReply =
  | { type: "ready"; threadId: number }
  | { type: "done"; id: number; result: HashOk | HashErr };

/**
 * A token bucket shared by all threads of one pool, kept as a single "next
 * free time" (GCRA) in a SharedArrayBuffer: each read of n bytes books
 * n/rate seconds after whatever is already booked, and the reader waits
 * until its booking is paid. No burst credit builds up while idle, so the
 * average never exceeds the limit over any window longer than one read.
 * process.hrtime is one monotonic clock for every thread of the process
 * (performance.now() is not: each worker has its own time origin).
 */
export class RateLimiter {
  readonly #next: BigInt64Array;
  readonly #nsPerByte: number;

  constructor(state: SharedArrayBuffer, bytesPerSec: number) {
    this.#next = new BigInt64Array(state, 0, 1);
    this.#nsPerByte = 1e9 / bytesPerSec;
  }

  static createState(): SharedArrayBuffer {
    return new SharedArrayBuffer(8);
  }

  /**
   * Books `bytes` just read; returns how many whole milliseconds the caller
   * must wait before reading on. Sub-millisecond debts are not waited off one
   * by one: they stay booked and a later call waits for them.
   */
  book(bytes: number): number {
    if (bytes <= 0) return 0;
    const cost = BigInt(Math.ceil(bytes * this.#nsPerByte));
    for (;;) {
      const now = process.hrtime.bigint();
      const booked = Atomics.load(this.#next, 0);
      // biome-ignore lint/complexity/useMathMinMax: bigints; Math.max throws on them
      const start = booked > now ? booked : now;
      const next = start + cost;
      if (Atomics.compareExchange(this.#next, 0, booked, next) === booked) {
        return Number((next - now) / 1_000_000n);
      }
    }
  }

  /** book() and wait asynchronously (main thread). */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const ms = this.book(bytes);
    if (ms >= 1) await sleep(ms, undefined, signal ? { signal } : undefined);
  }
}

function errnoOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

function openFailure(err: unknown): HashErr {
  const code = errnoOf(err) ?? "error";
  return { ok: false, error: code === "ENOENT" ? "ENOENT" : String(err), code };
}

function sizeMismatch(expectedSize: number, size: number): HashErr {
  return {
    ok: false,
    error: `size-mismatch: expected ${expectedSize} bytes, file has ${size}`,
    code: "size-mismatch",
    size,
  };
}

const ABORTED: HashErr = { ok: false, error: "aborted", code: "aborted" };

/** The result for one consistent state of the file, or "changed". */
function finalResult(
  path: string,
  hash: Hash,
  pos: number,
  before: BigIntStats,
  after: BigIntStats,
): HashOk | HashErr {
  if (
    after.size !== before.size ||
    after.mtimeNs !== before.mtimeNs ||
    BigInt(pos) !== after.size
  ) {
    return { ok: false, error: `${path}: changed while being hashed`, code: "changed", size: pos };
  }
  return {
    ok: true,
    sha1: hash.digest(),
    size: pos,
    dev: before.dev,
    ino: before.ino,
    mtimeNs: before.mtimeNs,
  };
}

/*
 * hashFile (async, main thread) and hashFileSync (worker threads) are the same
 * algorithm; keep them in step. SHA1 of one whole message file, with the
 * identity of exactly the bytes hashed: dev/ino/mtime/size come from fstat on
 * the open fd (a path stat could see a file that replaced this one in
 * between). A second fstat after the last read catches a file changed while
 * being read (Cyrus never does that, but a result must describe one
 * consistent state or none). Neither throws for file problems: they become
 * HashErr results.
 */

/**
 * Async variant, for hashing on the main thread: never blocks the event loop.
 */
export async function hashFile(
  path: string,
  buf: Buffer,
  opts: { expectedSize?: number; limiter?: RateLimiter; signal?: AbortSignal } = {},
): Promise<HashOk | HashErr> {
  const { expectedSize, limiter, signal } = opts;
  if (signal?.aborted) return ABORTED;
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, "r");
  } catch (err) {
    return openFailure(err);
  }
  try {
    const before = await fh.stat({ bigint: true });
    const size = Number(before.size);
    // Do not spend I/O on a file that cannot be the record's message.
    if (expectedSize !== undefined && size !== expectedSize)
      return sizeMismatch(expectedSize, size);
    const hash = createHash("sha1");
    let pos = 0;
    for (;;) {
      if (signal?.aborted) return ABORTED;
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      hash.update(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
      pos += bytesRead;
      if (limiter !== undefined) {
        try {
          await limiter.take(bytesRead, signal);
        } catch (err) {
          if (signal?.aborted) return ABORTED;
          throw err;
        }
      }
    }
    return finalResult(path, hash, pos, before, await fh.stat({ bigint: true }));
  } catch (err) {
    return { ok: false, error: String(err), code: errnoOf(err) ?? "error" };
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * Blocking variant, for worker threads: a worker has nothing else to do, and
 * synchronous reads skip the libuv thread-pool round trip of every async
 * read, which measured about 1.7× faster on warm files (bench/hash.ts).
 * `cancelled()` is polled between reads; `wait(ms)` sleeps off rate-limit
 * debt and may return early when woken for a cancellation.
 */
export function hashFileSync(
  path: string,
  buf: Buffer,
  opts: {
    expectedSize?: number;
    limiter?: RateLimiter;
    cancelled: () => boolean;
    wait: (ms: number) => void;
  },
): HashOk | HashErr {
  const { expectedSize, limiter, cancelled, wait } = opts;
  if (cancelled()) return ABORTED;
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    return openFailure(err);
  }
  try {
    const before = fstatSync(fd, { bigint: true });
    const size = Number(before.size);
    if (expectedSize !== undefined && size !== expectedSize)
      return sizeMismatch(expectedSize, size);
    const hash = createHash("sha1");
    let pos = 0;
    for (;;) {
      if (cancelled()) return ABORTED;
      const bytesRead = readSync(fd, buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      hash.update(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
      pos += bytesRead;
      if (limiter !== undefined) {
        const deadline = Date.now() + limiter.book(bytesRead);
        for (let ms = deadline - Date.now(); ms >= 1; ms = deadline - Date.now()) {
          if (cancelled()) return ABORTED;
          wait(ms);
        }
      }
    }
    return finalResult(path, hash, pos, before, fstatSync(fd, { bigint: true }));
  } catch (err) {
    return { ok: false, error: String(err), code: errnoOf(err) ?? "error" };
  } finally {
    try {
      closeSync(fd);
    } catch {
      // Nothing useful to do about a failed close of a read-only fd.
    }
  }
}

/** Slots of the per-worker cancel table (see WorkerInit.control). */
export const CANCEL_SLOTS = 64;
/** Index in the control array that the main thread bumps to wake a waiting worker. */
export const WAKE_INDEX = CANCEL_SLOTS;

/** Marks job `id` cancelled in a worker's control array and wakes the worker. */
export function cancelInControl(control: Int32Array, id: number): void {
  Atomics.store(control, id % CANCEL_SLOTS, id & 0x7fff_ffff);
  Atomics.add(control, WAKE_INDEX, 1);
  Atomics.notify(control, WAKE_INDEX);
}

export function createControl(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4 * (CANCEL_SLOTS + 1)));
}

/**
 * The worker loop. Jobs are hashed one at a time, synchronously, in the
 * order they arrive (the pool keeps the next one queued in the port so the
 * worker never idles between files). Because the thread is busy while it
 * hashes, cancellation does not travel as a message but through `control`,
 * shared memory the main thread writes: the cancel table, where slot
 * id % CANCEL_SLOTS holds id once job `id` is cancelled (a worker never has
 * more than a couple of jobs, and ids are unique, so slots never clash), and
 * a wake counter to interrupt a rate-limit wait.
 */
function runWorker(port: NonNullable<typeof parentPort>, init: WorkerInit): void {
  if (init.lowPriority) {
    // On Linux, setpriority(PRIO_PROCESS, 0) applies to the calling thread
    // only, so this lowers the CPU priority of this worker, not the agent's
    // main thread. It does not set an I/O priority (ioprio_set is not
    // reachable from node); CFQ/BFQ derive a best-effort I/O level from the
    // nice value, other schedulers ignore it.
    try {
      setPriority(0, 19);
    } catch {
      // Not fatal: hashing at normal priority is still correct.
    }
  }
  const limiter = init.rate ? new RateLimiter(init.rate.state, init.rate.bytesPerSec) : undefined;
  const control = init.control;
  const buf = Buffer.allocUnsafe(HASH_READ_BYTES);
  port.on("message", (msg: WorkerRequest) => {
    const marker = msg.id & 0x7fff_ffff;
    const cancelled = () => Atomics.load(control, msg.id % CANCEL_SLOTS) === marker;
    const wait = (ms: number) => {
      // Read the wake counter before the last cancel check, so a cancel that
      // lands in between changes the counter and Atomics.wait returns at once.
      const seen = Atomics.load(control, WAKE_INDEX);
      if (!cancelled()) Atomics.wait(control, WAKE_INDEX, seen, ms);
    };
    const opts: Parameters<typeof hashFileSync>[2] = { cancelled, wait };
    if (msg.expectedSize !== undefined) opts.expectedSize = msg.expectedSize;
    if (limiter !== undefined) opts.limiter = limiter;
    const result = hashFileSync(msg.path, buf, opts);
    const reply: WorkerReply = { type: "done", id: msg.id, result };
    port.postMessage(reply);
  });
  const ready: WorkerReply = { type: "ready", threadId };
  port.postMessage(ready);
}

if (
  !isMainThread &&
  parentPort !== null &&
  (workerData as WorkerInit | undefined)?.mark === WORKER_MARK
) {
  runWorker(parentPort, workerData as WorkerInit);
}
