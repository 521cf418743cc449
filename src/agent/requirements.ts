// What a Cyrus host needs before guidup may work on it, checked by the agent
// itself for `guidup check` (the README's "Host requirements" lists the same):
//
// - Node.js >= 20 (package.json engines).
// - Linux on x64 or arm64, kernel >= 3.15: guidup's locks are open file
//   description locks (F_OFD_SETLK), which conflict with the classic fcntl
//   locks Cyrus takes. There is no fallback to classic locks: a classic lock
//   belongs to the process and is dropped when any descriptor of the file
//   is closed, so one stray close would silently unlock a mailbox. Node 20
//   itself needs Linux >= 4.18, so a host that runs the agent has OFD locks
//   anyway; the kernel check names the reason on an older one, and a real
//   lock is taken on each partition's filesystem (NFS and friends may refuse).
// - Every partition (and metapartition) present, and readable and writable
//   by the agent's user, who must be root or own it: the new index files
//   take the owner of the files they replace.
// - Free space on each filesystem holding index files for what the upgrade
//   writes: an upper bound from the index sizes (see neededBytes).
//
// Reads only; the lock probe creates and removes one empty file per partition.

import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import { errorMessage } from "../errors.js";
import { LockUnavailableError, tryLockFile } from "../fsutil/fcntl-lock.js";
import type { HostCheck, MailboxRef } from "../protocol/messages.js";
import { mailboxFiles } from "./mailbox-files.js";

export const MIN_NODE_MAJOR = 20;
/** F_OFD_SETLK arrived in Linux 3.15. */
export const MIN_KERNEL: readonly [number, number] = [3, 15];
const SUPPORTED_ARCHES = ["x64", "arm64"];
/** Bytes per record: version 10 (what is written) and version 4 (the smallest there is). */
const TARGET_RECORD_BYTES = 88;
const SMALLEST_RECORD_BYTES = 52;
/** Mailboxes whose new files coexist with the old: more than apply ever runs at once (MAX_CONCURRENCY 10). */
const MAX_IN_FLIGHT = 32;

export async function checkHost(conf: ImapdConf, mailboxes: MailboxRef[]): Promise<HostCheck> {
  const problems: string[] = [];
  const user = os.userInfo();
  const node = process.versions.node;
  const kernel = os.release();

  const nodeMajor = Number(node.split(".")[0]);
  if (!(nodeMajor >= MIN_NODE_MAJOR)) {
    problems.push(
      `Node.js ${node} (${process.execPath}) is too old: guidup needs Node.js >= ${MIN_NODE_MAJOR}`,
    );
  }
  if (process.platform !== "linux") {
    problems.push(`the platform is ${process.platform}: guidup's mailbox locks need Linux`);
  } else if (!kernelHasOfdLocks(kernel)) {
    problems.push(
      `Linux ${kernel} has no open file description locks (F_OFD_SETLK needs Linux >= ${MIN_KERNEL.join(".")}); guidup refuses to lock Cyrus mailboxes without them`,
    );
  }
  if (!SUPPORTED_ARCHES.includes(process.arch)) {
    problems.push(`the CPU architecture is ${process.arch}: guidup supports x64 and arm64`);
  }

  const roots = new Map<string, string>();
  for (const [name, dir] of conf.partitions) roots.set(`partition-${name}`, dir);
  for (const [name, dir] of conf.metaPartitions) roots.set(`metapartition-${name}`, dir);
  for (const [setting, dir] of roots) {
    const problem = await checkRoot(setting, dir, user);
    if (problem !== undefined) problems.push(problem);
  }
  if (conf.configDirectory !== undefined && !fs.existsSync(conf.configDirectory)) {
    problems.push(`configdirectory ${conf.configDirectory} (${conf.file}) does not exist`);
  }

  const space = await spaceNeeded(conf, mailboxes);
  for (const s of space) {
    if (s.neededBytes > s.freeBytes) {
      problems.push(
        `${s.partition} ${s.path} has ${mb(s.freeBytes)} free; the new index files of its mailboxes may need up to ${mb(s.neededBytes)}`,
      );
    }
  }
  return {
    node,
    platform: process.platform,
    arch: process.arch,
    kernel,
    user: { name: user.username, uid: user.uid, gid: user.gid },
    space,
    problems,
  };
}

