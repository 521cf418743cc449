// The pair-lock op (src/agent/pair-lock.ts) on real agent processes: the
// first agent holds guidup.lock in the configdirectory and records itself;
// a second agent is refused with code pair-locked naming that holder; the
// lock ends with the holder's process (closed input or SIGKILL), leaving its
// record as history; a conf without configdirectory is refused by name.

import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { PairLockHolder } from "../../src/protocol/messages.js";
import { AgentProcess, killAll, makeEmptySpool, type TempSpool } from "../helpers/agent-process.js";

const agents: AgentProcess[] = [];
const spools: TempSpool[] = [];

afterEach(async () => {
  await killAll(agents);
  await Promise.all(spools.splice(0).map((s) => s.cleanup()));
});

async function start(conf: string): Promise<AgentProcess> {
  const agent = await AgentProcess.start(conf);
  agents.push(agent);
  return agent;
}

const holder = (plan: string): PairLockHolder => ({
  plan,
  pair: "slot1",
  controller: "ctl.example",
  pid: 4242,
  user: "ops",
});

describe("pair-lock", () => {
  it("is held by the first agent, refused to the next naming it, free once the holder is gone", async () => {
    const spool = await makeEmptySpool();
    spools.push(spool);
    const lockFile = path.join(spool.root, "conf", "guidup.lock");
    const first = await start(spool.conf);
    const taken = await first.call("pair-lock", { holder: holder("plan-a") });
    expect(taken).toMatchObject({ lockFile, holder: { plan: "plan-a", agentPid: first.pid } });
    expect(JSON.parse(await readFile(lockFile, "utf8"))).toEqual(taken.holder);
    // Asking again in the same session is not a conflict.
    expect(await first.call("pair-lock", { holder: holder("plan-a") })).toEqual(taken);

    const second = await start(spool.conf);
    const refused = await second.fail("pair-lock", { holder: holder("plan-b") });
    expect(refused.code).toBe("pair-locked");
    expect(refused.message).toBe(
      `another apply holds the pair lock ${lockFile}: plan plan-a (pair slot1) run by ops on ctl.example (pid 4242), since ${taken.holder.since}`,
    );
    expect(refused.detail).toMatchObject({ lockFile, holder: { plan: "plan-a" } });

    // Input closed (the controller went away): the lock goes with the agent.
    await first.closeStdin();
    expect((await second.call("pair-lock", { holder: holder("plan-b") })).holder.plan).toBe(
      "plan-b",
    );
    // SIGKILL: the same; the record of the dead holder blocks nothing.
    await second.kill("SIGKILL");
    expect(JSON.parse(await readFile(lockFile, "utf8")).plan).toBe("plan-b");
    const third = await start(spool.conf);
    expect((await third.call("pair-lock", { holder: holder("plan-c") })).holder.plan).toBe(
      "plan-c",
    );
  });

  it("refuses a conf without configdirectory, naming the file", async () => {
    const spool = await makeEmptySpool();
    spools.push(spool);
    const text = (await readFile(spool.conf, "utf8")).replace(/^configdirectory:.*\n/m, "");
    await writeFile(spool.conf, text);
    const agent = await start(spool.conf);
    const err = await agent.fail("pair-lock", { holder: holder("plan-a") });
    expect(err.message).toBe(
      `${spool.conf} sets no configdirectory: guidup keeps the pair lock (guidup.lock) there`,
    );
  });
});
