// A spool whose cyrus.header/index/cache/expunge live under a metapartition
// (metapartition_files) while the message files stay on the data partition:
// plan → apply → verify end to end, every file exactly its v10 upgrade, the
// sha1 caches beside cyrus.index on the metapartition, no .NEW left.

import { readdir } from "node:fs/promises";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  cli,
  expectAllNew,
  generatedPair,
  localHost,
  planMailboxes,
  snapshotPair,
  type TestPair,
  writeInventory,
} from "../helpers/apply-harness.js";

const pairs: TestPair[] = [];
afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
});

async function namesUnder(dir: string, pattern: RegExp): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.filter((e) => pattern.test(path.basename(e)));
}

describe("apply on a metapartition spool", () => {
  it("upgrades index and expunge on the metapartition with GUIDs from the data partition's files", async () => {
    const pair = await generatedPair({
      seed: 77,
      mailboxes: 12,
      metapartition: true,
      largeMailboxes: 0,
      messagesPerMailbox: [1, 8],
    });
    pairs.push(pair);
    const inventory = await writeInventory(pair, path.join(pair.dir, "inventory.yaml"), {
      master: localHost(pair, "master"),
      replica: localHost(pair, "replica"),
    });
    await cli(["hash", "--inventory", inventory, "--side", "both"], 0);
    const plan = path.join(pair.dir, "plan.yaml");
    await cli(["plan", "--inventory", inventory, "--out", plan], 0);
    const names = await planMailboxes(plan);
    expect(names.length).toBeGreaterThan(5);
    const snap = await snapshotPair(pair, path.join(pair.dir, "before"));
    await cli(["apply", plan], 0);
    await cli(["verify", "--inventory", inventory], 0);
    await expectAllNew(snap, names);
    for (const side of ["master", "replica"] as const) {
      const root = pair[side].root;
      // Caches sit beside cyrus.index (metapartition), never among the messages.
      expect((await namesUnder(path.join(root, "meta"), /^cyrus\.sha1s$/)).length).toBeGreaterThan(
        0,
      );
      expect(await namesUnder(path.join(root, "spool"), /^cyrus\.(sha1s|index|expunge)/)).toEqual(
        [],
      );
      expect(await namesUnder(root, /\.NEW$/)).toEqual([]);
    }
  });
});
