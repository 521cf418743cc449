// HashPool: SHA1 of many message files, in parallel on the host's cores.
//
// Filling a spool's sha1 caches means reading every message once (the seed's
// operator took five days), so this is built to keep the disks and all cores
// busy without starving live IMAP traffic: worker threads (each hashes its
// files one at a time with blocking reads into one reused 1 MiB buffer),
// an optional byte-rate limit shared by all workers, optional lower CPU
// priority, and AbortSignals so a long `guidup hash` stops cleanly.
//
// Most mail is a few kB, where a message to a worker and its answer cost more
// than the hashing, so files travel in batches: jobs queue here, and each
// worker gets a share of the queue in one message (up to MAX_BATCH files)
// and answers with packed results, always with its next batch already
// waiting in its port so it never idles on a round trip to the main thread.
// Workers start as the queue needs them, up to `workers`: another starts only
// when those running have their batches and files still wait.
//
// The agent calls `pool.hash(path)` as often and as concurrently as it likes
// (calls made in the same tick share batches); `hashMany` wraps that for a
// stream of jobs with bounded look-ahead and progress.
//
// Worker file: the compiled `hash-worker.js` next to this module (dist/). When
// this module runs from TypeScript sources (vitest), `./hash-worker.js` does
// not exist and node 20 cannot run the .ts file in a worker, so the compiled
// `dist/src/agent/hash-worker.js` is used (`npm test` builds first). If no
// worker file can be found, or a worker fails to start, the pool hashes on
// the main thread with the very same code (`mode` says which).

import { existsSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { setImmediate as nextTurn, setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { threadId as mainThreadId, Worker } from "node:worker_threads";
import { timelineMark } from "../timeline.js";
import {
  ABORTED,
  cancelInControl,
  createControl,
  HASH_READ_BYTES,
  type HashBatchReply,
  type HashErr,
  type HashOk,
  hashSteps,
  RateLimiter,
  WORKER_MARK,
  type WorkerInit,
  type WorkerReply,
  type WorkerRequest,
} from "./hash-worker.js";

export interface HashJob {
  path: string;
  /** The index record's SIZE; a file of another size is not read (code "size-mismatch"). */
  expectedSize?: number;
}

export interface HashSuccess {
  path: string;
  sha1: Buffer;
  /** Bytes hashed. */
  size: number;
  /** Identity of the file hashed, from fstat on the fd that was read. */
  dev: bigint;
  ino: bigint;
  mtimeNs: bigint;
}

export interface HashFailure {
  path: string;
  /** "ENOENT" when the file does not exist; otherwise a message. */
  error: string;
  /** errno code ("ENOENT", "EACCES", …), "size-mismatch", "changed" or "worker". */
  code: string;
  /** The file's actual size, when it could be opened. */
  size?: number;
}

export type HashResult = HashSuccess | HashFailure;

export function isHashFailure(r: HashResult): r is HashFailure {
  return "error" in r;
}

export interface HashPoolOptions {
  /** Worker threads; default os.availableParallelism(). */
  workers?: number;
  /** Byte-rate limit over all workers together (token bucket); default none. */
  maxBytesPerSec?: number;
  /**
   * Run workers at nice 19. CPU priority only: node cannot reach ioprio_set,
   * though CFQ/BFQ derive a best-effort I/O level from the nice value.
   * Ignored when hashing on the main thread (the agent's protocol loop must
   * not be slowed down).
   */
  lowPriority?: boolean;
  /** Hash on the main thread instead of in workers (tests, tiny jobs). */
  inline?: boolean;
  /** Worker module to run instead of the built-in one (tests of the fallback only). */
  workerUrl?: URL;
  /**
   * While no worker has started yet, hash what the workers' first batches
   * left queued on the main thread, one file at a time (as in inline mode:
   * the event loop gets a turn between reads, the rate limit applies, at
   * normal priority). The first files of a run then do not wait for a thread
   * to boot (tens of ms on an idle host, more on a busy one). For `guidup
   * hash`, whose agent has nothing else to do; off by default, so an
   * agent serving lock requests never blocks on a read.
   */
  hashWhileStarting?: boolean;
}

export interface HashPoolStats {
  mode: "threads" | "inline";
  /** Per hashing thread (0 = main thread): files and bytes it hashed. */
  threads: { threadId: number; files: number; bytes: number }[];
}

/**
 * Batches handed to one worker at once: the one it hashes and the next one,
 * already waiting in its port when it finishes. For disk-bound (cold-cache)
 * runs, more workers than cores keeps more reads outstanding.
 */
const PER_WORKER = 2;
/**
 * Most files in one batch. A batch takes an even share of the queue (so the
 * last files spread over all workers), capped here so that results flow
 * back steadily and fewer files than the worker's cancel table holds are in
 * flight per worker.
 */
const MAX_BATCH = 64;

interface Task {
  id: number;
  job: HashJob;
  resolve: (r: HashResult) => void;
  reject: (err: unknown) => void;
  signal?: AbortSignal;
  /** Set while queued; cleared when dispatched or dropped. */
  queued: boolean;
  slot?: Slot;
}

interface Batch {
  tasks: Task[];
  /** Tasks answered so far: replies come in order, tasks[answered..] are pending. */
  answered: number;
}

interface Slot {
  worker: Worker;
  /** Shared with the worker: cancel table and wake counter. */
  control: Int32Array;
  threadId: number;
  ready: boolean;
  inflight: Map<number, Batch>;
}

function workerFileUrl(): URL | undefined {
  const beside = new URL("./hash-worker.js", import.meta.url);
  if (existsSync(fileURLToPath(beside))) return beside;
  if (!import.meta.url.endsWith(".ts")) return undefined;
  // Running from sources: src/agent/hash-pool.ts → dist/src/agent/hash-worker.js
  // (tsconfig: rootDir ".", outDir "dist"). A compiled worker older than its
  // source is not used: it may not speak this module's protocol. (Hashing
  // then runs inline, which the worker-mode test reports as a failure.)
  const compiled = fileURLToPath(new URL("../../dist/src/agent/hash-worker.js", import.meta.url));
  const source = fileURLToPath(new URL("./hash-worker.ts", import.meta.url));
  try {
    if (statSync(compiled).mtimeMs >= statSync(source).mtimeMs) return pathToFileURL(compiled);
  } catch {
    // No build: hash inline.
  }
  return undefined;
}

function toJob(job: HashJob | string): HashJob {
  return typeof job === "string" ? { path: job } : job;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}

export class HashPool {
  #mode: "threads" | "inline";
  readonly #workers: number;
  readonly #lowPriority: boolean;
  readonly #hashWhileStarting: boolean;
  readonly #workerUrl: URL | undefined;
  readonly #rate: { state: SharedArrayBuffer; bytesPerSec: number } | undefined;
  readonly #limiter: RateLimiter | undefined;

  #slots: Slot[] = [];
  /** FIFO of queued tasks; `#head` avoids O(n) shift() on long queues. */
  #queue: Task[] = [];
  #head = 0;
  #nextId = 1;
  #nextBatch = 1;
  /** Tasks in #queue still marked queued. */
  #queued = 0;
  #dispatchScheduled = false;
  #outstanding = 0;
  #idleWaiters: (() => void)[] = [];
  #closed = false;
  #inlineRunning = 0;
  #inlineBuffers: Buffer[] = [];
  #perThread = new Map<number, { files: number; bytes: number }>();
  /**
   * Tasks per signal, with one abort listener per signal however many files
   * share it (a whole mailbox, a hashMany stream).
   */
  #watched = new Map<AbortSignal, { tasks: Set<Task>; onAbort: () => void }>();

  constructor(opts: HashPoolOptions = {}) {
    const n = opts.workers ?? availableParallelism();
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`workers must be >= 1, not ${n}`);
    this.#workers = n;
    this.#lowPriority = opts.lowPriority === true;
    this.#hashWhileStarting = opts.hashWhileStarting === true;
    if (opts.maxBytesPerSec !== undefined) {
      if (!(opts.maxBytesPerSec > 0)) {
        throw new RangeError(`maxBytesPerSec must be > 0, not ${opts.maxBytesPerSec}`);
      }
      this.#rate = { state: RateLimiter.createState(), bytesPerSec: opts.maxBytesPerSec };
      this.#limiter = new RateLimiter(this.#rate.state, this.#rate.bytesPerSec);
    }
    this.#workerUrl = opts.inline ? undefined : (opts.workerUrl ?? workerFileUrl());
    this.#mode = this.#workerUrl === undefined ? "inline" : "threads";
  }

  /** "threads" normally; "inline" when hashing on the main thread. */
  get mode(): "threads" | "inline" {
    return this.#mode;
  }

  stats(): HashPoolStats {
    return {
      mode: this.#mode,
      threads: [...this.#perThread].map(([threadId, s]) => ({ threadId, ...s })),
    };
  }

  /**
   * Hashes one file. Resolves with a HashFailure for file problems (missing,
   * unreadable, wrong size) — it never rejects for those. Rejects only when
   * `signal` aborts (the file is then dropped: queued ones never start,
   * in-flight ones stop at the next read) or the pool is closed.
   */
  hash(job: HashJob | string, signal?: AbortSignal): Promise<HashResult> {
    if (this.#closed) return Promise.reject(new Error("HashPool is closed"));
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<HashResult>((resolve, reject) => {
      const task: Task = { id: this.#nextId++, job: toJob(job), resolve, reject, queued: true };
      if (signal !== undefined) {
        task.signal = signal;
        this.#watch(task, signal);
      }
      this.#outstanding++;
      this.#queue.push(task);
      this.#queued++;
      // Jobs submitted in the same tick share batches: dispatch once they are all in.
      if (!this.#dispatchScheduled) {
        this.#dispatchScheduled = true;
        queueMicrotask(() => {
          this.#dispatchScheduled = false;
          this.#dispatch();
        });
      }
    });
  }

  /**
   * Hashes a stream of jobs, yielding results as they complete (not in job
   * order), keeping every worker busy but reading ahead in `jobs` only a
   * little. `onProgress(files, bytes)` runs after each result.
   *
   * On abort, files not yet started are never started, in-flight ones are
   * dropped, and once they have stopped the iteration throws the abort
   * reason. Every result yielded before that is complete, so a caller that
   * records results as they come has recorded nothing half-done. Breaking
   * out of the loop early stops the remaining work the same way.
   */
  async *hashMany(
    jobs: Iterable<HashJob | string> | AsyncIterable<HashJob | string>,
    onProgress?: (files: number, bytes: number) => void,
    signal?: AbortSignal,
  ): AsyncGenerator<HashResult, void, undefined> {
    const inner = new AbortController();
    const onAbort = () => inner.abort(signal === undefined ? undefined : abortReason(signal));
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });

    const isAsync = Symbol.asyncIterator in jobs;
    const it: Iterator<HashJob | string> | AsyncIterator<HashJob | string> = isAsync
      ? (jobs as AsyncIterable<HashJob | string>)[Symbol.asyncIterator]()
      : (jobs as Iterable<HashJob | string>)[Symbol.iterator]();
    const window = 2 * this.#capacity();
    type Settled = { r: HashResult } | { e: unknown };
    // Settled results in completion order, consumed from `head`.
    let done: Settled[] = [];
    let head = 0;
    let inFlight = 0;
    let wake: (() => void) | undefined;
    const settle = (s: Settled) => {
      done.push(s);
      inFlight--;
      wake?.();
    };
    let exhausted = false;
    let files = 0;
    let bytes = 0;
    try {
      for (;;) {
        while (!exhausted && !inner.signal.aborted && inFlight < window) {
          const next = isAsync ? await it.next() : (it as Iterator<HashJob | string>).next();
          if (next.done) {
            exhausted = true;
            break;
          }
          inFlight++;
          this.hash(next.value, inner.signal).then(
            (r) => settle({ r }),
            (e: unknown) => settle({ e }),
          );
        }
        if (head === done.length) {
          if (inFlight === 0) break;
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = undefined;
          continue;
        }
        const s = done[head++]!;
        if (head > 1024 && head * 2 > done.length) {
          done = done.slice(head);
          head = 0;
        }
        // After an abort, whatever still arrives is dropped, finished or not.
        if (inner.signal.aborted) continue;
        if ("e" in s) throw s.e;
        files++;
        if (!isHashFailure(s.r)) bytes += s.r.size;
        onProgress?.(files, bytes);
        yield s.r;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (inFlight > 0) {
        inner.abort();
        while (inFlight > 0) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
        }
        wake = undefined;
      }
      if (!exhausted) await it.return?.();
    }
    if (signal?.aborted) throw abortReason(signal);
  }

  /**
   * Waits for every job already submitted, then stops the workers. Jobs
   * submitted after close() reject.
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#outstanding > 0) {
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    }
    const slots = this.#slots;
    this.#slots = [];
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  /** Files that keep every hashing thread busy. */
  #capacity(): number {
    return this.#mode === "threads" ? this.#workers * PER_WORKER * MAX_BATCH : this.#workers;
  }

  #takeQueued(): Task | undefined {
    while (this.#head < this.#queue.length) {
      const t = this.#queue[this.#head++]!;
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      if (t.queued) {
        t.queued = false;
        this.#queued--;
        return t;
      }
    }
    return undefined;
  }

  #dispatch(): void {
    if (this.#mode === "inline") {
      while (this.#inlineRunning < this.#workers) {
        const t = this.#takeQueued();
        if (t === undefined) return;
        this.#runInline(t);
      }
      return;
    }
    this.#dispatchToWorkers();
    if (
      this.#mode === "threads" &&
      this.#hashWhileStarting &&
      this.#inlineRunning === 0 &&
      this.#queued > 0 &&
      !this.#slots.some((s) => s.ready)
    ) {
      // The workers are still booting and hold their first batches: the
      // main thread takes the next queued file meanwhile (#runInline
      // dispatches again when it is done, which takes the next one).
      const t = this.#takeQueued();
      if (t !== undefined) this.#runInline(t);
    }
  }

  #dispatchToWorkers(): void {
    for (;;) {
      if (this.#queued === 0) return;
      let best: Slot | undefined;
      for (const s of this.#slots) {
        if (s.inflight.size < PER_WORKER && (!best || s.inflight.size < best.inflight.size)) {
          best = s;
        }
      }
      if (best === undefined) {
        // Another worker only when the ones running are full and files still
        // wait: small mail (a few files per mailbox, the agent's main thread
        // the slower side) then keeps one worker, whose batches do not get
        // split with a second thread that would compete for the cores.
        if (this.#slots.length >= this.#workers) return;
        this.#spawn();
        if (this.#mode !== "threads") {
          this.#dispatch();
          return;
        }
        continue;
      }
      // An even share of what is queued, so the last files spread over the
      // running workers (more start only if these are full).
      const share = Math.ceil(this.#queued / (this.#slots.length * PER_WORKER));
      const size = Math.min(MAX_BATCH, Math.max(1, share));
      const tasks: Task[] = [];
      const req: WorkerRequest = {
        type: "hash",
        batch: this.#nextBatch++,
        ids: [],
        paths: [],
        expectedSizes: [],
      };
      while (tasks.length < size) {
        const t = this.#takeQueued();
        if (t === undefined) break;
        t.slot = best;
        tasks.push(t);
        req.ids.push(t.id);
        req.paths.push(t.job.path);
        req.expectedSizes.push(t.job.expectedSize ?? -1);
      }
      if (tasks.length === 0) return;
      if (best.inflight.size === 0) best.worker.ref();
      best.inflight.set(req.batch, { tasks, answered: 0 });
      best.worker.postMessage(req);
    }
  }

  #spawn(): void {
    const control = createControl();
    const init: WorkerInit = { mark: WORKER_MARK, lowPriority: this.#lowPriority, control };
    if (this.#rate !== undefined) init.rate = this.#rate;
    let worker: Worker;
    try {
      // execArgv []: the worker needs no loaders or flags of the parent (a
      // test runner's, for instance) to run plain compiled JS.
      worker = new Worker(this.#workerUrl!, { workerData: init, execArgv: [] });
    } catch {
      this.#fallBackToInline([]);
      return;
    }
    timelineMark(`agent: hash worker ${worker.threadId} spawned`);
    const slot: Slot = {
      worker,
      control,
      threadId: worker.threadId,
      ready: false,
      inflight: new Map(),
    };
    this.#slots.push(slot);
    worker.unref();
    worker.on("message", (msg: WorkerReply) => {
      if (msg.type === "ready") {
        timelineMark(`agent: hash worker ${slot.threadId} ready`);
        slot.ready = true;
        return;
      }
      const batch = slot.inflight.get(msg.batch);
      if (batch === undefined) return;
      batch.answered = msg.from + msg.count;
      if (batch.answered >= batch.tasks.length) {
        slot.inflight.delete(msg.batch);
        if (slot.inflight.size === 0) worker.unref();
      }
      // Refill the worker before the bookkeeping: it is waiting for work.
      this.#dispatch();
      this.#finishReply(batch, msg, slot.threadId);
    });
    const died = (why: string) => {
      if (!this.#slots.includes(slot)) return;
      this.#slots = this.#slots.filter((s) => s !== slot);
      const tasks = [...slot.inflight.values()].flatMap((b) => b.tasks.slice(b.answered));
      slot.inflight.clear();
      if (!slot.ready) {
        // The worker never started (missing or broken worker file): hash on
        // the main thread instead of failing every file.
        this.#fallBackToInline(tasks);
        return;
      }
      for (const t of tasks) {
        this.#finish(t, slot.threadId, {
          ok: false,
          error: `hash worker died: ${why}`,
          code: "worker",
        });
      }
      this.#dispatch();
    };
    worker.on("error", (err) => died(String(err)));
    worker.on("exit", (code) => died(`exit code ${code}`));
  }

  #fallBackToInline(requeue: Task[]): void {
    this.#mode = "inline";
    const others = this.#slots;
    this.#slots = [];
    for (const s of others) {
      // Their in-flight files finish there; later ones run inline.
      for (const b of s.inflight.values()) requeue.push(...b.tasks.slice(b.answered));
      s.inflight.clear();
      void s.worker.terminate();
    }
    for (const t of requeue) {
      t.queued = true;
      this.#queued++;
      delete t.slot;
    }
    this.#queue = [...requeue, ...this.#queue.slice(this.#head)];
    this.#head = 0;
    this.#dispatch();
  }

  #runInline(t: Task): void {
    this.#inlineRunning++;
    const buf = this.#inlineBuffers.pop() ?? Buffer.allocUnsafe(HASH_READ_BYTES);
    void this.#hashInline(t, buf).then((r) => {
      this.#inlineRunning--;
      this.#inlineBuffers.push(buf);
      this.#finish(t, mainThreadId, r);
      this.#dispatch();
    });
  }

  /**
   * hashSteps on the main thread: each read blocks for at most one buffer
   * (1 MiB), and the event loop gets a turn before every file and between
   * reads, so the agent's protocol loop keeps running; rate-limit debt is
   * waited off with a timer.
   */
  async #hashInline(t: Task, buf: Buffer): Promise<HashOk | HashErr> {
    await nextTurn();
    const signal = t.signal;
    if (signal?.aborted) return ABORTED;
    const steps = hashSteps(t.job.path, buf, t.job.expectedSize, this.#limiter);
    for (let s = steps.next(); ; s = steps.next()) {
      if (s.done) return s.value;
      try {
        if (s.value >= 1) await sleep(s.value, undefined, signal ? { signal } : undefined);
        else await nextTurn();
      } catch (err) {
        steps.return(ABORTED);
        if (signal?.aborted) return ABORTED;
        throw err;
      }
      if (signal?.aborted) {
        steps.return(ABORTED);
        return ABORTED;
      }
    }
  }

  /** Settles the tasks a worker reply answers. */
  #finishReply(batch: Batch, msg: HashBatchReply, threadId: number): void {
    let f = 0;
    const failures = msg.failures;
    for (let i = 0; i < msg.count; i++) {
      const t = batch.tasks[msg.from + i]!;
      if (f < failures.length && failures[f]!.i === i) {
        this.#finish(t, threadId, failures[f++]!.err);
        continue;
      }
      this.#finish(t, threadId, {
        ok: true,
        sha1: Buffer.from(msg.sha1.buffer, msg.sha1.byteOffset + 20 * i, 20),
        size: msg.sizes[i]!,
        dev: msg.identity[3 * i]!,
        ino: msg.identity[3 * i + 1]!,
        mtimeNs: BigInt.asIntN(64, msg.identity[3 * i + 2]!),
      });
    }
  }

  #abortTask(t: Task): void {
    if (t.queued) {
      t.queued = false;
      this.#queued--;
      this.#settle(t);
      t.reject(abortReason(t.signal!));
      return;
    }
    // In flight: tell the worker to stop (or never start) this file; the task
    // settles when it answers. Inline tasks watch the signal themselves.
    if (t.slot !== undefined) cancelInControl(t.slot.control, t.id);
  }

  #finish(t: Task, threadId: number, r: HashOk | HashErr): void {
    this.#settle(t);
    if (t.signal?.aborted) {
      t.reject(abortReason(t.signal));
      return;
    }
    if (r.ok) {
      const s = this.#perThread.get(threadId) ?? { files: 0, bytes: 0 };
      s.files++;
      s.bytes += r.size;
      this.#perThread.set(threadId, s);
      t.resolve({
        path: t.job.path,
        sha1: r.sha1,
        size: r.size,
        dev: r.dev,
        ino: r.ino,
        mtimeNs: r.mtimeNs,
      });
    } else {
      const f: HashFailure = { path: t.job.path, error: r.error, code: r.code };
      if (r.size !== undefined) f.size = r.size;
      t.resolve(f);
    }
  }

  #watch(t: Task, signal: AbortSignal): void {
    let w = this.#watched.get(signal);
    if (w === undefined) {
      const tasks = new Set<Task>();
      const onAbort = () => {
        this.#watched.delete(signal);
        for (const task of tasks) this.#abortTask(task);
      };
      w = { tasks, onAbort };
      this.#watched.set(signal, w);
      signal.addEventListener("abort", onAbort, { once: true });
    }
    w.tasks.add(t);
  }

  #unwatch(t: Task, signal: AbortSignal): void {
    const w = this.#watched.get(signal);
    if (w === undefined) return;
    w.tasks.delete(t);
    if (w.tasks.size === 0) {
      this.#watched.delete(signal);
      signal.removeEventListener("abort", w.onAbort);
    }
  }

  /** Bookkeeping common to every way a task ends. */
  #settle(t: Task): void {
    if (t.signal !== undefined) this.#unwatch(t, t.signal);
    delete t.slot;
    this.#outstanding--;
    if (this.#outstanding === 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
