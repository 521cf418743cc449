// Issue #15, "Done when", second point: a change between apply's preparation
// and its locks takes each path — unchanged, appended (a record written in
// place after the last one), flag changed in place (same file size),
// expunged (records moved to cyrus.expunge, the index renamed over) — and
// the result on both hosts is byte for byte the project's converter's
// from-scratch conversion (convertIndex, GUID = SHA1 of the message file) of
// the content the locks found. Under the cut-over protocol such drift is
// applied as planned.
//
// The change is made at the one instant that forces the path: after
// `prepare` ran on both sides and before the first `lock` request reaches
// either agent (whichever side the protocol locks first). Both agents run
// behind test/helpers/fault-proxy.mjs with a hook on their first `lock`
// request; the first hook to fire runs the Cyrus-like writer (locking, as
// Cyrus does) on the master and replays the op on the replica, then copies
// both mailboxes as they now are — the content to convert from scratch.
//
// Against guidup 0.1.0: "unchanged" passes; the three others end `stale`
// (the fingerprint differs from the plan's), their files untouched.

import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cli,
  expectedV10,
  faultDirs,
  generatedPair,
  localHost,
  planMailboxes,
  proxyCommand,
  runCli,
  SIDES,
  stateOf,
  type TestPair,
  writeInventory,
} from "../helpers/apply-harness.js";
import { onceArgv, opsOf, readJournal, replayArgv } from "../helpers/cyrus-writer.js";

/**
 * The first request that takes a mailbox's locks, sent after `prepare` on
 * both sides (guidup 0.1.0: `lock`). If the cut-over protocol renames it,
 * change it here.
 */
const LOCK_OP = "lock";

const CASES = ["unchanged", "appended", "flag changed in place", "expunged"] as const;
type Case = (typeof CASES)[number];
const OP: Record<Case, "deliver" | "flag" | "expunge" | undefined> = {
  unchanged: undefined,
  appended: "deliver",
  "flag changed in place": "flag",
  expunged: "expunge",
};

let pair: TestPair;
let plan: string;
let planned: string[];
let faultBase: string;
const hookFile = () => path.join(pair.dir, "hook.sh");

beforeAll(async () => {
  pair = await generatedPair({
    seed: 95,
    mailboxes: 6,
    versions: [7, 8, 9],
    expungeFraction: 0.5,
    largeMailboxes: 0,
    messagesPerMailbox: [3, 10],
    messageBytes: [300, 1500],
  });
  faultBase = path.join(pair.dir, "faults");
  const faults = await faultDirs(faultBase);
  await writeFile(hookFile(), "exit 0\n");
  const hosts = {
    master: localHost(
      pair,
      "master",
      proxyCommand(faults.master, `request:${LOCK_OP}:1:hook`, `sh '${hookFile()}'`),
    ),
    replica: localHost(
      pair,
      "replica",
      proxyCommand(faults.replica, `request:${LOCK_OP}:1:hook`, `sh '${hookFile()}'`),
    ),
  };
  const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), hosts);
  plan = path.join(pair.dir, "plan.yaml");
  await cli(["plan", "--inventory", inventory, "--out", plan], 0);
  planned = await planMailboxes(plan);
  expect(planned.length).toBeGreaterThanOrEqual(CASES.length);
});

afterAll(async () => {
  await pair?.cleanup();
});

const sh = (argv: string[]) => argv.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");

describe("each change path during apply ends byte for byte as a conversion from scratch", () => {
  CASES.forEach((which, i) => {
    it(which, async () => {
      const name = planned[i] as string;
      const caseDir = path.join(pair.dir, `case-${i}`);
      const marker = path.join(caseDir, "fired");
      const journal = path.join(caseDir, "master.journal");
      const snap = (side: string) => path.join(caseDir, `snapshot-${side}`);
      const op = OP[which];
      await rm(caseDir, { recursive: true, force: true });
      await faultDirs(faultBase);
      const lines = [
        "set -e",
        // Only the first lock request of the run acts (master or replica, whichever comes first).
        `mkdir -p '${caseDir}'`,
        `mkdir '${marker}' 2>/dev/null || exit 0`,
      ];
      if (op)
        lines.push(
          sh([
            process.execPath,
            ...onceArgv({ conf: pair.master.imapdConf, mailbox: name, op, journal, seed: 20 + i }),
          ]),
          sh([
            process.execPath,
            ...replayArgv(pair.replica.imapdConf, journal, path.join(caseDir, "replica.journal")),
          ]),
        );
      for (const side of SIDES)
        lines.push(`cp -a '${pair.mailboxDir(side, name)}' '${snap(side)}'`);
      await writeFile(hookFile(), `${lines.join("\n")}\n`);

      const r = await runCli(["apply", plan, "--only", name]);
      expect(
        existsSync(marker),
        `the hook never ran: no \`${LOCK_OP}\` request reached either agent (renamed? see LOCK_OP)`,
      ).toBe(true);
      if (op) {
        const [done] = opsOf(readJournal(journal));
        // The change went into the old (pre-upgrade) files, before any lock.
        expect(done).toMatchObject({ op, mailbox: name });
        expect(done?.minor).toBeLessThan(10);
      }
      expect
        .soft((await stateOf(plan, name))?.phase, `apply exit ${r.code}:\n${r.out}`)
        .toBe("done");
      for (const side of SIDES)
        for (const kind of ["index", "expunge"] as const) {
          const before = path.join(snap(side), `cyrus.${kind}`);
          const now = path.join(pair.mailboxDir(side, name), `cyrus.${kind}`);
          if (!existsSync(before)) {
            expect(existsSync(now), `${side} ${name}: cyrus.${kind} appeared`).toBe(false);
            continue;
          }
          const expected = await expectedV10(before, kind, snap(side));
          const actual = await readFile(now);
          expect(
            actual.equals(expected),
            `${side} ${name} cyrus.${kind} (${which}): ${actual.equals(await readFile(before)) ? "unchanged, not upgraded" : "upgraded, but not byte for byte the conversion from scratch"}`,
          ).toBe(true);
        }
    }, 60_000);
  });
});