/** "3.15.0-…" and later; a release we cannot read counts as new enough (the lock probe decides). */
export function kernelHasOfdLocks(release: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return true;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > MIN_KERNEL[0] || (major === MIN_KERNEL[0] && minor >= MIN_KERNEL[1]);
}

/** One partition root: present, a directory, ours (or we are root), usable, lockable. */
async function checkRoot(
  setting: string,
  dir: string,
  user: os.UserInfo<string>,
): Promise<string | undefined> {
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(dir);
  } catch (err) {
    return `${setting} ${dir} does not exist or cannot be reached (${errorMessage(err)})`;
  }
  if (!st.isDirectory()) return `${setting} ${dir} is not a directory`;
  try {
    await fs.promises.access(dir, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    return `${setting} ${dir} is not readable and writable by ${user.username} (uid ${user.uid}), the agent's user`;
  }
  if (user.uid !== 0 && st.uid !== user.uid) {
    return `${setting} ${dir} belongs to uid ${st.uid} but the agent runs as ${user.username} (uid ${user.uid}): run it as the Cyrus user or root, so new index files keep their owner`;
  }
  // A real lock on this filesystem: what apply will do on every mailbox.
  const probe = path.join(dir, `.guidup-check-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    fs.writeFileSync(probe, "", { flag: "wx", mode: 0o600 });
  } catch (err) {
    return `${setting} ${dir}: cannot create a file there (${errorMessage(err)})`;
  }
  try {
    const lock = await tryLockFile(probe);
    if (lock === null) return `${setting} ${dir}: a fresh file there could not be locked`;
    await lock.unlock();
  } catch (err) {
    const why = err instanceof LockUnavailableError ? err.message : errorMessage(err);
    return `${setting} ${dir}: cannot take an OFD lock there: ${why}`;
  } finally {
    fs.rmSync(probe, { force: true });
  }
  return undefined;
}

/**
 * Free space against an upper bound of what apply writes, per filesystem
 * holding index files: the upgrade's growth (every index and expunge file
 * rewritten with version 10 records, at most 88/52 of its size), plus the
 * new files of the largest MAX_IN_FLIGHT mailboxes, which exist beside the
 * old ones until their commit.
 */
async function spaceNeeded(conf: ImapdConf, mailboxes: MailboxRef[]): Promise<HostCheck["space"]> {
  const byRoot = new Map<string, { partition: string; sizes: number[] }>();
  for (const ref of mailboxes) {
    const files = mailboxFiles(conf, ref);
    const metaRoot = conf.metaPartitions.get(files.partition);
    const root = metaRoot ?? conf.partitions.get(files.partition);
    if (root === undefined) continue;
    let size = 0;
    for (const file of [files.index, files.expunge]) {
      size += (await fs.promises.stat(file).catch(() => undefined))?.size ?? 0;
    }
    const setting = `${metaRoot === undefined ? "partition" : "metapartition"}-${files.partition}`;
    const entry = byRoot.get(root) ?? { partition: setting, sizes: [] };
    entry.sizes.push(size);
    byRoot.set(root, entry);
  }
  const out: HostCheck["space"] = [];
  for (const [root, { partition, sizes }] of byRoot) {
    const stats = await fs.promises.statfs(root).catch(() => undefined);
    if (stats === undefined) continue;
    const ratio = TARGET_RECORD_BYTES / SMALLEST_RECORD_BYTES;
    const total = sizes.reduce((a, b) => a + b, 0);
    const largest = [...sizes]
      .sort((a, b) => b - a)
      .slice(0, MAX_IN_FLIGHT)
      .reduce((a, b) => a + b, 0);
    out.push({
      partition,
      path: root,
      freeBytes: stats.bavail * stats.bsize,
      neededBytes: Math.ceil(total * (ratio - 1) + largest * ratio),
    });
  }
  return out;
}

function mb(bytes: number): string {
  if (bytes < 1_048_576) return `${Math.ceil(bytes / 1024)} KB`;
  return `${(bytes / 1_048_576).toFixed(1)} MB`;
}
