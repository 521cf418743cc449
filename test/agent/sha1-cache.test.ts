import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  CacheFormatError,
  chooseVerificationSample,
  isEntryValidFor,
  readSha1Cache,
  readSha1CacheSync,
  SHA1_CACHE_FILE,
  Sha1Cache,
  type Sha1CacheEntry,
  writeSha1Cache,
} from "../../src/agent/sha1-cache.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-sha1s-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function sha1(data: string | Buffer): Buffer {
  return createHash("sha1").update(data).digest();
}

function entry(uid: number, size: number, extra: Partial<Sha1CacheEntry> = {}): Sha1CacheEntry {
  return {
    uid,
    size,
    sha1: sha1(`${uid}/${size}`),
    ino: BigInt(1000 + uid),
    mtimeNs: 1_700_000_000_000_000_000n + BigInt(uid),
    origin: "local",
    ...extra,
  };
}

const entryArb: fc.Arbitrary<Sha1CacheEntry> = fc.record({
  uid: fc.integer({ min: 1, max: 0xffff_ffff }),
  size: fc.integer({ min: 0, max: 0xffff_ffff }),
  sha1: fc.uint8Array({ minLength: 20, maxLength: 20 }).map((a) => Buffer.from(a)),
  ino: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  mtimeNs: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  origin: fc.constantFrom("local" as const, "relayed" as const),
});

describe("Sha1Cache encode/decode", () => {
  it("round-trips a small cache byte for byte", () => {
    const c = Sha1Cache.empty();
    c.set(entry(3, 100));
    c.set(entry(1, 5, { origin: "relayed", ino: 0n, mtimeNs: 0n }));
    c.set(entry(2, 0));
    const buf = c.encode();
    expect(buf.length).toBe(16 + 3 * 48 + 20);
    expect(buf.subarray(0, 8).toString("latin1")).toBe("GUIDUPS1");
    const d = Sha1Cache.decode(buf, "x");
    expect([...d.entries()].map((e) => e.uid)).toEqual([1, 2, 3]);
    expect([...d.entries()]).toEqual([...c.entries()]);
    expect(d.encode().equals(buf)).toBe(true);
  });

  it("round-trips random entry sets (property)", () => {
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 60 }), (list) => {
        const c = Sha1Cache.empty();
        for (const e of list) c.set(e);
        const buf = c.encode();
        const d = Sha1Cache.decode(buf, "prop");
        const got = [...d.entries()];
        expect(got).toEqual([...c.entries()]);
        expect(d.encode().equals(buf)).toBe(true);
        // Sorted and unique by (uid, size); at most one local entry per uid.
        for (let i = 1; i < got.length; i++) {
          const a = got[i - 1]!;
          const b = got[i]!;
          expect(a.uid < b.uid || (a.uid === b.uid && a.size < b.size)).toBe(true);
          if (a.uid === b.uid) expect(a.origin === "local" && b.origin === "local").toBe(false);
        }
        // Every entry is found by lookup, and lookup returns exactly it.
        for (const e of got) expect(d.lookup(e.uid, e.size)).toEqual(e);
      }),
      { numRuns: 300 },
    );
  });

  it("does not depend on insertion order (property)", () => {
    fc.assert(
      fc.property(fc.uniqueArray(entryArb, { maxLength: 40, selector: (e) => e.uid }), (list) => {
        const a = Sha1Cache.empty();
        const b = Sha1Cache.empty();
        for (const e of list) a.set(e);
        for (const e of [...list].reverse()) b.set(e);
        expect(b.encode().equals(a.encode())).toBe(true);
        expect(a.size).toBe(list.length);
      }),
    );
  });

  it("rejects every corrupted byte and every truncation", () => {
    const c = Sha1Cache.empty();
    for (let uid = 1; uid <= 4; uid++) c.set(entry(uid, uid * 10));
    const buf = c.encode();
    for (let i = 0; i < buf.length; i++) {
      const bad = Buffer.from(buf);
      bad[i] = bad[i]! ^ 0x01;
      expect(() => Sha1Cache.decode(bad, "f")).toThrow(CacheFormatError);
    }
    for (let n = 0; n < buf.length; n++) {
      expect(() => Sha1Cache.decode(buf.subarray(0, n), "f")).toThrow(CacheFormatError);
    }
    expect(() => Sha1Cache.decode(Buffer.concat([buf, Buffer.alloc(1)]), "f")).toThrow(
      CacheFormatError,
    );
  });

  it("rejects a file with a valid checksum but unsorted entries", () => {
    const c = Sha1Cache.empty();
    c.set(entry(1, 1));
    c.set(entry(2, 2));
    const buf = c.encode();
    // Swap the two entries and re-seal: structurally wrong, checksum right.
    const e1 = Buffer.from(buf.subarray(16, 64));
    buf.copy(buf, 16, 64, 112);
    e1.copy(buf, 64);
    sha1(buf.subarray(0, buf.length - 20)).copy(buf, buf.length - 20);
    expect(() => Sha1Cache.decode(buf, "f")).toThrow(/not sorted/);
  });

  it("CacheFormatError has code cache-format and names the file", () => {
    try {
      Sha1Cache.decode(Buffer.from("nonsense"), "/a/b/cyrus.sha1s");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(CacheFormatError);
      expect((err as CacheFormatError).code).toBe("cache-format");
      expect((err as Error).message).toContain("/a/b/cyrus.sha1s");
    }
  });

  it("refuses invalid entries", () => {
    const c = Sha1Cache.empty();
    expect(() => c.set(entry(0, 1))).toThrow();
    expect(() => c.set(entry(1, 2 ** 32))).toThrow();
    expect(() => c.set({ ...entry(1, 1), sha1: Buffer.alloc(19) })).toThrow();
    expect(c.size).toBe(0);
  });
});

