// A lane is one mailbox in flight: an agent on the master and one on the
// replica (an agent session holds at most one mailbox). Agents are started
// lazily and replaced after a transport failure, so a dropped connection or
// a killed agent costs the mailbox it was working on, not the run.

import { AgentClient, type AgentClientOptions } from "../transport/agent-client.js";
import type { HostConnection } from "../transport/types.js";

export type Side = "master" | "replica";

export class Lane {
  readonly #clients: Partial<Record<Side, AgentClient>> = {};

  constructor(
    private readonly connections: Record<Side, HostConnection>,
    private readonly clientOptions: AgentClientOptions = {},
  ) {}

  async agent(side: Side): Promise<AgentClient> {
    const existing = this.#clients[side];
    if (existing && !existing.closed) return existing;
    const client = await AgentClient.start(this.connections[side], this.clientOptions);
    this.#clients[side] = client;
    return client;
  }

  /** Drops a side's agent (after a transport error); the agent rolls back on its own when its stdin ends. */
  async discard(side: Side): Promise<void> {
    const client = this.#clients[side];
    delete this.#clients[side];
    await client?.close();
  }

  async close(): Promise<void> {
    await Promise.all((["master", "replica"] as const).map((s) => this.discard(s)));
  }
}
