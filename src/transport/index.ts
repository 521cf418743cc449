// src/transport: how the controller reaches an agent — a child process
// (local) or an exec channel over SSH — and moves lines to and from it. It
// owns connections, host key checks and agent process lifetimes; it knows
// nothing of the messages inside the lines (src/protocol) or of plans.

import { LocalConnection } from "./local.js";
import type { HostConnection, HostSpec } from "./types.js";

export { HostUnreachableError, SshAuthError, TransportError } from "./errors.js";
export { HostKeyError } from "./known-hosts.js";
export type {
  AgentChannel,
  HostConnection,
  HostSpec,
  LocalHostSpec,
  SshHostSpec,
} from "./types.js";
export { MAX_SESSIONS_PER_CONNECTION } from "./types.js";

/**
 * Opens a connection to one host: for SSH, connects, checks the host key and
 * authenticates (rejecting with HostKeyError, HostUnreachableError,
 * SshAuthError); for local, only checks the spec — processes start in
 * openAgent().
 */
export async function connectHost(spec: HostSpec): Promise<HostConnection> {
  if (spec.transport === "local") return new LocalConnection(spec);
  // Loaded on first use: ssh2 is a good part of a local run's start-up.
  const { connectSsh } = await import("./ssh.js");
  return connectSsh(spec);
}

/**
 * Opens connections to several hosts at once. If any fails, the ones that
 * did open are closed before its error is thrown: a connection left open
 * would keep the controller process alive after it reported the failure.
 */
export async function connectHosts(specs: readonly HostSpec[]): Promise<HostConnection[]> {
  const settled = await Promise.allSettled(specs.map((spec) => connectHost(spec)));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed === undefined) {
    return settled.map((s) => (s as PromiseFulfilledResult<HostConnection>).value);
  }
  await Promise.all(settled.map((s) => (s.status === "fulfilled" ? s.value.close() : undefined)));
  throw failed.reason;
}
