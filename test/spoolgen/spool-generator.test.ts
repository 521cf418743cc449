import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { open, rename } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { convertIndex } from "../../src/cyrus/convert.js";
import { parseCyrusHeader } from "../../src/cyrus/cyrus-header.js";
import { formatFor } from "../../src/cyrus/formats/index.js";
import { isNullGuid, isOldStyleGuid, sha1File } from "../../src/cyrus/guid.js";
import { type ImapdConf, readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { type IndexKind, IndexReader, type IndexRecord } from "../../src/cyrus/index-file.js";
import { mailboxDataDir, mailboxMetaDir } from "../../src/cyrus/mailbox-path.js";
import { cyrusCheckAvailable, runCyrusGuidCheck } from "../../src/spoolgen/cyrus-check.js";
import {
  appendMessage,
  type GeneratedHost,
  type GeneratedSpool,
  generateSpool,
  removeMailbox,
  replaceMessageFile,
} from "../../src/spoolgen/spool-generator.js";

const scratch: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "guidup-spoolgen-"));
  scratch.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

/** SHA1 over (relative path, bytes) of every file; absolute paths in imapd.conf normalised. */
function treeHash(root: string): string {
  const hash = createHash("sha1");
  const walk = (dir: string): void => {
    const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    for (const e of entries) {
      const path = join(dir, e.name);
      hash.update(`${relative(root, path)}\0${e.isDirectory() ? "d" : "f"}\0`);
      if (e.isDirectory()) walk(path);
      else if (e.name === "imapd.conf")
        hash.update(readFileSync(path, "utf8").replaceAll(root, "<root>"));
      else hash.update(readFileSync(path));
    }
  };
  walk(root);
  return hash.digest("hex");
}

interface LoadedFile {
  path: string;
  bytes: Buffer;
  header: ReadonlyMap<string, unknown>;
  minor: number;
  records: IndexRecord[];
}

async function loadIndex(path: string, kind: IndexKind): Promise<LoadedFile> {
  const reader = await IndexReader.open(path, { kind });
  try {
    const records: IndexRecord[] = [];
    for await (const r of reader.records()) records.push(r);
    return {
      path,
      bytes: readFileSync(path),
      header: reader.header.values,
      minor: reader.header.minorVersion,
      records,
    };
  } finally {
    await reader.close();
  }
}

interface LoadedMailbox {
  name: string;
  dataDir: string;
  indexPath: string;
  expungePath: string;
  cachePath: string;
  headerPath: string;
  index: LoadedFile;
  expunge?: LoadedFile;
}

async function loadMailboxes(
  host: GeneratedHost,
  names: readonly string[],
): Promise<LoadedMailbox[]> {
  const conf = await readImapdConf(host.imapdConf);
  const out: LoadedMailbox[] = [];
  for (const name of names) {
    const meta = (f: "header" | "index" | "cache" | "expunge") =>
      join(mailboxMetaDir(conf, name, "default", f), `cyrus.${f}`);
    const expungePath = meta("expunge");
    const mailbox: LoadedMailbox = {
      name,
      dataDir: mailboxDataDir(conf, name, "default"),
      indexPath: meta("index"),
      expungePath,
      cachePath: meta("cache"),
      headerPath: meta("header"),
      index: await loadIndex(meta("index"), "index"),
    };
    if (existsSync(expungePath)) mailbox.expunge = await loadIndex(expungePath, "expunge");
    out.push(mailbox);
  }
  return out;
}

const num = (r: IndexRecord | ReadonlyMap<string, unknown>, f: string) =>
  r.get(f as never) as number;

function sha1(buf: Buffer): Buffer {
  return createHash("sha1").update(buf).digest();
}

