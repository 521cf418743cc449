// A real master/replica pair of N one-message v9 mailboxes per side whose
// identical files are hard links, so that a million mailboxes per side fit in
// memory (tmpfs) and are made in minutes (bench/scale-million.ts).
//
// Every mailbox is its own directory under its own name, in the list file, as
// bench/plan.ts generate() makes them (the same imapd.conf, hashed spool and
// names, one message, index minor 9). What generate() writes per mailbox is a
// cyrus.header, a cyrus.index and the message file `1.` (no cyrus.cache). Here
// the contents are made the same for every mailbox — one UIDVALIDITY, one
// message, a header with one uniqueid and ACL — and each kind is ONE inode per
// side, hard-linked into every mailbox directory: a link costs a directory
// entry, no page (a 150-byte file on tmpfs costs a 4 KiB page: 2 × 1M ×
// 3 files would be 24 GiB).
//
// Why that does not change what guidup does:
// - scan reads each mailbox's cyrus.index by its path (and the header only to
//   find the mailbox: discover looks for a file named cyrus.header); guidup
//   never parses cyrus.header's uniqueid or ACL. The bytes and their count are
//   those of a real spool of identical mailboxes; only the page cache is
//   shared (on tmpfs every page is in memory anyway).
// - apply writes a new index (cyrus.index.NEW renamed over cyrus.index): a new
//   inode, so converting one mailbox never changes a linked sibling
//   (test/bench/linked-spool.test.ts checks it byte for byte).
// - but apply LOCKS cyrus.header and cyrus.index with OFD locks, which
//   conflict between two descriptions of one inode even in one process: two
//   lanes on two linked mailboxes would wait for each other, which no real
//   spool does. So the first `own` mailboxes in the plan's (sorted) order —
//   the ones an `apply --batch own` converts — get their own header (with
//   their own uniqueid and ACL, as a real one) and their own index copy; only
//   the message file stays linked (read, never locked). The shared index's
//   link count after apply says whether apply touched a linked mailbox.
// - the two sides never share an inode: the two agents lock independently.

import { linkSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeCyrusHeader23 } from "../src/cyrus/cyrus-header.js";
import { formatFor, type IndexFormat } from "../src/cyrus/formats/index.js";
import { parseImapdConf } from "../src/cyrus/imapd-conf.js";
import { encodeHeader, encodeRecord } from "../src/cyrus/index-writer.js";
import { mailboxDataDir } from "../src/cyrus/mailbox-path.js";
import { imapdConf, mailboxName } from "./plan.js";

const UIDVALIDITY = 1259625600;

export interface LinkedSpool {
  /** The mailbox list, sorted (the plan's order). */
  list: string;
  /** Per side: the directory holding the shared inodes (outside the partition). */
  templates: Record<"master" | "replica", string>;
  /** Sorted names; the first `own` have their own header and index. */
  names: string[];
  own: number;
}

const MESSAGE = Buffer.from(
  `From: a@example.org\r\nTo: b@example.org\r\nSubject: linked\r\n\r\n${"x".repeat(200)}\r\n`,
);

/** A v9 index of one old-style record (null GUID) for MESSAGE. */
function oneMessageIndex(): Buffer {
  const format = formatFor(9) as IndexFormat;
  const headerSize = MESSAGE.indexOf("\r\n\r\n") + 4;
  const record = encodeRecord(format, {
    uid: 1,
    internalDate: UIDVALIDITY,
    sentDate: UIDVALIDITY - (UIDVALIDITY % 86400),
    size: MESSAGE.length,
    headerSize,
    contentOffset: headerSize,
    lastUpdated: UIDVALIDITY,
    contentLines: 1,
    cacheVersion: 2,
    modseq: 1n,
    uuid: Buffer.alloc(12),
  });
  const header = encodeHeader(
    format,
    {
      generation: 1,
      lastAppendDate: UIDVALIDITY,
      lastUid: 1,
      quotaUsed: BigInt(MESSAGE.length),
      uidValidity: UIDVALIDITY,
      highestModseq: 1n,
    },
    1,
  );
  return Buffer.concat([header, record]);
}

function cyrusHeader(name: string, i: number): Buffer {
  return encodeCyrusHeader23({
    uniqueId: `${i.toString(16).padStart(8, "0")}${UIDVALIDITY.toString(16)}`,
    userFlags: [],
    acl: `${name.split(".")[1]}\tlrswipkxtecda\t`,
  });
}

/**
 * Writes N mailboxes per side into root/master and root/replica; the first
 * `own` in sorted order get their own cyrus.header and cyrus.index.
 * `progress` is called every 100,000 mailboxes.
 */
export function generateLinked(
  root: string,
  n: number,
  own: number,
  progress: (done: number) => void = () => {},
): LinkedSpool {
  const names = Array.from({ length: n }, (_, i) => mailboxName(i)).sort();
  const index = oneMessageIndex();
  const sides = (["master", "replica"] as const).map((side) => {
    const sideRoot = join(root, side);
    mkdirSync(join(sideRoot, "config"), { recursive: true });
    mkdirSync(join(sideRoot, "spool"), { recursive: true });
    const text = imapdConf(sideRoot);
    writeFileSync(join(sideRoot, "imapd.conf"), text);
    const template = join(sideRoot, "template");
    mkdirSync(template);
    writeFileSync(join(template, "cyrus.header"), cyrusHeader("user.shared", 0));
    writeFileSync(join(template, "cyrus.index"), index);
    writeFileSync(join(template, "1."), MESSAGE);
    return { side, template, conf: parseImapdConf(text, join(sideRoot, "imapd.conf")) };
  });
  names.forEach((name, i) => {
    for (const { template, conf } of sides) {
      const dir = mailboxDataDir(conf, name, "default");
      mkdirSync(dir, { recursive: true });
      if (i < own) {
        writeFileSync(join(dir, "cyrus.header"), cyrusHeader(name, i));
        writeFileSync(join(dir, "cyrus.index"), index);
      } else {
        linkSync(join(template, "cyrus.header"), join(dir, "cyrus.header"));
        linkSync(join(template, "cyrus.index"), join(dir, "cyrus.index"));
      }
      linkSync(join(template, "1."), join(dir, "1."));
    }
    if ((i + 1) % 100_000 === 0) progress(i + 1);
  });
  const list = join(root, "mailboxes.txt");
  writeFileSync(list, `${names.join("\n")}\n`);
  return {
    list,
    templates: {
      master: (sides[0] as { template: string }).template,
      replica: (sides[1] as { template: string }).template,
    },
    names,
    own,
  };
}
