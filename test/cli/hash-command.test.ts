// `guidup hash` as a user runs it (the built CLI, a local agent child
// process): --workers, and the whole command without a separate scan.

import { copyFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GeneratedSpool, generateSpool } from "../../src/spoolgen/spool-generator.js";
import { makeTempDir } from "../helpers/fixtures.js";
import { runCliProcess } from "../helpers/pair-fixtures.js";

let dir = "";
let cleanup: () => Promise<void> = async () => {};
let spool: GeneratedSpool;
let inventory = "";

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir("guidup-hash-cli-"));
  spool = await generateSpool({
    dir,
    pair: false,
    mailboxes: 8,
    seed: 11,
    versions: [9],
    largeMailboxes: 0,
    messagesPerMailbox: [2, 6],
    expungeFraction: 0,
  });
  inventory = path.join(dir, "inventory.yaml");
  // --side master reads the master only; the replica entry must still name
  // another imapd.conf, so it names a copy.
  const alias = path.join(dir, "alias-imapd.conf");
  await copyFile(spool.master.imapdConf, alias);
  await writeFile(
    inventory,
    `pairs:\n  - name: t\n    mailboxes: { file: ${JSON.stringify(spool.mailboxList)} }\n    master: { transport: local, name: m, config: ${JSON.stringify(spool.master.imapdConf)} }\n    replica: { transport: local, name: r, config: ${JSON.stringify(alias)} }\n`,
  );
});
afterAll(() => cleanup());

/** The real CLI, run to its end (a child process). */
const guidup = (args: string[]) => runCliProcess(args, { timeoutMs: 120_000 });

describe("guidup hash", () => {
  it("refuses a --workers that is not a whole number from 1 to 256, changing nothing", async () => {
    for (const bad of ["0", "-1", "1.5", "x", "257"]) {
      const r = await guidup(["hash", "-i", inventory, "--side", "master", "--workers", bad]);
      expect(r.code, bad).toBe(2);
      expect(r.err, bad).toMatch(/--workers/);
    }
  });

  it("with --workers 1 hashes every old-style message once, and a rerun nothing", async () => {
    const messages = spool.mailboxes.reduce((n, m) => n + m.records, 0);
    const first = await guidup([
      "hash",
      "-i",
      inventory,
      "--side",
      "master",
      "--workers",
      "1",
      "--json",
    ]);
    expect(first.code, first.err).toBe(0);
    const a = JSON.parse(first.out) as {
      hosts: { mailboxes: number; hashed: number; failed: unknown[] }[];
    };
    expect(a.hosts[0]!.mailboxes).toBe(spool.mailboxes.length);
    expect(a.hosts[0]!.hashed).toBe(messages);
    expect(a.hosts[0]!.failed).toEqual([]);
    const second = await guidup(["hash", "-i", inventory, "--side", "master", "--json"]);
    expect(second.code, second.err).toBe(0);
    const b = JSON.parse(second.out) as { hosts: { hashed: number; alreadyCached: number }[] };
    expect(b.hosts[0]!.hashed).toBe(0);
    expect(b.hosts[0]!.alreadyCached).toBe(messages);
  });
});