describe("Sha1Cache semantics", () => {
  it("looks up by (uid, size)", () => {
    const c = Sha1Cache.empty();
    for (let uid = 1; uid <= 1000; uid += 3) c.set(entry(uid, uid + 7));
    expect(c.lookup(4, 11)?.sha1).toEqual(sha1("4/11"));
    expect(c.lookup(4, 12)).toBeUndefined();
    expect(c.lookup(5, 12)).toBeUndefined();
    expect(c.lookup(0, 0)).toBeUndefined();
    expect(c.lookup(2000, 0)).toBeUndefined();
  });

  it("a new local entry replaces the local entry of another size for that uid", () => {
    const c = Sha1Cache.empty();
    c.set(entry(5, 10));
    c.set(entry(5, 30, { origin: "relayed" }));
    c.set(entry(6, 1));
    c.set(entry(5, 20));
    expect([...c.entries()].map((e) => [e.uid, e.size, e.origin])).toEqual([
      [5, 20, "local"],
      [5, 30, "relayed"],
      [6, 1, "local"],
    ]);
  });

  it("relayedCopy zeroes file identity; merge keeps local over relayed", () => {
    const replica = Sha1Cache.empty();
    replica.set(entry(1, 10));
    replica.set(entry(2, 20));
    const relayed = replica.relayedCopy();
    for (const e of relayed.entries()) {
      expect(e.origin).toBe("relayed");
      expect(e.ino).toBe(0n);
      expect(e.mtimeNs).toBe(0n);
    }
    // The master already hashed uid 2 itself.
    const master = Sha1Cache.empty();
    const own = entry(2, 20, { sha1: sha1("master's own"), ino: 77n });
    master.set(own);
    master.merge(relayed);
    expect(master.size).toBe(2);
    expect(master.lookup(1, 10)?.origin).toBe("relayed");
    expect(master.lookup(2, 20)).toEqual(own);
    // The source cache is untouched.
    expect(replica.lookup(1, 10)?.origin).toBe("local");
  });

  it("merge equals setting the other cache's entries one by one (property)", () => {
    fc.assert(
      fc.property(
        fc.array(entryArb, { maxLength: 30 }),
        fc.array(entryArb, { maxLength: 30 }),
        (xs, ys) => {
          const a = Sha1Cache.empty();
          for (const e of xs) a.set(e);
          const b = Sha1Cache.empty();
          for (const e of ys) b.set({ ...e, origin: "relayed" });
          const merged = Sha1Cache.decode(a.encode(), "a").merge(b);
          // Reference: relayed entries of b fill gaps; local entries of a stay.
          const ref = Sha1Cache.decode(a.encode(), "a");
          for (const e of b.entries()) {
            const cur = ref.lookup(e.uid, e.size);
            if (cur === undefined || cur.origin === "relayed") ref.set(e);
          }
          expect(merged.encode().equals(ref.encode())).toBe(true);
        },
      ),
    );
  });
});

