// The part of a Cyrus 2.3 imapd.conf that decides where mailbox files live
// (cyrus-2.3-spool.md section 8). Everything else in the file is ignored.
//
// The line syntax follows lib/libconfig.c `config_read_file` of 2.3: `key:
// value`, `#` comments, keys made of letters, digits, `-` and `_` (lowercased
// by Cyrus, so `HashImapSpool:` is the same option), values trimmed, an
// option given twice is an error, `@include: <file>` reads another file.
// Cyrus treats each of those problems as fatal; so do we, because a config
// Cyrus refuses cannot describe a spool Cyrus wrote.
//
// Not modelled: `<service>_<option>` overrides (a per-service spool layout
// would make no sense) — such keys are simply not the options read here.

import { readFile, stat } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { CyrusFormatError, errorMessage, FileAccessError } from "../errors.js";

/** Files that `metapartition_files` can move to the metapartition. */
export const META_FILE_TYPES = ["header", "index", "cache", "expunge", "squat"] as const;
export type MetaFileType = (typeof META_FILE_TYPES)[number];

export const VIRT_DOMAINS_MODES = ["off", "userid", "on"] as const;
export type VirtDomainsMode = (typeof VIRT_DOMAINS_MODES)[number];

export interface ImapdConf {
  /** The file the settings came from (the top-level one when `@include` is used). */
  file: string;
  /** `partition-<name>` → absolute data root. Never empty. */
  partitions: ReadonlyMap<string, string>;
  /** `metapartition-<name>` → absolute metadata root. */
  metaPartitions: ReadonlyMap<string, string>;
  /** `metapartition_files`: which meta files live under the metapartition. */
  metaPartitionFiles: readonly MetaFileType[];
  hashImapSpool: boolean;
  fullDirHash: boolean;
  virtDomains: VirtDomainsMode;
  unixHierarchySep: boolean;
  /** `configdirectory`; Cyrus itself refuses to start without it, guidup only needs it for mailboxes.db. */
  configDirectory: string | undefined;
  /** `defaultpartition`, default "default"; always has a `partition-` entry. */
  defaultPartition: string;
  defaultDomain: string | undefined;
}

/** One `key: value` line, or an `@include` directive, with where it came from. */
interface ConfLine {
  key: string;
  value: string;
  file: string;
  line: number;
}

/** Keys Cyrus accepts: optional `@`, then letters, digits, `-`, `_`, then `:`. */
const KEY_PATTERN = /^(@?[A-Za-z0-9_-]*):(.*)$/;

function formatError(file: string, line: number, message: string): CyrusFormatError {
  return new CyrusFormatError(`${file}:${line}: ${message}`, { file, line });
}

/** Splits a config text into lines, like `config_read_file` (without acting on them). */
function splitConfLines(text: string, file: string): ConfLine[] {
  const lines: ConfLine[] = [];
  const rawLines = text.split("\n");
  for (let i = 0; i < rawLines.length; i++) {
    const lineNo = i + 1;
    const trimmed = (rawLines[i] ?? "").trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const match = KEY_PATTERN.exec(trimmed);
    if (match === null) {
      throw formatError(file, lineNo, `invalid option name (expected "key: value"): ${trimmed}`);
    }
    const key = (match[1] ?? "").toLowerCase();
    const value = (match[2] ?? "").trim();
    if (key === "" || key === "@") throw formatError(file, lineNo, "empty option name");
    if (value === "") throw formatError(file, lineNo, `empty value for option ${key}`);
    lines.push({ key, value, file, line: lineNo });
  }
  return lines;
}

/** Cyrus switch values: decided by the first character(s), exactly as libconfig does. */
function parseSwitch(entry: ConfLine): boolean {
  const v = entry.value;
  if (v.startsWith("0") || v.startsWith("n") || v.startsWith("of") || v.startsWith("f")) {
    return false;
  }
  if (v.startsWith("1") || v.startsWith("y") || v.startsWith("on") || v.startsWith("t")) {
    return true;
  }
  throw formatError(entry.file, entry.line, `non-switch value for ${entry.key}: ${v}`);
}

