// HashPool: SHA1 of many message files, in parallel on the host's cores.
//
// Filling a spool's sha1 caches means reading every message once (the seed's
// operator took five days), so this is built to keep the disks and all cores
// busy without starving live IMAP traffic: worker threads (each hashes one
// file at a time with blocking 1 MiB reads, and always has the next file
// waiting in its message queue so it never idles on a round trip to the
// main thread), an optional byte-rate
// limit shared by all workers, optional lower CPU priority, and an
// AbortSignal so a long `guidup hash` stops cleanly.
//
// The agent calls `pool.hash(path)` as often and as concurrently as it likes;
// jobs queue here and are handed to whichever worker has room. `hashMany`
// wraps that for a stream of jobs with bounded look-ahead and progress.
//
// Worker file: the compiled `hash-worker.js` next to this module (dist/). When
// this module runs from TypeScript sources (vitest), `./hash-worker.js` does
// not exist and node 20 cannot run the .ts file in a worker, so the compiled
// `dist/src/agent/hash-worker.js` is used (`npm test` builds first). If no
// worker file can be found, or a worker fails to start, the pool hashes on
// the main thread with the very same code (`mode` says which).

import { existsSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath, pathToFileURL } from "node:url";
import { threadId as mainThreadId, Worker } from "node:worker_threads";
import {
  cancelInControl,
  createControl,
  HASH_READ_BYTES,
  type HashErr,
  type HashOk,
  hashFile,
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
}

export interface HashPoolStats {
  mode: "threads" | "inline";
  /** Per hashing thread (0 = main thread): files and bytes it hashed. */
  threads: { threadId: number; files: number; bytes: number }[];
}

/**
 * Files handed to one worker at once: the one it hashes and the next one,
 * already waiting in its port when it finishes. For disk-bound (cold-cache)
 * runs, more workers than cores keeps more reads outstanding.
 */
const PER_WORKER = 2;

interface Task {
  id: number;
  job: HashJob;
  resolve: (r: HashResult) => void;
  reject: (err: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
  /** Set while queued; cleared when dispatched or dropped. */
  queued: boolean;
  slot?: Slot;
}

interface Slot {
  worker: Worker;
  /** Shared with the worker: cancel table and wake counter. */
  control: Int32Array;
  threadId: number;
  ready: boolean;
  inflight: Map<number, Task>;
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
  readonly #workerUrl: URL | undefined;
  readonly #rate: { state: SharedArrayBuffer; bytesPerSec: number } | undefined;
  readonly #limiter: RateLimiter | undefined;

  #slots: Slot[] = [];
  /** FIFO of queued tasks; `#head` avoids O(n) shift() on long queues. */
  #queue: Task[] = [];
  #head = 0;
  #nextId = 1;
  #outstanding = 0;
  #idleWaiters: (() => void)[] = [];
  #closed = false;
  #inlineRunning = 0;
  #inlineBuffers: Buffer[] = [];
  #perThread = new Map<number, { files: number; bytes: number }>();

  constructor(opts: HashPoolOptions = {}) {
    const n = opts.workers ?? availableParallelism();
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`workers must be >= 1, not ${n}`);
    this.#workers = n;
    this.#lowPriority = opts.lowPriority === true;
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
        task.onAbort = () => this.#abortTask(task);
        signal.addEventListener("abort", task.onAbort, { once: true });
      }
      this.#outstanding++;
      this.#queue.push(task);
      this.#dispatch();
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

