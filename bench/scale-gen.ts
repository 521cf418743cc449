// Generated plans and apply state at the 1M shape, for the scale benchmark:
// a real spool of a million mailboxes per side takes longer to make and scan
// than a bench run has, and what show, status and apply's start cost depends
// on the plan file and the state directory, not on where they came from.
//
// generatePlan writes an N-entry guidup-plan/3 plan through PlanWriter (the
// writer `guidup plan` uses) with entries shaped like a one-message v9
// mailbox's; generateState writes a done state file for the first D
// mailboxes through the StateStore (so its journal too), as apply would.

import { createHash } from "node:crypto";
import { StateStore, stateDirFor } from "../src/apply/state-store.js";
import type { MailboxState } from "../src/apply/state.js";
import type { FileFacts } from "../src/protocol/messages.js";
import type { PlannedMailbox, PlanSummary, SideFacts } from "../src/plan/model.js";
import { PlanWriter } from "../src/plan/plan-stream.js";

function sha1(text: string): string {
  return createHash("sha1").update(text).digest("hex");
}

/** The i-th generated name: sorted by byte order as i grows. */
export function generatedName(i: number): string {
  return `user.gen${String(i).padStart(8, "0")}`;
}

function facts(i: number): FileFacts {
  return {
    minor: 9,
    records: 1,
    oldStyle: 1,
    nullGuids: 0,
    oldStyleBytes: 1200 + (i % 400),
    lastUid: 1,
    uidValidity: 1_600_000_000 + (i % 1_000_000),
    highestModseq: String(3 + (i % 7)),
  };
}

function side(name: string, which: string, i: number): SideFacts {
  return {
    index: facts(i),
    fingerprint: sha1(`fp:${which}:${name}`),
    planned: { records: 1, digest: sha1(`planned:${name}`) },
  };
}

export function generatedEntry(i: number): PlannedMailbox {
  const name = generatedName(i);
  return {
    name,
    actions: ["version", "guid"],
    master: side(name, "master", i),
    replica: side(name, "replica", i),
  };
}

/** Writes an n-entry plan at `path` (local hosts that do not exist: nothing is contacted). */
export async function generatePlan(path: string, n: number, id: string): Promise<PlanSummary> {
  const writer = await PlanWriter.create(path, {
    id,
    created: "2026-01-01T00:00:00.000Z",
    tool: "bench",
    pair: "gen",
    target: 10,
    hosts: {
      master: { transport: "local", config: "/nonexistent/master/imapd.conf", name: "master" },
      replica: { transport: "local", config: "/nonexistent/replica/imapd.conf", name: "replica" },
    },
  });
  for (let i = 0; i < n; i++) await writer.add(generatedEntry(i));
  return writer.commit({ mailboxes: n, upToDate: 0 });
}

/** Marks the first `done` mailboxes of a generated plan done, as apply would have. */
export async function generateState(planPath: string, planId: string, done: number): Promise<void> {
  const store = new StateStore(stateDirFor(planPath), planId);
  await store.acquire(planId);
  try {
    for (let i = 0; i < done; i++) {
      const t = new Date(Date.UTC(2026, 0, 1, 0, 0, 0, i % 1000)).toISOString();
      const state: MailboxState = {
        name: generatedName(i),
        phase: "done",
        attempts: 1,
        firstStarted: t,
        updated: t,
        finished: t,
        lockHeldMs: { master: 2 + (i % 5), replica: 3 + (i % 7) },
      };
      await store.write(state);
    }
  } finally {
    await store.release();
  }
}
