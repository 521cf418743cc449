// The state directory's journal: an index of every mailbox's last phase, so
// that `status` of a million mailboxes and the start of `apply` need not read
// a million state files. The state files stay the truth; the journal is a
// record derived from them, appended after each one is written, and rebuilt
// from them whenever it may be behind.
//
// The contract (file `<plan>.state/journal`, text, one record a line):
//
//   guidup-state-journal/1 <plan id>      first line: the plan it indexes
//   open <pid> <ISO time>                 an apply took the directory
//   <key> <phase> <m> <r> [<path>]        a state file was written (after its
//                                         atomic replace); key: nameKey(name),
//                                         32 hex digits; m, r: the lock hold
//                                         ms per side, or "-"; path: the
//                                         cut-over path of a done mailbox
//                                         (CUTOVER_PATHS), when known
//   close <ISO time>                      that apply released it; every record
//                                         before is on disk (fsync, then this
//                                         line, then fsync)
//
// The last record of a name wins. Records are not fsynced one by one: a crash can
// lose the tail. So a journal is trusted only when "clean" — its last
// marker is a close — or while the apply that opened it still holds the
// lock; otherwise (missing, another plan's, unreadable, or an apply died
// with it open) it is rebuilt by reading every state file. Even a journal
// that is behind never says a mailbox is finished when its file does not:
// a record follows its file, and a finished phase (done, skipped) is final.

import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { fsyncDirSync, tempPathFor } from "../fsutil/atomic-file.js";
import { readLineBatches } from "../plan/line-reader.js";
import { CUTOVER_PATHS, type CutoverPath } from "../protocol/messages.js";
import { PHASES, type Phase } from "./state.js";

export const JOURNAL_FILE = "journal";
export const JOURNAL_FORMAT = "guidup-state-journal/1";

const EMPTY = 255;
const NO_HOLD = 0xffffffff;
/** 32-bit words of a key. */
const WORDS = 4;

/** MurmurHash3's 32-bit mixing over a string's UTF-16 code units. */
function murmur(name: string, seed: number): number {
  let h = seed;
  for (let i = 0; i < name.length; i++) {
    let k = Math.imul(name.charCodeAt(i), 0xcc9e2d51);
    k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
    h ^= k;
    h = (Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64) | 0;
  }
  h ^= name.length;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A mailbox's key in the index: 128 bits (four MurmurHash3-32 of the name,
 * seeds 1 to 4). Not the SHA1 of the state file's name: computed in
 * JavaScript it costs a tenth of that per name, and status hashes every name
 * of the plan; at 128 bits two names of one plan never meet by accident.
 */
export function nameKey(name: string): Uint32Array {
  const key = new Uint32Array(WORDS);
  for (let w = 0; w < WORDS; w++) key[w] = murmur(name, w + 1);
  return key;
}

function keyHex(keys: Uint32Array, at: number): string {
  let out = "";
  for (let w = 0; w < WORDS; w++) out += (keys[at + w] as number).toString(16).padStart(8, "0");
  return out;
}

/** What the index knows of one mailbox. */
export interface IndexedState {
  phase: Phase;
  lockHeldMs?: { master?: number; replica?: number };
  /** How the mailbox was staged (done ones; journals before paths lack it). */
  path?: CutoverPath;
}

/**
 * Last phase (and lock holds) per mailbox, keyed by nameKey: an
 * open-addressing table in flat arrays, 26 bytes a slot (under 64 MB for a
 * million mailboxes), rather than a Map of a million strings.
 */
export class PhaseIndex {
  #cap = 1024;
  #keys = new Uint32Array(this.#cap * WORDS);
  #codes = new Uint8Array(this.#cap).fill(EMPTY);
  #master = new Uint32Array(this.#cap);
  #replica = new Uint32Array(this.#cap);
  #paths = new Uint8Array(this.#cap).fill(EMPTY);
  size = 0;

  /** `expected`: about how many mailboxes it will hold (sized once instead of grown step by step). */
  constructor(expected = 0) {
    let cap = 1024;
    while (expected * 10 > cap * 7) cap *= 2;
    if (cap === this.#cap) return;
    this.#cap = cap;
    this.#keys = new Uint32Array(cap * WORDS);
    this.#codes = new Uint8Array(cap).fill(EMPTY);
    this.#master = new Uint32Array(cap);
    this.#replica = new Uint32Array(cap);
    this.#paths = new Uint8Array(cap).fill(EMPTY);
  }

  #slot(key: Uint32Array, keys: Uint32Array, cap: number, codes: Uint8Array): number {
    let i = (key[0] as number) & (cap - 1);
    for (;;) {
      if (codes[i] === EMPTY) return i;
      const at = i * WORDS;
      if (
        keys[at] === key[0] &&
        keys[at + 1] === key[1] &&
        keys[at + 2] === key[2] &&
        keys[at + 3] === key[3]
      )
        return i;
      i = (i + 1) & (cap - 1);
    }
  }

