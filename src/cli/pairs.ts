// Helpers shared by the commands that work on inventory pairs.

import { UsageError } from "../errors.js";
import type { HostSpec } from "../host-spec.js";
import type { PairSpec } from "../plan/inventory.js";
import type { LogLine } from "../protocol/messages.js";
import type { Io } from "./io.js";

export function pairsToRun(pairs: readonly PairSpec[], only: string | undefined): PairSpec[] {
  if (only === undefined) return [...pairs];
  const pair = pairs.find((p) => p.name === only);
  if (!pair)
    throw new UsageError(
      `--pair ${only}: no such pair (have: ${pairs.map((p) => p.name).join(", ")})`,
    );
  return [pair];
}

export function withHostKeyPolicy<T extends { master: HostSpec; replica: HostSpec }>(
  pair: T,
  acceptNew: boolean,
): T {
  if (!acceptNew) return pair;
  const accept = (h: HostSpec): HostSpec =>
    h.transport === "local" ? h : { ...h, acceptNewHostKeys: true };
  return { ...pair, master: accept(pair.master), replica: accept(pair.replica) };
}

/** Agent stderr logs worth showing the operator (warnings and errors), prefixed with the host. */
export function agentLogger(io: Io): (host: string, line: LogLine) => void {
  return (host, line) => {
    if (line.level === "warn" || line.level === "error")
      io.err(`${host}: ${line.level}: ${line.msg}\n`);
  };
}
