// The journal's record lines as loadJournal reads them: phases, lock holds
// and cut-over paths come back as written, the last record of a name wins,
// and any malformed record makes the journal untrusted (undefined: rebuilt
// from the state files).

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  JOURNAL_FILE,
  JOURNAL_FORMAT,
  journalRecord,
  loadJournal,
} from "../../src/apply/state-journal.js";

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function journalOf(lines: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "guidup-journal-"));
  dirs.push(dir);
  await writeFile(path.join(dir, JOURNAL_FILE), `${JOURNAL_FORMAT} plan-x\n${lines.join("")}`);
  return dir;
}

describe("journal records", () => {
  it("are read back as written, the last of a name winning", async () => {
    const dir = await journalOf([
      "open 12 2026-12-05T00:00:00Z\n",
      journalRecord("user.a", "in-progress", { master: 3 }),
      journalRecord("user.a", "done", { master: 3, replica: 1234567 }, "prepared"),
      journalRecord("user.b", "replica-ahead"),
      journalRecord("user.c", "skipped", { replica: 0 }),
      "close 2026-12-05T00:00:01Z\n",
    ]);
    const loaded = await loadJournal(dir, "plan-x");
    expect(loaded?.clean).toBe(true);
    expect(loaded?.records).toBe(4);
    expect(loaded?.index.size).toBe(3);
    expect(loaded?.index.counts()).toEqual({ done: 1, "replica-ahead": 1, skipped: 1 });
    expect(loaded?.index.phaseOf("user.a")).toBe("done");
    expect(loaded?.index.phaseOf("user.d")).toBeUndefined();
    const lines: string[] = [...(loaded?.index.records() ?? [])];
    expect(lines.sort()).toEqual(
      [
        journalRecord("user.a", "done", { master: 3, replica: 1234567 }, "prepared"),
        journalRecord("user.b", "replica-ahead"),
        journalRecord("user.c", "skipped", { replica: 0 }),
      ].sort(),
    );
  });

  it.each([
    ["an unknown phase", (r: string) => r.replace(" done ", " finished ")],
    ["an unknown path", (r: string) => r.replace(" prepared", " teleported")],
    ["a key with an upper-case digit", (r: string) => `A${r.slice(1)}`],
    ["a short key", (r: string) => r.slice(1)],
    ["a hold that is not a number", (r: string) => r.replace(" 3 ", " 3x ")],
    ["an empty hold", (r: string) => r.replace(" 3 ", "  ")],
    ["a field too many", (r: string) => r.replace(" prepared", " prepared extra")],
  ])("make the journal untrusted when one has %s", async (_what, spoil) => {
    const good = journalRecord("user.a", "done", { master: 3, replica: 4 }, "prepared");
    expect(await loadJournal(await journalOf([good]), "plan-x")).toBeDefined();
    const bad = spoil(good);
    expect(bad).not.toBe(good);
    expect(await loadJournal(await journalOf([good, bad]), "plan-x")).toBeUndefined();
  });
});