/** Every invariant of a generated host that section 1–8 of the reference asks for. */
async function checkHost(host: GeneratedHost, spool: GeneratedSpool): Promise<LoadedMailbox[]> {
  const mailboxes = await loadMailboxes(
    host,
    spool.mailboxes.map((m) => m.name),
  );
  for (const [i, mb] of mailboxes.entries()) {
    const summary = spool.mailboxes[i]!;
    const { index, expunge } = mb;
    const format = formatFor(index.minor)!;
    expect(index.minor).toBe(summary.minor);
    expect(index.records.length).toBe(summary.records);
    expect(index.bytes.length).toBe(format.headerSize + index.records.length * format.recordSize);
    expect(Boolean(expunge)).toBe(summary.hasExpunge);
    expect(expunge?.records.length ?? 0).toBe(summary.expunged);

    // cyrus.header in the 2.3 form
    const header = parseCyrusHeader(readFileSync(mb.headerPath), mb.headerPath);
    expect(header.form).toBe("2.3");
    expect(header.uniqueId).toMatch(/^[0-9a-f]{16}$/);
    expect(header.acl).toMatch(/^([^\t]+\t[a-z]+\t)+$/);

    // cyrus.cache: generation, records referenced by CACHE_OFFSET
    const cache = readFileSync(mb.cachePath);
    expect(cache.readUInt32BE(0)).toBe(num(index.header, "generation"));
    if (expunge) expect(num(expunge.header, "generation")).toBe(num(index.header, "generation"));

    const guidKinds = { null: 0, padded: 0, sha1: 0 };
    let highest = 0n;
    for (const file of [index, expunge]) {
      if (!file) continue;
      if (file.minor !== index.minor) throw new Error(`${file.path}: minor differs from the index`);
      let quota = 0;
      let deleted = 0;
      let answered = 0;
      let flagged = 0;
      for (const r of file.records) {
        const uid = num(r, "uid");
        const body = readFileSync(join(mb.dataDir, `${uid}.`));
        expect(num(r, "size")).toBe(body.length);
        const headerSize = num(r, "headerSize");
        expect(body.subarray(headerSize - 4, headerSize).toString()).toBe("\r\n\r\n");
        expect(num(r, "contentOffset")).toBe(headerSize);
        if (format.recordField("contentLines")) {
          const lines = num(r, "contentLines");
          const crlfs = body.subarray(headerSize).toString("latin1").split("\r\n").length - 1;
          expect(lines === 0xffffffff || lines === crlfs).toBe(true);
        }
        if (format.recordField("cacheVersion")) expect(num(r, "cacheVersion")).toBe(2);
        // cache record: 10 items of u32 length + padded bytes, inside the file
        let at = num(r, "cacheOffset");
        expect(at).toBeGreaterThan(0);
        for (let item = 0; item < 10; item++) at += 4 + ((cache.readUInt32BE(at) + 3) & ~3);
        expect(at).toBeLessThanOrEqual(cache.length);
        expect(uid).toBeLessThanOrEqual(num(index.header, "lastUid"));
        quota += body.length;
        const flags = num(r, "systemFlags");
        if (flags & 4) deleted++;
        if (flags & 1) answered++;
        if (flags & 2) flagged++;
        const guid: Buffer = r.get("guid")
          ? (r.get("guid") as Buffer)
          : r.get("uuid")
            ? Buffer.concat([r.get("uuid") as Buffer, Buffer.alloc(8)])
            : Buffer.alloc(20);
        if (r.get("uuid")) {
          const uuid = r.get("uuid") as Buffer;
          expect(uuid[0] === 1 || isNullGuid(guid)).toBe(true); // schema 1 or NULL
        }
        if (isNullGuid(guid)) guidKinds.null++;
        else if (isOldStyleGuid(guid)) guidKinds.padded++;
        else {
          guidKinds.sha1++;
          expect(guid.equals(sha1(body))).toBe(true);
        }
        const modseq = r.get("modseq") as bigint | undefined;
        if (modseq !== undefined) {
          if (index.minor === 10) expect(modseq).toBeGreaterThanOrEqual(1n);
          if (modseq > highest) highest = modseq;
        }
      }
      expect(Number(file.header.get("quotaUsed"))).toBe(quota);
      expect(num(file.header, "deleted")).toBe(deleted);
      expect(num(file.header, "answered")).toBe(answered);
      expect(num(file.header, "flagged")).toBe(flagged);
    }
    if (format.headerField("highestModseq")) {
      expect(index.header.get("highestModseq")).toBe(highest > 1n ? highest : 1n);
    }
    expect(guidKinds).toEqual(summary.guidKinds);
  }
  return mailboxes;
}

