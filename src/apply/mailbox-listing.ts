// The mailbox list of a pair for `guidup plan`, in flat memory: whatever the
// source (a list file, a command's output, the master's discovery, paged),
// its entries go through an external sort (fsutil/sorted-spill.ts) into
// files in a temporary directory, sorted by compareNames (the plan's order)
// and deduplicated; plan then reads them a window at a time. The
// controller holds a sort batch, a discovery page or a window, never the
// whole list. Every check of the list (not a list, mixed formats, a name
// listed twice with different entries) is made before any mailbox is
// scanned, as when the list was held whole.

import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  conflictingEntryError,
  MailboxListLines,
  type ParsedListEntry,
  sameListEntry,
} from "../cyrus/mailbox-list.js";
import { CyrusFormatError, FileAccessError } from "../errors.js";
import { RecordFile, readRecords, SortedSpill, type SpillRecord } from "../fsutil/sorted-spill.js";
import { compareNames } from "../plan/build.js";
import { readLineBatches } from "../plan/line-reader.js";
import type { MailboxRef } from "../protocol/messages.js";
import type { AgentClientOptions } from "../transport/agent-client.js";
import type { HostConnection } from "../transport/types.js";
import { discoverPages, type MailboxSource } from "./scan-pair.js";

export interface ListingOptions {
  /** Read a list even when most lines are not names (--skip-sanity-checks). */
  acceptSuspicious?: boolean;
  /** Records per sort run (tests make it small to merge many runs). */
  runRecords?: number;
  /** Mailboxes per discover page. */
  discoverPage?: number;
  /** Where the list's temporary directory goes (default os.tmpdir()). */
  tempRoot?: string;
}

/** The listing's temporary directories: `guidup-list-<pid>-<random>`. */
const LIST_DIR_PREFIX = "guidup-list-";
const LIST_DIR_PID = new RegExp(`^${LIST_DIR_PREFIX}(\\d+)-`);

/**
 * Removes the list directories of plans that are gone (killed: a plan that
 * ends, even by an error or Ctrl-C, removes its own). A directory is left
 * when its process still runs, when another user's process has that pid
 * (EPERM), or when its name carries no pid. (A plan in another pid namespace
 * sharing this /tmp could lose its list to this sweep: it then fails with
 * the missing file named; plan only reads the hosts.)
 */
async function sweepDeadListings(root: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = LIST_DIR_PID.exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid || processAlive(Number(pid))) continue;
    await rm(join(root, name), { recursive: true, force: true }).catch(() => {});
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/** A name with its reason: an excluded or an invalid entry. */
export interface ListedSkip {
  name: string;
  reason: string;
}

/**
 * The sorted, deduplicated list, in files: `mailboxes()` in compareNames
 * order, unique names; `excluded()` and `invalid()` likewise. Each can be
 * read once at a time; close() removes the files.
 */
export class MailboxListing {
  private constructor(
    private readonly dir: string,
    readonly count: number,
    readonly excludedCount: number,
    readonly invalidCount: number,
  ) {}

