// `guidup plan` end to end over the local transport (real agents as child
// processes, real files): plans of the real-Cyrus fixtures v06..v10 copied as
// master and replica, and of generated 2.3 spools, list exactly the expected
// mailboxes and actions; a replica missing a mailbox or holding other UIDs
// shows up under skipped with that reason; plans are deterministic; a
// downgrade target; the three mailbox list sources agree.
//
// Needs dist/ (npx tsc -p tsconfig.json): the agents run dist/src/cli/main.js.

import { existsSync } from "node:fs";
import { readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { mailboxDataDir, mailboxMetaDir } from "../../src/cyrus/mailbox-path.js";
import type { Plan } from "../../src/plan/model.js";
import { readPlan } from "../../src/plan/plan-file.js";
import { appendMessage, removeMailbox } from "../../src/spoolgen/spool-generator.js";
import { FIXTURE_VERSIONS, type FixtureVersion } from "../helpers/fixtures.js";
import {
  DIST_MAIN,
  expectedActions,
  makeFixturePair,
  makeGeneratedPair,
  type PairFixture,
  planContent,
  planTextWithoutIdAndTime,
  runCli,
  writeInventory,
} from "../helpers/pair-fixtures.js";

const pairs: PairFixture[] = [];
let planCounter = 0;

beforeAll(() => {
  if (!existsSync(DIST_MAIN))
    throw new Error(`${DIST_MAIN} missing: run npx tsc -p tsconfig.json before these tests`);
});
afterAll(async () => {
  await Promise.all(pairs.splice(0).map((p) => p.cleanup()));
});

async function track(pair: Promise<PairFixture>): Promise<PairFixture> {
  const p = await pair;
  pairs.push(p);
  return p;
}

/** Runs `guidup plan` and reads the plan back; fails the test with stderr if it did not work. */
async function plan(
  pair: PairFixture,
  inventory: string,
  extra: string[] = [],
): Promise<{ plan: Plan; file: string; out: string }> {
  const file = path.join(pair.dir, `plan-${++planCounter}.yaml`);
  const r = await runCli(["plan", "--inventory", inventory, "--out", file, ...extra]);
  expect(r.err.split("\n").filter((l) => /guidup plan:/.test(l))).toEqual([]);
  expect(r.code).toBe(0);
  expect(r.out).toContain(`${file}: pair slot1`);
  return { plan: await readPlan(file), file, out: r.out };
}

function actionsByName(p: Plan): Record<string, string[]> {
  return Object.fromEntries(p.mailboxes.map((m) => [m.name, m.actions]));
}

/** Records per mailbox of the fixtures (README table); 0 = an empty mailbox. */
const FIXTURE_RECORDS: Record<string, number> = {
  "user.alice": 8,
  "user.alice.Sent": 3,
  "user.alice.Archive": 0,
  "user.alice.Archive.2009": 5,
  "user.bob": 6,
  "user.bob.Some Folder": 4,
  "user.bob.Trash": 0,
};

describe("plans of the real-Cyrus fixtures (cyrus-3.6, copied as master and replica)", () => {
  it.each(FIXTURE_VERSIONS.filter((v) => v !== "10"))(
    "v%s: every mailbox needs version + guid, empty ones too (mail appended before apply needs GUIDs)",
    async (version: FixtureVersion) => {
      const pair = await track(makeFixturePair(version));
      const { plan: p } = await plan(pair, await writeInventory(pair, { transport: "local" }));
      const expected: Record<string, string[]> = {};
      for (const name of pair.names) {
        expected[name] = ["version", "guid"];
      }
      expect(actionsByName(p)).toEqual(expected);
      // Sorted by name (byte order), one entry per mailbox, in the plan's order.
      expect(p.mailboxes.map((m) => m.name)).toEqual(
        [...pair.names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))),
      );
      expect(p.skipped).toEqual([]);
      expect(p.target).toBe(10);
      expect(p.summary).toMatchObject({
        mailboxes: 7,
        toApply: 7,
        upToDate: 0,
        skipped: 0,
        byAction: { version: 7, guid: 7 },
        records: { master: 26, replica: 26 },
        oldStyleGuids: { master: 26, replica: 26 },
      });
      for (const m of p.mailboxes) {
        expect(m.master.index.minor).toBe(Number(version));
        expect(m.master.index.records).toBe(FIXTURE_RECORDS[m.name]);
        // Every record of these versions has an all-zero GUID/UUID.
        expect(m.master.index.oldStyle).toBe(FIXTURE_RECORDS[m.name]);
        expect(m.master.index.nullGuids).toBe(FIXTURE_RECORDS[m.name]);
        // Both sides are copies of one tree: same facts, same fingerprint.
        expect(m.replica).toEqual(m.master);
      }
    },
  );

  it("v10: SHA1 GUIDs already, so nothing to do: all counted up to date, none listed", async () => {
    const pair = await track(makeFixturePair("10"));
    const { plan: p, out } = await plan(pair, await writeInventory(pair, { transport: "local" }));
    expect(p.mailboxes).toEqual([]);
    expect(p.skipped).toEqual([]);
    expect(p.summary).toMatchObject({ mailboxes: 7, toApply: 0, upToDate: 7, skipped: 0 });
    expect(out).toContain("7 mailboxes: 0 to apply (version 0, guid 0), 7 up to date, 0 skipped");
  });

  it("--target-version 9 plans a downgrade of every v10 mailbox (version only, no GUID work)", async () => {
    const pair = await track(makeFixturePair("10"));
    const inventory = await writeInventory(pair, { transport: "local" });
    const { plan: p } = await plan(pair, inventory, ["--target-version", "9"]);
    expect(p.target).toBe(9);
    expect(actionsByName(p)).toEqual(Object.fromEntries(pair.names.map((n) => [n, ["version"]])));
    expect(p.skipped).toEqual([]);
    expect(p.summary).toMatchObject({ toApply: 7, upToDate: 0, byAction: { version: 7, guid: 0 } });
    for (const m of p.mailboxes) expect(m.master.index.minor).toBe(10);
  });

  it("--target-version 9: v09 is up to date; v08 is skipped (newer-than-target: a downgrade never upgrades)", async () => {
    const v09 = await track(makeFixturePair("09"));
    const same = await plan(v09, await writeInventory(v09, { transport: "local" }), [
      "--target-version",
      "9",
    ]);
    expect(same.plan.mailboxes).toEqual([]);
    expect(same.plan.summary.upToDate).toBe(7);

    const v08 = await track(makeFixturePair("08"));
    const up = await plan(v08, await writeInventory(v08, { transport: "local" }), [
      "--target-version",
      "9",
    ]);
    expect(up.plan.mailboxes).toEqual([]);
    expect(up.plan.skipped.map((s) => [s.name, s.reason])).toEqual(
      [...v08.names].sort().map((n) => [n, "newer-than-target"]),
    );
  });
});