describe("generateSpool (default options: 200 mailboxes, 2 large, pair)", () => {
  let spool: GeneratedSpool;
  // Each test that reads a side loads it here, once, whatever order the tests
  // run in (vitest's --sequence.shuffle, .only): no test depends on another.
  let masterLoad: Promise<LoadedMailbox[]> | undefined;
  let replicaLoad: Promise<LoadedMailbox[]> | undefined;
  const loadMaster = () => {
    masterLoad ??= checkHost(spool.master, spool);
    return masterLoad;
  };
  const loadReplica = () => {
    replicaLoad ??= checkHost(spool.replica!, spool);
    return replicaLoad;
  };

  beforeAll(async () => {
    spool = await generateSpool({ dir: tempDir() });
  }, 120_000);

  // How fast it generates is a benchmark's business, not a test's: a shared
  // 2-core machine under load made a wall-clock bound here fail at random.
  it("generates 200 mailboxes with the required variety", () => {
    expect(spool.mailboxes).toHaveLength(200);
    const names = spool.mailboxes.map((m) => m.name);
    expect(names).toContain("user.bob.Some Folder");
    expect(names).toContain("user.alice.Archive.2009");
    expect(names).toContain("DELETED.user.bob.Trash.4B1C2D3E");
    expect(
      names.filter((n) => !n.startsWith("user.") && !n.startsWith("DELETED.")).length,
    ).toBeGreaterThanOrEqual(2);
    expect(
      spool.mailboxes.filter((m) => m.records === 0 && m.expunged === 0).length,
    ).toBeGreaterThanOrEqual(2);
    expect(spool.mailboxes.filter((m) => m.records >= 2000)).toHaveLength(2);
    expect(spool.mailboxes.filter((m) => m.hasExpunge)).toHaveLength(40);
    expect(new Set(spool.mailboxes.map((m) => m.minor))).toEqual(new Set([6, 7, 8, 9, 10]));
    const v10 = spool.mailboxes.filter((m) => m.minor === 10);
    for (const kind of ["null", "padded", "sha1"] as const) {
      expect(v10.reduce((n, m) => n + m.guidKinds[kind], 0)).toBeGreaterThan(0);
    }
    const v9 = spool.mailboxes.filter((m) => m.minor >= 7 && m.minor <= 9);
    expect(v9.reduce((n, m) => n + m.guidKinds.padded, 0)).toBeGreaterThan(0);
    expect(v9.reduce((n, m) => n + m.guidKinds.sha1, 0)).toBe(0);
  });

  it("writes a master whose every index and expunge file is valid and consistent", async () => {
    expect(await loadMaster()).toHaveLength(spool.mailboxes.length);
  }, 120_000);

  it("writes a replica with identical index/expunge/message bytes but its own inodes", async () => {
    const master = await loadMaster();
    const replica = await loadReplica();
    expect(replica).toHaveLength(master.length);
    for (const [i, m] of master.entries()) {
      const r = replica[i]!;
      expect(r.index.bytes.equals(m.index.bytes)).toBe(true);
      expect(Boolean(r.expunge)).toBe(Boolean(m.expunge));
      if (m.expunge) expect(r.expunge!.bytes.equals(m.expunge.bytes)).toBe(true);
      expect(readFileSync(r.cachePath).readUInt32BE(0)).toBe(
        readFileSync(m.cachePath).readUInt32BE(0),
      );
      for (const rec of m.index.records.slice(0, 5)) {
        const f = `${num(rec, "uid")}.`;
        const ms = statSync(join(m.dataDir, f));
        const rs = statSync(join(r.dataDir, f));
        expect(rs.ino).not.toBe(ms.ino);
        expect(rs.mode & 0o777).toBe(ms.mode & 0o777);
        expect(readFileSync(join(r.dataDir, f)).equals(readFileSync(join(m.dataDir, f)))).toBe(
          true,
        );
      }
    }
  }, 120_000);

  it("uses mode 0600 for files, 0700 for directories, and hard links within one side", () => {
    let links = 0;
    const walk = (dir: string): void => {
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, e.name);
        if (e.isDirectory()) walk(path);
        else {
          const st = statSync(path);
          expect(st.mode & 0o777).toBe(0o600);
          if (st.nlink > 1) links++;
        }
      }
    };
    walk(spool.master.partitionRoot);
    expect(links).toBeGreaterThan(0);
  });

  it("writes cyrus.expunge files in expunge order: unsorted, with repeats and live UIDs", async () => {
    const master = await loadMaster();
    const files = master
      .filter((m) => m.expunge)
      .map((m) => ({ m, uids: m.expunge!.records.map((r) => num(r, "uid")) }));
    expect(files.some(({ uids }) => uids.some((u, i) => i > 0 && u < uids[i - 1]!))).toBe(true);
    expect(files.some(({ uids }) => new Set(uids).size < uids.length)).toBe(true);
    expect(
      files.some(({ m, uids }) => {
        const live = new Set(m.index.records.map((r) => num(r, "uid")));
        return uids.some((u) => live.has(u));
      }),
    ).toBe(true);
    // LAST_UPDATED grows along the file: records are appended as they are expunged
    for (const { m } of files) {
      const times = m.expunge!.records.map((r) => num(r, "lastUpdated"));
      expect(times).toEqual([...times].sort((a, b) => a - b));
    }
  });

  it("has MODSEQ 0 in some v8/v9 records and CONTENT_LINES 0xFFFFFFFF in some", async () => {
    const all = (await loadMaster()).flatMap((m) => m.index.records.map((r) => ({ m, r })));
    expect(
      all.some(
        ({ m, r }) => (m.index.minor === 8 || m.index.minor === 9) && r.get("modseq") === 0n,
      ),
    ).toBe(true);
    expect(all.some(({ r }) => r.get("contentLines") === 0xffffffff)).toBe(true);
  });

  it("writes imapd.conf and the mailbox lists", async () => {
    const conf: ImapdConf = await readImapdConf(spool.master.imapdConf);
    expect(conf.hashImapSpool).toBe(true);
    expect(conf.fullDirHash).toBe(false);
    expect(conf.partitions.get("default")).toBe(spool.master.partitionRoot);
    expect(conf.configDirectory).toBeDefined();
    const dump = readFileSync(spool.mailboxList, "utf8").split("\n").slice(0, -1);
    const plain = readFileSync(spool.plainList, "utf8").split("\n").slice(0, -1);
    expect(plain).toEqual(spool.mailboxes.map((m) => m.name));
    expect(plain).toEqual([...plain].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    expect(dump.map((l) => l.split("\t")[0])).toEqual(plain);
    expect(dump).toContain("user.bob\t0 default bob\tlrswipkxtecda\t");
    for (const line of dump) expect(line).toMatch(/^[^\t]+\t0 default ([^\t]+\t[a-z]+\t)+$/);
    expect(
      existsSync(
        join(spool.master.partitionRoot, "b", "user", "bob", "Some Folder", "cyrus.index"),
      ),
    ).toBe(true);
    expect(
      existsSync(
        join(
          spool.master.partitionRoot,
          "u",
          "DELETED",
          "user",
          "bob",
          "Trash",
          "4B1C2D3E",
          "cyrus.header",
        ),
      ),
    ).toBe(true);
  });
});