/** `virtdomains` is an enum; libconfig maps the switch spellings to on/off first. */
function parseVirtDomains(entry: ConfLine): VirtDomainsMode {
  let v = entry.value;
  if (v === "1" || v === "yes" || v === "t" || v === "true") v = "on";
  else if (v === "0" || v === "no" || v === "f" || v === "false") v = "off";
  const mode = VIRT_DOMAINS_MODES.find((m) => m === v);
  if (mode === undefined) {
    throw formatError(entry.file, entry.line, `invalid value '${entry.value}' for virtdomains`);
  }
  return mode;
}

function parseMetaPartitionFiles(entry: ConfLine): MetaFileType[] {
  const files: MetaFileType[] = [];
  for (const word of entry.value.split(/\s+/)) {
    const type = META_FILE_TYPES.find((t) => t === word);
    if (type === undefined) {
      throw formatError(
        entry.file,
        entry.line,
        `invalid value '${word}' for metapartition_files (allowed: ${META_FILE_TYPES.join(" ")})`,
      );
    }
    if (!files.includes(type)) files.push(type);
  }
  return files;
}

function parsePartitionRoot(entry: ConfLine): string {
  // A relative root would resolve against whatever directory guidup runs in.
  if (!isAbsolute(entry.value)) {
    throw formatError(
      entry.file,
      entry.line,
      `${entry.key} must be an absolute path: ${entry.value}`,
    );
  }
  return entry.value;
}

/** Turns the collected lines (includes already expanded) into an ImapdConf. */
function buildImapdConf(lines: readonly ConfLine[], file: string): ImapdConf {
  const seen = new Map<string, ConfLine>();
  for (const entry of lines) {
    const earlier = seen.get(entry.key);
    if (earlier !== undefined) {
      throw formatError(
        entry.file,
        entry.line,
        `option ${entry.key} given twice (first at ${earlier.file}:${earlier.line})`,
      );
    }
    seen.set(entry.key, entry);
  }

  const partitions = new Map<string, string>();
  const metaPartitions = new Map<string, string>();
  const conf: ImapdConf = {
    file,
    partitions,
    metaPartitions,
    metaPartitionFiles: [],
    hashImapSpool: false,
    fullDirHash: false,
    virtDomains: "off",
    unixHierarchySep: false,
    configDirectory: undefined,
    defaultPartition: "default",
    defaultDomain: undefined,
  };
  let defaultPartitionLine: ConfLine | undefined;

  for (const entry of lines) {
    if (entry.key.startsWith("partition-")) {
      partitions.set(entry.key.slice("partition-".length), parsePartitionRoot(entry));
      continue;
    }
    if (entry.key.startsWith("metapartition-")) {
      metaPartitions.set(entry.key.slice("metapartition-".length), parsePartitionRoot(entry));
      continue;
    }
    switch (entry.key) {
      case "metapartition_files":
        conf.metaPartitionFiles = parseMetaPartitionFiles(entry);
        break;
      case "hashimapspool":
        conf.hashImapSpool = parseSwitch(entry);
        break;
      case "fulldirhash":
        conf.fullDirHash = parseSwitch(entry);
        break;
      case "unixhierarchysep":
        conf.unixHierarchySep = parseSwitch(entry);
        break;
      case "virtdomains":
        conf.virtDomains = parseVirtDomains(entry);
        break;
      case "configdirectory":
        conf.configDirectory = entry.value;
        break;
      case "defaultdomain":
        conf.defaultDomain = entry.value;
        break;
      case "defaultpartition":
        // Cyrus lowercases it and refuses anything but letters and digits.
        if (!/^[A-Za-z0-9]+$/.test(entry.value)) {
          throw formatError(
            entry.file,
            entry.line,
            `defaultpartition must be alphanumeric: ${entry.value}`,
          );
        }
        conf.defaultPartition = entry.value.toLowerCase();
        defaultPartitionLine = entry;
        break;
      default:
        break;
    }
  }

  if (partitions.size === 0) {
    throw new CyrusFormatError(`${file}: no partition-<name> option: cannot locate any mailbox`, {
      file,
    });
  }
  if (!partitions.has(conf.defaultPartition)) {
    const where = defaultPartitionLine
      ? `${defaultPartitionLine.file}:${defaultPartitionLine.line}`
      : file;
    throw new CyrusFormatError(
      `${where}: default partition '${conf.defaultPartition}' has no partition-${conf.defaultPartition} option`,
      { file },
    );
  }
  return conf;
}

