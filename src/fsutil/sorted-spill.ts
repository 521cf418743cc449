// Sorting more records than should be held at once: an external merge sort.
// Records (arrays of strings, the first being the sort key) are collected in
// memory up to `runRecords`; a full batch is sorted and written to a run
// file (one JSON array per line) next to `pathPrefix`; `sorted()` merges the
// runs through a heap, reading each a chunk at a time. What is held is one
// batch while adding and one chunk and one record per run while merging,
// whatever the number of records.
//
// The order is stable: records with equal keys come out in the order they
// were added (runs are written in order, a batch sort is stable, and the
// merge breaks ties by run). Callers rely on it to keep the first of
// duplicates (a mailbox list's first line naming a mailbox).

import { type FileHandle, open, unlink } from "node:fs/promises";

/** Records per run: ~20,000 short records are a few MB held while adding. */
export const DEFAULT_RUN_RECORDS = 20_000;

const READ_CHUNK = 64 * 1024;
const NEWLINE = 0x0a;

export type SpillRecord = readonly string[];

export interface SortedSpillOptions {
  /** Run files are `${pathPrefix}.run-N`, created exclusively, removed by sorted() and discard(). */
  pathPrefix: string;
  /** The order of the keys (a record's first string). */
  compare: (a: string, b: string) => number;
  runRecords?: number;
}

export class SortedSpill {
  readonly #prefix: string;
  readonly #compare: (a: string, b: string) => number;
  readonly #runRecords: number;
  #batch: SpillRecord[] = [];
  readonly #runs: string[] = [];
  #count = 0;
  #consumed = false;

  constructor(options: SortedSpillOptions) {
    this.#prefix = options.pathPrefix;
    this.#compare = options.compare;
    this.#runRecords = Math.max(1, options.runRecords ?? DEFAULT_RUN_RECORDS);
  }

  /** Records added so far. */
  get count(): number {
    return this.#count;
  }

  /** Run files written so far (for tests: a spill of few records writes none). */
  get runs(): number {
    return this.#runs.length;
  }

