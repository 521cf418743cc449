// The hashing code of HashPool, and the worker-thread entry point that runs
// it. Kept to node built-ins only: every worker thread loads this module on
// its own, so anything imported here is paid once per thread. HashPool also
// imports it to hash on the main thread when no worker file can be found
// (e.g. running from TypeScript sources without a build).
//
// One hashing algorithm (hashSteps) for both places: a generator that does
// the blocking reads and hands control back after each one, so its driver
// decides how to check for cancellation and how to wait off rate-limit
// debt — blocking (Atomics.wait) in a worker, with timers on the main thread.

import { createHash, type Hash } from "node:crypto";
import { type BigIntStats, closeSync, fstatSync, openSync, readSync } from "node:fs";
import { setPriority } from "node:os";
import { isMainThread, parentPort, threadId, workerData } from "node:worker_threads";

/** Bytes per read: large reads, few syscalls (same as sha1File in src/cyrus/guid.ts). */
export const HASH_READ_BYTES = 1 << 20;

/** Marker in workerData, so importing this module in some other worker starts nothing. */
export const WORKER_MARK = "guidup-hash-worker/2";

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

/**
 * Main thread → worker: several files in one message (a message per file
 * cost more than hashing a small file). Cancellation goes through shared
 * memory (runWorker), per file id.
 */
export interface WorkerRequest {
  type: "hash";
  /** Names this message in the replies. */
  batch: number;
  ids: number[];
  paths: string[];
  /** Per file: the expected size, or -1 for none. */
  expectedSizes: number[];
}

/**
 * Worker → main thread: results of files `from` .. `from + count - 1` of a
 * batch, packed (one SHA1 buffer and three number columns; the buffers are
 * transferred, not copied). A worker answers a batch in one reply, or in
 * several when it takes long (rate limit, large files), so results never
 * wait long for the rest of their batch.
 */
export interface HashBatchReply {
  type: "done";
  batch: number;
  from: number;
  count: number;
  /** 20 bytes per file (zero for failures). */
  sha1: Uint8Array;
  /** Bytes hashed per file (0 for failures). */
  sizes: Float64Array;
  /** dev, ino, mtimeNs (two's complement: BigInt.asIntN(64, …)) per file; 0 for failures. */
  identity: BigUint64Array;
  /** The failures, by index within this reply. */
  failures: { i: number; err: HashErr }[];
}

export type WorkerReply = { type: "ready"; threadId: number } | HashBatchReply;

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

export const ABORTED: HashErr = { ok: false, error: "aborted", code: "aborted" };

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

/**
 * SHA1 of one whole message file, with the identity of exactly the bytes
 * hashed: dev/ino/mtime/size come from fstat on the open fd (a path stat
 * could see a file that replaced this one in between). Reads the size fstat
 * gave, in reads of at most `buf.length` (a small file in one read, with no
 * extra read to see the end); a second fstat after the last read catches a
 * file changed while being read, grown or shrunk (Cyrus never does that, but
 * a result must describe one consistent state or none). File problems become
 * HashErr results, never throws.
 *
 * A generator: after each read it yields the milliseconds of rate-limit
 * debt to wait off (0 without a limiter) and lets its driver check for
 * cancellation; a driver that stops early calls return(), which closes the
 * file.
 */
