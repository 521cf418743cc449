// guidup-plan/3: a plan read and written entry by entry, in flat memory.
//
// The file is YAML, as /2 was, laid out so that a reader never needs more
// than one line of it at a time (the contract; `formatEntry` and
// PlanWriter write exactly this):
//
//   # comment lines
//   format: guidup-plan/3           ← the first line that is not a comment
//   id: … created: … tool: … pair: … target: …
//   hosts: …                        ← block mappings, as in /2
//   summary: …                      ← counts over the entries (display only)
//   bodySha256: "…"                 ← SHA-256 of every byte after "mailboxes:" (optional)
//   mailboxes:                      ← or "mailboxes: []"
//     - { "name": "user.a", "actions": ["guid"], "master": {…}, "replica": {…} }
//   skipped:                        ← or "skipped: []"
//     - { "name": "user.b", "reason": "corrupt", "detail": "…" }
//   ...                             ← YAML's end-of-document line: a cut file lacks it
//
// Each entry is ONE line: "  - " and a flow mapping in JSON syntax (JSON is
// YAML), keys in the model's order (model.ts), strings always quoted. Both
// lists are sorted by name (byte order, compareNames) and unique, and no
// name is in both. Blank lines and comment lines may stand between entries
// (a reviewer's notes); deleting an entry's line leaves that mailbox alone,
// as in /2. The header alone (everything before "mailboxes:") is what `show`
// summarises and what apply needs before its first mailbox.
//
// Reading checks the header against schemas/plan.schema.json, each entry
// against its $defs (plannedMailbox, skippedMailbox) as it is read, the
// order as it goes, and the closing "..." line; a problem is one line
// "file:line:col: path: message". The writer checks every entry it writes
// and records the body's digest in the header: a file that still matches
// it needs no check of every entry ahead of apply (namesAndBody), one
// edited since (plans are reviewed and may be edited) does. A /2 plan is
// read whole (plan-file.ts) and served from memory through the same
// interface.

