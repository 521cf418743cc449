// Where apply keeps its per-mailbox state: `<plan>.state/`, one JSON file per
// mailbox, fanned out into 256 subdirectories by the first byte of the SHA1 of
// the mailbox name (so a million mailboxes do not share one directory, and a
// 490-byte mailbox name never becomes a file name). Every write is atomic
// (src/fsutil/atomic-file.ts: temp file, fsync, rename, fsync of the
// directory). A `.lock` file held with an OFD fcntl lock keeps two applies of
// one plan apart; it dies with the process, so a killed apply never leaves a
// stale lock behind.
//
// Beside the state files, a journal (state-journal.ts) indexes every
// mailbox's last phase: apply skips finished mailboxes by it without reading
// their files, and status counts from it. It is appended after each state
// file is written and rebuilt from the files whenever it may be behind.
//
// A state directory belongs to one plan (its id): `plan-id` in the directory
// names it, written when apply first takes the directory, and every state
// file carries `planId`. A plan written over an old plan's path must never
// inherit the old plan's progress ("done" for a mailbox the new plan still
// has to change), so a store bound to one plan refuses a directory or a file
// of another (StateOwnerError) instead of reading it.

import { createHash } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { mkdir, readdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ERRORS, type ErrorCode, FileAccessError, GuidupError } from "../errors.js";
import { replaceFileSync } from "../fsutil/atomic-file.js";
import { type FileLock, tryLockFile } from "../fsutil/fcntl-lock.js";
import { schemaProblems } from "../plan/schema-check.js";
import { FINAL_PHASES, type MailboxState, type Phase } from "./state.js";
import {
  JOURNAL_FILE,
  JournalAppender,
  journalRecord,
  loadJournal,
  nameKey,
  PhaseIndex,
  writeJournal,
} from "./state-journal.js";

export class StateLockedError extends GuidupError {
  readonly code: ErrorCode = ERRORS.stateLocked.code;
}

export class StateFileError extends GuidupError {
  readonly code: ErrorCode = ERRORS.stateFile.code;
}

/** The state directory of another plan: apply refuses it rather than read it as its own. */
export class StateOwnerError extends GuidupError {
  readonly code: ErrorCode = ERRORS.stateOwner.code;
}

/** The file in a state directory saying which plan file's entries an apply has checked. */
export const PLAN_CHECKED_FILE = "plan-checked";

async function planStamp(planFile: string): Promise<string> {
  const st = await stat(planFile, { bigint: true });
  return `${st.size} ${st.mtimeNs} ${st.ino}\n`;
}

/** The file in a state directory naming the plan it belongs to. */
export const PLAN_ID_FILE = "plan-id";

/** What a plan-checked marker says (counts absent in markers written before they were kept). */
export interface CheckedPlan {
  entries?: number;
  finishedElsewhere?: number;
  /**
   * How the entries were known good before the first mailbox: the plan's
   * bodySha256 matched (as guidup wrote them), or each entry was checked.
   * Absent in markers written before it was kept.
   */
  checkedBy?: PlanCheck;
}

/** How apply's first run knew every entry of a plan good (the plan-checked marker's third line). */
export type PlanCheck = "bodySha256" | "entries";

export function stateDirFor(planPath: string): string {
  return `${planPath}.state`;
}

function nameHash(name: string): string {
  return createHash("sha1").update(name).digest("hex");
}

export class StateStore {
  #lock: FileLock | undefined;
  readonly #dirsMade = new Set<string>();

  #ownerChecked = false;
  #planId: string | undefined;
  /** The journal's index, once loaded (acquire, or loadIndex). */
  #index: PhaseIndex | undefined;
  #journal: JournalAppender | undefined;
  #journalDropped = false;

  /**
   * `planId`: the plan this store serves (acquire sets it too). With it, a
   * directory or state file of another plan is refused (StateOwnerError);
   * without it (tools that only look), nothing is checked.
   */
  constructor(
    readonly dir: string,
    planId?: string,
  ) {
    this.#planId = planId;
  }

  get planId(): string | undefined {
    return this.#planId;
  }

