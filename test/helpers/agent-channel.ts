// What the transport tests do with an agent channel and a host connection:
// record a channel's output and wait for it, and connect while keeping each
// connection for the afterEach that closes them.

import fs from "node:fs";
import path from "node:path";
import type { HostSpec, SshHostSpec } from "../../src/host-spec.js";
import { connectHost } from "../../src/transport/index.js";
import type { AgentChannel, HostConnection } from "../../src/transport/types.js";

export interface ChannelRecord {
  /** Every stdout line so far, in order. */
  lines: string[];
  /** Every stderr line so far (the agent's JSON logs). */
  stderr: string[];
  /** Resolves with the channel's close error (undefined for a clean close). */
  closed: Promise<Error | undefined>;
  /** Resolves with `lines` once at least n stdout lines are in. */
  waitLines(n: number): Promise<string[]>;
  /**
   * Resolves with the first stderr line (so far or to come) that `matches`:
   * stderr is another pipe, so a line written before a stdout line may still
   * arrive after it.
   */
  waitStderr(matches: (line: string) => boolean): Promise<string>;
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
  const stderrWaiters: { matches: (line: string) => boolean; resolve: (line: string) => void }[] =
    [];
  channel.onStderrLine((line) => {
    stderr.push(line);
    for (const w of stderrWaiters.filter((x) => x.matches(line))) w.resolve(line);
  });
  const closed = new Promise<Error | undefined>((resolve) => channel.onClose(resolve));
  return {
    lines,
    stderr,
    closed,
    waitLines: (n: number) =>
      lines.length >= n
        ? Promise.resolve(lines)
        : new Promise<string[]>((resolve) => waiters.push({ n, resolve: () => resolve(lines) })),
    waitStderr: (matches) => {
      const seen = stderr.find(matches);
      return seen !== undefined
        ? Promise.resolve(seen)
        : new Promise<string>((resolve) => stderrWaiters.push({ matches, resolve }));
    },
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

/** What sshSpecFor needs of a test SSH server (test/helpers/sshd.ts, ssh2-server.ts). */
export interface TestSshServer {
  port: number;
  /** Its temp dir: each spec's known_hosts copy goes there. */
  dir: string;
  hostKeyLine: string;
  clientKeyPath: string;
}

let knownHostsCopies = 0;

/**
 * An SSH host spec for a test server on 127.0.0.1, with a private known_hosts
 * file holding the server's key (a test may change it without touching others).
 */
export function sshSpecFor(
  server: TestSshServer,
  fields: Pick<SshHostSpec, "user" | "command" | "config" | "name">,
): SshHostSpec & { knownHostsFile: string } {
  const knownHostsFile = path.join(server.dir, `known_hosts-${++knownHostsCopies}`);
  fs.writeFileSync(knownHostsFile, `${server.hostKeyLine}\n`);
  return {
    host: "127.0.0.1",
    port: server.port,
    identityFile: server.clientKeyPath,
    knownHostsFile,
    ...fields,
  };
}