describe("plans of generated 2.3 spools", () => {
  let pair: PairFixture;
  let inventory: string;

  beforeAll(async () => {
    pair = await track(
      makeGeneratedPair({
        mailboxes: 60,
        seed: 23,
        largeMailboxes: 1,
        messagesPerMailbox: [0, 12],
        messageBytes: [300, 3000],
      }),
    );
    inventory = await writeInventory(pair, { transport: "local" });
  });

  it("lists exactly the mailboxes the generator says need work, with those actions", async () => {
    const generated = pair.generated ?? [];
    expect(generated.length).toBe(60);
    const { plan: p } = await plan(pair, inventory);
    const expected: Record<string, string[]> = {};
    let upToDate = 0;
    for (const m of generated) {
      const actions = expectedActions(m);
      if (actions.length === 0) upToDate++;
      else expected[m.name] = actions;
    }
    // The mix the test is about: some of each kind.
    const kinds = Object.values(expected).map((a) => a.join("+"));
    expect(kinds).toContain("version+guid");
    expect(kinds).toContain("guid");
    expect(upToDate).toBeGreaterThan(0);

    expect(actionsByName(p)).toEqual(expected);
    expect(p.skipped).toEqual([]);
    expect(p.summary).toMatchObject({
      mailboxes: 60,
      toApply: Object.keys(expected).length,
      upToDate,
      skipped: 0,
    });
    const byName = new Map(generated.map((m) => [m.name, m]));
    for (const m of p.mailboxes) {
      const g = byName.get(m.name);
      expect(g, m.name).toBeDefined();
      if (!g) continue;
      expect(m.master.index.minor).toBe(g.minor);
      expect(m.master.index.records).toBe(g.records);
      expect(m.master.expunge?.records ?? 0).toBe(g.expunged);
      expect(m.master.expunge !== undefined).toBe(g.hasExpunge);
      expect(m.master.index.oldStyle + (m.master.expunge?.oldStyle ?? 0)).toBe(
        g.guidKinds.null + g.guidKinds.padded,
      );
      expect(m.replica).toEqual(m.master);
    }
  });

  it("is deterministic: two plans of the same spools differ only in id and created", async () => {
    const a = await plan(pair, inventory);
    const b = await plan(pair, inventory);
    expect(a.plan.id).not.toBe(b.plan.id);
    expect(await planTextWithoutIdAndTime(b.file)).toBe(await planTextWithoutIdAndTime(a.file));
    const textA = await readFile(a.file, "utf8");
    const textB = await readFile(b.file, "utf8");
    const differing = textA
      .split("\n")
      .filter((line, i) => line !== textB.split("\n")[i])
      .map((l) => l.split(":")[0]);
    expect(differing).toEqual(["id", "created"]);
  });

  it("a mailbox list from `file`, from a `command` on the master, and from discovery give the same plan", async () => {
    const fromFile = await plan(pair, inventory);
    const fromCommand = await plan(
      pair,
      await writeInventory(
        pair,
        { transport: "local" },
        { mailboxes: { command: `cat '${pair.mailboxList}'` } },
      ),
    );
    const discovered = await plan(
      pair,
      await writeInventory(pair, { transport: "local" }, { mailboxes: { discover: true } }),
    );
    const expected = await planContent(fromFile.plan);
    expect(await planContent(fromCommand.plan)).toEqual(expected);
    expect(await planContent(discovered.plan)).toEqual(expected);
    expect(expected.mailboxes.length).toBeGreaterThan(0);
  });

  it("a list out of order, with lines repeated, gives the sorted list's plan byte for byte", async () => {
    const sorted = await plan(pair, inventory);
    const lines = (await readFile(pair.mailboxList, "utf8")).split("\n").filter((l) => l !== "");
    // Reversed halves interleaved, and every fifth line again at the end.
    const half = Math.ceil(lines.length / 2);
    const shuffled = lines
      .slice(0, half)
      .reverse()
      .flatMap((l, i) => [
        l,
        ...(lines[half + i] !== undefined ? [lines[half + i] as string] : []),
      ]);
    shuffled.push(...lines.filter((_, i) => i % 5 === 0));
    expect(shuffled).not.toEqual(lines);
    const list = path.join(pair.dir, "shuffled.dump");
    await writeFile(list, `${shuffled.join("\n")}\n`);
    const fromShuffled = await plan(
      pair,
      await writeInventory(pair, { transport: "local" }, { mailboxes: { file: list } }),
    );
    expect(await planTextWithoutIdAndTime(fromShuffled.file)).toBe(
      await planTextWithoutIdAndTime(sorted.file),
    );
    expect(fromShuffled.plan.summary.mailboxes).toBe(60);
  });

  it("a failing list command is one clear line, exit 2, no plan", async () => {
    const inv = await writeInventory(
      pair,
      { transport: "local" },
      { mailboxes: { command: "cat /nonexistent/guidup-mailboxes" } },
    );
    const out = path.join(pair.dir, "never.yaml");
    const r = await runCli(["plan", "--inventory", inv, "--out", out]);
    expect(r.code).toBe(2);
    const errors = r.err.split("\n").filter((l) => l.startsWith("guidup plan:"));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/cat \/nonexistent\/guidup-mailboxes.*failed \(exit 1\)/);
    expect(existsSync(out)).toBe(false);
  });
});