    const it: Iterator<HashJob | string> | AsyncIterator<HashJob | string> =
      Symbol.asyncIterator in jobs
        ? (jobs as AsyncIterable<HashJob | string>)[Symbol.asyncIterator]()
        : (jobs as Iterable<HashJob | string>)[Symbol.iterator]();
    const window = 2 * this.#capacity();
    type Settled = { k: number; r: HashResult } | { k: number; e: unknown };
    const pending = new Map<number, Promise<Settled>>();
    let seq = 0;
    let exhausted = false;
    let files = 0;
    let bytes = 0;
    try {
      for (;;) {
        while (!exhausted && !inner.signal.aborted && pending.size < window) {
          const next = await it.next();
          if (next.done) {
            exhausted = true;
            break;
          }
          const k = seq++;
          pending.set(
            k,
            this.hash(next.value, inner.signal).then(
              (r) => ({ k, r }),
              (e: unknown) => ({ k, e }),
            ),
          );
        }
        if (pending.size === 0) break;
        const s = await Promise.race(pending.values());
        pending.delete(s.k);
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
      if (pending.size > 0) {
        inner.abort();
        await Promise.allSettled(pending.values());
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

  #capacity(): number {
    return this.#mode === "threads" ? this.#workers * PER_WORKER : this.#workers;
  }

  #takeQueued(): Task | undefined {
    while (this.#head < this.#queue.length) {
      const t = this.#queue[this.#head++]!;
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      if (t.queued) return t;
    }
    return undefined;
  }

  #hasQueued(): boolean {
    for (let i = this.#head; i < this.#queue.length; i++) if (this.#queue[i]!.queued) return true;
    return false;
  }

  #dispatch(): void {
    if (this.#mode === "inline") {
      while (this.#inlineRunning < this.#workers) {
        const t = this.#takeQueued();
        if (t === undefined) return;
        t.queued = false;
        this.#runInline(t);
      }
      return;
    }
    if (!this.#hasQueued()) return;
    while (this.#slots.length < this.#workers && this.#mode === "threads") this.#spawn();
    if (this.#mode !== "threads") {
      this.#dispatch();
      return;
    }
    for (;;) {
      let best: Slot | undefined;
      for (const s of this.#slots) {
        if (s.inflight.size < PER_WORKER && (!best || s.inflight.size < best.inflight.size)) {
          best = s;
        }
      }
      if (best === undefined) return;
      const t = this.#takeQueued();
      if (t === undefined) return;
      t.queued = false;
      t.slot = best;
      if (best.inflight.size === 0) best.worker.ref();
      best.inflight.set(t.id, t);
      const req: WorkerRequest = { type: "hash", id: t.id, path: t.job.path };
      if (t.job.expectedSize !== undefined) req.expectedSize = t.job.expectedSize;
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
        slot.ready = true;
        return;
      }
      const t = slot.inflight.get(msg.id);
      if (t === undefined) return;
      slot.inflight.delete(msg.id);
      if (slot.inflight.size === 0) worker.unref();
      const r = msg.result;
      this.#finish(t, slot.threadId, r.ok ? { ...r, sha1: Buffer.from(r.sha1) } : r);
      this.#dispatch();
    });
    const died = (why: string) => {
      if (!this.#slots.includes(slot)) return;
      this.#slots = this.#slots.filter((s) => s !== slot);
      const tasks = [...slot.inflight.values()];
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
      requeue.push(...[...s.inflight.values()]);
      s.inflight.clear();
      void s.worker.terminate();
    }
    for (const t of requeue) {
      t.queued = true;
      delete t.slot;
    }
    this.#queue = [...requeue, ...this.#queue.slice(this.#head)];
    this.#head = 0;
    this.#dispatch();
  }

  #runInline(t: Task): void {
    this.#inlineRunning++;
    const buf = this.#inlineBuffers.pop() ?? Buffer.allocUnsafe(HASH_READ_BYTES);
    const opts: Parameters<typeof hashFile>[2] = {};
    if (t.job.expectedSize !== undefined) opts.expectedSize = t.job.expectedSize;
    if (this.#limiter !== undefined) opts.limiter = this.#limiter;
    if (t.signal !== undefined) opts.signal = t.signal;
    void hashFile(t.job.path, buf, opts).then((r) => {
      this.#inlineRunning--;
      this.#inlineBuffers.push(buf);
      this.#finish(t, mainThreadId, r);
      this.#dispatch();
    });
  }

  #abortTask(t: Task): void {
    if (t.queued) {
      t.queued = false;
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

  /** Bookkeeping common to every way a task ends. */
  #settle(t: Task): void {
    if (t.onAbort !== undefined) t.signal?.removeEventListener("abort", t.onAbort);
    delete t.slot;
    this.#outstanding--;
    if (this.#outstanding === 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}
