// Internal mailbox name → directories and files, exactly as Cyrus 2.3.16's
// `mailbox_hash_mbox` and `mailbox_meta_get_fname` place them
// (cyrus-2.3-spool.md sections 8.1–8.3).
//
// Names reach this module from mailbox lists, plans and the wire, so every
// function that builds a path first validates the name against Cyrus's own
// policy (section 8.1) and then checks that the result is inside the
// partition root: a hostile name must never make guidup touch a file
// outside the spool.

import { join, resolve, sep } from "node:path";
import { CyrusFormatError, ERRORS, type ErrorCode, GuidupError, InternalError } from "../errors.js";
import type { ImapdConf, MetaFileType } from "./imapd-conf.js";

/** A mailbox name Cyrus would not accept, or whose path would leave its partition. */
export class MailboxNameError extends GuidupError {
  readonly code: ErrorCode = ERRORS.mailboxName.code;
}

/** MAX_MAILBOX_NAME in 2.3.16 mboxname.h. */
export const MAX_MAILBOX_NAME_LENGTH = 490;

/**
 * Characters `mboxname_policycheck` allows outside `&…-` sequences, plus `^`
 * (the internal form of a `.` under unixhierarchysep, accepted regardless of
 * the setting because a name may have been created while it was on).
 */
const PLAIN_NAME_CHAR = /^[ #$'+,\-.0-9:=@A-Z_a-z~^]$/;
/** Modified base64 of RFC 3501 modified UTF-7: what may sit between `&` and `-`. */
const MODIFIED_BASE64_CHAR = /^[A-Za-z0-9+,]$/;
/** Host names as the domain part of `<domain>!<name>`. */
const DOMAIN_PATTERN = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

function nameError(name: string, why: string): MailboxNameError {
  // JSON.stringify makes NUL, control characters and trailing spaces visible on one line.
  return new MailboxNameError(`invalid mailbox name ${JSON.stringify(name)}: ${why}`, { name });
}

/** Checks the part after any `<domain>!`: characters, `&…-` sequences, components. */
function checkLocalName(full: string, local: string): void {
  if (local === "") throw nameError(full, "empty name");
  if (local.startsWith("~")) throw nameError(full, "starts with '~'");
  for (let i = 0; i < local.length; i++) {
    const ch = local[i] ?? "";
    if (ch === "&") {
      // `&-` is a literal `&`; otherwise modified base64 up to a closing `-`.
      let j = i + 1;
      while (j < local.length && MODIFIED_BASE64_CHAR.test(local[j] ?? "")) j++;
      if (local[j] !== "-") throw nameError(full, `unterminated '&' sequence at offset ${i}`);
      i = j;
      continue;
    }
    if (!PLAIN_NAME_CHAR.test(ch)) {
      const code = ch.codePointAt(0) ?? 0;
      throw nameError(full, `character U+${code.toString(16).padStart(4, "0")} not allowed`);
    }
  }
  // Every `.` becomes a `/`: an empty component would become `//`, `/..` or
  // a path ending in `/`.
  if (local.split(".").some((component) => component === "")) {
    throw nameError(full, "empty hierarchy component (leading, trailing or double '.')");
  }
}

/**
 * Throws MailboxNameError unless `name` is an internal mailbox name Cyrus 2.3
 * would accept and that maps to a directory inside its partition.
 * `!` is the domain separator and only allowed with virtdomains on.
 */
export function validateMailboxName(name: string, conf: Pick<ImapdConf, "virtDomains">): void {
  if (name.length > MAX_MAILBOX_NAME_LENGTH) {
    throw nameError(name.slice(0, 40) + "…", `longer than ${MAX_MAILBOX_NAME_LENGTH} characters`);
  }
  if (name.includes("\0")) throw nameError(name, "contains NUL");
  if (name.includes("/")) throw nameError(name, "contains '/'");
  const bang = name.indexOf("!");
  if (bang === -1) {
    checkLocalName(name, name);
    return;
  }
  if (conf.virtDomains === "off") throw nameError(name, "'!' not allowed with virtdomains off");
  const domain = name.slice(0, bang);
  const local = name.slice(bang + 1);
  if (local.includes("!")) throw nameError(name, "more than one '!'");
  // Dots in the domain are kept in one directory name, so `..` alone would escape.
  if (!DOMAIN_PATTERN.test(domain)) throw nameError(name, "invalid domain part");
  checkLocalName(name, local);
}

/**
 * The hash directory letter H(s) of `dir_hash_c` (lib/util.c@2.3.16).
 * Without fulldirhash: the lowercased first byte if a–z, else `q`. With it:
 * a shift-xor hash of the bytes up to the first `.`, as `A`–`W`.
 */
export function dirHashLetter(s: string, fullDirHash: boolean): string {
  const bytes = Buffer.from(s, "utf8");
  if (!fullDirHash) {
    const first = bytes[0] ?? 0;
    const lower = first >= 0x41 && first <= 0x5a ? first + 0x20 : first;
    return lower >= 0x61 && lower <= 0x7a ? String.fromCharCode(lower) : "q";
  }
  let n = 0;
  for (const b of bytes) {
    if (b === 0 || b === 0x2e) break;
    n = ((n << 3) ^ (n >>> 5) ^ b) >>> 0;
  }
  return String.fromCharCode(0x41 + (n % 23));
}

/** The path below a partition root, as a list of directory names (steps 2–3 of 8.2). */
function mailboxRelativeDirs(conf: ImapdConf, name: string): string[] {
  const dirs: string[] = [];
  let local = name;
  const bang = name.indexOf("!");
  if (conf.virtDomains !== "off" && bang !== -1) {
    const domain = name.slice(0, bang);
    local = name.slice(bang + 1);
    dirs.push("domain");
    if (conf.hashImapSpool) dirs.push(dirHashLetter(domain, conf.fullDirHash));
    dirs.push(domain);
  }
  if (conf.hashImapSpool) {
    const dot = local.indexOf(".");
    const idx = dot === -1 ? local : local.slice(dot + 1);
    dirs.push(dirHashLetter(idx, conf.fullDirHash));
  }
  dirs.push(...local.split("."));
  return dirs;
}

/** Builds the directory under `root` and proves it stays below `root`. */
function dirUnderRoot(conf: ImapdConf, name: string, root: string): string {
  validateMailboxName(name, conf);
  const dir = join(root, ...mailboxRelativeDirs(conf, name));
  const resolvedRoot = resolve(root);
  const rootPrefix = resolvedRoot.endsWith(sep) ? resolvedRoot : resolvedRoot + sep;
  if (!resolve(dir).startsWith(rootPrefix)) {
    throw nameError(name, `path ${dir} is outside partition root ${root}`);
  }
  return dir;
}

function requireDataRoot(conf: ImapdConf, name: string, partition: string): string {
  const root = conf.partitions.get(partition);
  if (root === undefined) {
    throw new CyrusFormatError(
      `mailbox ${name} is on partition '${partition}', but ${conf.file} has no partition-${partition}`,
      { name, partition, file: conf.file },
    );
  }
  return root;
}

/** The directory holding a mailbox's message files (`partition-<partition>` root). */
export function mailboxDataDir(conf: ImapdConf, name: string, partition: string): string {
  return dirUnderRoot(conf, name, requireDataRoot(conf, name, partition));
}

/**
 * The directory holding one of a mailbox's `cyrus.*` files: under
 * `metapartition-<partition>` when that is set and `file` is listed in
 * `metapartition_files`, else the data directory. Each file is decided on its
 * own, so `cyrus.header` and `cyrus.index` may be in different places.
 */
export function mailboxMetaDir(
  conf: ImapdConf,
  name: string,
  partition: string,
  file: MetaFileType,
): string {
  const dataRoot = requireDataRoot(conf, name, partition);
  const metaRoot = conf.metaPartitions.get(partition);
  const useMeta = metaRoot !== undefined && conf.metaPartitionFiles.includes(file);
  return dirUnderRoot(conf, name, useMeta ? metaRoot : dataRoot);
}

/** `<dataDir>/<uid>.`: the UID in decimal without leading zeros, then a dot. */
export function messageFilePath(dataDir: string, uid: number): string {
  if (!Number.isInteger(uid) || uid < 1 || uid > 0xffffffff) {
    throw new InternalError(`message UID out of range: ${uid}`);
  }
  return join(dataDir, `${uid}.`);
}
