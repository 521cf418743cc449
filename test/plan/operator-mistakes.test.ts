// Issue #10 items 5, 6 and 7, end to end over the local transport (real
// agents, real files): misconfiguration that used to look like success
// (every mailbox "missing-on-replica", exit 0) stops the plan with a clear
// message; a damaged index is `corrupt`, not "newer"; every name problem is
// a skipped `invalid-name` entry of its own, and a list line is taken
// exactly as written.
//
// Needs dist/ (npx tsc -p tsconfig.json): the agents run dist/src/cli/main.js.

import { existsSync } from "node:fs";
import { copyFile, mkdir, open, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readImapdConf } from "../../src/cyrus/imapd-conf.js";
import { mailboxDataDir } from "../../src/cyrus/mailbox-path.js";
import { readPlan } from "../../src/plan/plan-file.js";
import {
  DIST_MAIN,
  makeFixturePair,
  type PairFixture,
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

async function runPlan(pair: PairFixture, inventory: string, extra: string[] = []) {
  const file = path.join(pair.dir, `plan-${++planCounter}.yaml`);
  const r = await runCli(["plan", "--inventory", inventory, "--out", file, ...extra]);
  return { ...r, file, errors: r.err.split("\n").filter((l) => l.startsWith("guidup plan:")) };
}

/** Copies one mailbox's files (not its sub-mailboxes) to the directory of `to`, on both sides. */
async function copyMailbox(pair: PairFixture, from: string, toDir: (root: string) => string) {
  for (const side of ["master", "replica"] as const) {
    const conf = await readImapdConf(pair[side].imapdConf);
    const src = mailboxDataDir(conf, from, "default");
    const dst = toDir(pair[side].partitionRoot);
    await mkdir(dst, { recursive: true });
    for (const e of await readdir(src, { withFileTypes: true }))
      if (e.isFile()) await copyFile(path.join(src, e.name), path.join(dst, e.name));
  }
}

describe("misconfiguration stops the plan (item 5)", () => {
  it("a partition root that does not exist is an error naming it, not 'missing-on-replica'", async () => {
    const pair = await track(makeFixturePair("09"));
    const conf = path.join(pair.dir, "replica-typo.conf");
    const typo = `${pair.replica.partitionRoot}-typo`;
    await writeFile(
      conf,
      (await readFile(pair.replica.imapdConf, "utf8")).replace(
        `partition-default: ${pair.replica.partitionRoot}`,
        `partition-default: ${typo}`,
      ),
    );
    const inventory = await writeInventory(
      pair,
      { transport: "local" },
      { config: { replica: conf } },
    );
    const r = await runPlan(pair, inventory);
    expect(r.code).toBe(2);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(`partition-default ${typo} (in ${conf}) does not exist`);
    expect(existsSync(r.file)).toBe(false);
  });

  it("a replica config: of another host (other mailboxes) stops the plan; --skip-sanity-checks plans anyway", async () => {
    const pair = await track(makeFixturePair("09"));
    // Another host's imapd.conf: its partition exists here too, with other mailboxes.
    const otherSpool = path.join(pair.dir, "other-host-spool");
    await mkdir(path.join(otherSpool, "z/user/zoe"), { recursive: true });
    const otherConf = path.join(pair.dir, "other-host.conf");
    await writeFile(
      otherConf,
      (await readFile(pair.replica.imapdConf, "utf8")).replace(
        `partition-default: ${pair.replica.partitionRoot}`,
        `partition-default: ${otherSpool}`,
      ),
    );
    const inventory = await writeInventory(
      pair,
      { transport: "local" },
      { config: { replica: otherConf } },
    );
    const r = await runPlan(pair, inventory);
    expect(r.code).toBe(2);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(
      `the replica (replica) lacks ${pair.names.length} of the ${pair.names.length} listed mailboxes`,
    );
    expect(r.errors[0]).toContain("--skip-sanity-checks");
    expect(existsSync(r.file)).toBe(false);

    const anyway = await runPlan(pair, inventory, ["--skip-sanity-checks"]);
    expect(anyway.code).toBe(0);
    const p = await readPlan(anyway.file);
    expect(p.summary.bySkipReason).toEqual({ "missing-on-replica": pair.names.length });
  });

  it("a mailbox list that is a JSON dump is 'not a mailbox list in a known format'", async () => {
    const pair = await track(makeFixturePair("09"));
    const json = path.join(pair.dir, "mailboxes.json");
    await writeFile(
      json,
      JSON.stringify(
        pair.names.map((name) => ({ name, acl: { anyone: "lrs" } })),
        null,
        2,
      ),
    );
    const inventory = await writeInventory(
      pair,
      { transport: "local" },
      { mailboxes: { file: json } },
    );
    const r = await runPlan(pair, inventory);
    expect(r.code).toBe(2);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(`${json}: not a mailbox list in a known format`);
    expect(existsSync(r.file)).toBe(false);
  });
});

describe("a damaged index is corrupt, not newer (item 6)", () => {
  it("eight overwritten header bytes: skipped as corrupt, saying run reconstruct", async () => {
    const pair = await track(makeFixturePair("09"));
    const index = path.join(pair.master.partitionRoot, "a/user/alice/cyrus.index");
    const fd = await open(index, "r+");
    await fd.write(Buffer.from("deadbeefcafef00d", "hex"), 0, 8, 8);
    await fd.close();
    const r = await runPlan(pair, await writeInventory(pair, { transport: "local" }));
    expect(r.code, r.err).toBe(0);
    const p = await readPlan(r.file);
    const alice = p.skipped.find((s) => s.name === "user.alice");
    expect(alice?.reason).toBe("corrupt");
    expect(alice?.detail).toContain(`master: ${index}: not a Cyrus index file`);
    expect(alice?.detail).toContain("run reconstruct");
    expect(p.summary.bySkipReason).toEqual({ corrupt: 1 });
    expect(p.mailboxes).toHaveLength(pair.names.length - 1);
  });
});

describe("mailbox names (item 7)", () => {
  it("every invalid name in the list is its own invalid-name entry; the rest is planned", async () => {
    const pair = await track(makeFixturePair("09"));
    const list = path.join(pair.dir, "names.txt");
    const bad = ["user.bob..x", "user/eve", "example.com!user.carol"];
    await writeFile(list, [...pair.names, ...bad].map((n) => `${n}\n`).join(""));
    const inventory = await writeInventory(
      pair,
      { transport: "local" },
      { mailboxes: { file: list } },
    );
    const r = await runPlan(pair, inventory);
    expect(r.code, r.err).toBe(0);
    const p = await readPlan(r.file);
    const skipped = Object.fromEntries(p.skipped.map((s) => [s.name, s]));
    expect(Object.keys(skipped).sort()).toEqual([...bad].sort());
    expect(Object.values(skipped).every((s) => s.reason === "invalid-name")).toBe(true);
    expect(skipped["user.bob..x"]?.detail).toContain(
      `${list}:8: invalid mailbox name "user.bob..x"`,
    );
    expect(skipped["user/eve"]?.detail).toContain("contains '/'");
    // Only the host knows virtdomains is off: its agent refuses this one.
    expect(skipped["example.com!user.carol"]?.detail).toBe(
      "master: invalid mailbox name \"example.com!user.carol\": '!' not allowed with virtdomains off",
    );
    expect(p.mailboxes.map((m) => m.name)).toEqual(pair.names);
    expect(p.summary.mailboxes).toBe(pair.names.length + bad.length);
  });

  it("a list line keeps its trailing space: user.bob.trail  is planned, not missing", async () => {
    const pair = await track(makeFixturePair("09"));
    const name = "user.bob.trail ";
    await copyMailbox(pair, "user.bob.Trash", (root) => path.join(root, "b/user/bob/trail "));
    const list = path.join(pair.dir, "names.txt");
    await writeFile(list, [...pair.names, name].map((n) => `${n}\n`).join(""));
    const inventory = await writeInventory(
      pair,
      { transport: "local" },
      { mailboxes: { file: list } },
    );
    const r = await runPlan(pair, inventory);
    expect(r.code, r.err).toBe(0);
    const p = await readPlan(r.file);
    expect(p.skipped).toEqual([]);
    expect(p.mailboxes.map((m) => m.name)).toContain(name);
  });

  it("discover: true reports a directory with an invalid name instead of skipping it silently", async () => {
    const pair = await track(makeFixturePair("09"));
    const dir = (root: string) => path.join(root, "b/user/bob/b\\ad");
    await copyMailbox(pair, "user.bob.Trash", dir);
    const inventory = await writeInventory(
      pair,
      { transport: "local" },
      { mailboxes: { discover: true } },
    );
    const r = await runPlan(pair, inventory);
    expect(r.code, r.err).toBe(0);
    const p = await readPlan(r.file);
    expect(p.skipped).toEqual([
      {
        name: "user.bob.b\\ad",
        reason: "invalid-name",
        detail: `master: ${dir(pair.master.partitionRoot)}: invalid mailbox name "user.bob.b\\\\ad": character U+005c not allowed`,
      },
    ]);
    // verify does not call the pair OK while that directory is left as it is.
    const v = await runCli(["verify", "--inventory", inventory]);
    expect(v.code, v.err).toBe(1);
    expect(v.out).toMatch(/invalid-name 1/);
    expect(v.out).toContain(
      `  invalid-name       user.bob.b\\ad: master: ${dir(pair.master.partitionRoot)}: invalid mailbox name`,
    );
  });
});