describe("sides that disagree are skipped with their reason", () => {
  it("replica missing a mailbox → missing-on-replica; master missing one → missing-on-master", async () => {
    const pair = await track(makeGeneratedPair({ mailboxes: 25, seed: 5, largeMailboxes: 0 }));
    const [goneOnReplica, goneOnMaster] = pair.names.filter((n) => n.startsWith("user."));
    if (!goneOnReplica || !goneOnMaster) throw new Error("generator made too few user mailboxes");
    await removeMailbox(pair.replica, goneOnReplica);
    await removeMailbox(pair.master, goneOnMaster);
    const { plan: p } = await plan(pair, await writeInventory(pair, { transport: "local" }));
    expect(p.skipped.map((s) => [s.name, s.reason])).toEqual(
      [
        [goneOnReplica, "missing-on-replica"],
        [goneOnMaster, "missing-on-master"],
      ].sort((a, b) => ((a[0] as string) < (b[0] as string) ? -1 : 1)),
    );
    const onReplica = p.skipped.find((s) => s.name === goneOnReplica);
    expect(onReplica?.detail).toMatch(/^replica: /);
    expect(p.mailboxes.map((m) => m.name)).not.toContain(goneOnReplica);
    expect(p.summary.bySkipReason).toEqual({ "missing-on-replica": 1, "missing-on-master": 1 });
    // Everything else is planned or up to date as before.
    expect(p.summary.toApply + p.summary.upToDate).toBe(23);
  });

  it("a message appended on the master only → uids-differ; same count but other UIDs → uids-differ too", async () => {
    const pair = await track(
      makeGeneratedPair({
        mailboxes: 20,
        seed: 11,
        largeMailboxes: 0,
        messagesPerMailbox: [2, 8],
        expungeFraction: 0,
      }),
    );
    const candidates = (pair.generated ?? []).filter(
      (m) => m.records > 0 && expectedActions(m).length > 0,
    );
    const [one, two] = candidates;
    if (!one || !two) throw new Error("generator made too few non-empty mailboxes");
    // 1: the master has one record more.
    await appendMessage(pair.master, one.name);
    // 2: as many records on both sides, but the replica's last one has another UID.
    await renumberLastRecord(pair.replica.imapdConf, two.name);
    const { plan: p } = await plan(pair, await writeInventory(pair, { transport: "local" }));
    const skipped = Object.fromEntries(p.skipped.map((s) => [s.name, s]));
    expect(skipped[one.name]?.reason).toBe("uids-differ");
    expect(skipped[one.name]?.detail).toBe(
      `master has ${one.records + 1} records, replica ${one.records}; let replication catch up, then plan again`,
    );
    expect(skipped[two.name]?.reason).toBe("uids-differ");
    expect(skipped[two.name]?.detail).toMatch(/hold different UIDs \(\d+ records each\)/);
    const planned = p.mailboxes.map((m) => m.name);
    expect(planned).not.toContain(one.name);
    expect(planned).not.toContain(two.name);
    expect(p.summary.bySkipReason).toEqual({ "uids-differ": 2 });
  });
});

