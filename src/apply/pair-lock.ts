// Before apply touches a pair: take the pair lock on both hosts (see
// src/agent/pair-lock.ts), master first, each held by an agent session of
// its own for the whole run. A second apply of the same pair — another plan,
// another controller machine — is refused by name instead of running beside
// this one. Releasing is ending those sessions; a controller that dies ends
// them too (the agents see their input close), so no lock outlives its apply.

import { hostname, userInfo } from "node:os";
import { ERRORS, type ErrorCode, GuidupError } from "../errors.js";
import type { PairLockHolder } from "../protocol/messages.js";
import { AgentClient, type AgentClientOptions, AgentError } from "../transport/agent-client.js";
import type { HostConnection } from "../transport/types.js";

/** Another apply works on this pair right now. */
export class PairBusyError extends GuidupError {
  readonly code: ErrorCode = ERRORS.pairLocked.code;
}

export interface HeldPairLock {
  /** Where each host keeps its lock ("host:path"). */
  readonly lockFiles: string[];
  release(): Promise<void>;
}

export async function takePairLock(
  connections: { master: HostConnection; replica: HostConnection },
  plan: { id: string; pair: string },
  clientOptions: AgentClientOptions = {},
): Promise<HeldPairLock> {
  const holder: PairLockHolder = {
    plan: plan.id,
    pair: plan.pair,
    controller: hostname(),
    pid: process.pid,
    user: currentUser(),
  };
  const agents: AgentClient[] = [];
  const release = async () => {
    await Promise.all(agents.splice(0).map((a) => a.close()));
  };
  const lockFiles: string[] = [];
  try {
    // Both agents start at once (a start is the slow part); the locks are
    // then taken in a fixed order, master first.
    const started = await Promise.allSettled(
      (["master", "replica"] as const).map((side) =>
        AgentClient.start(connections[side], clientOptions),
      ),
    );
    for (const s of started) if (s.status === "fulfilled") agents.push(s.value);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    for (const agent of agents) {
      const { lockFile } = await agent.request("pair-lock", { holder });
      lockFiles.push(`${agent.host}:${lockFile}`);
    }
  } catch (err) {
    await release();
    if (err instanceof AgentError && err.code === ERRORS.pairLocked.code) {
      throw new PairBusyError(
        `pair ${plan.pair} is being applied by someone else: ${err.message}; wait for that apply to end (guidup status on its plan), then run this apply again`,
        err.detail,
      );
    }
    throw err;
  }
  return { lockFiles, release };
}

function currentUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? "unknown";
  }
}
