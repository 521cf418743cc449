// The flag groups shared by the commands that work on inventory pairs
// (src/cli/flag-groups.ts): each command refuses a missing --inventory and an
// unknown --pair in the same words, and takes the same host-key flag.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  makeFixturePair,
  type PairFixture,
  runCli,
  writeInventory,
} from "../helpers/pair-fixtures.js";

const PAIR_COMMANDS = ["check", "hash", "plan", "agent install", "cache clean"];

let pair: PairFixture;
let inventory: string;
beforeAll(async () => {
  pair = await makeFixturePair("08");
  inventory = await writeInventory(pair, { transport: "local" });
});
afterAll(async () => {
  await pair?.cleanup();
});

describe("shared flag groups", () => {
  it.each(PAIR_COMMANDS)(
    "guidup %s without --inventory: exit 2, one line naming the command's help",
    async (cmd) => {
      const words = cmd.split(" ");
      const r = await runCli([...words, "--accept-new-host-keys"]);
      expect(r.code).toBe(2);
      expect(r.err).toBe(
        `guidup ${words[0]}: --inventory FILE is required (see guidup ${words.join(" ")} --help)\n`,
      );
    },
  );

  it.each(PAIR_COMMANDS)(
    "guidup %s --pair nope: exit 2, naming the pairs there are",
    async (cmd) => {
      const words = cmd.split(" ");
      const r = await runCli([...words, "--inventory", inventory, "--pair", "nope"]);
      expect(r.code).toBe(2);
      expect(r.err).toBe(`guidup ${words[0]}: --pair nope: no such pair (have: slot1)\n`);
    },
  );

  it("verify takes the same groups, or --plan alone", async () => {
    const none = await runCli(["verify"]);
    expect(none.code).toBe(2);
    expect(none.err).toContain("--inventory FILE or --plan PLAN is required");
    const unknown = await runCli(["verify", "--inventory", inventory, "--pair", "nope"]);
    expect(unknown.err).toBe("guidup verify: --pair nope: no such pair (have: slot1)\n");
    const both = await runCli(["verify", "--inventory", inventory, "--plan", "x.yaml"]);
    expect(both.err).toContain("give --plan alone");
  });
});
