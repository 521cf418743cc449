// plan → apply → verify end to end over the local transport (real agents as
// child processes), on generated 2.3 spools (cyrus.expunge files, padded
// UUIDs/GUIDs, NULL GUIDs, v6–v10 mixed) and on the real Cyrus 3.6 fixtures
// at v06–v09. Afterwards: every index and expunge file is exactly the correct
// v10 upgrade of its old copy, guidup verify passes, real Cyrus's own check
// passes on both hosts, and a second apply of the same plan writes nothing —
// neither from its state files nor, with the state removed, after locking
// every mailbox again.

import { afterAll, describe, expect, it } from "vitest";
import {
  endToEnd,
  fixturePair,
  generatedPair,
  localHost,
  type TestPair,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

describe("apply end to end, local transport", () => {
  it("generated 2.3 pair (expunge files, padded UUIDs and GUIDs, NULL GUIDs, v6–v10)", async () => {
    const pair = await generatedPair({
      seed: 11,
      mailboxes: 14,
      expungeFraction: 0.5,
      largeMailboxes: 0,
      messagesPerMailbox: [1, 10],
      messageBytes: [300, 3000],
    });
    pairs.push(pair);
    // What makes a 2.3 spool a 2.3 spool is there: expunge files, padded
    // UUIDs/GUIDs, NULL GUIDs.
    const g = pair.generated!;
    expect(g.some((m) => m.hasExpunge && m.expunged > 0)).toBe(true);
    expect(g.some((m) => m.minor >= 7 && m.minor <= 9 && m.guidKinds.padded > 0)).toBe(true);
    expect(g.some((m) => m.minor === 10 && m.guidKinds.padded > 0)).toBe(true);
    expect(g.some((m) => m.guidKinds.null > 0)).toBe(true);
    await endToEnd(pair, {
      master: localHost(pair, "master"),
      replica: localHost(pair, "replica"),
    });
  });

  for (const version of ["06", "07", "08", "09"] as const) {
    it(`real Cyrus 3.6 fixtures at v${version}`, async () => {
      const pair = await fixturePair(version);
      pairs.push(pair);
      const { planned } = await endToEnd(pair, {
        master: localHost(pair, "master"),
        replica: localHost(pair, "replica"),
      });
      expect(planned).toContain("user.alice");
    });
  }
});