describe("file identity", () => {
  it("a replaced message file (new inode, same size) invalidates a local entry", async () => {
    const msg = join(dir, "7.");
    await writeFile(msg, "Subject: a\r\n\r\nbody one\r\n");
    const st1 = await stat(msg, { bigint: true });
    const e: Sha1CacheEntry = {
      uid: 7,
      size: Number(st1.size),
      sha1: sha1(await readFile(msg)),
      ino: st1.ino,
      mtimeNs: st1.mtimeNs,
      origin: "local",
    };
    expect(isEntryValidFor(e, st1)).toBe(true);
    expect(isEntryValidFor(e, { ...st1, size: Number(st1.size) })).toBe(true);

    // What sync_server does on a GUID conflict: the file is replaced by
    // another inode with different content (here the same length).
    const other = join(dir, "incoming");
    await writeFile(other, "Subject: b\r\n\r\nbody two\r\n");
    await rename(other, msg);
    const st2 = await stat(msg, { bigint: true });
    expect(st2.size).toBe(st1.size);
    expect(st2.ino).not.toBe(st1.ino);
    expect(isEntryValidFor(e, st2)).toBe(false);
    // The (uid, size) key alone would still have matched:
    const c = Sha1Cache.empty();
    c.set(e);
    expect(c.lookup(7, Number(st2.size))).toBeDefined();
  });

  it("a changed mtime or size invalidates a local entry", () => {
    const e = entry(1, 10);
    expect(isEntryValidFor(e, { ino: e.ino, mtimeNs: e.mtimeNs, size: 10n })).toBe(true);
    expect(isEntryValidFor(e, { ino: e.ino, mtimeNs: e.mtimeNs + 1n, size: 10 })).toBe(false);
    expect(isEntryValidFor(e, { ino: e.ino, mtimeNs: e.mtimeNs, size: 11 })).toBe(false);
  });

  it("relayed entries match by (uid, size) only, never by file identity", () => {
    const c = Sha1Cache.empty();
    c.set(entry(9, 42));
    const relayed = c.relayedCopy();
    const e = relayed.lookup(9, 42)!;
    expect(e).toBeDefined();
    expect(relayed.lookup(9, 43)).toBeUndefined();
    expect(isEntryValidFor(e, { ino: 0n, mtimeNs: 0n, size: 42 })).toBe(false);
  });
});

describe("chooseVerificationSample", () => {
  const uids = Array.from({ length: 500 }, (_, i) => i * 2 + 1);

  it("is deterministic for a seed and differs between seeds", () => {
    const s1 = Buffer.from("seed-one");
    const a = chooseVerificationSample(uids, 10, s1);
    expect(chooseVerificationSample([...uids].reverse(), 10, s1)).toEqual(a);
    expect(a).toHaveLength(10);
    expect(new Set(a).size).toBe(10);
    expect([...a].sort((x, y) => x - y)).toEqual(a);
    for (const u of a) expect(uids).toContain(u);
    const b = chooseVerificationSample(uids, 10, Buffer.from("seed-two"));
    expect(b).not.toEqual(a);
  });

  it("returns everything when count covers the set, nothing for count 0", () => {
    expect(chooseVerificationSample([3, 1, 3, 2], 10, randomBytes(8))).toEqual([1, 2, 3]);
    expect(chooseVerificationSample(uids, 0, randomBytes(8))).toEqual([]);
    expect(chooseVerificationSample([], 5, randomBytes(8))).toEqual([]);
  });

  it("spreads over the whole range across seeds", () => {
    const hits = new Set<number>();
    for (let i = 0; i < 200; i++) {
      for (const u of chooseVerificationSample(uids, 5, Buffer.from(`s${i}`))) hits.add(u);
    }
    // 1000 draws over 500 uids: most uids get picked at least once.
    expect(hits.size).toBeGreaterThan(400);
    expect(hits.has(uids[0]!)).toBe(true);
  });
});

