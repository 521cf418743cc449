// `guidup plan` writes its plan window by window (writePlanStreaming): the
// file must be the one buildPlan + writePlan give for the same scans, whatever
// the window, and the scans of a window are asked for once, in name order.

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildPlan, writePlanStreaming } from "../../src/plan/build.js";
import { writePlan } from "../../src/plan/plan-file.js";
import { PlanWriter } from "../../src/plan/plan-stream.js";
import type { MailboxRef, MailboxScan } from "../../src/protocol/messages.js";
import { makeMailbox, sha1Hex } from "../helpers/plan-factory.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "guidup-plan-windows-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Scans of both sides: most mailboxes to upgrade, some up to date, missing, corrupt, differing. */
function scans(n: number): {
  refs: MailboxRef[];
  master: Map<string, MailboxScan>;
  replica: Map<string, MailboxScan>;
} {
  const refs: MailboxRef[] = [];
  const master = new Map<string, MailboxScan>();
  const replica = new Map<string, MailboxScan>();
  for (let i = n - 1; i >= 0; i--) {
    const m = makeMailbox(i);
    refs.push({ name: m.name, ...(m.partition ? { partition: m.partition } : {}) });
    for (const [side, facts] of [
      ["master", m.master],
      ["replica", m.replica],
    ] as const) {
      const scan: MailboxScan = {
        name: m.name,
        status: "ok",
        index: i % 11 === 0 ? { ...facts.index, minor: 10, oldStyle: 0 } : facts.index,
        ...(facts.expunge && i % 11 !== 0 ? { expunge: facts.expunge } : {}),
        fingerprint: facts.fingerprint,
        uidsDigest: sha1Hex(`uids:${m.name}:${i % 13 === 0 && side === "replica" ? "x" : ""}`),
        planned: {
          ...facts.planned,
          upTo: facts.index.lastUid,
          indexUpTo: facts.index.lastUid,
          appended: 0,
        },
        ...(facts.cached !== undefined ? { cached: facts.cached } : {}),
      };
      if (i % 17 === 0 && side === "replica") scan.status = "missing";
      if (i % 19 === 0 && side === "master")
        Object.assign(scan, { status: "corrupt", reason: "bad header" });
      (side === "master" ? master : replica).set(m.name, scan);
    }
  }
  return { refs, master, replica };
}

describe("writePlanStreaming", () => {
  it("writes the plan buildPlan would, window after window, asking for each window once in order", async () => {
    const { refs, master, replica } = scans(47);
    const head = {
      id: "slot1-20260101T000000Z-abcdef",
      created: "2026-01-01T00:00:00.000Z",
      tool: "test",
      pair: "slot1",
      target: 10,
      hosts: {
        master: { transport: "local" as const, config: "/m/imapd.conf" },
        replica: { transport: "local" as const, config: "/r/imapd.conf" },
      },
    };
    const excluded = [{ name: "user.zz", reason: "remote mailbox" }];
    const invalid = [{ name: "user.bad\u0001", reason: "control character" }];
    const whole = buildPlan({ ...head, mailboxes: refs, excluded, invalid, master, replica });
    const expected = join(dir, "whole.yaml");
    await writePlan(expected, whole);
    for (const window of [1, 5, 47, 100]) {
      const asked: string[][] = [];
      const file = join(dir, `windows-${window}.yaml`);
      const writer = await PlanWriter.create(file, head);
      const counts = await writePlanStreaming(
        {
          target: 10,
          mailboxes: refs,
          excluded,
          invalid,
          window,
          scan: async (names) => {
            asked.push(names.map((r) => r.name));
            const pick = (all: Map<string, MailboxScan>) =>
              new Map(names.map((r) => [r.name, all.get(r.name) as MailboxScan]));
            return { master: pick(master), replica: pick(replica) };
          },
        },
        writer,
      );
      await writer.commit({ mailboxes: counts.mailboxes, upToDate: counts.upToDate });
      expect(await readFile(file, "utf8"), `window ${window}`).toBe(
        await readFile(expected, "utf8"),
      );
      expect(asked.flat()).toEqual([...refs.map((r) => r.name)].sort());
      expect(asked.every((w) => w.length <= window)).toBe(true);
      expect(counts.missing.replica.count).toBe(3);
    }
  });

  it("asks for the next window's scans before writing this one's entries, never two ahead, and reports a failed scan once", async () => {
    const { refs, master, replica } = scans(23);
    const head = {
      id: "slot1-20260101T000000Z-abcdef",
      created: "2026-01-01T00:00:00.000Z",
      tool: "test",
      pair: "slot1",
      target: 10,
      hosts: {
        master: { transport: "local" as const, config: "/m/imapd.conf" },
        replica: { transport: "local" as const, config: "/r/imapd.conf" },
      },
    };
    const window = 5;
    const windows = Math.ceil(refs.length / window);
    const sorted = refs.map((r) => r.name).sort();
    const windowOf = (name: string) => Math.floor(sorted.indexOf(name) / window);
    const run = async (failAt?: number) => {
      let asked = 0;
      const askedWhenWritten: { window: number; asked: number }[] = [];
      const writer = await PlanWriter.create(join(dir, `ahead-${failAt ?? "ok"}.yaml`), head);
      const recorded = {
        add: (e: Parameters<PlanWriter["add"]>[0]) => {
          askedWhenWritten.push({ window: windowOf(e.name), asked });
          return writer.add(e);
        },
        skip: (e: Parameters<PlanWriter["skip"]>[0]) => {
          if (sorted.includes(e.name)) askedWhenWritten.push({ window: windowOf(e.name), asked });
          return writer.skip(e);
        },
      } as unknown as PlanWriter;
      try {
        await writePlanStreaming(
          {
            target: 10,
            mailboxes: refs,
            window,
            scan: async (names) => {
              const k = asked++;
              // Resolved on a later turn of the event loop, as an agent's answer is.
              await new Promise((resolve) => setImmediate(resolve));
              if (k === failAt) throw new Error(`scan of window ${k} failed`);
              const pick = (all: Map<string, MailboxScan>) =>
                new Map(names.map((r) => [r.name, all.get(r.name) as MailboxScan]));
              return { master: pick(master), replica: pick(replica) };
            },
          },
          recorded,
        );
      } finally {
        await writer.abort();
      }
      return askedWhenWritten;
    };
    const written = await run();
    expect(new Set(written.map((w) => w.window)).size).toBe(windows);
    for (const w of written) expect(w.asked).toBe(Math.min(w.window + 2, windows));
    await expect(run(2)).rejects.toThrow("scan of window 2 failed");
  });
});