import { createHash, type Hash } from "node:crypto";
import { type FileHandle, mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { Worker } from "node:worker_threads";
import { FileAccessError, InternalError } from "../errors.js";
import { fsyncDir, tempPathFor } from "../fsutil/atomic-file.js";
import { SortedSpill } from "../fsutil/sorted-spill.js";
import { compareNames, summarize } from "./build.js";
import { type Line, readLineBatches, readLines } from "./line-reader.js";
import {
  PLAN_FORMAT,
  type Plan,
  type PlanHeader,
  type PlannedMailbox,
  type PlanSummary,
  type SkippedMailbox,
} from "./model.js";
import {
  checkPlanValue,
  FILE_FACTS_KEYS,
  PlanError,
  parseWholePlan,
  planHeaderText,
} from "./plan-file.js";
import { formatProblems, limitLines, schemaDefProblems } from "./schema-check.js";
import { parseYamlSubset } from "./yaml-subset.js";

/** The line that ends a /3 plan (YAML's document end marker). */
export const END_LINE = "...";
const ENTRY_PREFIX = "  - ";

// --- one entry, one line -------------------------------------------------------

/** Printable ASCII without `"` or `\\`: JSON writes it as it is, and YAML wants nothing escaped. */
const PLAIN_STRING = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A string as JSON writes it, with what YAML wants escaped that JSON leaves raw. */
function quoted(value: string): string {
  // Names, digests and keys almost always are plain: no JSON.stringify and
  // no regular expression replace per string (a plan entry has ~50 of them).
  if (PLAIN_STRING.test(value)) return `"${value}"`;
  return JSON.stringify(value).replace(
    /[\u007f-\u009f\u2028\u2029\ufeff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

type Flow = string | number | boolean | readonly Flow[] | { [key: string]: Flow | undefined };

/**
 * "{ "k": v, … }" in the object's key order, undefined values left out.
 * Built by appending to one string (no parts arrays, no Object.entries):
 * the controller formats an entry per planned mailbox, and this was most
 * of what plan allocated.
 */
function flow(value: Flow): string {
  if (typeof value === "string") return quoted(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new InternalError(`unsupported plan number ${value}`);
    return String(value);
  }
  if (typeof value === "boolean") return String(value);
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) out += (i === 0 ? "" : ", ") + flow(value[i] as Flow);
    return `${out}]`;
  }
  let out = "";
  const object = value as { [key: string]: Flow | undefined };
  for (const k of Object.keys(object)) {
    const v = object[k];
    if (v === undefined) continue;
    out += `${out === "" ? "{ " : ", "}${quoted(k)}: ${flow(v)}`;
  }
  return out === "" ? "{}" : `${out} }`;
}

function ordered<T extends object>(value: T, keys: readonly (keyof T & string)[]): Flow {
  const out: Record<string, Flow | undefined> = {};
  for (const k of keys) out[k] = value[k] as Flow | undefined;
  return out;
}

function sideFlow(side: PlannedMailbox["master"]): Flow {
  return {
    index: ordered(side.index, FILE_FACTS_KEYS),
    expunge: side.expunge ? ordered(side.expunge, FILE_FACTS_KEYS) : undefined,
    fingerprint: side.fingerprint,
    planned: { records: side.planned.records, digest: side.planned.digest },
    cached: side.cached,
  };
}

/** A planned entry's line (without the newline). */
export function formatEntry(m: PlannedMailbox): string {
  return `${ENTRY_PREFIX}${flow({
    name: m.name,
    partition: m.partition,
    actions: m.actions,
    master: sideFlow(m.master),
    replica: sideFlow(m.replica),
  })}`;
}

/** A skipped entry's line (without the newline). */
export function formatSkipped(s: SkippedMailbox): string {
  return `${ENTRY_PREFIX}${flow({ name: s.name, reason: s.reason, detail: s.detail })}`;
}

/** The whole /3 text of an in-memory plan (small plans, tests), with its bodySha256. */
export function formatPlanV3(plan: Plan): string {
  const body: string[] = [];
  for (const m of plan.mailboxes) body.push(`${formatEntry(m)}\n`);
  body.push(plan.skipped.length === 0 ? "skipped: []\n" : "skipped:\n");
  for (const s of plan.skipped) body.push(`${formatSkipped(s)}\n`);
  body.push(`${END_LINE}\n`);
  const bodyText = body.join("");
  const { mailboxes: _m, skipped: _s, bodySha256: _d, ...header } = plan;
  const bodySha256 = createHash("sha256").update(bodyText, "utf8").digest("hex");
  return [
    planHeaderText({ ...header, bodySha256 }),
    plan.mailboxes.length === 0 ? "mailboxes: []\n" : "mailboxes:\n",
    bodyText,
  ].join("");
}

// --- reading -------------------------------------------------------------------

type Section = "mailboxes" | "skipped";

interface EntryLine {
  line: Line;
  name: string;
  index: number;
}

function sectionOf(text: string): { section: Section; empty: boolean } | undefined {
  const m = /^(mailboxes|skipped):( \[\])?\s*(#.*)?$/.exec(text);
  return m ? { section: m[1] as Section, empty: m[2] !== undefined } : undefined;
}

const isNote = (text: string) => text.trim() === "" || text.trimStart().startsWith("#");

const NAME_AT_START = /^ {2}- \{ ?"name": ?("(?:[^"\\]|\\.)*")/;

/**
 * Whether a plan's body is the one its header's bodySha256 describes:
 * "matches" (every entry is as guidup wrote and checked it), "differs"
 * (edited since guidup wrote it), "absent" (no digest: a plan of an older
 * guidup, or a /2 plan).
 */
export type BodyVerdict = "matches" | "differs" | "absent";

/** A plan opened for reading: its header, and its entries on demand (each call reads the file again). */
export interface PlanStream {
  readonly file: string;
  readonly header: PlanHeader;
  /**
   * Planned entries in order, each checked against the schema; with `keep`,
   * only those whose name it keeps (the others are not even parsed).
   */
  mailboxes(keep?: (name: string) => boolean): AsyncGenerator<PlannedMailbox>;
  /** Skipped entries in order, each checked; also that none is planned. */
  skipped(): AsyncGenerator<SkippedMailbox>;
  /** Planned names in order, without checking the rest of each entry (status, counting). */
  names(): AsyncGenerator<string>;
  /**
   * The planned names in order, as names() reads them, each given to
   * `each`, and meanwhile whether the file's body still matches the
   * header's bodySha256 (apply's first run: hashing the body costs far
   * less than checking every entry).
   */
  namesAndBody(each: (name: string) => void): Promise<BodyVerdict>;
}

/**
 * Opens a plan: reads and checks its header only (a /3 plan), or the whole
 * plan (/2, and anything that is not /3, which then fails as readPlan does).
 */
export async function openPlan(path: string): Promise<PlanStream> {
  let first: Line | undefined;
  const headerLines: string[] = [];
  let bodyStart: { offset: number; number: number; empty: boolean } | undefined;
  try {
    for await (const line of readLines(path)) {
      if (first === undefined) {
        if (isNote(line.text)) {
          headerLines.push(line.text);
          continue;
        }
        first = line;
        if (!/^format: *"?guidup-plan\/3"? *(#.*)?$/.test(line.text)) break;
      }
      const s = sectionOf(line.text);
      if (s) {
        if (s.section !== "mailboxes")
          throw new PlanError(
            `${path}:${line.number}:1: "skipped:" before "mailboxes:" (a guidup-plan/3 plan lists mailboxes first)`,
            { file: path },
          );
        bodyStart = {
          offset: line.offset + Buffer.byteLength(line.text) + 1,
          number: line.number + 1,
          empty: s.empty,
        };
        break;
      }
      headerLines.push(line.text);
    }
  } catch (err) {
    if (err instanceof PlanError) throw err;
    throw new FileAccessError(`cannot read plan ${path}: ${(err as Error).message}`);
  }
  if (bodyStart === undefined) {
    if (first !== undefined && /^format: *"?guidup-plan\/3"?/.test(first.text))
      throw new PlanError(
        `${path}:${headerLines.length + 1}:1: the plan ends before its "mailboxes:" line (cut short?)`,
        { file: path },
      );
    return wholePlanStream(path);
  }
  const text = `${headerLines.join("\n")}\n`;
  const parsed = parseYamlSubset(text);
  if (!parsed.ok) return wholePlanStream(path); // not in the writer's style: the yaml library says where
  const header = checkPlanValue(
    { ...(parsed.value as object), mailboxes: [], skipped: [] },
    { file: path, text },
  ) as Plan;
  const { mailboxes: _m, skipped: _s, ...rest } = header;
  return new V3Stream(path, rest, bodyStart);
}

/** A /2 plan (or one the fast path cannot read): parsed whole, served from memory. */
async function wholePlanStream(path: string): Promise<PlanStream> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new FileAccessError(`cannot read plan ${path}: ${(err as Error).message}`);
  }
  const plan = parseWholePlan(text, path);
  const { mailboxes, skipped, ...header } = plan;
  return {
    file: path,
    header,
    async *mailboxes(keep?: (name: string) => boolean) {
      for (const m of mailboxes) if (!keep || keep(m.name)) yield m;
    },
    async *skipped() {
      yield* skipped;
    },
    async *names() {
      for (const m of mailboxes) yield m.name;
    },
    async namesAndBody(each: (name: string) => void): Promise<BodyVerdict> {
      for (const m of mailboxes) each(m.name);
      // A /3 plan read whole is not in the writer's layout: edited.
      return header.bodySha256 === undefined ? "absent" : "differs";
    },
  };
}

class V3Stream implements PlanStream {
  /** Where the skipped section's entries start, once a pass has seen it. */
  #skippedStart: { offset: number; number: number; empty: boolean } | undefined;

  constructor(
    readonly file: string,
    readonly header: PlanHeader,
    readonly bodyStart: { offset: number; number: number; empty: boolean },
  ) {}

  #fail(line: Line | number, message: string, col = 1): never {
    const n = typeof line === "number" ? line : line.number;
    throw new PlanError(`${this.file}:${n}:${col}: ${message}`, { file: this.file, line: n });
  }

  /**
   * The entry lines of one section, in order, a batch at a time (sort and
   * uniqueness checked on the names); records where the skipped section
   * starts; checks the closing "..." after it.
   */
  async *#entryLines(section: Section): AsyncGenerator<EntryLine[]> {
    const start = section === "mailboxes" ? this.bodyStart : await this.#findSkipped();
    let prev: string | undefined;
    let index = 0;
    let last = start.number - 1;
    let ended = false;
    try {
      for await (const lines of readLineBatches(this.file, start.offset, start.number)) {
        const batch: EntryLine[] = [];
        for (const line of lines) {
          last = line.number;
          if (!line.terminated && line.text !== END_LINE)
            this.#fail(line, "the plan ends in the middle of a line (cut short?)");
          if (isNote(line.text)) continue;
          if (line.text === END_LINE) {
            if (section === "mailboxes")
              this.#fail(line, 'the plan ends before its "skipped:" line');
            ended = true;
            continue;
          }
          if (ended) this.#fail(line, `nothing may follow the closing "${END_LINE}" line`);
          const s = sectionOf(line.text);
          if (s) {
            if (section === "mailboxes" && s.section === "skipped") {
              this.#skippedStart = {
                offset: line.offset + Buffer.byteLength(line.text) + 1,
                number: line.number + 1,
                empty: s.empty,
              };
              if (batch.length > 0) yield batch;
              return;
            }
            this.#fail(line, `a second "${s.section}:" line`);
          }
          if (start.empty)
            this.#fail(line, `an entry under "${section}: []" (write "${section}:" for a list)`);
          const name = this.#nameOf(line, section, index);
          if (prev !== undefined) {
            const order = compareNames(prev, name);
            if (order === 0)
              this.#fail(
                line,
                `${section}[${index}].name: mailbox ${JSON.stringify(name)} is listed twice`,
                5,
              );
            if (order > 0)
              this.#fail(
                line,
                `${section}[${index}].name: not sorted by name: ${JSON.stringify(name)} comes after ${JSON.stringify(prev)}`,
                5,
              );
          }
          prev = name;
          batch.push({ line, name, index: index++ });
        }
        if (batch.length > 0) yield batch;
      }
    } catch (err) {
      if (err instanceof PlanError) throw err;
      throw new FileAccessError(`cannot read plan ${this.file}: ${(err as Error).message}`);
    }
    if (section === "mailboxes")
      this.#fail(last, 'the plan ends before its "skipped:" line (cut short?)');
    if (!ended)
      this.#fail(last, `the plan ends without its closing "${END_LINE}" line (cut short?)`);
  }

  /**
   * The entry's name: read from the line's start when written in the
   * writer's key order, else from the whole entry (checked: a missing name
   * is reported as the schema says it).
   */
  #nameOf(line: Line, section: Section, index: number): string {
    const m = NAME_AT_START.exec(line.text);
    if (m) {
      try {
        return JSON.parse(m[1] as string) as string;
      } catch {
        this.#fail(line, "the entry's name is not a valid quoted string", 5);
      }
    }
    if (!line.text.startsWith(`${ENTRY_PREFIX}{`))
      this.#fail(
        line,
        `not an entry of a guidup-plan/3 plan: each is one line '  - { "name": …, … }'`,
      );
    const def = section === "mailboxes" ? "plannedMailbox" : "skippedMailbox";
    return this.#entry<{ name: string }>(line, section, index, def).name;
  }

  async #findSkipped(): Promise<{ offset: number; number: number; empty: boolean }> {
    if (this.#skippedStart === undefined)
      for await (const _ of this.#entryLines("mailboxes")) {
      }
    return this.#skippedStart as { offset: number; number: number; empty: boolean };
  }

  #entry<T>(line: Line, section: Section, index: number, def: string): T {
    let value: unknown;
    try {
      value = JSON.parse(line.text.slice(ENTRY_PREFIX.length));
    } catch (err) {
      this.#fail(
        line,
        `${section}[${index}]: not a one-line flow mapping (${(err as Error).message})`,
        5,
      );
    }
    const problems = schemaDefProblems("plan", def, value);
    if (problems.length > 0) {
      const lines = formatProblems(
        problems.map((p) => ({ ...p, pointer: `/${section}/${index}${p.pointer}` })),
        this.file,
        () => ({ line: line.number, col: 5 }),
      );
      throw new PlanError(limitLines(lines), {
        file: this.file,
        line: line.number,
        problems: lines,
      });
    }
    return value as T;
  }

  async *mailboxes(keep?: (name: string) => boolean): AsyncGenerator<PlannedMailbox> {
    for await (const batch of this.#entryLines("mailboxes"))
      for (const { line, name, index } of batch)
        if (!keep || keep(name))
          yield this.#entry<PlannedMailbox>(line, "mailboxes", index, "plannedMailbox");
  }

  async *names(): AsyncGenerator<string> {
    for await (const batch of this.#entryLines("mailboxes"))
      for (const { name } of batch) yield name;
  }

  async namesAndBody(each: (name: string) => void): Promise<BodyVerdict> {
    const expected = this.header.bodySha256;
    if (expected === undefined) {
      for await (const name of this.names()) each(name);
      return "absent";
    }
    // The body (every byte after the "mailboxes:" line) is hashed on a
    // thread of its own while this one reads the names: on two cores the
    // hash costs the first apply no time.
    const hashing = hashOnThread(this.file, this.bodyStart.offset);
    try {
      // A batch per await, not a name: a million awaits cost a good part of the pass.
      for await (const batch of this.#entryLines("mailboxes"))
        for (const { name } of batch) each(name);
    } catch (err) {
      hashing.cancel();
      throw err;
    }
    let digest: string;
    try {
      digest = await hashing.digest;
    } catch (err) {
      throw new FileAccessError(`cannot read plan ${this.file}: ${(err as Error).message}`);
    }
    return digest === expected ? "matches" : "differs";
  }

  async *skipped(): AsyncGenerator<SkippedMailbox> {
    // A name in both lists: walk the planned names alongside (both sorted).
    const planned = this.names();
    let p = await planned.next();
    try {
      for await (const batch of this.#entryLines("skipped"))
        for (const { line, name, index } of batch) {
          const entry = this.#entry<SkippedMailbox>(line, "skipped", index, "skippedMailbox");
          while (!p.done && compareNames(p.value, name) < 0) p = await planned.next();
          if (!p.done && p.value === name)
            this.#fail(
              line,
              `skipped[${index}].name: mailbox ${JSON.stringify(name)} is also planned`,
              5,
            );
          yield entry;
        }
    } finally {
      await planned.return(undefined);
    }
  }
}

// --- writing -------------------------------------------------------------------

/** What the writer needs before the first entry: the header but the summary (counted as entries come) and the body's digest. */
export type PlanWriterHead = Omit<PlanHeader, "format" | "summary" | "bodySha256">;

/** Planned entries' bytes gathered per write of the body. */
const BODY_BATCH_BYTES = 1 << 20;

export interface PlanWriterOptions {
  /** Skipped entries per sort run (tests make it small to merge many runs). */
  skippedRunRecords?: number;
}

/**
 * Writes a /3 plan entry by entry: planned entries go to a temporary body
 * file as they come (in name order), skipped ones to a sorted spill
 * (fsutil/sorted-spill.ts: any order, held a batch at a time); commit writes the
 * header with the summary counted over the entries, the body and the
 * skipped entries into a temporary file, fsyncs, renames it over `path` and
 * fsyncs the directory. A crash leaves the old file or the new one, and at
 * worst ".<name>.tmp-*" files next to it. An entry that breaks the schema,
 * the order or the uniqueness is a bug of the caller (InternalError).
 */
export class PlanWriter {
  #body: FileHandle | undefined;
  readonly #bodyPath: string;
  /**
   * Entry lines encoded as they come, written when full. Not an array of
   * the lines: a formatted line is a tree of string pieces (~5 KB for a
   * 540-byte line) until flattened, and a megabyte of such lines outlived
   * the young generation: most of what plan's controller promoted to the
   * old space, to die there.
   */
  readonly #batch = Buffer.allocUnsafe(BODY_BATCH_BYTES);
  #batchSize = 0;
  #prev: string | undefined;
  readonly #skipped: SortedSpill;
  readonly #counts: PlanSummary;
  /** The header's bodySha256: of every byte written after the "mailboxes:" line. */
  readonly #bodyDigest: Hash = createHash("sha256");
  readonly head: PlanWriterHead;

  private constructor(
    readonly path: string,
    head: PlanWriterHead,
    options: PlanWriterOptions,
  ) {
    this.#bodyPath = tempPathFor(path);
    this.#skipped = new SortedSpill({
      pathPrefix: `${this.#bodyPath}.skipped`,
      compare: compareNames,
      ...(options.skippedRunRecords ? { runRecords: options.skippedRunRecords } : {}),
    });
    this.#counts = summarize(0, [], [], 0);
    // A header read from another plan carries that plan's digest: never copied.
    const { bodySha256: _, ...own } = head as PlanWriterHead & { bodySha256?: string };
    this.head = own;
  }

  static async create(
    path: string,
    head: PlanWriterHead,
    options: PlanWriterOptions = {},
  ): Promise<PlanWriter> {
    const w = new PlanWriter(path, head, options);
    try {
      await mkdir(dirname(path), { recursive: true });
      w.#body = await open(w.#bodyPath, "wx", 0o600);
    } catch (err) {
      throw new FileAccessError(`cannot write plan ${path}: ${(err as Error).message}`);
    }
    return w;
  }

  /** Adds a planned entry; names must come in increasing order. */
  async add(m: PlannedMailbox): Promise<void> {
    const problems = schemaDefProblems("plan", "plannedMailbox", m);
    if (problems.length > 0)
      throw new InternalError(
        `refusing to write an invalid plan entry ${JSON.stringify(m.name)}: ${problems[0]?.pointer} ${problems[0]?.message}`,
      );
    if (this.#prev !== undefined && compareNames(this.#prev, m.name) >= 0)
      throw new InternalError(
        `plan entries out of order: ${JSON.stringify(m.name)} after ${JSON.stringify(this.#prev)}`,
      );
    this.#prev = m.name;
    const one = summarize(0, [m], [], 0);
    const c = this.#counts;
    c.toApply++;
    c.byAction.version += one.byAction.version;
    c.byAction.guid += one.byAction.guid;
    for (const side of ["master", "replica"] as const) {
      c.records[side] += one.records[side];
      c.oldStyleGuids[side] += one.oldStyleGuids[side];
      c.bytesToHash[side] += one.bytesToHash[side];
    }
    const line = `${formatEntry(m)}\n`;
    const bytes = Buffer.byteLength(line);
    if (this.#batchSize + bytes > this.#batch.length) await this.#flush();
    if (bytes > this.#batch.length) {
      // A line longer than the whole batch is written on its own.
      const data = Buffer.from(line, "utf8");
      this.#bodyDigest.update(data);
      await writeBytes(this.#body as FileHandle, data);
    } else this.#batchSize += this.#batch.write(line, this.#batchSize, "utf8");
  }

  /**
   * Adds a skipped entry (any order; sorted at commit). Entries go to a
   * sorted spill next to the plan, not kept: a list of a million names
   * the scan could not plan (a replica not yet seeded, say) costs the
   * writer one sort batch.
   */
  async skip(s: SkippedMailbox): Promise<void> {
    const problems = schemaDefProblems("plan", "skippedMailbox", s);
    if (problems.length > 0)
      throw new InternalError(
        `refusing to write an invalid skipped entry ${JSON.stringify(s.name)}: ${problems[0]?.message}`,
      );
    // The fields, formatted at commit: a formatted line is a tree of string
    // pieces many times its size until written, and a sort batch holds
    // 20,000 of them.
    await this.#skipped.add([s.name, s.reason, s.detail]);
    this.#counts.skipped++;
    this.#counts.bySkipReason[s.reason] = (this.#counts.bySkipReason[s.reason] ?? 0) + 1;
  }

  async #flush(): Promise<void> {
    if (this.#batchSize === 0) return;
    const data = this.#batch.subarray(0, this.#batchSize);
    this.#bodyDigest.update(data);
    await writeBytes(this.#body as FileHandle, data);
    this.#batchSize = 0;
  }

  /**
   * Writes the plan. `mailboxes` and `upToDate` complete the counted
   * summary; or `summary` is written as given (a plan rewritten as it was).
   */
  async commit(
    totals: { mailboxes: number; upToDate: number } | { summary: PlanSummary },
  ): Promise<PlanSummary> {
    const summary =
      "summary" in totals
        ? totals.summary
        : { ...this.#counts, mailboxes: totals.mailboxes, upToDate: totals.upToDate };
    const header: PlanHeader = { format: PLAN_FORMAT, ...this.head, summary };
    try {
      checkPlanValue({ ...header, mailboxes: [], skipped: [] });
    } catch (err) {
      await this.abort();
      if (err instanceof PlanError)
        throw new InternalError(`refusing to write an invalid plan: ${err.message}`);
      throw err;
    }
    const tmp = tempPathFor(this.path);
    const tailPath = `${this.#bodyPath}.tail`;
    const dir = dirname(this.path);
    try {
      await this.#flush();
      const body = this.#body as FileHandle;
      await body.close();
      this.#body = undefined;
      // The skipped entries and the end line go to a file of their own
      // first (merged from the spill, checked against the planned names):
      // the header, written before them, carries the digest of the whole
      // body, the flushed entries and this tail.
      const tailFile = await open(tailPath, "wx", 0o600);
      try {
        const toTail = async (text: string) => {
          const data = Buffer.from(text, "utf8");
          this.#bodyDigest.update(data);
          await writeBytes(tailFile, data);
        };
        await toTail(this.#skipped.count === 0 ? "skipped: []\n" : "skipped:\n");
        await this.#writeSkipped(toTail);
        await toTail(`${END_LINE}\n`);
      } finally {
        await tailFile.close();
      }
      const bodySha256 = this.#bodyDigest.digest("hex");
      const out = await open(tmp, "wx", 0o644);
      try {
        await writeAll(out, planHeaderText({ ...header, bodySha256 }));
        await writeAll(
          out,
          summary.toApply === 0 && this.#prev === undefined ? "mailboxes: []\n" : "mailboxes:\n",
        );
        await copyFile(this.#bodyPath, out);
        await copyFile(tailPath, out);
        await out.sync();
      } finally {
        await out.close();
      }
      await rename(tmp, this.path);
      await fsyncDir(dir);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      if (err instanceof InternalError) throw err;
      throw new FileAccessError(`cannot write plan ${this.path}: ${(err as Error).message}`);
    } finally {
      await unlink(this.#bodyPath).catch(() => {});
      await unlink(tailPath).catch(() => {});
      await this.#skipped.discard();
    }
    return summary;
  }

  /**
   * The skipped entries in name order, each name once and none also
   * planned (the body's names walked alongside, both sorted), a slice at a
   * time.
   */
  async #writeSkipped(write: (text: string) => Promise<void>): Promise<void> {
    const planned = this.#prev === undefined ? undefined : readLines(this.#bodyPath);
    let p = await planned?.next();
    let plannedName = p && !p.done ? bodyName(p.value.text) : undefined;
    let last: string | undefined;
    let text = "";
    try {
      for await (const [name, reason, detail] of this.#skipped.sorted()) {
        const skipped = name as string;
        if (skipped === last) throw new InternalError(`skipped entry ${skipped} twice`);
        last = skipped;
        while (planned && plannedName !== undefined && compareNames(plannedName, skipped) < 0) {
          p = await planned.next();
          plannedName = p.done ? undefined : bodyName(p.value.text);
        }
        if (plannedName === skipped)
          throw new InternalError(`mailbox ${JSON.stringify(skipped)} is both planned and skipped`);
        text += `${formatSkipped({ name: skipped, reason: reason as SkippedMailbox["reason"], detail: detail as string })}\n`;
        if (text.length >= 1 << 20) {
          await write(text);
          text = "";
        }
      }
      await write(text);
    } finally {
      await planned?.return(undefined);
    }
  }

  /** Drops what was written (an error before commit). */
  async abort(): Promise<void> {
    await this.#skipped.discard();
    await this.#body?.close().catch(() => {});
    this.#body = undefined;
    await unlink(this.#bodyPath).catch(() => {});
  }
}

/** The name of a body line (a planned entry the writer wrote). */
function bodyName(line: string): string {
  return JSON.parse(NAME_AT_START.exec(line)?.[1] ?? '""') as string;
}

async function writeAll(file: FileHandle, text: string): Promise<void> {
  await writeBytes(file, Buffer.from(text, "utf8"));
}

async function writeBytes(file: FileHandle, data: Buffer): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await file.write(data, done, data.length - done);
    done += bytesWritten;
  }
}

/**
 * The thread's code (CommonJS, run with eval: no file to find, from the
 * sources or the build): the SHA-256 (hex) of the file from an offset to
 * its end, posted back.
 */
const BODY_HASH_THREAD = `
const { workerData, parentPort } = require("node:worker_threads");
const { openSync, readSync, closeSync } = require("node:fs");
const hash = require("node:crypto").createHash("sha256");
const fd = openSync(workerData.file, "r");
try {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let at = workerData.offset, n; (n = readSync(fd, buf, 0, buf.length, at)) > 0; at += n)
    hash.update(buf.subarray(0, n));
} finally {
  closeSync(fd);
}
parentPort.postMessage(hash.digest("hex"));
`;

/** The SHA-256 of `path` from `offset` to its end, hashed on a worker thread. */
function hashOnThread(path: string, offset: number): { digest: Promise<string>; cancel(): void } {
  const worker = new Worker(BODY_HASH_THREAD, { eval: true, workerData: { file: path, offset } });
  const digest = new Promise<string>((resolve, reject) => {
    worker.once("message", (hex: string) => resolve(hex));
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`its hashing thread ended (${code})`)));
  });
  return {
    digest,
    cancel() {
      digest.catch(() => {});
      void worker.terminate();
    },
  };
}

async function copyFile(from: string, to: FileHandle): Promise<void> {
  const src = await open(from, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await src.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      for (let done = 0; done < bytesRead; ) {
        const { bytesWritten } = await to.write(buf, done, bytesRead - done);
        done += bytesWritten;
      }
    }
  } finally {
    await src.close();
  }
}