/**
 * Gives the last record of a mailbox's cyrus.index the next free UID (and
 * moves its message file along), as if this side had expunged that message
 * and received another: same record count, different UID set.
 */
async function renumberLastRecord(imapdConf: string, mailbox: string): Promise<void> {
  const conf = await readImapdConf(imapdConf);
  const indexPath = path.join(
    mailboxMetaDir(conf, mailbox, conf.defaultPartition, "index"),
    "cyrus.index",
  );
  const buf = await readFile(indexPath);
  const start = buf.readUInt32BE(12);
  const recordSize = buf.readUInt32BE(16);
  const exists = buf.readUInt32BE(20);
  const lastUid = buf.readUInt32BE(28);
  if (exists === 0) throw new Error(`${mailbox}: no records to renumber`);
  const at = start + (exists - 1) * recordSize;
  const oldUid = buf.readUInt32BE(at);
  buf.writeUInt32BE(lastUid + 1, at);
  buf.writeUInt32BE(lastUid + 1, 28);
  await writeFile(indexPath, buf);
  const dataDir = mailboxDataDir(conf, mailbox, conf.defaultPartition);
  await rename(path.join(dataDir, `${oldUid}.`), path.join(dataDir, `${lastUid + 1}.`));
}

it("an edited plan file with a schema error is refused when read back (show): one line, exit 2", async () => {
  const pair = await track(makeFixturePair("07"));
  const { file } = await plan(pair, await writeInventory(pair, { transport: "local" }));
  const text = await readFile(file, "utf8");
  const broken = path.join(pair.dir, "broken.yaml");
  await writeFile(
    broken,
    text.replace('"actions": ["version", "guid"]', '"actions": ["version", "sha256"]'),
  );
  const r = await runCli(["show", broken]);
  expect(r.code).toBe(2);
  const lines = r.err.split("\n").filter((l) => l !== "");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^guidup show: .*broken\.yaml:\d+:\d+: mailboxes\[0\]\.actions\[1\]: /);
});