describe("readSha1Cache / writeSha1Cache", () => {
  it("a missing file is an empty cache without a problem", async () => {
    const r = await readSha1Cache(join(dir, SHA1_CACHE_FILE));
    expect(r.cache.size).toBe(0);
    expect(r.problem).toBeUndefined();
  });

  it("writes atomically and reads back; no temp file remains", async () => {
    const path = join(dir, SHA1_CACHE_FILE);
    const c = Sha1Cache.empty();
    for (let uid = 1; uid <= 100; uid++) c.set(entry(uid, uid * 3));
    await writeSha1Cache(path, c);
    expect(await readdir(dir)).toEqual([SHA1_CACHE_FILE]);
    const st = await stat(path);
    expect(st.mode & 0o777).toBe(0o600);
    const r = await readSha1Cache(path);
    expect(r.problem).toBeUndefined();
    expect(r.cache.encode().equals(c.encode())).toBe(true);

    // Overwrite with owner/mode taken from "cyrus.index".
    c.set(entry(101, 1));
    await writeSha1Cache(path, c, { uid: process.getuid!(), gid: process.getgid!(), mode: 0o640 });
    expect(await readdir(dir)).toEqual([SHA1_CACHE_FILE]);
    expect((await stat(path)).mode & 0o777).toBe(0o640);
    expect((await readSha1Cache(path)).cache.size).toBe(101);
  });

  it("concurrent writes of one path in one process do not collide", async () => {
    const path = join(dir, SHA1_CACHE_FILE);
    const caches = Array.from({ length: 8 }, (_, i) => {
      const c = Sha1Cache.empty();
      c.set(entry(i + 1, i));
      return c;
    });
    await Promise.all(caches.map((c) => writeSha1Cache(path, c)));
    expect(await readdir(dir)).toEqual([SHA1_CACHE_FILE]);
    const r = await readSha1Cache(path);
    expect(r.problem).toBeUndefined();
    expect(r.cache.encode().equals(caches[7]!.encode())).toBe(true);
  });

  it("a corrupt byte or a truncated file reads as absent, with a problem naming the file", async () => {
    const path = join(dir, SHA1_CACHE_FILE);
    const c = Sha1Cache.empty();
    for (let uid = 1; uid <= 10; uid++) c.set(entry(uid, uid));
    const good = c.encode();

    const flipped = Buffer.from(good);
    flipped[16 + 5 * 48 + 10] = flipped[16 + 5 * 48 + 10]! ^ 0x80; // one bit of a stored SHA1
    await writeFile(path, flipped);
    let r = await readSha1Cache(path);
    expect(r.cache.size).toBe(0);
    expect(r.problem).toContain(path);
    expect(r.problem).toMatch(/checksum/);

    await writeFile(path, good.subarray(0, good.length - 7));
    r = await readSha1Cache(path);
    expect(r.cache.size).toBe(0);
    expect(r.problem).toContain(path);

    await writeFile(path, Buffer.alloc(0));
    r = await readSha1Cache(path);
    expect(r.cache.size).toBe(0);
    expect(r.problem).toContain(path);
  });

  it("readSha1CacheSync (guidup hash) reads what readSha1Cache reads: missing, good, corrupt, truncated, empty, a directory", async () => {
    const path = join(dir, SHA1_CACHE_FILE);
    const c = Sha1Cache.empty();
    for (let uid = 1; uid <= 10; uid++) c.set(entry(uid, uid));
    const good = c.encode();
    const flipped = Buffer.from(good);
    flipped[20] = flipped[20]! ^ 0x01;
    const same = async (p: string) => {
      const a = await readSha1Cache(p);
      const b = readSha1CacheSync(p);
      expect(b.problem).toBe(a.problem);
      expect(b.cache.encode().equals(a.cache.encode())).toBe(true);
      return b;
    };
    expect((await same(path)).problem).toBeUndefined();
    await writeFile(path, good);
    expect((await same(path)).cache.size).toBe(10);
    for (const bytes of [flipped, good.subarray(0, good.length - 7), Buffer.alloc(0)]) {
      await writeFile(path, bytes);
      expect((await same(path)).problem).toContain(path);
    }
    expect((await same(dir)).problem).toContain(dir);
  });

  it("an unreadable path is reported, not thrown", async () => {
    // A directory where the file should be: read fails with EISDIR.
    const r = await readSha1Cache(dir);
    expect(r.cache.size).toBe(0);
    expect(r.problem).toContain(dir);
  });

  it("a failed write leaves no temp file and throws", async () => {
    const path = join(dir, "missing-dir", SHA1_CACHE_FILE);
    await expect(writeSha1Cache(path, Sha1Cache.empty())).rejects.toThrow(/cannot write/);
    expect(await readdir(dir)).toEqual([]);
  });

  it("a non-durable write (guidup hash) writes the same file, owner and mode, atomically", async () => {
    const path = join(dir, SHA1_CACHE_FILE);
    const c = Sha1Cache.empty();
    for (let uid = 1; uid <= 50; uid++) c.set(entry(uid, uid * 7));
    const owner = { uid: process.getuid!(), gid: process.getgid!(), mode: 0o640 };
    await writeSha1Cache(path, c, owner, { durable: false });
    expect(await readdir(dir)).toEqual([SHA1_CACHE_FILE]);
    expect((await stat(path)).mode & 0o777).toBe(0o640);
    expect((await readFile(path)).equals(c.encode())).toBe(true);
    // Mixed with durable writes of the same path, the last one called wins.
    const later = Sha1Cache.empty();
    later.set(entry(1, 1));
    await Promise.all([
      writeSha1Cache(path, c),
      writeSha1Cache(path, later, owner, { durable: false }),
    ]);
    expect((await readFile(path)).equals(later.encode())).toBe(true);
    expect(await readdir(dir)).toEqual([SHA1_CACHE_FILE]);
    // A failed one throws naming the file and leaves no temp file.
    const bad = join(dir, "missing-dir", SHA1_CACHE_FILE);
    await expect(writeSha1Cache(bad, c, undefined, { durable: false })).rejects.toThrow(
      /cannot write .*missing-dir/,
    );
    expect(await readdir(dir)).toEqual([SHA1_CACHE_FILE]);
  });
});
