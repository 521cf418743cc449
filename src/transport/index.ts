// src/transport: how the controller reaches an agent — a child process
// (local) or an exec channel over SSH — and moves lines to and from it. It
// owns connections, host key checks and agent process lifetimes; it knows
// nothing of the messages inside the lines (src/protocol) or of plans.

import { GuidupError, InternalError } from "../errors.js";
import type { HostSpec } from "../host-spec.js";
import { HostKeyError } from "./known-hosts.js";
import { LocalConnection } from "./local.js";
import type { HostConnection } from "./types.js";

export { HostUnreachableError, SshAuthError, TransportError } from "./errors.js";
export { HostKeyError } from "./known-hosts.js";
export type { AgentChannel, HostConnection } from "./types.js";
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
 * did open are closed before the error is thrown: a connection left open
 * would keep the controller process alive after it reported the failure.
 * When a host key was refused, every failure is reported, not only the
 * first: an operator fixing host keys wants the whole list in one go (the
 * error is a HostKeyError with one line per failed host). Otherwise the
 * first failure is thrown as it is.
 */
export async function connectHosts(specs: readonly HostSpec[]): Promise<HostConnection[]> {
  const settled = await Promise.allSettled(specs.map((spec) => connectHost(spec)));
  const failures = settled
    .filter((s): s is PromiseRejectedResult => s.status === "rejected")
    .map((s) => s.reason as Error);
  if (failures.length === 0) {
    return settled.map((s) => (s as PromiseFulfilledResult<HostConnection>).value);
  }
  await Promise.all(settled.map((s) => (s.status === "fulfilled" ? s.value.close() : undefined)));
  throw combineFailures(failures);
}

/** One error naming every failed host, host key problems first, when one is a host key problem. */
export function combineFailures(failures: readonly Error[]): Error {
  if (!failures.some((e) => e instanceof HostKeyError) && failures[0] !== undefined)
    return failures[0];
  const ordered = [
    ...failures.filter((e) => e instanceof HostKeyError),
    ...failures.filter((e) => !(e instanceof HostKeyError)),
  ];
  const lead = ordered[0];
  if (lead === undefined) throw new InternalError("combineFailures: no failure");
  const messages = [...new Set(ordered.map((e) => e.message))];
  if (messages.length === 1 || !(lead instanceof GuidupError)) return lead;
  const Kind = lead.constructor as new (message: string, detail?: Record<string, unknown>) => Error;
  return new Kind(messages.join("\n"), { ...lead.detail, failures: messages });
}