  /** Reads the list from `source` (the master's agent for discovery). */
  static async open(
    source: MailboxSource,
    master: HostConnection,
    clientOptions: AgentClientOptions,
    options: ListingOptions = {},
  ): Promise<MailboxListing> {
    const root = options.tempRoot ?? tmpdir();
    await sweepDeadListings(root);
    const dir = await mkdtemp(join(root, `${LIST_DIR_PREFIX}${process.pid}-`));
    try {
      const spills = {
        entries: new SortedSpill({
          pathPrefix: join(dir, "entries"),
          compare: compareNames,
          ...(options.runRecords ? { runRecords: options.runRecords } : {}),
        }),
        invalid: new SortedSpill({
          pathPrefix: join(dir, "invalid"),
          compare: compareNames,
          ...(options.runRecords ? { runRecords: options.runRecords } : {}),
        }),
      };
      let describe: (first: ParsedListEntry, again: ParsedListEntry) => Error;
      if ("discover" in source) {
        const host = await discoverInto(spills, master, clientOptions, options);
        describe = (first, again) =>
          new CyrusFormatError(
            `${host}: mailbox ${again.name} found in partition ${first.partition} and in partition ${again.partition}; one of them is a stray copy: move it out of the spool, then plan again`,
            { name: again.name },
          );
      } else {
        const name =
          "file" in source
            ? source.file
            : `${master.host}: ${(source as { command: string }).command}`;
        const lines = new MailboxListLines(name, { acceptSuspicious: options.acceptSuspicious });
        const take = async (text: string, number: number) => {
          const got = lines.line(text, number);
          if (got.kind === "entry") await spills.entries.add(entryRecord(got.entry));
          else if (got.kind === "invalid")
            await spills.invalid.add([got.invalid.name, got.invalid.reason]);
        };
        if ("file" in source) {
          try {
            for await (const batch of readLineBatches(source.file))
              for (const line of batch) await take(line.text, line.number);
          } catch (err) {
            if (err instanceof CyrusFormatError) throw err;
            throw new FileAccessError(`mailbox list ${source.file}: ${(err as Error).message}`);
          }
        } else {
          // A command's output arrives whole from the transport: walked
          // line by line without splitting it into a second copy.
          const { stdout } = await master.runCommand((source as { command: string }).command);
          let number = 1;
          for (let from = 0; from < stdout.length; number++) {
            const nl = stdout.indexOf("\n", from);
            const end = nl < 0 ? stdout.length : nl;
            await take(stdout.slice(from, end), number);
            from = end + 1;
          }
        }
        lines.check();
        describe = (first, again) => conflictingEntryError(name, first, again);
      }
      const counts = await writeSorted(dir, spills, describe);
      return new MailboxListing(dir, counts.mailboxes, counts.excluded, counts.invalid);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** The local mailboxes to scan, in compareNames order. */
  async *mailboxes(): AsyncGenerator<MailboxRef, void, undefined> {
    for await (const [name, partition] of readRecords(join(this.dir, "mailboxes")))
      yield partition ? { name: name as string, partition } : { name: name as string };
  }

  /** Entries that are not local mailboxes (mbtype), with why. */
  async *excluded(): AsyncGenerator<ListedSkip, void, undefined> {
    for await (const [name, reason] of readRecords(join(this.dir, "excluded")))
      yield { name: name as string, reason: reason as string };
  }

  /** Names Cyrus would not accept, with where and why; unique. */
  async *invalid(): AsyncGenerator<ListedSkip, void, undefined> {
    for await (const [name, reason] of readRecords(join(this.dir, "invalid")))
      yield { name: name as string, reason: reason as string };
  }

  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

type Spills = { entries: SortedSpill; invalid: SortedSpill };

/** A list entry as a spill record: name, partition, excluded reason, line ("" when absent). */
function entryRecord(e: ParsedListEntry): SpillRecord {
  return [e.name, e.partition ?? "", e.excludedReason ?? "", String(e.line)];
}

function entryOf(r: SpillRecord): ParsedListEntry {
  const [name, partition, excludedReason, line] = r as [string, string, string, string];
  return {
    name,
    ...(partition ? { partition } : {}),
    ...(excludedReason ? { excludedReason } : {}),
    line: Number(line),
  };
}

/** The master's discovery, page after page, into the spills; returns the agent's host. */
async function discoverInto(
  spills: Spills,
  master: HostConnection,
  clientOptions: AgentClientOptions,
  options: ListingOptions,
): Promise<string> {
  let host = master.host;
  for await (const page of discoverPages(master, clientOptions, options.discoverPage)) {
    host = page.host;
    for (const m of page.mailboxes) await spills.entries.add([m.name, m.partition ?? "", "", "0"]);
    for (const i of page.invalid) await spills.invalid.add([i.name, i.reason]);
  }
  return host;
}

/**
 * Merges the spills into the listing's files: the first entry of a name
 * stays, an identical repeat is dropped, a different one is an error
 * (`describe`); the first invalid entry of a name stays.
 */
async function writeSorted(
  dir: string,
  spills: Spills,
  describe: (first: ParsedListEntry, again: ParsedListEntry) => Error,
): Promise<{ mailboxes: number; excluded: number; invalid: number }> {
  const mailboxes = await RecordFile.create(join(dir, "mailboxes"));
  const excluded = await RecordFile.create(join(dir, "excluded"));
  const invalid = await RecordFile.create(join(dir, "invalid"));
  try {
    let first: ParsedListEntry | undefined;
    for await (const record of spills.entries.sorted()) {
      const entry = entryOf(record);
      if (first !== undefined && first.name === entry.name) {
        if (!sameListEntry(first, entry)) throw describe(first, entry);
        continue;
      }
      first = entry;
      if (entry.excludedReason !== undefined)
        await excluded.add([entry.name, entry.excludedReason]);
      else await mailboxes.add(entry.partition ? [entry.name, entry.partition] : [entry.name]);
    }
    let last: string | undefined;
    for await (const [name, reason] of spills.invalid.sorted()) {
      if (name === last) continue;
      last = name as string;
      await invalid.add([name as string, reason as string]);
    }
  } finally {
    await Promise.all([mailboxes.close(), excluded.close(), invalid.close()]);
    await Promise.all([spills.entries.discard(), spills.invalid.discard()]);
  }
  return { mailboxes: mailboxes.count, excluded: excluded.count, invalid: invalid.count };
}
