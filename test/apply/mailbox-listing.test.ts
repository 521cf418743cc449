// plan's mailbox list in flat memory (apply/mailbox-listing.ts): from a
// file, a command or the master's discovery in pages (a real agent over the
// local transport), sorted through the external sort into the plan's byte
// order, duplicates dropped, conflicts refused as when the list was held
// whole — with sort runs small enough that every check crosses runs.
//
// Needs dist/ (npx tsc -p tsconfig.json): the agents run dist/src/cli/main.js.

import { spawnSync } from "node:child_process";
import { copyFile, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MailboxListing } from "../../src/apply/mailbox-listing.js";
import { listMailboxes, type MailboxSource } from "../../src/apply/scan-pair.js";
import { readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { parseMailboxList } from "../../src/cyrus/mailbox-list.js";
import { mailboxDataDir } from "../../src/cyrus/mailbox-path.js";
import { compareNames } from "../../src/plan/build.js";
import { connectHosts } from "../../src/transport/index.js";
import type { HostConnection } from "../../src/transport/types.js";
import { makeFixturePair, type PairFixture } from "../helpers/pair-fixtures.js";

let pair: PairFixture;
let master: HostConnection;

beforeAll(async () => {
  pair = await makeFixturePair("09");
  // Two stray copies: directories with a cyrus.header no valid name lives
  // at, reported as invalid by discovery.
  const conf = await readImapdConf(pair.master.imapdConf);
  const src = mailboxDataDir(conf, "user.bob.Trash", "default");
  for (const stray of ["q/user/zed", "b/user/bob/b\\ad"]) {
    const dst = path.join(pair.master.partitionRoot, stray);
    await mkdir(dst, { recursive: true });
    for (const e of await readdir(src, { withFileTypes: true }))
      if (e.isFile()) await copyFile(path.join(src, e.name), path.join(dst, e.name));
  }
  [master] = (await connectHosts([
    { transport: "local", config: pair.master.imapdConf, name: "master" },
  ])) as [HostConnection];
});
afterAll(async () => {
  await master?.close();
  await pair?.cleanup();
});

async function all<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const i of items) out.push(i);
  return out;
}

async function read(source: MailboxSource, options: Parameters<typeof MailboxListing.open>[3]) {
  const listing = await MailboxListing.open(source, master, {}, options);
  try {
    return {
      count: listing.count,
      mailboxes: await all(listing.mailboxes()),
      excluded: await all(listing.excluded()),
      invalid: await all(listing.invalid()),
    };
  } finally {
    await listing.close();
  }
}

const byName = <T extends { name: string }>(items: readonly T[]) =>
  [...items].sort((a, b) => compareNames(a.name, b.name));