describe("generateSpool determinism and options", () => {
  it("gives byte-identical trees for the same seed and different ones for another seed", async () => {
    const opts = { mailboxes: 40, largeMailboxes: 0, seed: 7 };
    const a = tempDir();
    const b = tempDir();
    const c = tempDir();
    const sa = await generateSpool({ ...opts, dir: a });
    const sb = await generateSpool({ ...opts, dir: b });
    await generateSpool({ ...opts, seed: 8, dir: c });
    expect(sb.mailboxes).toEqual(sa.mailboxes);
    expect(treeHash(b)).toBe(treeHash(a));
    expect(treeHash(c)).not.toBe(treeHash(a));
  }, 60_000);

  it("refuses an output directory that already holds a spool", async () => {
    const dir = tempDir();
    await generateSpool({ dir, mailboxes: 3, largeMailboxes: 0, pair: false });
    await expect(generateSpool({ dir, mailboxes: 3 })).rejects.toThrow(/already exists/);
  });

  it("supports metapartition, virtdomains, no hashing and a single host", async () => {
    const spool = await generateSpool({
      dir: tempDir(),
      mailboxes: 30,
      largeMailboxes: 0,
      pair: false,
      metapartition: true,
      virtdomains: true,
      hashSpool: false,
      versions: [8, 10],
    });
    expect(spool.replica).toBeUndefined();
    expect(spool.master.metaRoot).toBeDefined();
    const domainBox = spool.mailboxes.find((m) => m.name.includes("!") && m.records > 0);
    expect(domainBox).toBeDefined();
    const loaded = await checkHost(spool.master, spool);
    const conf = await readImapdConf(spool.master.imapdConf);
    for (const mb of loaded) {
      expect(mb.indexPath.startsWith(spool.master.metaRoot!)).toBe(true);
      expect(existsSync(join(mailboxDataDir(conf, mb.name, "default"), "cyrus.index"))).toBe(false);
      expect([8, 10]).toContain(mb.index.minor);
    }
    const bang = domainBox!.name.indexOf("!");
    const [domain, local] = [domainBox!.name.slice(0, bang), domainBox!.name.slice(bang + 1)];
    expect(
      existsSync(join(spool.master.partitionRoot, "domain", domain, ...local.split("."))),
    ).toBe(true);
  });
});

