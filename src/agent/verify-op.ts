// The `verify` op: for each mailbox, hash the message files of its index
// records (all, or a random sample) and compare with the stored GUIDs. Reads
// only, takes no lock: a record appended meanwhile is simply not checked.

import { randomInt } from "node:crypto";
import { stat } from "node:fs/promises";
import { compileRecordPlan, sourceGuidOf } from "../cyrus/convert.js";
import type { ImapdConf } from "../cyrus/imapd-conf.js";
import { IndexReader } from "../cyrus/index-file.js";
import { GuidupError } from "../errors.js";
import type { MailboxRef, MailboxVerify } from "../protocol/messages.js";
import { type HashPool, isHashFailure } from "./hash-pool.js";
import { mailboxFiles } from "./mailbox-files.js";
import { scanMailboxFiles } from "./session.js";

export async function verifyMailbox(
  conf: ImapdConf,
  ref: MailboxRef,
  pool: HashPool,
  sample: number | undefined,
  withPairs = false,
): Promise<MailboxVerify> {
  const files = mailboxFiles(conf, ref);
  const scan = await scanMailboxFiles(files);
  const out: MailboxVerify = { name: files.name, scan, checked: 0, mismatches: [], unreadable: [] };
  if (scan.status !== "ok") return out;
  const records: { uid: number; guid: Buffer }[] = [];
  let indexRecords = 0;
  const sources = [{ path: files.index, kind: "index" as const }];
  if (
    await stat(files.expunge).then(
      (s) => s.size > 0,
      () => false,
    )
  ) {
    sources.push({ path: files.expunge, kind: "expunge" as const } as never);
  }
  for (const source of sources) {
    let reader: IndexReader;
    try {
      reader = await IndexReader.open(source.path, { kind: source.kind });
    } catch (err) {
      if (err instanceof GuidupError) return out;
      throw err;
    }
    try {
      const plan = compileRecordPlan(reader.format, reader.format);
      for await (const chunk of reader.chunks()) {
        for (let i = 0; i < chunk.count; i++) {
          const at = i * chunk.recordSize;
          records.push({
            uid: chunk.buf.readUInt32BE(at),
            guid: sourceGuidOf(plan, chunk.buf, at),
          });
        }
      }
    } finally {
      await reader.close();
    }
    if (source.kind === "index") indexRecords = records.length;
  }
  if (withPairs) {
    const pairs = Buffer.alloc(indexRecords * 24);
    for (let i = 0; i < indexRecords; i++) {
      pairs.writeUInt32BE(records[i]!.uid, i * 24);
      records[i]!.guid.copy(pairs, i * 24 + 4);
    }
    out.pairs = pairs.toString("base64");
  }
  const chosen =
    sample === undefined || sample >= records.length ? records : pickRandom(records, sample);
  await Promise.all(
    chosen.map(async ({ uid, guid }) => {
      const r = await pool.hash({ path: files.messageFile(uid) });
      if (isHashFailure(r)) {
        out.unreadable.push({
          uid,
          reason: r.code === "ENOENT" ? "message file missing" : r.error,
        });
        return;
      }
      out.checked++;
      if (!r.sha1.equals(guid))
        out.mismatches.push({ uid, stored: guid.toString("hex"), actual: r.sha1.toString("hex") });
    }),
  );
  out.mismatches.sort((a, b) => a.uid - b.uid);
  out.unreadable.sort((a, b) => a.uid - b.uid);
  return out;
}

function pickRandom<T>(items: T[], n: number): T[] {
  const copy = [...items];
  for (let i = 0; i < n; i++) {
    const j = i + randomInt(copy.length - i);
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, n);
}
