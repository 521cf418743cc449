// Where a mailbox's files are on this host, derived only from the agent's own
// imapd.conf and a validated mailbox name (never from a path the controller
// sends): the name is checked against Cyrus's character policy and the result
// must stay inside the partition roots.

import { dirname, join } from "node:path";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import {
  mailboxDataDir,
  mailboxMetaDir,
  messageFilePath,
  validateMailboxName,
} from "../cyrus/mailbox-path.js";
import { UsageError } from "../errors.js";
import type { MailboxRef } from "../protocol/messages.js";
import { SHA1_CACHE_FILE } from "./sha1-cache.js";

export interface MailboxFiles {
  readonly name: string;
  readonly partition: string;
  readonly dataDir: string;
  readonly header: string;
  readonly index: string;
  readonly expunge: string;
  readonly indexNew: string;
  readonly expungeNew: string;
  /**
   * guidup's own temporary names for prepared conversions, per agent process
   * (never Cyrus's `.NEW`, which Cyrus 2.3 writes under its lock during an
   * expunge: writing those without the lock could collide with Cyrus).
   */
  readonly indexTmp: string;
  readonly expungeTmp: string;
  /** guidup's sha1 cache, next to cyrus.index. */
  readonly sha1s: string;
  /** Directories whose entries a commit changes (fsynced after the renames). */
  readonly commitDirs: readonly string[];
  messageFile(uid: number): string;
}

/** Between a base name and the writing agent's pid in a temporary name. */
export const TMP_MARK = ".guidup-";

/** The pid in a guidup temporary name of `base` (e.g. "cyrus.index"), if it is one. */
export function tmpOwner(entry: string, base: string): number | undefined {
  if (!entry.startsWith(`${base}${TMP_MARK}`)) return undefined;
  const pid = Number(entry.slice(base.length + TMP_MARK.length));
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

export function mailboxFiles(conf: ImapdConf, ref: MailboxRef): MailboxFiles {
  if (typeof ref?.name !== "string") throw new UsageError("mailbox name missing");
  validateMailboxName(ref.name, conf);
  const partition = ref.partition ?? conf.defaultPartition;
  if (!conf.partitions.has(partition)) {
    throw new UsageError(`${ref.name}: partition "${partition}" is not in ${conf.file}`);
  }
  const dataDir = mailboxDataDir(conf, ref.name, partition);
  // A file not under a metapartition is in the data directory: no need to
  // build and check that path again (this runs for every mailbox of a hash).
  const metaRoot = conf.metaPartitions.get(partition);
  const meta = (file: "header" | "index" | "expunge") =>
    metaRoot !== undefined && conf.metaPartitionFiles.includes(file)
      ? mailboxMetaDir(conf, ref.name, partition, file)
      : dataDir;
  const index = join(meta("index"), "cyrus.index");
  const expunge = join(meta("expunge"), "cyrus.expunge");
  return {
    name: ref.name,
    partition,
    dataDir,
    header: join(meta("header"), "cyrus.header"),
    index,
    expunge,
    indexNew: `${index}.NEW`,
    expungeNew: `${expunge}.NEW`,
    indexTmp: `${index}${TMP_MARK}${process.pid}`,
    expungeTmp: `${expunge}${TMP_MARK}${process.pid}`,
    sha1s: join(dirname(index), SHA1_CACHE_FILE),
    commitDirs: [...new Set([dirname(expunge), dirname(index)])],
    messageFile: (uid) => messageFilePath(dataDir, uid),
  };
}
