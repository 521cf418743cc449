// The decision after the locks (src/apply/decide.ts) is a pure function:
// every combination of done / not done per side, equal / different staged
// lists, each kind of drift in each mode, each nonsensical action list, and
// each way two (uid, GUID) lists can differ.

import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  classifyLists,
  type DriftMode,
  decide,
  driftOf,
  inconsistentSide,
  refuseActions,
  type SideNow,
} from "../../src/apply/decide.js";
import type { Action, PlannedMailbox, SideFacts } from "../../src/plan/model.js";
import type { FileFacts, MailboxScan } from "../../src/protocol/messages.js";

const sha = (s: string) => createHash("sha1").update(s).digest("hex");

function facts(minor: number, over: Partial<FileFacts> = {}): FileFacts {
  return {
    minor,
    records: 10,
    oldStyle: 10,
    nullGuids: 0,
    oldStyleBytes: 1000,
    lastUid: 10,
    uidValidity: 777,
    ...over,
  };
}

function plannedSide(over: Partial<SideFacts> = {}): SideFacts {
  return {
    index: facts(9),
    fingerprint: sha("fp"),
    planned: { records: 10, digest: sha("set") },
    ...over,
  };
}

function entry(
  actions: Action[] = ["version", "guid"],
  over: Partial<PlannedMailbox> = {},
): PlannedMailbox {
  return { name: "user.x", actions, master: plannedSide(), replica: plannedSide(), ...over };
}

/** A side as planned, not upgraded yet, its staged list `staged`. */
function notDone(
  staged: string,
  over: { index?: Partial<FileFacts>; check?: Partial<SideNow["check"]> } = {},
): SideNow {
  const scan: MailboxScan = {
    name: "user.x",
    status: "ok",
    index: facts(9, over.index),
    fingerprint: sha("fp"),
    guidDigest: sha("old"),
  };
  return {
    scan,
    check: { upTo: 10, records: 10, digest: sha("set"), indexUpTo: 10, appended: 0, ...over.check },
    staged: {
      path: "prepared",
      files: { index: "prepared" },
      changed: true,
      guidDigest: staged,
      counts: {
        records: 10,
        expungeRecords: 0,
        computed: 0,
        fromCache: 10,
        relayedVerified: 0,
        kept: 0,
      },
    },
  };
}

/** A side already at the target with list `list`. */
function done(list: string): SideNow {
  return {
    scan: {
      name: "user.x",
      status: "ok",
      index: facts(10, { oldStyle: 0 }),
      fingerprint: sha("other"),
      guidDigest: list,
    },
    check: { upTo: 10, records: 10, digest: sha("new set"), indexUpTo: 10, appended: 0 },
    staged: {
      path: "unchanged",
      files: { index: "unchanged" },
      changed: false,
      guidDigest: list,
      counts: {
        records: 10,
        expungeRecords: 0,
        computed: 0,
        fromCache: 0,
        relayedVerified: 0,
        kept: 10,
      },
    },
  };
}

const A = sha("A");
const B = sha("B");

describe("decide: done / upgrade / repair / compare-lists", () => {
  const cases: [string, SideNow, SideNow, ReturnType<typeof decide>][] = [
    ["both done, equal", done(A), done(A), { kind: "done" }],
    ["both done, different", done(A), done(B), { kind: "compare-lists" }],
    ["neither done, equal staged", notDone(A), notDone(A), { kind: "upgrade" }],
    ["neither done, different staged", notDone(A), notDone(B), { kind: "compare-lists" }],
    ["replica done, master staged equal", notDone(A), done(A), { kind: "repair", side: "master" }],
    [
      "replica done, master staged different",
      notDone(B),
      done(A),
      { kind: "compare-lists", ahead: "replica" },
    ],
    ["master done, replica staged equal", done(A), notDone(A), { kind: "repair", side: "replica" }],
    [
      "master done, replica staged different",
      done(A),
      notDone(B),
      { kind: "compare-lists", ahead: "master" },
    ],
  ];
  for (const [what, master, replica, want] of cases) {
    for (const mode of ["contract", "exact", "any"] as DriftMode[]) {
      it(`${what} (${mode})`, () => {
        expect(decide(entry(), { master, replica }, 10, mode)).toEqual(want);
      });
    }
  }

  it("a done side is never checked against the plan (its GUIDs changed: by this apply)", () => {
    // done(A)'s check digest and fingerprint differ from the plan's.
    expect(decide(entry(), { master: notDone(A), replica: done(A) }, 10, "exact")).toEqual({
      kind: "repair",
      side: "master",
    });
  });

  it("[version] only at target 10: a side at v10 with old-style GUIDs is done", () => {
    const v10old: SideNow = {
      ...done(A),
      scan: { ...done(A).scan, index: facts(10, { oldStyle: 4 }) },
    };
    expect(decide(entry(["version"]), { master: v10old, replica: v10old }, 10, "contract")).toEqual(
      {
        kind: "done",
      },
    );
    // …but not with the guid action
    expect(
      decide(entry(["version", "guid"]), { master: v10old, replica: v10old }, 10, "contract").kind,
    ).not.toBe("done");
  });
});