export function* hashSteps(
  path: string,
  buf: Buffer,
  expectedSize?: number,
  limiter?: RateLimiter,
): Generator<number, HashOk | HashErr, undefined> {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    return openFailure(err);
  }
  try {
    const before = fstatSync(fd, { bigint: true });
    const size = Number(before.size);
    // Do not spend I/O on a file that cannot be the record's message.
    if (expectedSize !== undefined && size !== expectedSize)
      return sizeMismatch(expectedSize, size);
    const hash = createHash("sha1");
    let pos = 0;
    while (pos < size) {
      const bytesRead = readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
      if (bytesRead === 0) break; // shrank: the second fstat says so
      hash.update(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
      pos += bytesRead;
      yield limiter === undefined ? 0 : limiter.book(bytesRead);
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

/**
 * Runs hashSteps to the end in a worker thread: blocking, which skips the
 * libuv thread-pool round trip of every async read (a worker has nothing
 * else to do). `cancelled()` is polled after every read; `wait(ms)` sleeps
 * off rate-limit debt and may return early when woken for a cancellation.
 */
export function hashFileBlocking(
  path: string,
  buf: Buffer,
  expectedSize: number | undefined,
  limiter: RateLimiter | undefined,
  cancelled: () => boolean,
  wait: (ms: number) => void,
): HashOk | HashErr {
  if (cancelled()) return ABORTED;
  const steps = hashSteps(path, buf, expectedSize, limiter);
  for (let s = steps.next(); ; s = steps.next()) {
    if (s.done) return s.value;
    if (cancelled()) {
      steps.return(ABORTED);
      return ABORTED;
    }
    if (s.value >= 1) {
      const deadline = Date.now() + s.value;
      for (let ms = s.value; ms >= 1; ms = deadline - Date.now()) {
        if (cancelled()) {
          steps.return(ABORTED);
          return ABORTED;
        }
        wait(ms);
      }
    }
  }
}

/** Slots of the per-worker cancel table (see WorkerInit.control). */
export const CANCEL_SLOTS = 1024;
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

/** A reply is sent at the latest this long after the previous one while a batch runs. */
const REPLY_EVERY_MS = 25;

/**
 * The worker loop. Batches are hashed one file at a time, synchronously, in
 * the order they arrive (the pool keeps the next batch queued in the port so
 * the worker never idles between batches). Because the thread is busy while
 * it hashes, cancellation does not travel as a message but through
 * `control`, shared memory the main thread writes: the cancel table, where
 * slot id % CANCEL_SLOTS holds id once file job `id` is cancelled (the pool
 * keeps fewer files than CANCEL_SLOTS in flight per worker, and ids are
 * unique, so slots never clash), and a wake counter to interrupt a
 * rate-limit wait.
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
    const n = msg.paths.length;
    let from = 0;
    let lastReply = Date.now();
    let sha1 = new Uint8Array(20 * n);
    let sizes = new Float64Array(n);
    let identity = new BigUint64Array(3 * n);
    let failures: { i: number; err: HashErr }[] = [];
    const reply = (end: number) => {
      const count = end - from;
      const out: HashBatchReply = {
        type: "done",
        batch: msg.batch,
        from,
        count,
        sha1,
        sizes,
        identity,
        failures,
      };
      port.postMessage(out, [sha1.buffer, sizes.buffer, identity.buffer]);
      from = end;
      lastReply = Date.now();
      const left = n - end;
      sha1 = new Uint8Array(20 * left);
      sizes = new Float64Array(left);
      identity = new BigUint64Array(3 * left);
      failures = [];
    };
    for (let k = 0; k < n; k++) {
      const id = msg.ids[k]!;
      const marker = id & 0x7fff_ffff;
      const cancelled = () => Atomics.load(control, id % CANCEL_SLOTS) === marker;
      const wait = (ms: number) => {
        // Read the wake counter before the last cancel check, so a cancel that
        // lands in between changes the counter and Atomics.wait returns at once.
        const seen = Atomics.load(control, WAKE_INDEX);
        if (!cancelled()) Atomics.wait(control, WAKE_INDEX, seen, ms);
      };
      const expected = msg.expectedSizes[k]!;
      const r = hashFileBlocking(
        msg.paths[k]!,
        buf,
        expected >= 0 ? expected : undefined,
        limiter,
        cancelled,
        wait,
      );
      const i = k - from;
      if (r.ok) {
        sha1.set(r.sha1, 20 * i);
        sizes[i] = r.size;
        identity[3 * i] = r.dev;
        identity[3 * i + 1] = r.ino;
        identity[3 * i + 2] = BigInt.asUintN(64, r.mtimeNs); // read back with asIntN
      } else {
        failures.push({ i, err: r });
      }
      if (k + 1 < n && Date.now() - lastReply >= REPLY_EVERY_MS) reply(k + 1);
    }
    reply(n);
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
