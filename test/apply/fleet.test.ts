// A fleet from one command (issue #11): `guidup plan --inventory` writes a
// plan per pair, `guidup apply A B C --pairs 2` runs the three pairs side by
// side. Pair b fails part-way (a Cyrus-like process holds two of its
// mailboxes' master locks for the whole run), pair c cannot start (its
// replica's imapd.conf is gone); pair a finishes, b finishes the rest, and
// the exit code is the worst pair's. status across the three says the same;
// once the locks are gone and the config is back, a rerun finishes b and c
// and leaves a alone. Two controllers given overlapping pairs need no
// coordinator: the pair lock refuses the second one that pair, by name.

import { rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { ForeignLocker } from "../helpers/agent-process.js";
import {
  cli,
  expectAllNew,
  faultDirs,
  localHost,
  type PairSnapshot,
  planLocalFleet,
  planMailboxes,
  proxyCommand,
  smallPair,
  snapshotPair,
  spawnCli,
  stateOf,
  type TestPair,
  waitForFile,
} from "../helpers/apply-harness.js";

const made: TestPair[] = [];
const lockers: ForeignLocker[] = [];
afterAll(async () => {
  await Promise.all(lockers.map((l) => l.kill()));
  await Promise.all(made.map((p) => p.cleanup()));
});

const NAMES = ["a", "b", "c"] as const;

async function threePairs() {
  const pairs: TestPair[] = [];
  for (const [i] of NAMES.entries())
    pairs.push(
      await smallPair(
        { seed: 71 + i, versions: [8, 9], expungeFraction: 0.3, messageBytes: [300, 1200] },
        made,
      ),
    );
  // One command plans the fleet: a plan per pair, named after the pair.
  const { plans } = await planLocalFleet(pairs, NAMES);
  return { pairs, plans };
}

interface PairJson {
  plan: string;
  pair: string;
  status: string;
  exitCode: number;
  outcomes?: Record<string, number>;
  alreadyDone?: number;
  remaining?: number;
  lockHold?: Record<"master" | "replica", { count: number; p50: number; p99: number; max: number }>;
  error?: { code: string; message: string };
}
interface FleetJson {
  pairs: PairJson[];
  fleet: {
    pairs: number;
    applied: number;
    errors: number;
    notStarted: number;
    exitCode: number;
    outcomes: Record<string, number>;
    processed: number;
    alreadyDone: number;
    remaining: number;
  };
}

describe("apply PLAN... (a fleet)", () => {
  it("three pairs from one command: one fails part-way, one cannot start, one finishes; exit the worst; status across them; a rerun finishes the rest", async () => {
    const { pairs, plans } = await threePairs();
    const [a, b, c] = pairs as [TestPair, TestPair, TestPair];
    const snaps: PairSnapshot[] = [];
    for (const [i, p] of pairs.entries())
      snaps.push(await snapshotPair(p, path.join(p.dir, `before-${i}`)));
    const names = await Promise.all(plans.map((p) => planMailboxes(p)));
    expect(names.map((n) => n.length)).toEqual([6, 6, 6]);

    // Pair b: a Cyrus-like process holds two mailboxes' master index locks.
    const held = names[1]!.slice(1, 3);
    for (const name of held)
      lockers.push(
        await ForeignLocker.hold(path.join(b.mailboxDir("master", name), "cyrus.index"), 600),
      );
    // Pair c: its replica's configuration is gone (a host that cannot serve).
    const conf = c.replica.imapdConf;
    await rename(conf, `${conf}.away`);

    const lockArgs = ["--master-lock-wait", "100ms", "--retries", "1", "--retry-backoff", "50ms"];
    const first = await cli(["apply", ...plans, "--pairs", "2", ...lockArgs, "--json"], 4);
    const report = JSON.parse(first.out) as FleetJson;
    expect(report.pairs.map((p) => [p.pair, p.status, p.exitCode])).toEqual([
      ["a", "applied", 0],
      ["b", "applied", 4],
      ["c", "error", 2],
    ]);
    expect(report.pairs[0]).toMatchObject({ plan: plans[0], outcomes: { done: 6 }, remaining: 0 });
    // One lock-hold summary per pair: the engine's, over the 6 that locked each side.
    const holds = report.pairs[0]?.lockHold;
    for (const side of ["master", "replica"] as const) {
      expect(holds?.[side].count).toBe(6);
      expect(holds?.[side].max).toBeGreaterThanOrEqual(holds?.[side].p99 ?? Number.NaN);
      expect(holds?.[side].p99).toBeGreaterThanOrEqual(holds?.[side].p50 ?? Number.NaN);
    }
    expect(report.pairs[0]).not.toHaveProperty("lockHoldMs");
    expect(report.pairs[1]).toMatchObject({ outcomes: { done: 4, failed: 2 }, remaining: 0 });
    expect(report.pairs[2]?.error?.message).toContain(conf);
    expect(report.fleet).toMatchObject({
      pairs: 3,
      applied: 2,
      errors: 1,
      notStarted: 0,
      exitCode: 4,
      outcomes: { done: 10, failed: 2 },
      processed: 12,
      remaining: 0,
    });
    for (const name of held)
      expect(await stateOf(plans[1]!, name)).toMatchObject({
        phase: "failed",
        lastError: { code: "lock-timeout" },
      });
    // Pair c changed nothing: not one state file.
    for (const name of names[2]!) expect(await stateOf(plans[2]!, name)).toBeUndefined();

    // status across the three: per plan and the fleet's totals; exit the worst (4).
    const st = await cli(["status", ...plans, "--json"], 4);
    const status = JSON.parse(st.out) as {
      plans: { pair: string; running: string | null; counts: Record<string, number> }[];
      fleet: { plans: number; running: number; total: number; counts: Record<string, number> };
    };
    expect(
      status.plans.map((p) => [p.pair, p.counts.done, p.counts.failed, p.counts.pending]),
    ).toEqual([
      ["a", 6, 0, 0],
      ["b", 4, 2, 0],
      ["c", 0, 0, 6],
    ]);
    expect(status.fleet).toMatchObject({ plans: 3, running: 0, total: 18 });
    expect(status.fleet.counts).toMatchObject({ done: 10, failed: 2, pending: 6 });
    const human = await cli(["status", ...plans], 4);
    expect(human.out).toContain(
      "fleet: 3 plans, 18 planned mailboxes: pending 6, done 10, failed 2",
    );
    for (const name of held) expect(human.out).toMatch(new RegExp(`failed\\s+${name}`));

    // The foreign process ends, the configuration is back: a rerun finishes
    // b's two and all of c, and finds a done.
    await Promise.all(lockers.splice(0).map((l) => l.kill()));
    await rename(`${conf}.away`, conf);
    const again = await cli(["apply", ...plans, "--pairs", "3"], 0);
    expect(again.out).toContain(`apply ${plans[0]}: nothing to do; 6 were already done; 0 left`);
    expect(again.out).toContain(`apply ${plans[1]}: done 2; 4 were already done; 0 left`);
    expect(again.out).toContain(`apply ${plans[2]}: done 6; 0 were already done; 0 left`);
    expect(again.out).toMatch(/fleet of 3 pairs: 3 applied, 0 not applied, 0 not started; done 8;/);
    const done = JSON.parse((await cli(["status", ...plans, "--json"], 0)).out) as {
      fleet: { counts: Record<string, number> };
    };
    expect(done.fleet.counts).toMatchObject({ done: 18, pending: 0, failed: 0 });
    for (const [i, snap] of snaps.entries()) await expectAllNew(snap, names[i]!);
    expect(a.names.length).toBe(6);
  });

  it("refuses a plan given twice, two plans of one pair, an --only matching nothing, before touching anything; a dry run of the fleet", async () => {
    const { plans } = await threePairs();
    const twice = await cli(["apply", plans[0]!, plans[1]!, plans[0]!], 2);
    expect(twice.err).toContain(`${plans[0]} is given twice`);
    const other = path.join(path.dirname(plans[1]!), "copy-of-b.yaml");
    await writeFile(other, await (await import("node:fs/promises")).readFile(plans[1]!));
    const same = await cli(["apply", plans[1]!, other], 2);
    expect(same.err).toContain(`${plans[1]} and ${other} (pair b) both reach `);
    expect(same.err).toContain("give one plan per pair (they would take the same pair lock)");
    const respelled = `${path.dirname(plans[2]!)}/./${path.basename(plans[2]!)}`;
    const spelled = await cli(["apply", plans[2]!, respelled], 2);
    expect(spelled.err).toContain(`${plans[2]} and ${respelled} are the same plan`);
    for (const p of plans) expect(await stateOf(p, (await planMailboxes(p))[0]!)).toBeUndefined();

    // A dry run of the fleet: every pair's hosts answer, what would run per plan.
    const dry = await cli(["apply", ...plans, "--dry-run", "--only", "user.*"], 0);
    for (const p of plans) expect(dry.out).toContain(`${p} (pair `);
    expect(dry.out.match(/dry run: both hosts answered/g)).toHaveLength(3);
    const dryJson = JSON.parse((await cli(["apply", ...plans, "--dry-run", "--json"], 0)).out) as {
      dryRun: boolean;
      pairs: { pair: string; hosts: unknown[]; mailboxes: unknown[] }[];
    };
    expect(dryJson.dryRun).toBe(true);
    expect(dryJson.pairs.map((p) => [p.pair, p.hosts.length, p.mailboxes.length])).toEqual([
      ["a", 2, 6],
      ["b", 2, 6],
      ["c", 2, 6],
    ]);
    // --only must match a mailbox of at least one plan.
    const typo = await cli(["apply", ...plans, "--only", "nosuch.*"], 2);
    expect(typo.err).toContain("matches none of the 18 mailboxes of the 3 plans");
    for (const p of plans) expect(await stateOf(p, (await planMailboxes(p))[0]!)).toBeUndefined();
  });

  it("two pairs of the same name from two inventories (other hosts) run side by side, each labelled with its plan file", async () => {
    const made2: TestPair[] = [];
    for (const seed of [91, 92])
      made2.push(await smallPair({ seed, versions: [9], messageBytes: [300, 900] }, made));
    const plans: string[] = [];
    for (const pair of made2) plans.push(...(await planLocalFleet([pair], ["main"])).plans);
    expect(path.basename(plans[0]!)).not.toBe(path.basename(plans[1]!));
    const r = await cli(["apply", ...plans, "--pairs", "2"], 0);
    for (const p of plans) expect(r.out).toContain(`apply ${p}: done `);
    // The progress lines tell the two pairs apart by their plan files.
    for (const p of plans)
      expect(r.err).toContain(`main (${path.basename(p)}): ended: done 6; 0 left (exit 0)`);
    const json = JSON.parse((await cli(["status", ...plans, "--json"], 0)).out) as {
      plans: { pair: string; counts: Record<string, number> }[];
      fleet: { counts: Record<string, number> };
    };
    expect(json.plans.map((p) => p.pair)).toEqual(["main", "main"]);
    expect(json.fleet.counts.pending).toBe(0);
    expect(json.fleet.counts.failed).toBe(0);
  });

  it("two controllers, no coordinator: a pair another controller is applying is refused by its pair lock, the rest of the fleet runs", async () => {
    const { pairs, plans } = await threePairs();
    const a = pairs[0]!;
    // Controller 1 applies pair a from a plan of its own; its master agent
    // holds the first commit until the test says so.
    const dirs = await faultDirs(path.join(a.dir, "faults"));
    const marker = path.join(a.dir, "held");
    const release = path.join(a.dir, "release");
    const heldMaster = localHost(a, "master", [
      ...proxyCommand(
        dirs.master,
        "request:commit:1:hook",
        `touch '${marker}'; while [ ! -e '${release}' ]; do sleep 0.05; done`,
      ),
    ]);
    const inventoryA = path.join(a.dir, "controller1.yaml");
    await writeFile(
      inventoryA,
      stringify({
        pairs: [
          {
            name: "a",
            mailboxes: { file: a.mailboxList },
            master: heldMaster,
            replica: localHost(a, "replica"),
          },
        ],
      }),
    );
    const plan1 = path.join(a.dir, "controller1-plan.yaml");
    await cli(["plan", "--inventory", inventoryA, "--out", plan1], 0);
    const first = spawnCli(["apply", plan1, "--concurrency", "1"]);
    await waitForFile(marker);

    // Controller 2 was given the whole fleet (a, b, c): a is refused, b and c run.
    const second = await cli(["apply", ...plans, "--json"], 2);
    const report = JSON.parse(second.out) as FleetJson;
    expect(report.pairs.map((p) => [p.pair, p.status, p.exitCode])).toEqual([
      ["a", "error", 2],
      ["b", "applied", 0],
      ["c", "applied", 0],
    ]);
    expect(report.pairs[0]?.error?.code).toBe("pair-locked");
    expect(report.pairs[0]?.error?.message).toMatch(
      /pair a is being applied by someone else: .*plan .* \(pair a\) run by .* \(pid \d+\)/,
    );
    for (const name of await planMailboxes(plans[0]!))
      expect(await stateOf(plans[0]!, name)).toBeUndefined();

    // Controller 1 finishes its pair; nothing had to be told to anyone.
    await writeFile(release, "");
    const r1 = await first.done;
    expect(r1.code, r1.err).toBe(0);
    expect(r1.out).toContain("done 6; 0 were already done; 0 left");
  });
});