describe("MailboxListing", () => {
  it("discovery in pages of 2 gives what one whole discover reply gives, in the plan's order", async () => {
    const whole = await listMailboxes({ discover: true }, master, {});
    expect(whole.mailboxes.length).toBe(7);
    expect(whole.invalid.length).toBe(2);
    for (const discoverPage of [2, 3, 1000]) {
      const paged = await read({ discover: true }, { discoverPage, runRecords: 3 });
      expect(paged.mailboxes, `page ${discoverPage}`).toEqual(byName(whole.mailboxes));
      expect(paged.invalid).toEqual(byName(whole.invalid));
      expect(paged.invalid.map((i) => i.reason).join("\n")).toContain("a stray copy?");
      expect(paged.count).toBe(7);
    }
  });

  it("the same mailbox in two partitions is refused naming both (a whole plan used to fail on it as an internal error)", async () => {
    const conf = await readImapdConf(pair.master.imapdConf);
    const second = path.join(pair.dir, "spool2");
    const dst = mailboxDataDir(conf, "user.bob", "default").replace(
      pair.master.partitionRoot,
      second,
    );
    await mkdir(dst, { recursive: true });
    await copyFile(
      path.join(mailboxDataDir(conf, "user.bob", "default"), "cyrus.header"),
      path.join(dst, "cyrus.header"),
    );
    const twoPartitions = path.join(pair.dir, "two-partitions.conf");
    await writeFile(
      twoPartitions,
      `${await readFile(pair.master.imapdConf, "utf8")}partition-second: ${second}\n`,
    );
    const [conn] = (await connectHosts([
      { transport: "local", config: twoPartitions, name: "master" },
    ])) as [HostConnection];
    try {
      await expect(
        MailboxListing.open({ discover: true }, conn, {}, { discoverPage: 2 }),
      ).rejects.toThrow(
        /mailbox user\.bob found in partition default and in partition second; one of them is a stray copy/,
      );
    } finally {
      await conn.close();
    }
  });

  it("a dump list out of order with repeated lines: sorted, identical repeats dropped, first invalid line kept", async () => {
    const names = ["user.zoe", "user.amy", "user.bob.Trash", "user.bob", "user.amy.Sent"];
    const lines: string[] = [];
    for (let round = 0; round < 3; round++)
      for (const n of round === 1 ? [...names].reverse() : names)
        lines.push(`${n}\t0 default anyone\tlrs\t`);
    lines.splice(4, 0, "user.far\t1 default anyone\tlrs\t", "", "user.bad/slash\t0 default x\t");
    lines.push("user.bad/slash\t0 default y\t", "user.far\t1 default anyone\tlrs\t");
    const file = path.join(pair.dir, "shuffled.dump");
    await writeFile(file, `${lines.join("\n")}\n`);
    const held = parseMailboxList(`${lines.join("\n")}\n`, file);
    const listed = await read({ file }, { runRecords: 4 });
    expect(listed.mailboxes).toEqual(byName(held.mailboxes));
    expect(listed.mailboxes.map((m) => m.name)).toEqual([
      "user.amy",
      "user.amy.Sent",
      "user.bob",
      "user.bob.Trash",
      "user.zoe",
    ]);
    expect(listed.excluded).toEqual(held.excluded);
    expect(listed.invalid).toEqual(held.invalid);
    expect(listed.invalid).toEqual([
      {
        name: "user.bad/slash",
        reason: `${file}:7: invalid mailbox name "user.bad/slash": contains '/'`,
      },
    ]);
    expect(listed.count).toBe(5);

    // The same text from a command on the master.
    const fromCommand = await read({ command: `cat '${file}'` }, { runRecords: 4 });
    expect(fromCommand.mailboxes).toEqual(listed.mailboxes);
    expect(fromCommand.invalid.map((i) => i.name)).toEqual(["user.bad/slash"]);
  });

  it("a name listed again with another partition, runs apart: the error the whole list gives, naming both lines", async () => {
    const lines = Array.from({ length: 30 }, (_, i) => `user.u${i}\t0 default anyone\tlrs\t`);
    lines[1] = "user.twice\t0 default anyone\tlrs\t";
    lines[25] = "user.twice\t0 other anyone\tlrs\t";
    const text = `${lines.join("\n")}\n`;
    const file = path.join(pair.dir, "conflict.dump");
    await writeFile(file, text);
    const expected = `${file}:26: mailbox user.twice listed again with a different entry (first at line 2)`;
    expect(() => parseMailboxList(text, file)).toThrow(expected);
    await expect(MailboxListing.open({ file }, master, {}, { runRecords: 3 })).rejects.toThrow(
      expected,
    );
  });

  it("a list that is not one is refused before anything is sorted; a missing file names it", async () => {
    const file = path.join(pair.dir, "not-a-list.json");
    await writeFile(file, '{\n  "a": 1,\n  "b": 2,\n  "c": [1, 2]\n}\n');
    await expect(MailboxListing.open({ file }, master, {})).rejects.toThrow(
      /not a mailbox list in a known format/,
    );
    const missing = path.join(pair.dir, "nope.txt");
    await expect(MailboxListing.open({ file: missing }, master, {})).rejects.toThrow(
      `mailbox list ${missing}: ENOENT`,
    );
  });

  it("a killed plan's list directory is removed by the next plan; a running plan's, and one without a pid, are left", async () => {
    const root = path.join(pair.dir, "tmp-sweep");
    await mkdir(root);
    // A process that has exited: its pid names no process (until reused).
    const gone = spawnSync(process.execPath, ["-e", ""]).pid as number;
    const running = process.ppid;
    for (const d of [
      `guidup-list-${gone}-Ab12Cd`,
      `guidup-list-${running}-Ef34Gh`,
      "guidup-list-Ij56Kl",
    ]) {
      await mkdir(path.join(root, d));
      await writeFile(path.join(root, d, "entries.run-0"), "x\n");
    }
    const file = path.join(pair.dir, "sweep-list.txt");
    await writeFile(file, "user.alice\nuser.bob\n");
    const listing = await MailboxListing.open({ file }, master, {}, { tempRoot: root });
    const own = (await readdir(root)).filter((d) => d.startsWith(`guidup-list-${process.pid}-`));
    expect(own).toHaveLength(1);
    expect((await readdir(root)).sort()).toEqual(
      [`guidup-list-${running}-Ef34Gh`, "guidup-list-Ij56Kl", own[0] as string].sort(),
    );
    expect((await all(listing.mailboxes())).map((m) => m.name)).toEqual(["user.alice", "user.bob"]);
    await listing.close();
    expect(await readdir(root)).not.toContain(own[0]);
  });
});
