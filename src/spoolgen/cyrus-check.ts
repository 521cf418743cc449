// Running shared/tools/cyrus-check-guids.sh (real Cyrus 3.6 `reconstruct -n -G`
// and `mbexamine -c`) on a generated host, working around what 3.6 does to
// a 2.3 spool that 2.3 itself would not do.
//
// Cyrus 3.6 unlinks the message file of *every* UID listed in cyrus.expunge
// when it opens a mailbox whose index is below v12 (mailbox.c
// `cleanup_stale_expunged`), including UIDs that are also live in
// cyrus.index (legal in 2.3, section 4 of cyrus-2.3-spool.md). The check
// would then report those live messages as missing. So the check runs on a
// copy in which such expunge records are dropped. With a metapartition the
// copy also gets the meta files next to the message files, because the
// script knows one partition root only.

import { spawn } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";

export interface CheckHost {
  imapdConf: string;
  partitionRoot: string;
  metaRoot?: string;
}

export interface CyrusCheckResult {
  /** The script's exit code: 0 all GUIDs = SHA1(file), 1 mismatch, 2 incomplete, 3 strict field mismatch. */
  code: number;
  output: string;
}

/** Where the script is: $CYRUS_CHECK_GUIDS, else ../shared/tools from the working directory. */
export function cyrusCheckScript(): string {
  return (
    process.env.CYRUS_CHECK_GUIDS ?? resolve(process.cwd(), "../shared/tools/cyrus-check-guids.sh")
  );
}

/** True when the script, the Cyrus 3.6 tools and root are all there. */
export function cyrusCheckAvailable(): boolean {
  return (
    process.getuid?.() === 0 &&
    existsSync(cyrusCheckScript()) &&
    existsSync("/usr/lib/cyrus/bin/reconstruct") &&
    existsSync("/usr/lib/cyrus/bin/mbexamine")
  );
}

function uidsOf(file: Buffer): { start: number; size: number; uids: number[] } {
  const start = file.readUInt32BE(12);
  const size = file.readUInt32BE(16);
  const exists = file.readUInt32BE(20);
  const uids: number[] = [];
  for (let i = 0; i < exists; i++) uids.push(file.readUInt32BE(start + i * size));
  return { start, size, uids };
}

/** Drops expunge records whose UID is also in cyrus.index; returns how many. */
function dropLiveExpungeRecords(dir: string): number {
  let dropped = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      dropped += dropLiveExpungeRecords(path);
      continue;
    }
    if (entry.name !== "cyrus.expunge" || !existsSync(join(dir, "cyrus.index"))) continue;
    const expunge = readFileSync(path);
    const live = new Set(uidsOf(readFileSync(join(dir, "cyrus.index"))).uids);
    const { start, size, uids } = uidsOf(expunge);
    const keep = uids.map((uid, i) => ({ uid, i })).filter((r) => !live.has(r.uid));
    if (keep.length === uids.length) continue;
    dropped += uids.length - keep.length;
    if (keep.length === 0) {
      unlinkSync(path);
      continue;
    }
    const header = Buffer.from(expunge.subarray(0, start));
    header.writeUInt32BE(keep.length, 20);
    const records = keep.map((r) => expunge.subarray(start + r.i * size, start + (r.i + 1) * size));
    writeFileSync(path, Buffer.concat([header, ...records]));
  }
  return dropped;
}

/** Runs the check on a scratch copy of `host`'s spool. Needs root and the Cyrus 3.6 tools. */
export async function runCyrusGuidCheck(
  host: CheckHost,
  args: readonly string[] = [],
): Promise<CyrusCheckResult> {
  const scratch = mkdtempSync(join(tmpdir(), "guidup-cyrus-check-"));
  try {
    const spool = join(scratch, "spool");
    cpSync(host.partitionRoot, spool, { recursive: true });
    if (host.metaRoot !== undefined) {
      cpSync(host.metaRoot, spool, { recursive: true, force: true });
    }
    const dropped = dropLiveExpungeRecords(spool);
    const output: string[] = [];
    if (dropped > 0) {
      output.push(
        `note: ${dropped} cyrus.expunge record(s) of live UIDs dropped in the copy (Cyrus 3.6 would unlink their files)\n`,
      );
    }
    const code = await new Promise<number>((resolveCode, reject) => {
      const child = spawn(cyrusCheckScript(), [...args, spool, host.imapdConf], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout.on("data", (d: Buffer) => output.push(d.toString()));
      child.stderr.on("data", (d: Buffer) => output.push(d.toString()));
      child.on("error", reject);
      child.on("close", (c) => resolveCode(c ?? -1));
    });
    return { code, output: output.join("").replaceAll(`${relative("/", spool)}`, "<spool>") };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