describe("generateSpool with pre-2.3 minors", () => {
  it("writes valid v4 and v5 indexes (no CACHE_VERSION; v4 without CONTENT_LINES)", async () => {
    const spool = await generateSpool({
      dir: tempDir(),
      mailboxes: 15,
      largeMailboxes: 0,
      pair: false,
      versions: [4, 5],
    });
    const loaded = await checkHost(spool.master, spool);
    expect(new Set(loaded.map((m) => m.index.minor))).toEqual(new Set([4, 5]));
    for (const m of spool.mailboxes) expect(m.guidKinds.padded + m.guidKinds.sha1).toBe(0);
  });

  it("rejects an unknown minor", async () => {
    await expect(generateSpool({ dir: tempDir(), versions: [11] })).rejects.toThrow(/minor 11/);
  });
});

describe("helpers that make the sides differ", () => {
  it("appendMessage adds one valid record the way Cyrus does (.NEW + rename)", async () => {
    const spool = await generateSpool({ dir: tempDir(), mailboxes: 12, largeMailboxes: 0 });
    for (const name of ["user.bob", "user.alice.Archive"]) {
      const [before] = await loadMailboxes(spool.master, [name]);
      const oldInode = statSync(before!.indexPath).ino;
      const cacheSizeBefore = statSync(before!.cachePath).size;
      const uid = await appendMessage(spool.master, name);
      const [after] = await loadMailboxes(spool.master, [name]);
      expect(uid).toBe(num(before!.index.header, "lastUid") + 1);
      expect(after!.index.records).toHaveLength(before!.index.records.length + 1);
      expect(num(after!.index.header, "exists")).toBe(before!.index.records.length + 1);
      expect(num(after!.index.header, "lastUid")).toBe(uid);
      expect(statSync(after!.indexPath).ino).not.toBe(oldInode);
      expect(existsSync(`${after!.indexPath}.NEW`)).toBe(false);
      const rec = after!.index.records.at(-1)!;
      const body = readFileSync(join(after!.dataDir, `${uid}.`));
      expect(num(rec, "size")).toBe(body.length);
      expect(Number(after!.index.header.get("quotaUsed"))).toBe(
        Number(before!.index.header.get("quotaUsed")) + body.length,
      );
      expect(num(rec, "cacheOffset")).toBe(cacheSizeBefore);
      expect(readFileSync(after!.cachePath).readUInt32BE(0)).toBe(
        num(after!.index.header, "generation"),
      );
      if (after!.index.minor === 10)
        expect((rec.get("guid") as Buffer).equals(sha1(body))).toBe(true);
      // the replica did not change
      const [rep] = await loadMailboxes(spool.replica!, [name]);
      expect(rep!.index.records).toHaveLength(before!.index.records.length);
    }
    const custom = Buffer.from("Subject: test\r\n\r\nhello\r\n");
    const uid = await appendMessage(spool.replica!, "user.bob", custom);
    const [rep] = await loadMailboxes(spool.replica!, ["user.bob"]);
    const rec = rep!.index.records.at(-1)!;
    expect(num(rec, "uid")).toBe(uid);
    expect(num(rec, "headerSize")).toBe(17);
    expect(num(rec, "size")).toBe(24);
  });

  it("replaceMessageFile gives the file a new inode; removeMailbox keeps sub-mailboxes", async () => {
    const spool = await generateSpool({
      dir: tempDir(),
      mailboxes: 12,
      largeMailboxes: 0,
      pair: false,
    });
    const [bob] = await loadMailboxes(spool.master, ["user.bob"]);
    const uid = num(bob!.index.records[0]!, "uid");
    const path = join(bob!.dataDir, `${uid}.`);
    const inode = statSync(path).ino;
    await replaceMessageFile(
      spool.master,
      "user.bob",
      uid,
      Buffer.from("Subject: x\r\n\r\nreplaced\r\n"),
    );
    expect(statSync(path).ino).not.toBe(inode);
    expect(readFileSync(path, "utf8")).toContain("replaced");
    expect(statSync(path).mode & 0o777).toBe(0o600);

    await removeMailbox(spool.master, "user.bob");
    expect(existsSync(bob!.indexPath)).toBe(false);
    expect(existsSync(path)).toBe(false);
    expect(existsSync(join(bob!.dataDir, "Some Folder", "cyrus.index"))).toBe(true);
    await removeMailbox(spool.master, "user.bob.Trash");
    expect(existsSync(join(bob!.dataDir, "Trash"))).toBe(false);
  });
});

