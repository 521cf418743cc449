// What the transport tests do with an agent channel and a host connection:
// record a channel's output and wait for it, and connect while keeping each
// connection for the afterEach that closes them.

import { connectHost } from "../../src/transport/index.js";
import type { AgentChannel, HostConnection, HostSpec } from "../../src/transport/types.js";

export interface ChannelRecord {
  /** Every stdout line so far, in order. */
  lines: string[];
  /** Every stderr line so far (the agent's JSON logs). */
  stderr: string[];
  /** Resolves with the channel's close error (undefined for a clean close). */
  closed: Promise<Error | undefined>;
  /** Resolves with `lines` once at least n stdout lines are in. */
  waitLines(n: number): Promise<string[]>;
}

/** Collects a channel's output from now on (and what arrived before: channels keep it). */
export function record(channel: AgentChannel): ChannelRecord {
  const lines: string[] = [];
  const stderr: string[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  channel.onLine((line) => {
    lines.push(line);
    for (const w of waiters.filter((x) => lines.length >= x.n)) w.resolve();
  });
  channel.onStderrLine((line) => stderr.push(line));
  const closed = new Promise<Error | undefined>((resolve) => channel.onClose(resolve));
  return {
    lines,
    stderr,
    closed,
    waitLines: (n: number) =>
      lines.length >= n
        ? Promise.resolve(lines)
        : new Promise<string[]>((resolve) => waiters.push({ n, resolve: () => resolve(lines) })),
  };
}

/** connect / connectionError that add each connection made to `connections`. */
export function trackedConnect(connections: HostConnection[]) {
  return {
    async connect(spec: HostSpec): Promise<HostConnection> {
      const conn = await connectHost(spec);
      connections.push(conn);
      return conn;
    },
    /** The error connecting fails with; a connection made instead fails the test. */
    connectionError(spec: HostSpec): Promise<Error> {
      return connectHost(spec).then(
        (c) => {
          connections.push(c);
          throw new Error("connected, but should not have");
        },
        (err: Error) => err,
      );
    },
  };
}