describe("drift: what is tolerated and what is stale, naming the field", () => {
  const plan = plannedSide();
  const stale = (now: SideNow, mode: DriftMode = "contract") =>
    driftOf("master", plan, now, 10, mode).stale?.field;

  it("tolerates appends, expunges and clean-up, and counts them", () => {
    const now = notDone(A, {
      index: { lastUid: 14, records: 12 },
      check: { appended: 4, indexUpTo: 8, records: 9, digest: sha("fewer") },
    });
    expect(driftOf("master", plan, now, 10, "contract")).toEqual({
      counts: { appended: 4, expunged: 2, cleanedUp: 1 },
    });
  });
  it("tolerates a flag change (nothing the set or facts cover moves)", () => {
    expect(stale(notDone(A))).toBeUndefined();
  });
  it("uidValidity", () =>
    expect(stale(notDone(A, { index: { uidValidity: 1 } }))).toBe("uidValidity"));
  it("index version moved other than to the target", () =>
    expect(stale(notDone(A, { index: { minor: 8 } }))).toBe("index version"));
  it("index version moved to the target is not drift", () =>
    expect(stale(notDone(A, { index: { minor: 10 } }))).toBeUndefined());
  it("expunge version", () => {
    const p = plannedSide({ expunge: facts(9) });
    const now = notDone(A);
    now.scan.expunge = facts(8);
    expect(driftOf("master", p, now, 10, "contract").stale?.field).toBe("expunge version");
  });
  it("lastUid lower than planned (an edited plan)", () =>
    expect(stale(notDone(A, { index: { lastUid: 9 } }))).toBe("lastUid"));
  it("a changed (uid, GUID) set with as many records: stale", () =>
    expect(stale(notDone(A, { check: { digest: sha("changed") } }))).toBe("digest"));
  it("an unplanned UID ≤ lastUid (more records): stale", () =>
    expect(stale(notDone(A, { check: { digest: sha("more"), records: 11 } }))).toBe("digest"));
  it("after an interrupted commit (expunge at the target, index not) the set is not compared", () => {
    const now = notDone(A, { check: { digest: sha("sha1 guids in expunge") } });
    now.scan.expunge = facts(10, { oldStyle: 0 });
    expect(stale(now)).toBeUndefined();
  });
  it("a vanished mailbox", () =>
    expect(stale({ scan: { name: "user.x", status: "missing", reason: "no such file" } })).toBe(
      "mailbox",
    ));
  it("--exact-plan: any fingerprint change; --allow-drift: nothing", () => {
    const appended = notDone(A, { check: { appended: 1 } });
    appended.scan.fingerprint = sha("after an append");
    expect(stale(appended, "exact")).toBe("fingerprint");
    expect(stale(appended, "contract")).toBeUndefined();
    expect(stale(notDone(A, { index: { uidValidity: 1 } }), "any")).toBeUndefined();
  });
  it("an edited fact in the entry is stale with its field, via decide", () => {
    const edited = entry();
    edited.replica = plannedSide({ index: facts(9, { uidValidity: 5 }) });
    expect(
      decide(edited, { master: notDone(A), replica: notDone(A) }, 10, "contract"),
    ).toMatchObject({
      kind: "stale",
      side: "replica",
      field: "uidValidity",
    });
    const digest = entry();
    digest.master = plannedSide({ planned: { records: 10, digest: sha("edited") } });
    expect(
      decide(digest, { master: notDone(A), replica: notDone(A) }, 10, "contract"),
    ).toMatchObject({
      kind: "stale",
      side: "master",
      field: "digest",
    });
  });
});

