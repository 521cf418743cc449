// apply --dry-run: proves both hosts of a pair answer, as apply would need
// them to, locks nothing, and lists the mailboxes a run would start from the
// state directory (done ones are left out).

import type { HostSpec } from "../host-spec.js";
import type { PlannedMailbox } from "../plan/model.js";
import type { Hello } from "../protocol/messages.js";
import { AgentClient } from "../transport/agent-client.js";
import { connectHosts } from "../transport/index.js";
import { nameFilter } from "./glob.js";
import { FINAL_PHASES } from "./state.js";
import type { StateStore } from "./state-store.js";

export interface DryRunResult {
  /** Each host's hello, master first. */
  hosts: { host: string; hello: Hello }[];
  mailboxes: { name: string; actions: string[]; phase: string }[];
}

export async function dryRun(
  hosts: { master: HostSpec; replica: HostSpec },
  store: StateStore,
  mailboxes: AsyncIterable<PlannedMailbox>,
  only: readonly string[],
  exclude: readonly string[],
): Promise<DryRunResult> {
  const connections = await connectHosts([hosts.master, hosts.replica]);
  try {
    const agents = await Promise.all(connections.map((c) => AgentClient.start(c)));
    await Promise.all(agents.map((a) => a.close()));
    const keep = nameFilter(only, exclude);
    const would: DryRunResult["mailboxes"] = [];
    for await (const mb of mailboxes) {
      if (!keep(mb.name)) continue;
      const st = await store.read(mb.name);
      if (st && FINAL_PHASES.has(st.phase)) continue;
      would.push({ name: mb.name, actions: mb.actions, phase: st?.phase ?? "pending" });
    }
    return { hosts: agents.map((a) => ({ host: a.host, hello: a.hello })), mailboxes: would };
  } finally {
    await Promise.all(connections.map((c) => c.close()));
  }
}