/** Converts every index and expunge file of `host` to v10 with GUID = SHA1(message file). */
async function convertAllToV10(host: GeneratedHost, names: readonly string[]): Promise<void> {
  const conf = await readImapdConf(host.imapdConf);
  for (const name of names) {
    const dataDir = mailboxDataDir(conf, name, "default");
    for (const kind of ["index", "expunge"] as const) {
      const path = join(mailboxMetaDir(conf, name, "default", kind), `cyrus.${kind}`);
      if (!existsSync(path)) continue;
      const reader = await IndexReader.open(path, { kind });
      const out = await open(`${path}.NEW`, "wx", 0o600);
      try {
        await convertIndex(reader, out.fd, {
          target: formatFor(10)!,
          guidFor: async (req) => (await sha1File(join(dataDir, `${req.uid}.`))).guid,
        });
      } finally {
        await out.close();
        await reader.close();
      }
      await rename(`${path}.NEW`, path);
    }
  }
}

// Never skipped: CI installs the tools (.ci/run); a machine without them fails
// here with the reason, instead of silently checking less.
describe("real Cyrus 3.6 check (cyrus-check-guids.sh)", () => {
  it("has the Cyrus tools and runs as root (install: ../shared/tools/install-cyrus-tools.sh)", () => {
    expect(cyrusCheckAvailable()).toBe(true);
  });

  it("fails on the generated 2.3 spool and passes once every index is v10 with SHA1 GUIDs", async () => {
    const spool = await generateSpool({
      dir: tempDir(),
      mailboxes: 12,
      largeMailboxes: 0,
      pair: false,
      seed: 3,
    });
    const before = await runCyrusGuidCheck(spool.master);
    expect(before.code, before.output).toBe(1);
    expect(before.output).toMatch(/GUID-MISMATCH/);

    await convertAllToV10(
      spool.master,
      spool.mailboxes.map((m) => m.name),
    );
    const after = await runCyrusGuidCheck(spool.master);
    expect(after.code, after.output).toBe(0);
    expect(after.output).toContain("ALL GUIDS MATCH");
    expect(after.output).toMatch(/\(cyrus\.expunge\)/);
  }, 180_000);

  it("passes for a metapartition + converted spool too", async () => {
    const spool = await generateSpool({
      dir: tempDir(),
      mailboxes: 12,
      largeMailboxes: 0,
      pair: false,
      metapartition: true,
      seed: 5,
    });
    await convertAllToV10(
      spool.master,
      spool.mailboxes.map((m) => m.name),
    );
    const after = await runCyrusGuidCheck(spool.master);
    expect(after.code, after.output).toBe(0);
  }, 180_000);
});