  set(
    key: Uint32Array,
    phase: Phase,
    hold?: { master?: number; replica?: number },
    path?: CutoverPath,
  ): void {
    if ((this.size + 1) * 10 > this.#cap * 7) this.#grow();
    const i = this.#slot(key, this.#keys, this.#cap, this.#codes);
    if (this.#codes[i] === EMPTY) {
      this.size++;
      this.#keys.set(key, i * WORDS);
    }
    this.#codes[i] = PHASES.indexOf(phase);
    this.#master[i] = hold?.master ?? NO_HOLD;
    this.#replica[i] = hold?.replica ?? NO_HOLD;
    this.#paths[i] = path === undefined ? EMPTY : CUTOVER_PATHS.indexOf(path);
  }

  get(key: Uint32Array): IndexedState | undefined {
    const i = this.#slot(key, this.#keys, this.#cap, this.#codes);
    const code = this.#codes[i] as number;
    if (code === EMPTY) return undefined;
    const m = this.#master[i] as number;
    const r = this.#replica[i] as number;
    const path = this.#paths[i] as number;
    return {
      phase: PHASES[code] as Phase,
      ...(m !== NO_HOLD || r !== NO_HOLD
        ? {
            lockHeldMs: {
              ...(m !== NO_HOLD ? { master: m } : {}),
              ...(r !== NO_HOLD ? { replica: r } : {}),
            },
          }
        : {}),
      ...(path !== EMPTY ? { path: CUTOVER_PATHS[path] as CutoverPath } : {}),
    };
  }

  phaseOf(name: string): Phase | undefined {
    const i = this.#slot(nameKey(name), this.#keys, this.#cap, this.#codes);
    const code = this.#codes[i] as number;
    return code === EMPTY ? undefined : (PHASES[code] as Phase);
  }

  /** How many mailboxes are in each phase. */
  counts(): Partial<Record<Phase, number>> {
    const out: Partial<Record<Phase, number>> = {};
    for (let i = 0; i < this.#cap; i++) {
      const code = this.#codes[i] as number;
      if (code === EMPTY) continue;
      const p = PHASES[code] as Phase;
      out[p] = (out[p] ?? 0) + 1;
    }
    return out;
  }

  /** Every entry as journal records (key, phase, holds), for a compacted journal. */
  *records(): Generator<string> {
    for (let i = 0; i < this.#cap; i++) {
      const code = this.#codes[i] as number;
      if (code === EMPTY) continue;
      const m = this.#master[i] as number;
      const r = this.#replica[i] as number;
      const path = this.#paths[i] as number;
      yield `${keyHex(this.#keys, i * WORDS)} ${PHASES[code]} ${m === NO_HOLD ? "-" : m} ${r === NO_HOLD ? "-" : r}${path === EMPTY ? "" : ` ${CUTOVER_PATHS[path]}`}\n`;
    }
  }

  #grow(): void {
    const cap = this.#cap * 2;
    const keys = new Uint32Array(cap * WORDS);
    const codes = new Uint8Array(cap).fill(EMPTY);
    const master = new Uint32Array(cap);
    const replica = new Uint32Array(cap);
    const paths = new Uint8Array(cap).fill(EMPTY);
    for (let i = 0; i < this.#cap; i++) {
      if (this.#codes[i] === EMPTY) continue;
      const key = this.#keys.subarray(i * WORDS, i * WORDS + WORDS);
      const j = this.#slot(key, keys, cap, codes);
      keys.set(key, j * WORDS);
      codes[j] = this.#codes[i] as number;
      master[j] = this.#master[i] as number;
      replica[j] = this.#replica[i] as number;
      paths[j] = this.#paths[i] as number;
    }
    this.#cap = cap;
    this.#keys = keys;
    this.#codes = codes;
    this.#master = master;
    this.#replica = replica;
    this.#paths = paths;
  }
}

/** One record's line. */
export function journalRecord(
  name: string,
  phase: Phase,
  hold?: { master?: number; replica?: number },
  path?: CutoverPath,
): string {
  return `${keyHex(nameKey(name), 0)} ${phase} ${hold?.master ?? "-"} ${hold?.replica ?? "-"}${path ? ` ${path}` : ""}\n`;
}

/** The shortest record line: a key, "done - -" and its newline. */
const MIN_RECORD_BYTES = 32 + 9 + 1;
const PHASE_BY_NAME = new Map<string, Phase>(PHASES.map((p) => [p, p]));
const PATH_BY_NAME = new Map<string, CutoverPath>(CUTOVER_PATHS.map((p) => [p, p]));

/**
 * One record line `<key> <phase> <m> <r> [<path>]` (key into `key`), or
 * undefined when it is not one. Read by hand rather than by a regular
 * expression: a million records are read before apply's first mailbox.
 */
function parseRecord(
  line: string,
  key: Uint32Array,
): { phase: Phase; hold: { master?: number; replica?: number }; path?: CutoverPath } | undefined {
  if (line.length < 32 + 6 || line.charCodeAt(32) !== 32) return undefined;
  for (let w = 0; w < WORDS; w++) {
    let word = 0;
    for (let i = w * 8; i < w * 8 + 8; i++) {
      const c = line.charCodeAt(i);
      const nibble = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1;
      if (nibble < 0) return undefined;
      word = word * 16 + nibble;
    }
    key[w] = word;
  }
  const fields = line.slice(33).split(" ");
  if (fields.length < 3 || fields.length > 4) return undefined;
  const phase = PHASE_BY_NAME.get(fields[0] as string);
  const master = holdField(fields[1] as string);
  const replica = holdField(fields[2] as string);
  const path = fields.length === 4 ? PATH_BY_NAME.get(fields[3] as string) : undefined;
  if (phase === undefined || master === null || replica === null) return undefined;
  if (fields.length === 4 && path === undefined) return undefined;
  const hold: { master?: number; replica?: number } = {};
  if (master !== undefined) hold.master = master;
  if (replica !== undefined) hold.replica = replica;
  return path === undefined ? { phase, hold } : { phase, hold, path };
}

/** A lock hold field: "-" (undefined), digits (their number), else null. */
function holdField(text: string): number | undefined | null {
  if (text === "-") return undefined;
  if (text.length === 0) return null;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return null;
    n = n * 10 + d;
  }
  return n;
}

