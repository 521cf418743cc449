// The cut-over's three paths through a real agent (session.ts), each forced
// by a change made between `prepare` (outside the locks) and `lock`, and
// each result checked byte for byte against convertIndex run from scratch on
// the final files (GUIDs = SHA1 of the message files):
//   unchanged            → path `prepared` (only the rename under the lock)
//   a message appended   → path `appended` (only the new record parsed,
//                          scanned and converted; its answer equals a
//                          conversion under the lock from scratch)
//   appended + a flag set in the records prepare saw → `reconverted`
//   a flag set in place  → path `reconverted` (same size, different bytes)
//   a message expunged   → path `reconverted` (index shrinks, expunge grows)
// Plus a torn-looking change (bytes equal in length, one byte different) is
// never taken for "unchanged".

import { createHash } from "node:crypto";
import { closeSync, copyFileSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { convertIndex } from "../../src/cyrus/convert.js";
import { writableFormat } from "../../src/cyrus/formats/index.js";
import { isOldStyleGuid } from "../../src/cyrus/guid.js";
import { IndexReader, parseIndexHeader } from "../../src/cyrus/index-file.js";
import { encodeHeader, type HeaderValues } from "../../src/cyrus/index-writer.js";
import {
  AgentProcess,
  killAll,
  makeFixtureSpool,
  type TempSpool,
} from "../helpers/agent-process.js";

const agents: AgentProcess[] = [];
const spools: TempSpool[] = [];
afterEach(async () => {
  await killAll(agents);
  await Promise.all(spools.splice(0).map((s) => s.cleanup()));
});

const ALICE = { name: "user.alice" };
const STAGE = { target: 10, guids: true };

interface Parsed {
  header: ReturnType<typeof parseIndexHeader>;
  records: Buffer[];
}

function parse(file: string): Parsed {
  const bytes = readFileSync(file);
  const header = parseIndexHeader(bytes, bytes.length, file);
  const records: Buffer[] = [];
  for (let i = 0; i < header.exists; i++) {
    const at = header.startOffset + i * header.recordSize;
    records.push(Buffer.from(bytes.subarray(at, at + header.recordSize)));
  }
  return { header, records };
}

/** Rewrites a file with these records and header values (EXISTS follows the records). */
function write(file: string, p: Parsed, values: Partial<HeaderValues> = {}): void {
  const all = {
    ...(Object.fromEntries(p.header.values) as HeaderValues),
    ...values,
    exists: p.records.length,
  };
  writeFileSync(
    file,
    Buffer.concat([encodeHeader(p.header.format, all, p.records.length), ...p.records]),
  );
}

/** convertIndex from scratch on `file`, GUIDs of old-style records = SHA1 of the message files. */
async function reference(file: string, dir: string, kind: "index" | "expunge"): Promise<Buffer> {
  const guids = new Map<number, Buffer>();
  const { records, header } = parse(file);
  const slot = header.format.recordField("guid") ?? header.format.recordField("uuid");
  for (const r of records) {
    const uid = r.readUInt32BE(0);
    const g = Buffer.alloc(20);
    if (slot) r.copy(g, 0, slot.offset, slot.offset + slot.size);
    if (isOldStyleGuid(g))
      guids.set(
        uid,
        createHash("sha1")
          .update(readFileSync(path.join(dir, `${uid}.`)))
          .digest(),
      );
  }
  const out = await mkdtemp(path.join(tmpdir(), "guidup-ref-"));
  try {
    const target = path.join(out, "converted");
    const fd = openSync(target, "w");
    const reader = await IndexReader.open(file, { kind });
    try {
      await convertIndex(reader, fd, { target: writableFormat(10)!, guids });
    } finally {
      await reader.close();
      closeSync(fd);
    }
    return readFileSync(target);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

async function setup() {
  const spool = await makeFixtureSpool("09");
  spools.push(spool);
  const agent = await AgentProcess.start(spool.conf);
  agents.push(agent);
  const dir = spool.dir("user.alice");
  return {
    agent,
    dir,
    index: path.join(dir, "cyrus.index"),
    expunge: path.join(dir, "cyrus.expunge"),
  };
}

/** Delivers one message as Cyrus does: its file, a record with the next UID, LAST_UID moved. */
function appendOne({ index, dir }: { index: string; dir: string }): void {
  const p = parse(index);
  const last = p.records[p.records.length - 1]!;
  const uid = (p.header.values.get("lastUid") as number) + 1;
  const rec = Buffer.from(last);
  rec.writeUInt32BE(uid, 0);
  copyFileSync(path.join(dir, `${last.readUInt32BE(0)}.`), path.join(dir, `${uid}.`));
  writeFileSync(path.join(dir, `${uid}.`), "\r\nappended\r\n", { flag: "a" });
  p.records.push(rec);
  write(index, p, { lastUid: uid });
}

/** prepare → change → lock(stage) → commit; returns the lock answer and the files as they were at the lock. */
async function cutOver(change: (ctx: Awaited<ReturnType<typeof setup>>) => void) {
  const ctx = await setup();
  // The plan's LAST_UID: appends above it are counted, not drift.
  const stage = { ...STAGE, upTo: parse(ctx.index).header.values.get("lastUid") as number };
  const prep = await ctx.agent.call("prepare", { mailbox: ALICE, stage });
  expect(prep.staged?.path).toBe("prepared");
  change(ctx);
  // What the lock will see, kept for the reference conversion.
  const saved = path.join(path.dirname(ctx.dir), "saved");
  copyFileSync(ctx.index, `${saved}.index`);
  let hasExpunge = true;
  try {
    copyFileSync(ctx.expunge, `${saved}.expunge`);
  } catch {
    hasExpunge = false;
  }
  const lock = await ctx.agent.call("lock", { mailbox: ALICE, timeoutMs: 2000, stage });
  await ctx.agent.call("commit", {});
  expect(readFileSync(ctx.index)).toEqual(await reference(`${saved}.index`, ctx.dir, "index"));
  if (hasExpunge)
    expect(readFileSync(ctx.expunge)).toEqual(
      await reference(`${saved}.expunge`, ctx.dir, "expunge"),
    );
  return { lock, prep, ...ctx };
}

describe("cut-over paths, each byte for byte equal to a conversion from scratch", () => {
  it("unchanged between prepare and lock: prepared (the swap only)", async () => {
    const { lock, prep } = await cutOver(() => {});
    expect(lock.staged).toMatchObject({ path: "prepared", files: { index: "prepared" } });
    expect(lock.staged?.guidDigest).toBe(prep.staged?.guidDigest);
  });

  it("a message appended: appended (only the new record converted under the lock)", async () => {
    let cacheBefore = Buffer.alloc(0);
    const { lock, dir: mailboxDir } = await cutOver((ctx) => {
      cacheBefore = readFileSync(path.join(ctx.dir, "cyrus.sha1s"));
      appendOne(ctx);
    });
    expect(lock.staged).toMatchObject({ path: "appended", files: { index: "appended" } });
    expect(lock.check).toMatchObject({ appended: 1 });
    expect(lock.staged?.counts.computed).toBe(1); // only the new message hashed under the lock
    // …without reading the sha1 cache there, and so without writing it back
    // (a cache written from an empty read would lose every entry).
    expect(readFileSync(path.join(mailboxDir, "cyrus.sha1s"))).toEqual(cacheBefore);
    expect(cacheBefore.length).toBeGreaterThan(100);
  });

  it("appended: the lock's answer (facts, digests, fingerprint, planned set, staged digest) equals a conversion under the lock from scratch", async () => {
    const ctx = await setup();
    const stage = { ...STAGE, upTo: parse(ctx.index).header.values.get("lastUid") as number };
    await ctx.agent.call("prepare", { mailbox: ALICE, stage });
    appendOne(ctx);
    const fast = await ctx.agent.call("lock", { mailbox: ALICE, timeoutMs: 2000, stage });
    expect(fast.staged?.path).toBe("appended");
    await ctx.agent.call("rollback", {});
    // The same files, no prepare: everything converted under the lock.
    const full = await ctx.agent.call("lock", { mailbox: ALICE, timeoutMs: 2000, stage });
    expect(full.staged?.path).toBe("reconverted");
    await ctx.agent.call("rollback", {});
    expect(fast.scan).toEqual(full.scan);
    expect(fast.check).toEqual(full.check);
    expect(fast.staged?.guidDigest).toBe(full.staged?.guidDigest);
    expect(fast.staged?.counts.records).toBe(full.staged?.counts.records);
  });

  it("appended AND a flag changed in the records prepare saw: reconverted, byte for byte", async () => {
    const { lock } = await cutOver((ctx) => {
      appendOne(ctx);
      const p = parse(ctx.index);
      const flags = p.header.format.recordField("systemFlags")!;
      const r = p.records[0]!;
      r.writeUInt32BE(r.readUInt32BE(flags.offset) ^ 2, flags.offset); // \Flagged
      write(ctx.index, p);
    });
    expect(lock.staged?.files.index).toBe("reconverted");
  });

  it("a flag set in place (same size): reconverted", async () => {
    const { lock } = await cutOver(({ index }) => {
      const p = parse(index);
      const flags = p.header.format.recordField("systemFlags")!;
      const r = p.records[1]!;
      r.writeUInt32BE(r.readUInt32BE(flags.offset) ^ 1, flags.offset); // \Answered
      write(index, p);
    });
    expect(lock.staged).toMatchObject({ path: "reconverted", files: { index: "reconverted" } });
    expect(lock.staged?.counts.computed).toBe(0); // prepared GUIDs reused by UID
  });

  it("a message expunged (cyrus.index → cyrus.expunge): reconverted, both files right", async () => {
    const { lock, expunge } = await cutOver(({ index, expunge }) => {
      const p = parse(index);
      const gone = p.records.splice(2, 1);
      write(index, p);
      write(expunge, { header: p.header, records: gone });
    });
    expect(lock.staged).toMatchObject({
      path: "reconverted",
      files: { index: "reconverted", expunge: "reconverted" },
    });
    expect(lock.check).toMatchObject({ records: 8, indexUpTo: 7 });
    expect(parse(expunge).header.minorVersion).toBe(10);
  });

  it("one byte different, same length (what a torn read looks like): never taken as unchanged", async () => {
    const { lock } = await cutOver(({ index }) => {
      const b = readFileSync(index);
      const p = parse(index);
      const at = p.header.startOffset + p.header.recordSize * 3 + 4; // a record's INTERNALDATE
      b[at] = (b[at] as number) ^ 0x40;
      writeFileSync(index, b);
    });
    expect(lock.staged?.path).toBe("reconverted");
  });
});
