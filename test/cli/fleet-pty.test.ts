// A fleet in a terminal (issue #11): `guidup apply A B C --pairs 2` in a real
// pseudo-terminal draws a line per pair and the fleet's total; a Ctrl-C typed
// on the pty (SIGINT to the whole foreground group) drains BOTH running
// pairs — the mailbox each holds at its master's commit finishes, nothing new
// starts in either, the third pair never starts — exit 130, the terminal as
// it was, every lock released (each state directory's, each host's pair
// lock), and a rerun of the fleet converges.
//
// Each running pair's master agent sits behind a fault proxy (under setsid,
// like an agent over SSH: the terminal's SIGINT does not reach it) that holds
// its 2nd commit until the test creates a file, so the ^C lands while both
// pairs have a mailbox in flight at a known step.

import { readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ForeignLocker } from "../helpers/agent-process.js";
import {
  cli,
  expectAllNew,
  heldAgent,
  type PairSnapshot,
  planLocalFleet,
  planMailboxes,
  smallPair,
  snapshotPair,
  stateOf,
  type TestPair,
} from "../helpers/apply-harness.js";
import { DIST_MAIN } from "../helpers/pair-fixtures.js";
import { CTRL_C, plainText, runInPty } from "../helpers/pty.js";

const made: TestPair[] = [];
afterAll(async () => {
  await Promise.all(made.map((p) => p.cleanup()));
});

const NAMES = ["a", "b", "c"] as const;

async function configDirectory(imapdConf: string): Promise<string> {
  const m = /^configdirectory:\s*(\S+)/m.exec(await readFile(imapdConf, "utf8"));
  if (!m?.[1]) throw new Error(`${imapdConf}: no configdirectory`);
  return m[1];
}

describe("a fleet in a terminal", () => {
  it("Ctrl-C drains every running pair, starts no new pair, exit 130, releases every lock; a rerun converges", async () => {
    const pairs: TestPair[] = [];
    for (const [i] of NAMES.entries())
      pairs.push(await smallPair({ seed: 81 + i, mailboxes: 5 }, made));
    // Pairs a and b: the master's 2nd commit waits for release-<pair>.
    const held = await Promise.all(
      pairs.slice(0, 2).map((p) => heldAgent(p, "master", "commit", 2)),
    );
    const { plans } = await planLocalFleet(pairs, NAMES, (i) => {
      const h = held[i];
      return h ? { master: h.command } : undefined;
    });
    const names = await Promise.all(plans.map((p) => planMailboxes(p)));
    const snaps: PairSnapshot[] = [];
    for (const [i, p] of pairs.entries())
      snaps.push(await snapshotPair(p, path.join(p.dir, `before-${i}`)));

    const r = await runInPty({
      argv: [process.execPath, DIST_MAIN, "apply", ...plans, "--pairs", "2", "--concurrency", "1"],
      steps: [
        { waitFile: held[0]!.marker },
        { waitFile: held[1]!.marker },
        { send: CTRL_C },
        { waitText: "starting no new mailboxes and no new pair" },
        { touch: held[0]!.release },
        { touch: held[1]!.release },
      ],
    });
    const text = plainText(r.output);
    if (process.env.SHOW_PTY) console.log(text);
    expect(r.timedOut, text).toBe(false);
    expect(r.stepsDone, text).toBe(6);
    expect(r.code, text).toBe(130);
    expect(text).toMatch(
      /Ctrl-C: starting no new mailboxes and no new pair; finishing the 2 in flight in 2 pair\(s\)/,
    );
    // The live view: a line per pair and the fleet's total.
    expect(text).toMatch(/^. a +: /m);
    expect(text).toMatch(/^. b +: /m);
    expect(text).toMatch(/^. c +: waiting/m);
    expect(text).toMatch(/^. fleet *: pairs: 2 running, 0 ended, 1 waiting/m);
    expect(text).toMatch(/^. c +: not started/m);
    expect(text).toMatch(/^• fleet *: pairs: 0 running, 2 ended, 1 not started · done 4 /m);
    // The report: each pair drained, the third not started, the fleet.
    expect(text).toContain(`interrupted: 3 mailbox(es) not started; run guidup apply ${plans[0]}`);
    expect(text).toContain(`interrupted: 3 mailbox(es) not started; run guidup apply ${plans[1]}`);
    expect(text).toContain(`apply ${plans[2]}: not started (interrupted before its turn)`);
    expect(text).toMatch(/fleet of 3 pairs: 2 applied, 0 not applied, 1 not started;.* exit 130/);
    expect(r.termiosRestored).toBe(true);
    expect(r.lflag).toEqual({ ECHO: true, ICANON: true, ISIG: true });
    expect(r.cursorHidden).toBe(false);

    // Drained: in a and b the first two mailboxes are done (the held one
    // finished), the rest untouched; c untouched.
    for (const i of [0, 1])
      for (const [k, name] of names[i]!.entries())
        expect((await stateOf(plans[i]!, name))?.phase, `${NAMES[i]} ${name}`).toBe(
          k < 2 ? "done" : undefined,
        );
    for (const name of names[2]!) expect(await stateOf(plans[2]!, name)).toBeUndefined();
    // Every lock released: no apply holds a state directory, and a Cyrus-like
    // process gets each host's pair lock at once (c never took one).
    const st = JSON.parse((await cli(["status", ...plans, "--json"], 0)).out) as {
      fleet: { running: number; counts: Record<string, number> };
    };
    expect(st.fleet.running).toBe(0);
    expect(st.fleet.counts["in-progress"]).toBe(0);
    for (const p of pairs.slice(0, 2))
      for (const side of ["master", "replica"] as const) {
        const lockFile = path.join(await configDirectory(p[side].imapdConf), "guidup.lock");
        expect(await ForeignLocker.try(lockFile), lockFile).toBe("acquired");
      }

    // Nothing holds the hooks now (both released): the rerun finishes the fleet.
    const again = await cli(["apply", ...plans], 0);
    expect(again.out).toMatch(
      /fleet of 3 pairs: 3 applied, 0 not applied, 0 not started; done 11;/,
    );
    for (const [i, snap] of snaps.entries()) await expectAllNew(snap, names[i]!);
  });
});