describe("an entry edited into inconsistency is stale or refused, never read as drift", () => {
  // The seed's gap: lastUid edited DOWN below the records the plan saw. With
  // the agent's planned set cut at the lowered value, the records above it
  // looked like appends and the set like one after expunge clean-up
  // (fewer records, another digest), which is tolerated.
  const lowered = plannedSide({ index: facts(9, { lastUid: 7 }) });
  const cutAt7 = notDone(A, {
    check: { upTo: 7, records: 7, indexUpTo: 7, appended: 3, digest: sha("cut at 7") },
  });

  it("lastUid edited below the record count: stale, field entry, naming the side and the figures", () => {
    const d = driftOf("master", lowered, cutAt7, 10, "contract");
    expect(d.stale?.field).toBe("entry");
    expect(d.stale?.message).toMatch(
      /master's entry says cyrus\.index has 10 records but LAST_UID 7 .*edited down/,
    );
    expect(driftOf("master", lowered, cutAt7, 10, "exact").stale?.field).toBe("entry");
    expect(driftOf("master", lowered, cutAt7, 10, "any").stale).toBeUndefined(); // --allow-drift: anything goes
  });
  it("via decide, on either side", () => {
    const e = entry();
    e.replica = lowered;
    expect(decide(e, { master: notDone(A), replica: cutAt7 }, 10, "contract")).toMatchObject({
      kind: "stale",
      side: "replica",
      field: "entry",
    });
  });
  it("refused before anything is locked (refuseActions), whatever the drift mode", () => {
    const e = entry();
    e.master = lowered;
    expect(refuseActions(e, 10)).toMatch(/^inconsistent plan entry: the master's entry says/);
  });
  it("the same clean-up with a consistent entry is still tolerated", () => {
    const now = notDone(A, { check: { records: 8, digest: sha("cleaned up") } });
    expect(driftOf("master", plannedSide(), now, 10, "contract").stale).toBeUndefined();
  });
  it("each relation the plan's figures must keep", () => {
    const side = (index: Partial<FileFacts>, planned = 10, expunge?: FileFacts) =>
      inconsistentSide(
        "master",
        plannedSide({
          index: facts(9, index),
          planned: { records: planned, digest: sha("set") },
          ...(expunge ? { expunge } : {}),
        }),
      );
    expect(side({})).toBeUndefined();
    expect(side({ lastUid: 9 })).toMatch(/LAST_UID 9/); // 10 records, LAST_UID 9
    expect(side({ lastUid: 20 }, 13)).toMatch(/more than cyrus.index and cyrus.expunge hold/);
    expect(side({ lastUid: 20 }, 13, facts(9, { records: 3, oldStyle: 3 }))).toBeUndefined();
    expect(side({ lastUid: 20 }, 21)).toMatch(/more than there are UIDs/);
    expect(side({}, 9)).toMatch(/plans 9 records but cyrus.index has 10/);
    expect(side({ oldStyle: 11 })).toMatch(/11 old-style GUIDs/);
    expect(side({ nullGuids: 11 })).toMatch(/11 NULL/);
  });
});

describe("refuseActions: actions that make no sense for the target", () => {
  it("accepts the plan's own actions", () => {
    expect(refuseActions(entry(["version", "guid"]), 10)).toBeUndefined();
    expect(refuseActions(entry(["version"]), 10)).toBeUndefined();
    const v10 = entry(["guid"], {
      master: plannedSide({ index: facts(10) }),
      replica: plannedSide({ index: facts(10) }),
    });
    expect(refuseActions(v10, 10)).toBeUndefined();
  });
  it("guid below version 10", () =>
    expect(refuseActions(entry(["version", "guid"]), 9)).toMatch(/only written at version 10/));
  it("guid without version on a v9 index", () =>
    expect(refuseActions(entry(["guid"]), 10)).toMatch(/lack "version"/));
  it("version when every file is at the target", () => {
    const v10 = entry(["version"], {
      master: plannedSide({ index: facts(10) }),
      replica: plannedSide({ index: facts(10) }),
    });
    expect(refuseActions(v10, 10)).toMatch(/already at version 10/);
  });
  it("guid when no old-style GUIDs were planned", () => {
    const none = entry(["guid"], {
      master: plannedSide({ index: facts(10, { oldStyle: 0 }) }),
      replica: plannedSide({ index: facts(10, { oldStyle: 0 }) }),
    });
    expect(refuseActions(none, 10)).toMatch(/no old-style GUIDs/);
  });
});

describe("classifyLists: lag is not divergence", () => {
  const pairs = (list: [number, string][]) =>
    Buffer.concat(
      list.map(([uid, g]) => {
        const b = Buffer.alloc(24);
        b.writeUInt32BE(uid);
        Buffer.from(sha(g), "hex").copy(b, 4);
        return b;
      }),
    );
  const base: [number, string][] = [
    [1, "a"],
    [2, "b"],
    [3, "c"],
  ];
  it("the replica lacks the master's newest UIDs: lagging, naming how many and which", () => {
    const v = classifyLists(pairs([...base, [4, "d"], [5, "e"]]), pairs(base), 5);
    expect(v).toMatchObject({ kind: "lagging", uids: [4, 5] });
    expect(v.message).toBe("replica behind by 2 UIDs (uid 4..5); waiting for replication");
  });
  it("the replica still holds UIDs the master expunged: lagging", () => {
    const v = classifyLists(pairs(base.slice(1)), pairs(base), 3);
    expect(v.kind).toBe("lagging");
    expect(v.message).toContain("replica still holds 1 UIDs the master expunged (uid 1)");
  });
  it("same UID, different GUID: diverged, naming the UIDs", () => {
    const v = classifyLists(
      pairs(base),
      pairs([
        [1, "a"],
        [2, "X"],
        [3, "Y"],
      ]),
      3,
    );
    expect(v).toMatchObject({ kind: "diverged", uids: [2, 3] });
    expect(v.message).toMatch(/^same UID, different GUID on master and replica: uid 2, 3;/);
  });
  it("a replica UID above the master's LAST_UID: diverged", () => {
    expect(classifyLists(pairs(base), pairs([...base, [9, "z"]]), 3).kind).toBe("diverged");
  });
  it("divergence wins over lag", () => {
    expect(
      classifyLists(
        pairs([...base, [4, "d"]]),
        pairs([
          [1, "a"],
          [2, "X"],
          [3, "c"],
        ]),
        4,
      ).kind,
    ).toBe("diverged");
  });
});
