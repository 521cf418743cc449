// Where the list of mailboxes comes from: a `ctl_mboxlist -d` dump, a plain
// list of names, or a walk of the partitions (cyrus-2.3-spool.md sections 8
// and 10; trap 11.19).
//
// Reads only, takes no lock. Results are sorted by name (then partition) in
// code-unit order, never locale order, so two runs over the same input give
// the same plan.

import { type Dir, opendirSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { CyrusFormatError, errorMessage, FileAccessError } from "../errors.js";
import type { ImapdConf } from "./imapd-conf.js";
import { MailboxNameError, mailboxMetaDir, validateMailboxName } from "./mailbox-path.js";

export interface MailboxListEntry {
  name: string;
  /** Known for `ctl_mboxlist -d` dumps; absent in plain name lists. */
  partition?: string;
}

export interface ExcludedMailbox {
  name: string;
  /** Why the entry is not a local mailbox guidup may touch. */
  reason: string;
}

/** A list line or spool directory whose name Cyrus would not accept. */
export interface InvalidMailbox {
  /** The name as written (or, for a directory that maps to no name, its path). */
  name: string;
  /** Where it was found and why it is refused, one line. */
  reason: string;
}

export interface MailboxList {
  mailboxes: MailboxListEntry[];
  excluded: ExcludedMailbox[];
  /** Entries whose names Cyrus would not accept: reported, never scanned. */
  invalid: InvalidMailbox[];
}

export interface ParseListOptions {
  /**
   * Read a list even when most of its lines are not mailbox names (then
   * every such line is an invalid entry); without it such a list is refused
   * as not being a mailbox list at all.
   */
  acceptSuspicious?: boolean;
}

/**
 * A list is taken for something else (a JSON dump, a config file, a log)
 * when no line holds a mailbox name, or when more than half do not and they
 * are more than a handful.
 */
const SUSPICIOUS_MIN_BAD_LINES = 3;

export interface DiscoveredMailbox {
  name: string;
  partition: string;
}

export interface Discovery {
  mailboxes: DiscoveredMailbox[];
  /** Directories holding a cyrus.header that are not the directory of a valid name. */
  invalid: InvalidMailbox[];
}

/** mbtype bits of mboxlist.h@2.3.16; any of them makes an entry non-local. */
const MBTYPE_BITS = [
  { bit: 0x01, label: "REMOTE", why: "lives on another server (murder)" },
  { bit: 0x02, label: "RESERVE", why: "create or rename in progress" },
  { bit: 0x04, label: "NETNEWS", why: "netnews mailbox" },
  { bit: 0x08, label: "MOVING", why: "being moved to another server" },
] as const;
const KNOWN_MBTYPE_BITS = 0x0f;

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function describeMbtype(mbtype: number): string {
  const parts: string[] = MBTYPE_BITS.filter((b) => (mbtype & b.bit) !== 0).map(
    (b) => `${b.label}: ${b.why}`,
  );
  const unknown = mbtype & ~KNOWN_MBTYPE_BITS;
  if (unknown !== 0) parts.push(`unknown bits 0x${unknown.toString(16)}`);
  return `mbtype ${mbtype} (${parts.join("; ")})`;
}

type ParsedLine = ParsedListEntry;

/**
 * One `ctl_mboxlist -d` line of any 2.3 format, parsed the way 2.3.16's own
 * `ctl_mboxlist -u` does: name up to the first TAB; an mbtype if a digit
 * follows (then one SPACE); the partition up to SPACE or TAB; the rest is the
 * ACL, which guidup does not need.
 */
function parseDumpLine(text: string, source: string, line: number): ParsedLine {
  const fail = (why: string) =>
    new CyrusFormatError(`${source}:${line}: not a ctl_mboxlist -d line: ${why}`, { source, line });
  const tab = text.indexOf("\t");
  if (tab === -1) throw fail("no TAB after the mailbox name");
  const name = text.slice(0, tab);
  if (name === "") throw fail("empty mailbox name");
  let pos = tab + 1;
  let mbtype = 0;
  const digits = /^[0-9]+/.exec(text.slice(pos));
  if (digits !== null) {
    mbtype = Number(digits[0]);
    pos += digits[0].length;
    if (text[pos] !== " ") throw fail("mbtype not followed by a SPACE");
    pos++;
  }
  let end = pos;
  while (end < text.length && text[end] !== " " && text[end] !== "\t") end++;
  const partition = text.slice(pos, end);
  if (partition === "") throw fail("empty partition");
  if (mbtype !== 0) return { name, partition, excludedReason: describeMbtype(mbtype), line };
  return { name, partition, line };
}

/**
 * Name checks that need no imapd.conf: the agent repeats them with the
 * host's virtdomains setting, so a `!` name is let through here.
 */
const LIST_NAME_POLICY = { virtDomains: "userid" } as const;

/** One line of a mailbox list as parsed: a name, or why it is not one. */
export type ListLine =
  | { kind: "entry"; entry: ParsedListEntry }
  | { kind: "invalid"; invalid: InvalidMailbox }
  | { kind: "ignored" };

/** A list line naming a mailbox (local, or excluded with the reason). */
export interface ParsedListEntry {
  name: string;
  partition?: string;
  excludedReason?: string;
  line: number;
}

/**
 * A mailbox list read line by line (the file need not be held): each line
 * is classified as it comes, and `check()` at the end refuses a list that
 * is not one (suspicious, mixed formats, malformed dump lines) with the same
 * errors whether it was held whole or streamed. Lines: either `ctl_mboxlist
 * -d` output (lines containing a TAB) or one internal name per line, taken
 * exactly as written (only the terminator, LF or CRLF, is removed, so
 * `user.bob.trail ` keeps its space). Empty and whitespace-only lines and
 * plain lines starting with `#` are skipped. A file must be one format or
 * the other.
 */
export class MailboxListLines {
  #good = 0;
  #invalid = 0;
  #firstInvalid: string | undefined;
  #malformed = 0;
  readonly #malformedShown: string[] = [];
  #dumpFormat: boolean | undefined;
  #mixedAt: number | undefined;

  constructor(
    readonly source: string,
    readonly options: ParseListOptions = {},
  ) {}

  /** Classifies line `lineNo` (1-based), its terminator already removed but a CR. */
  line(text: string, lineNo: number): ListLine {
    const raw = text.endsWith("\r") ? text.slice(0, -1) : text;
    if (raw.trim() === "") return { kind: "ignored" };
    const isDump = raw.includes("\t");
    if (!isDump && raw.startsWith("#")) return { kind: "ignored" };
    if (this.#dumpFormat === undefined) this.#dumpFormat = isDump;
    if (this.#dumpFormat !== isDump) this.#mixedAt ??= lineNo;
    let entry: ParsedLine;
    try {
      entry = isDump ? parseDumpLine(raw, this.source, lineNo) : { name: raw, line: lineNo };
    } catch (err) {
      if (!(err instanceof CyrusFormatError)) throw err;
      this.#malformed++;
      if (this.#malformedShown.length < 3) this.#malformedShown.push(err.message);
      return { kind: "ignored" };
    }
    try {
      validateMailboxName(entry.name, LIST_NAME_POLICY);
    } catch (err) {
      if (!(err instanceof MailboxNameError)) throw err;
      const reason = `${this.source}:${lineNo}: ${err.message}`;
      this.#invalid++;
      this.#firstInvalid ??= reason;
      return { kind: "invalid", invalid: { name: entry.name, reason } };
    }
    this.#good++;
    return { kind: "entry", entry };
  }

  /**
   * After the last line: a list whose lines mostly are not mailbox names is
   * refused as "not a mailbox list in a known format" unless
   * `acceptSuspicious`; mixed formats and malformed dump lines always are.
   */
  check(): void {
    const source = this.source;
    const bad = this.#malformed + this.#invalid;
    const parsed = this.#good;
    const suspicious =
      bad > 0 && (parsed === 0 || (bad > parsed && bad >= SUSPICIOUS_MIN_BAD_LINES));
    if (suspicious && !this.options.acceptSuspicious) {
      const first = this.#malformedShown[0] ?? this.#firstInvalid ?? "";
      throw new CyrusFormatError(
        `${source}: not a mailbox list in a known format (ctl_mboxlist -d output or one mailbox name per line): ${bad} of ${bad + parsed} lines are neither, the first: ${first.startsWith(`${source}:`) ? `line ${first.slice(source.length + 1)}` : first}`,
        { source },
      );
    }
    if (this.#mixedAt !== undefined) {
      throw new CyrusFormatError(
        `${source}:${this.#mixedAt}: mixes ctl_mboxlist -d lines and plain mailbox names`,
        { source, line: this.#mixedAt },
      );
    }
    if (this.#malformed > 0) {
      throw new CyrusFormatError(
        `${this.#malformedShown.join("; ")}${this.#malformed > 3 ? `; and ${this.#malformed - 3} more` : ""}`,
        { source },
      );
    }
  }
}

/** The error for a name listed twice with different entries (`first` came earlier). */
export function conflictingEntryError(
  source: string,
  first: ParsedListEntry,
  again: ParsedListEntry,
): CyrusFormatError {
  return new CyrusFormatError(
    `${source}:${again.line}: mailbox ${again.name} listed again with a different entry (first at line ${first.line})`,
    { source, line: again.line, name: again.name },
  );
}

/** Whether two entries of one name say the same (identical duplicates are dropped). */
export function sameListEntry(a: ParsedListEntry, b: ParsedListEntry): boolean {
  return a.partition === b.partition && a.excludedReason === b.excludedReason;
}

/**
 * Parses a mailbox list held whole (MailboxListLines says which lines are
 * names). Entries with a non-zero mbtype are returned in `excluded`, names
 * Cyrus would not accept in `invalid` (each with its line and reason).
 * Identical duplicates are dropped; the same name with two different
 * partitions or types is an error, since one of them must be wrong.
 */
export function parseMailboxList(
  text: string,
  source: string,
  options: ParseListOptions = {},
): MailboxList {
  const lines = new MailboxListLines(source, options);
  const parsed: ParsedListEntry[] = [];
  const invalid: InvalidMailbox[] = [];
  const rawLines = text.split("\n");
  for (let i = 0; i < rawLines.length; i++) {
    const got = lines.line(rawLines[i] ?? "", i + 1);
    if (got.kind === "entry") parsed.push(got.entry);
    else if (got.kind === "invalid") invalid.push(got.invalid);
  }
  lines.check();

  const byName = new Map<string, ParsedListEntry>();
  for (const entry of parsed) {
    const earlier = byName.get(entry.name);
    if (earlier === undefined) {
      byName.set(entry.name, entry);
      continue;
    }
    if (!sameListEntry(earlier, entry)) throw conflictingEntryError(source, earlier, entry);
  }

  const mailboxes: MailboxListEntry[] = [];
  const excluded: ExcludedMailbox[] = [];
  for (const entry of [...byName.values()].sort((a, b) => compareStrings(a.name, b.name))) {
    if (entry.excludedReason !== undefined) {
      excluded.push({ name: entry.name, reason: entry.excludedReason });
    } else if (entry.partition !== undefined) {
      mailboxes.push({ name: entry.name, partition: entry.partition });
    } else {
      mailboxes.push({ name: entry.name });
    }
  }
  const invalidByName = new Map<string, InvalidMailbox>();
  for (const { name, reason } of invalid)
    if (!invalidByName.has(name)) invalidByName.set(name, { name, reason });
  return {
    mailboxes,
    excluded,
    invalid: [...invalidByName.values()].sort((a, b) => compareStrings(a.name, b.name)),
  };
}

/** Staging directories Cyrus keeps in partitions; never mailboxes (section 8.3). */
const STAGING_DIRS = new Set(["stage.", "sync."]);

/**
 * The internal name a directory below a partition root would have, undoing
 * 8.2 step by step, or undefined if the path cannot be a mailbox directory.
 * The caller still checks the name maps back to the same directory.
 */
function nameFromRelativeDir(conf: ImapdConf, relativeDir: string): string | undefined {
  let parts = relativeDir.split(sep);
  let domainPrefix = "";
  if (conf.virtDomains !== "off" && parts[0] === "domain") {
    const domainAt = conf.hashImapSpool ? 2 : 1;
    const domain = parts[domainAt];
    if (domain === undefined) return undefined;
    domainPrefix = `${domain}!`;
    parts = parts.slice(domainAt + 1);
  }
  if (conf.hashImapSpool) parts = parts.slice(1);
  if (parts.length === 0) return undefined;
  return domainPrefix + parts.join(".");
}

/** Every directory below `root` holding a `cyrus.header`, relative to `root`, unsorted. */
/** Directories walked between turns of the event loop. */
const WALK_TURN_DIRS = 1024;

async function findHeaderDirs(root: string): Promise<string[]> {
  const found: string[] = [];
  const pending: string[] = [root];
  for (let walked = 0; pending.length > 0; walked++) {
    // Synchronous reads, a batch of entries per call: a spool of a million
    // mailboxes is a million directories, and reading them through promises
    // (a promise per directory entry) took 162 µs a mailbox. Between
    // batches of directories the event loop gets a turn (the agent notices
    // its input closing).
    if (walked % WALK_TURN_DIRS === WALK_TURN_DIRS - 1) await nextTurn();
    const dir = pending.pop() as string;
    let handle: Dir;
    try {
      // Streamed, not read whole: a mailbox directory may hold 100k message files.
      handle = opendirSync(dir, { bufferSize: 256 });
    } catch (err) {
      // A mailbox deleted while we walk is not an error; the root missing is.
      if (dir !== root && (err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new FileAccessError(`cannot read spool directory ${dir}: ${errorMessage(err)}`, {
        dir,
      });
    }
    let hasHeader = false;
    try {
      for (let entry = handle.readSync(); entry !== null; entry = handle.readSync()) {
        // Dirent types come from lstat: symlinks are neither followed nor counted.
        if (entry.isDirectory()) {
          if (!STAGING_DIRS.has(entry.name)) pending.push(join(dir, entry.name));
        } else if (entry.isFile() && entry.name === "cyrus.header") {
          hasHeader = true;
        }
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Not the file system's: a bug, reported as one (exit 70), not as a spool problem.
      if (typeof code !== "string") throw err;
      if (dir === root || code !== "ENOENT")
        throw new FileAccessError(`cannot read spool directory ${dir}: ${errorMessage(err)}`, {
          dir,
        });
      // Removed while being read: as if it had not been there.
      continue;
    } finally {
      handle.closeSync();
    }
    if (hasHeader && dir !== root) found.push(relative(root, dir));
  }
  return found;
}

/**
 * Finds mailboxes by walking each partition: every directory holding a
 * `cyrus.header` (under the metapartition when `header` is in
 * `metapartition_files`). A directory whose name does not map back to that
 * same directory (a stray copy, a `lost+found`, a name Cyrus would refuse) is
 * not a mailbox guidup may touch; `invalid` reports each, so that none stays
 * behind unnoticed. Reads only, takes no lock.
 */
export async function discoverMailboxDirs(conf: ImapdConf): Promise<Discovery> {
  const found: DiscoveredMailbox[] = [];
  const invalid: InvalidMailbox[] = [];
  const partitions = [...conf.partitions.keys()].sort(compareStrings);
  for (const partition of partitions) {
    const metaRoot = conf.metaPartitions.get(partition);
    const headerRoot =
      metaRoot !== undefined && conf.metaPartitionFiles.includes("header")
        ? metaRoot
        : (conf.partitions.get(partition) as string);
    for (const relativeDir of await findHeaderDirs(headerRoot)) {
      const dir = join(headerRoot, relativeDir);
      const name = nameFromRelativeDir(conf, relativeDir);
      if (name === undefined) {
        invalid.push({
          name: dir,
          reason: `${dir} holds a cyrus.header but is no mailbox directory of partition ${partition}`,
        });
        continue;
      }
      let expectedDir: string;
      try {
        expectedDir = mailboxMetaDir(conf, name, partition, "header");
      } catch (err) {
        if (!(err instanceof MailboxNameError)) throw err;
        invalid.push({ name, reason: `${dir}: ${err.message}` });
        continue;
      }
      if (expectedDir !== dir) {
        // A valid name elsewhere: reported by its directory, since the
        // name may belong to a real mailbox too.
        invalid.push({
          name: dir,
          reason: `${dir} holds a cyrus.header, but mailbox ${JSON.stringify(name)} lives at ${expectedDir} (a stray copy?)`,
        });
        continue;
      }
      found.push({ name, partition });
    }
  }
  return {
    mailboxes: found.sort(
      (a, b) => compareStrings(a.name, b.name) || compareStrings(a.partition, b.partition),
    ),
    invalid: invalid.sort((a, b) => compareStrings(a.name, b.name)),
  };
}

/** The valid mailboxes of discoverMailboxDirs, without the report of invalid directories. */
export async function discoverMailboxes(conf: ImapdConf): Promise<DiscoveredMailbox[]> {
  return (await discoverMailboxDirs(conf)).mailboxes;
}