  /**
   * Takes the store's lock, refusing when another apply holds it, then binds
   * the directory to `planId` (refusing one that belongs to another plan).
   */
  async acquire(planId: string): Promise<void> {
    if (this.#planId !== undefined && this.#planId !== planId)
      throw new StateOwnerError(
        `state store of plan ${this.#planId} asked to serve plan ${planId}`,
      );
    this.#planId = planId;
    await mkdir(this.dir, { recursive: true });
    const lockPath = join(this.dir, ".lock");
    await writeFile(lockPath, "", { flag: "a" });
    const lock = await tryLockFile(lockPath);
    if (!lock) {
      let who = "";
      try {
        who = (await readFile(join(this.dir, ".owner"), "utf8")).trim();
      } catch {
        // no owner note: say less
      }
      throw new StateLockedError(
        `another guidup apply of this plan is running (${who || "lock held"}); state: ${this.dir}`,
      );
    }
    this.#lock = lock;
    try {
      const owner = await this.#recordedOwner();
      if (owner !== undefined && owner !== planId) throw this.#ownerError(owner, planId);
      if (owner === undefined) await writeFile(join(this.dir, PLAN_ID_FILE), `${planId}\n`);
    } catch (err) {
      await this.release();
      throw err;
    }
    this.#ownerChecked = true;
    await writeFile(
      join(this.dir, ".owner"),
      `pid ${process.pid}, plan ${planId}, since ${new Date().toISOString()}\n`,
    );
    try {
      const loaded = await loadJournal(this.dir, planId);
      if (loaded?.clean) {
        this.#index = loaded.index;
        // Compacted when mostly superseded records (a mailbox's in-progress, then done).
        if (loaded.records > 2 * loaded.index.size + 10_000)
          writeJournal(this.dir, planId, loaded.index);
      } else {
        this.#index = await this.#indexFromFiles();
        writeJournal(this.dir, planId, this.#index);
      }
      this.#journal = new JournalAppender(this.dir);
      this.#journal.open();
    } catch (err) {
      await this.release();
      if (err instanceof GuidupError) throw err;
      throw new FileAccessError(`cannot index ${this.dir}: ${(err as Error).message}`);
    }
  }

  /** An index read from every state file (the journal's truth). */
  async #indexFromFiles(): Promise<PhaseIndex> {
    const index = new PhaseIndex();
    for await (const st of this.all())
      index.set(nameKey(st.name), st.phase, st.lockHeldMs, doneVia(st));
    return index;
  }

  /**
   * The index of this directory's mailboxes, for reading (status): the
   * journal when it can be trusted — clean, or `applyRunning` (the apply
   * that opened it is still appending) — else rebuilt from the state files
   * in memory (`rebuilt`; only an apply rewrites the journal).
   */
  async loadIndex(applyRunning: boolean): Promise<{ index: PhaseIndex; rebuilt: boolean }> {
    if (this.#index) return { index: this.#index, rebuilt: false };
    await this.#checkOwner();
    const planId = this.planId;
    const loaded = planId === undefined ? undefined : await loadJournal(this.dir, planId);
    if (loaded && (loaded.clean || applyRunning)) {
      this.#index = loaded.index;
      return { index: loaded.index, rebuilt: false };
    }
    this.#index = await this.#indexFromFiles();
    return { index: this.#index, rebuilt: true };
  }

  /** The mailbox's phase as the index has it (undefined: no state, or no index). */
  indexedPhase(name: string): Phase | undefined {
    return this.#index?.phaseOf(name);
  }

  /**
   * Whether every entry of the plan file at `planFile` was checked by an
   * earlier apply of this directory and the file has not changed since
   * (size, modification time, inode): apply then reads each entry only as
   * it comes to it. undefined: not checked. The marker also keeps what that
   * pass counted (markers before counts lack them): the plan's entries, and
   * how many finished records the index held for names not in the plan (a
   * reviewer deleted their lines), so that apply can count what is done and
   * left from the index alone instead of re-reading every name.
   */
  async checkedPlan(planFile: string): Promise<CheckedPlan | undefined> {
    const marker = await readOptional(join(this.dir, PLAN_CHECKED_FILE));
    if (marker === undefined) return undefined;
    const [stamp, counts, how] = marker.split("\n");
    if (`${stamp}\n` !== (await planStamp(planFile))) return undefined;
    const m = /^entries (\d+) finished-elsewhere (\d+)$/.exec(counts ?? "");
    const by = /^checked-by (bodySha256|entries)$/.exec(how ?? "")?.[1] as PlanCheck | undefined;
    return {
      ...(m ? { entries: Number(m[1]), finishedElsewhere: Number(m[2]) } : {}),
      ...(by ? { checkedBy: by } : {}),
    };
  }

  /**
   * Records that apply knows every entry of `planFile` (as it is now) good,
   * and what it counted. The third line is new: readers before it ignore it.
   */
  async markPlanChecked(
    planFile: string,
    counted: { entries: number; finishedElsewhere: number; checkedBy?: PlanCheck },
  ): Promise<void> {
    const how = counted.checkedBy ? `checked-by ${counted.checkedBy}\n` : "";
    await writeFile(
      join(this.dir, PLAN_CHECKED_FILE),
      `${await planStamp(planFile)}entries ${counted.entries} finished-elsewhere ${counted.finishedElsewhere}\n${how}`,
    );
  }

  /** Records per phase in the index (undefined without an index). */
  indexCounts(): Partial<Record<Phase, number>> | undefined {
    return this.#index?.counts();
  }

  /**
   * Whether the index says the mailbox is finished (done, skipped): apply
   * skips it without reading its file. False without an index.
   */
  isFinished(name: string): boolean {
    const phase = this.#index?.phaseOf(name);
    return phase !== undefined && FINAL_PHASES.has(phase);
  }

  /**
   * The plan the directory belongs to: its `plan-id` file; for a directory
   * of guidup 0.1.0 (no `plan-id`), the plan its `.owner` note names; for a
   * new or empty directory, undefined.
   */
  async #recordedOwner(): Promise<string | undefined> {
    const recorded = await readOptional(join(this.dir, PLAN_ID_FILE));
    if (recorded !== undefined) return recorded.trim();
    if (!(await this.#hasStateFiles())) return undefined;
    const note = await readOptional(join(this.dir, ".owner"));
    const fromNote = note === undefined ? undefined : /\bplan (\S+?),/.exec(note)?.[1];
    if (fromNote !== undefined) return fromNote;
    throw new StateOwnerError(
      `${this.dir} holds apply state but does not say which plan it belongs to; move it away (or delete it) before applying this plan`,
      { dir: this.dir },
    );
  }

  async #hasStateFiles(): Promise<boolean> {
    try {
      return (await readdir(this.dir)).some((d) => /^[0-9a-f]{2}$/.test(d));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  #ownerError(owner: string, planId: string): StateOwnerError {
    return new StateOwnerError(
      `${this.dir} belongs to plan ${owner}, not to this plan (${planId}): the plan file was replaced after an apply; apply the old plan from its own file, or move ${this.dir} away to start this plan afresh`,
      { dir: this.dir, statePlan: owner, plan: planId },
    );
  }

  /** Refuses (once per store) a directory of another plan; a no-op for a store without a plan id. */
  async #checkOwner(): Promise<void> {
    if (this.planId === undefined || this.#ownerChecked) return;
    const owner = await this.#recordedOwner();
    if (owner !== undefined && owner !== this.planId) throw this.#ownerError(owner, this.planId);
    this.#ownerChecked = true;
  }

  async release(): Promise<void> {
    try {
      this.#journal?.close();
    } finally {
      this.#journal = undefined;
    }
    await this.#lock?.unlock();
    this.#lock = undefined;
  }

  pathFor(name: string): string {
    const h = nameHash(name);
    return join(this.dir, h.slice(0, 2), `${h}.json`);
  }

  async read(name: string): Promise<MailboxState | undefined> {
    await this.#checkOwner();
    const path = this.pathFor(name);
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new FileAccessError(`${path}: ${(err as Error).message}`);
    }
    const state = this.#own(parseState(text, path, name), path);
    // The journal was behind (a crash after this file was written): catch it up.
    if (FINAL_PHASES.has(state.phase) && this.#journal && !this.isFinished(name))
      this.#noteInIndex(state);
    return state;
  }

  #noteInIndex(state: MailboxState): void {
    this.#index?.set(nameKey(state.name), state.phase, state.lockHeldMs, doneVia(state));
    this.#journal?.append(journalRecord(state.name, state.phase, state.lockHeldMs, doneVia(state)));
  }

  /** A state file of another plan (copied in by hand) is refused, never read as this plan's. */
  #own(state: MailboxState, path: string): MailboxState {
    if (this.#planId !== undefined && state.planId !== undefined && state.planId !== this.#planId) {
      throw new StateOwnerError(
        `${path} belongs to plan ${state.planId}, not to this plan (${this.planId}); move it away`,
        { file: path, statePlan: state.planId, plan: this.planId },
      );
    }
    return state;
  }

  /**
   * Writes one state file atomically (replaceFileSync). Synchronous on
   * purpose: the file is a few hundred bytes, and
   * each of its eight file-system calls would otherwise be a round trip
   * through libuv's thread pool — measured as the controller's main cost
   * per mailbox. The wait is the fsync, which an async call waits for too.
   */
  async write(state: MailboxState): Promise<void> {
    const path = this.pathFor(state.name);
    const dir = join(path, "..");
    try {
      if (!this.#dirsMade.has(dir)) {
        mkdirSync(dir, { recursive: true });
        this.#dirsMade.add(dir);
      }
      replaceFileSync(path, `${JSON.stringify(this.#stamped(state), null, 1)}\n`);
      // After the file: the journal may lag behind a state file, never lead it.
      if (this.#journal) this.#noteInIndex(state);
      else if (!this.#journalDropped) {
        // Written outside an apply (a tool, a test): the journal no longer
        // knows this file, so it goes, to be rebuilt from the files.
        rmSync(join(this.dir, JOURNAL_FILE), { force: true });
        this.#journalDropped = true;
      }
    } catch (err) {
      throw new FileAccessError(`cannot write state ${path}: ${(err as Error).message}`);
    }
  }

  /** The state with this store's plan id right after the name (the writer need not know it). */
  #stamped(state: MailboxState): MailboxState {
    if (this.planId === undefined) return state;
    const { name, planId: _planId, ...rest } = state;
    return { name, planId: this.planId, ...rest };
  }

  /** Every state file (for status): one directory at a time, never all names at once in memory twice. */
  async *all(): AsyncGenerator<MailboxState> {
    await this.#checkOwner();
    let subdirs: string[];
    try {
      subdirs = (await readdir(this.dir)).filter((d) => /^[0-9a-f]{2}$/.test(d)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    for (const sub of subdirs) {
      const files = (await readdir(join(this.dir, sub))).filter((f) => f.endsWith(".json")).sort();
      for (const f of files) {
        const path = join(this.dir, sub, f);
        yield this.#own(parseState(await readFile(path, "utf8"), path), path);
      }
    }
  }
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new FileAccessError(`${path}: ${(err as Error).message}`);
  }
}

function parseState(text: string, path: string, expectName?: string): MailboxState {
  let obj: MailboxState;
  try {
    obj = JSON.parse(text) as MailboxState;
  } catch {
    throw new StateFileError(
      `${path}: not valid JSON (a state file is written atomically; was it edited?)`,
    );
  }
  const problems = schemaProblems("state", obj);
  if (problems.length > 0 || (expectName !== undefined && obj.name !== expectName)) {
    const why = problems[0]
      ? `${problems[0].pointer || "/"}: ${problems[0].message}`
      : `names ${JSON.stringify(obj.name)}`;
    throw new StateFileError(
      `${path}: not a valid guidup state file (${why}; see schemas/state.schema.json)`,
    );
  }
  return obj;
}

/**
 * Before a new plan replaces the plan file at `planPath`: moves that plan's
 * state directory aside to `<planPath>.state.<old plan id>` (a record for
 * the operator, and so the new plan starts with no state), and returns where
 * it went; undefined when there was none. Refuses while an apply of the old
 * plan holds the directory's lock.
 */
export async function setStateAside(planPath: string): Promise<string | undefined> {
  const dir = stateDirFor(planPath);
  if (!(await pathExists(dir))) return undefined;
  const lockPath = join(dir, ".lock");
  await writeFile(lockPath, "", { flag: "a" });
  const lock = await tryLockFile(lockPath);
  if (!lock) {
    throw new StateLockedError(
      `an apply of the plan at ${planPath} is running (${dir} is locked); let it finish before replacing that plan`,
    );
  }
  try {
    const recorded = await readOptional(join(dir, PLAN_ID_FILE));
    const note = await readOptional(join(dir, ".owner"));
    const owner =
      recorded?.trim() ||
      (note === undefined ? undefined : /\bplan (\S+?),/.exec(note)?.[1]) ||
      "unknown-plan";
    const base = `${dir}.${owner.replace(/[^A-Za-z0-9._:+-]/g, "_")}`;
    let aside = base;
    for (let n = 2; await pathExists(aside); n++) aside = `${base}-${n}`;
    await rename(dir, aside);
    return aside;
  } finally {
    await lock.unlock();
  }
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw new FileAccessError(`${path}: ${(err as Error).message}`);
  }
}

/** The cut-over path the index keeps: a done mailbox's (status counts them). */
function doneVia(state: MailboxState): MailboxState["path"] {
  return state.phase === "done" ? state.path : undefined;
}
