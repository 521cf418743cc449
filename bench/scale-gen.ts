// Generated plans and apply state at the 1M shape, for the scale benchmark:
// a real spool of a million mailboxes per side takes longer to make and scan
// than a bench run has, and what show, status and apply's start cost depends
// on the plan file and the state directory, not on where they came from.
//
// growPlan turns a real plan of a real pair (with its apply state) into one of
// a million entries: generated entries shaped like a one-message v9
// mailbox's, recorded done in the state journal, around the real ones,
// which apply then really works on.

import { createHash } from "node:crypto";
import { cp, rm } from "node:fs/promises";
import { join } from "node:path";
import { loadJournal, nameKey, writeJournal } from "../src/apply/state-journal.js";
import { PLAN_CHECKED_FILE, stateDirFor } from "../src/apply/state-store.js";
import { compareNames } from "../src/plan/build.js";
import type { PlannedMailbox, SideFacts } from "../src/plan/model.js";
import { openPlan, PlanWriter } from "../src/plan/plan-stream.js";
import type { FileFacts } from "../src/protocol/messages.js";

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

/**
 * The 1M shape from a real plan: `realPlan`'s entries (real mailboxes of a
 * real pair, which apply can work on) merged in name order with generated
 * ones up to `total`, under the real plan's id and hosts; its state
 * directory copied, and the generated mailboxes recorded done in its
 * journal (as a finished apply leaves them), without a state file each —
 * neither status nor apply reads the file of a mailbox the journal says is
 * done. Returns the new plan's path.
 */
export async function growPlan(realPlan: string, out: string, total: number): Promise<string> {
  const real = await openPlan(realPlan);
  const { format: _f, summary: _s, ...head } = real.header;
  const writer = await PlanWriter.create(out, head);
  const realEntries = real.mailboxes()[Symbol.asyncIterator]();
  let next = await realEntries.next();
  let realCount = 0;
  const generated = Math.max(0, total - real.header.summary.toApply);
  const realState = stateDirFor(realPlan);
  const loaded = await loadJournal(realState, head.id);
  if (!loaded?.clean) throw new Error(`${realState}: no clean journal to grow`);
  // The real pair's records, then the generated ones.
  const index = loaded.index;
  for (let i = 0; i < generated; i++) {
    const entry = generatedEntry(i);
    while (!next.done && compareNames(next.value.name, entry.name) < 0) {
      await writer.add(next.value);
      realCount++;
      next = await realEntries.next();
    }
    await writer.add(entry);
    index.set(nameKey(entry.name), "done", { master: 2 + (i % 5), replica: 3 + (i % 7) });
  }
  for (; !next.done; next = await realEntries.next()) {
    await writer.add(next.value);
    realCount++;
  }
  await writer.commit({ mailboxes: generated + realCount, upToDate: 0 });
  const state = stateDirFor(out);
  await rm(state, { recursive: true, force: true });
  await cp(realState, state, { recursive: true });
  await rm(join(state, PLAN_CHECKED_FILE), { force: true });
  writeJournal(state, head.id, index);
  return out;
}