export interface LoadedJournal {
  index: PhaseIndex;
  /** Its last marker is a close (or it was never opened). */
  clean: boolean;
  /** Records read (for compaction). */
  records: number;
}

/**
 * Reads the journal of `dir` for plan `planId`, a line at a time; undefined
 * when it is missing, another plan's or unreadable (a line that is not a
 * record: a torn tail after a crash) — the caller rebuilds it then.
 */
export async function loadJournal(dir: string, planId: string): Promise<LoadedJournal | undefined> {
  // Sized from the file: a record is at least MIN_RECORD_BYTES.
  const bytes = await stat(join(dir, JOURNAL_FILE)).then(
    (st) => st.size,
    () => 0,
  );
  const index = new PhaseIndex(Math.min(bytes / MIN_RECORD_BYTES, 50_000_000));
  let clean = true;
  let records = 0;
  let headed = false;
  const key = new Uint32Array(WORDS);
  try {
    for await (const batch of readLineBatches(join(dir, JOURNAL_FILE)))
      for (const { text: line, number, terminated } of batch) {
        if (!terminated) return undefined; // a torn last line
        if (number === 1) {
          if (line !== `${JOURNAL_FORMAT} ${planId}`) return undefined;
          headed = true;
          continue;
        }
        if (line.startsWith("open ")) {
          clean = false;
          continue;
        }
        if (line.startsWith("close ")) {
          clean = true;
          continue;
        }
        const r = parseRecord(line, key);
        if (!r) return undefined;
        index.set(key, r.phase, r.hold, r.path);
        records++;
      }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  if (!headed) return undefined; // missing, or empty
  return { index, clean, records };
}

/**
 * Replaces the journal with `index`'s records (atomically; a rebuilt or
 * compacted journal), clean.
 */
export function writeJournal(dir: string, planId: string, index: PhaseIndex): void {
  const path = join(dir, JOURNAL_FILE);
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, "wx", 0o644);
  try {
    let batch = [`${JOURNAL_FORMAT} ${planId}\n`];
    for (const r of index.records()) {
      batch.push(r);
      if (batch.length >= 16384) {
        writeAllSync(fd, batch.join(""));
        batch = [];
      }
    }
    batch.push(`close ${new Date().toISOString()}\n`);
    writeAllSync(fd, batch.join(""));
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
  fsyncDirSync(dir);
}

function writeAllSync(fd: number, text: string): void {
  const data = Buffer.from(text, "latin1");
  for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done);
}

/** The journal open for appending by the apply that holds the directory. */
export class JournalAppender {
  #fd: number | undefined;

  constructor(readonly dir: string) {}

  open(): void {
    this.#fd = openSync(join(this.dir, JOURNAL_FILE), "a");
    this.#write(`open ${process.pid} ${new Date().toISOString()}\n`);
  }

  append(line: string): void {
    if (this.#fd !== undefined) this.#write(line);
  }

  /** Everything appended is on disk, then the close marker is. */
  close(): void {
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    try {
      fsyncSync(fd);
      writeSync(fd, `close ${new Date().toISOString()}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  #write(line: string): void {
    writeAllSync(this.#fd as number, line);
  }
}