  async add(record: SpillRecord): Promise<void> {
    if (this.#consumed) throw new Error("SortedSpill: add after sorted()");
    this.#batch.push(record);
    this.#count++;
    if (this.#batch.length >= this.#runRecords) await this.#writeRun();
  }

  /** Every record in key order, stable; the spill's files are gone once it ends or is returned. */
  async *sorted(): AsyncGenerator<SpillRecord, void, undefined> {
    if (this.#consumed) throw new Error("SortedSpill: sorted() twice");
    this.#consumed = true;
    const byKey = (a: SpillRecord, b: SpillRecord) => this.#compare(a[0] ?? "", b[0] ?? "");
    if (this.#runs.length === 0) {
      // Everything fits one batch: no file at all.
      const batch = this.#batch.sort(byKey);
      this.#batch = [];
      yield* batch;
      return;
    }
    if (this.#batch.length > 0) await this.#writeRun();
    const readers = this.#runs.map((path) => readRecords(path));
    try {
      const heap = new MergeHeap(byKey);
      for (let run = 0; run < readers.length; run++) {
        const first = await (readers[run] as AsyncGenerator<SpillRecord>).next();
        if (!first.done) heap.push({ record: first.value, run });
      }
      for (;;) {
        const head = heap.pop();
        if (head === undefined) break;
        yield head.record;
        const next = await (readers[head.run] as AsyncGenerator<SpillRecord>).next();
        if (!next.done) heap.push({ record: next.value, run: head.run });
      }
    } finally {
      await Promise.all(readers.map((r) => r.return(undefined)));
      await this.discard();
    }
  }

  /** Removes the run files (an error, or records no longer wanted). */
  async discard(): Promise<void> {
    this.#batch = [];
    await Promise.all(this.#runs.splice(0).map((path) => unlink(path).catch(() => {})));
  }

  async #writeRun(): Promise<void> {
    const batch = this.#batch.sort((a, b) => this.#compare(a[0] ?? "", b[0] ?? ""));
    this.#batch = [];
    const path = `${this.#prefix}.run-${this.#runs.length}`;
    const file = await open(path, "wx", 0o600);
    this.#runs.push(path);
    try {
      // Written in slices: one string for a whole run would be the big
      // short-lived allocation this module exists to avoid.
      for (let i = 0; i < batch.length; i += 1000) {
        let text = "";
        for (const record of batch.slice(i, i + 1000)) text += `${JSON.stringify(record)}\n`;
        await writeAll(file, Buffer.from(text, "utf8"));
      }
    } finally {
      await file.close();
    }
  }
}

async function writeAll(file: FileHandle, data: Buffer): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await file.write(data, done, data.length - done);
    done += bytesWritten;
  }
}

/**
 * Records appended to a file in order (one JSON array per line), written in
 * slices; readRecords reads them back.
 */
export class RecordFile {
  #text = "";
  #count = 0;
  private constructor(
    readonly path: string,
    private readonly file: FileHandle,
  ) {}

  static async create(path: string): Promise<RecordFile> {
    return new RecordFile(path, await open(path, "wx", 0o600));
  }

  get count(): number {
    return this.#count;
  }

  async add(record: SpillRecord): Promise<void> {
    this.#text += `${JSON.stringify(record)}\n`;
    this.#count++;
    if (this.#text.length >= READ_CHUNK) await this.#flush();
  }

  async #flush(): Promise<void> {
    const text = this.#text;
    this.#text = "";
    if (text !== "") await writeAll(this.file, Buffer.from(text, "utf8"));
  }

  /** Writes what is left and closes the file. */
  async close(): Promise<void> {
    try {
      await this.#flush();
    } finally {
      await this.file.close();
    }
  }
}

/** The records of a run file or RecordFile, a chunk at a time. */
export async function* readRecords(path: string): AsyncGenerator<SpillRecord, void, undefined> {
  const file = await open(path, "r");
  try {
    let rest: Buffer = Buffer.alloc(0);
    const chunk = Buffer.allocUnsafe(READ_CHUNK);
    for (;;) {
      const { bytesRead } = await file.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      const data = rest.length > 0 ? Buffer.concat([rest, chunk.subarray(0, bytesRead)]) : chunk;
      const end = rest.length > 0 ? data.length : bytesRead;
      const last = data.lastIndexOf(NEWLINE, end - 1);
      if (last === -1) {
        rest = Buffer.from(data.subarray(0, end));
        continue;
      }
      // Whole lines only: a UTF-8 character is never split by the decode.
      const lines = data.toString("utf8", 0, last).split("\n");
      rest = Buffer.from(data.subarray(last + 1, end));
      for (const line of lines) yield JSON.parse(line) as SpillRecord;
    }
    if (rest.length > 0) yield JSON.parse(rest.toString("utf8")) as SpillRecord;
  } finally {
    await file.close();
  }
}

interface Head {
  record: SpillRecord;
  run: number;
}

/** A binary min-heap of run heads, ties broken by run (earlier runs first: stability). */
class MergeHeap {
  readonly #items: Head[] = [];
  constructor(readonly byKey: (a: SpillRecord, b: SpillRecord) => number) {}

  #less(a: Head, b: Head): boolean {
    const c = this.byKey(a.record, b.record);
    return c < 0 || (c === 0 && a.run < b.run);
  }

  push(item: Head): void {
    const items = this.#items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(items[i] as Head, items[parent] as Head)) break;
      [items[i], items[parent]] = [items[parent] as Head, items[i] as Head];
      i = parent;
    }
  }

  pop(): Head | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (top === undefined || last === undefined || items.length === 0) return top;
    items[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < items.length && this.#less(items[l] as Head, items[min] as Head)) min = l;
      if (r < items.length && this.#less(items[r] as Head, items[min] as Head)) min = r;
      if (min === i) break;
      [items[i], items[min]] = [items[min] as Head, items[i] as Head];
      i = min;
    }
    return top;
  }
}