/**
 * Parses imapd.conf text. Pure: an `@include` line is refused here because
 * following it needs the file system; use readImapdConf for such files.
 */
export function parseImapdConf(text: string, file: string): ImapdConf {
  const lines = splitConfLines(text, file);
  const include = lines.find((l) => l.key.startsWith("@"));
  if (include !== undefined) {
    throw formatError(
      include.file,
      include.line,
      `${include.key} needs the file system: read this file with readImapdConf`,
    );
  }
  return buildImapdConf(lines, file);
}

/** Reads one file's lines, expanding `@include` in place like Cyrus does. */
async function readConfLines(path: string, includedBy: string[]): Promise<ConfLine[]> {
  if (includedBy.includes(path)) {
    throw new CyrusFormatError(`${path}: configuration file included twice`, { file: path });
  }
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new FileAccessError(`cannot read Cyrus config ${path}: ${errorMessage(err)}`, {
      file: path,
    });
  }
  const expanded: ConfLine[] = [];
  for (const entry of splitConfLines(text, path)) {
    if (!entry.key.startsWith("@")) {
      expanded.push(entry);
      continue;
    }
    if (entry.key !== "@include") {
      throw formatError(entry.file, entry.line, `invalid directive ${entry.key}`);
    }
    // Cyrus opens a relative include against its own working directory,
    // which guidup cannot know; insist on an absolute path instead.
    if (!isAbsolute(entry.value)) {
      throw formatError(entry.file, entry.line, `@include needs an absolute path: ${entry.value}`);
    }
    expanded.push(...(await readConfLines(entry.value, [...includedBy, path])));
  }
  return expanded;
}

/** Reads and parses an imapd.conf, following `@include` directives. */
export async function readImapdConf(path: string): Promise<ImapdConf> {
  return buildImapdConf(await readConfLines(path, []), path);
}

/**
 * Refuses, naming the option, the path and the file, when one of
 * `partitions` is not defined in `conf` or its root (data, or metadata when
 * a metapartition is set) is not a directory: a mistyped partition-<name>
 * or another host's imapd.conf would otherwise make every mailbox look
 * missing. Reads only.
 */
export async function checkPartitionRoots(
  conf: ImapdConf,
  partitions: readonly string[],
): Promise<void> {
  for (const partition of partitions) {
    const data = conf.partitions.get(partition);
    if (data === undefined) {
      throw new CyrusFormatError(
        `${conf.file} defines no partition-${partition}, which mailboxes are listed on; is this the right imapd.conf?`,
        { file: conf.file, partition },
      );
    }
    const roots: [string, string][] = [[`partition-${partition}`, data]];
    const meta = conf.metaPartitions.get(partition);
    if (meta !== undefined) roots.push([`metapartition-${partition}`, meta]);
    for (const [option, root] of roots) {
      let isDir: boolean;
      try {
        isDir = (await stat(root)).isDirectory();
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new FileAccessError(
          code === "ENOENT"
            ? `${option} ${root} (in ${conf.file}) does not exist: is it spelt right, and is this the host's own imapd.conf?`
            : `${option} ${root} (in ${conf.file}): ${errorMessage(err)}`,
          { file: conf.file, option, root },
        );
      }
      if (!isDir) {
        throw new FileAccessError(`${option} ${root} (in ${conf.file}) is not a directory`, {
          file: conf.file,
          option,
          root,
        });
      }
    }
  }
}
