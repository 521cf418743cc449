// guidup check --inventory FILE [--pair NAME]: the preflight (like
// `terraform validate` + `ansible -m ping`). Reaches every host of the
// inventory at once, starts its agent, and has it check the host
// (src/agent/requirements.ts); reads the master's mailbox list. Prints one
// line per problem — every host, not only the first that fails — and an
// "ok" line per fit host. Changes nothing on the hosts (the lock probe
// creates and removes one empty file per partition).

import { listMailboxes } from "../apply/scan-pair.js";
import { ExitCode, errorMessage } from "../errors.js";
import type { HostSpec } from "../host-spec.js";
import type { PairSpec } from "../plan/inventory.js";
import type { MailboxRef } from "../protocol/messages.js";
import { AgentClient } from "../transport/agent-client.js";
import { connectHost } from "../transport/index.js";
import type { HostConnection } from "../transport/types.js";
import {
  PAIR_FLAGS,
  type PairOptions,
  pairOptions,
  pairsFor,
  parseFlags,
  withHostKeyNotices,
} from "./flag-groups.js";
import type { Io } from "./io.js";

const HELP = `usage: guidup check --inventory FILE [--pair NAME] [--accept-new-host-keys]

Checks that every host of the inventory can be worked on, before plan:
reaches each one (host keys, login, bastions), starts its agent (same guidup
version as this one, imapd.conf readable and parsed), and has the agent
check the host: Node.js version, Linux with open file description locks (a
real lock is taken on each partition), partitions present, owned by and
writable for the agent's user, free space for the new index files of the
listed mailboxes. The master's mailbox list must be readable.
Prints one line per problem, all of them, then an ok line per fit host.
  --inventory FILE        the pairs
  --pair NAME             only this pair (default: every pair)
  --accept-new-host-keys  record unknown SSH host keys instead of refusing them
Exit codes: 0 every host fit, 1 problems found, 2 bad input (inventory).
`;

type Side = "master" | "replica";

interface Target {
  pair: PairSpec;
  side: Side;
  spec: HostSpec;
  label: string;
}

export type CheckOptions = PairOptions;

export function parseCheckOptions(args: string[]): CheckOptions | "help" {
  const values = parseFlags("check", args, PAIR_FLAGS);
  if (values.help) return "help";
  return pairOptions("check", values);
}

export async function run(args: string[], io: Io): Promise<number> {
  const options = parseCheckOptions(args);
  if (options === "help") {
    io.out(HELP);
    return ExitCode.ok;
  }
  const pairs = await pairsFor(options);
  return await withHostKeyNotices(io, () => checkAll(pairs, io));
}

async function checkAll(pairs: PairSpec[], io: Io): Promise<number> {
  const targets: Target[] = pairs.flatMap((pair) =>
    (["master", "replica"] as const).map((side) => ({
      pair,
      side,
      spec: pair[side],
      label: `${pair.name} ${side} ${hostLabel(pair[side])}`,
    })),
  );
  let problems = 0;
  const problem = (target: Target, text: string) => {
    problems++;
    for (const line of text.split("\n")) io.out(`FAIL ${target.label}: ${line}\n`);
  };

  // Every host at once: one unreachable host does not hide the others.
  const connections = await Promise.all(
    targets.map((t) =>
      connectHost(t.spec).then(
        (conn) => conn,
        (err: unknown) => {
          problem(t, errorMessage(err));
          return undefined;
        },
      ),
    ),
  );
  try {
    // The replica's free space is sized by the master's list: it waits for it.
    const lists = new Map<string, Deferred<MailboxRef[]>>();
    for (const pair of pairs) lists.set(pair.name, deferred());
    targets.forEach((t, i) => {
      if (t.side === "master" && connections[i] === undefined) lists.get(t.pair.name)?.resolve([]);
    });
    await Promise.all(
      targets.map(async (t, i) => {
        const conn = connections[i];
        if (conn === undefined) return;
        const ok = await checkTarget(t, conn, lists, problem);
        if (ok !== undefined) io.out(`ok   ${t.label}: ${ok}\n`);
        else if (t.side === "master") lists.get(t.pair.name)?.resolve([]);
      }),
    );
  } finally {
    await Promise.all(connections.map((c) => c?.close()));
  }
  if (problems > 0) {
    io.err(`guidup check: ${problems} problem${problems === 1 ? "" : "s"} found\n`);
    return ExitCode.failed;
  }
  return ExitCode.ok;
}

function hostLabel(spec: HostSpec): string {
  if (spec.transport === "local") return spec.name ?? "local";
  const address = `${spec.host}:${spec.port ?? 22}`;
  const via = spec.jump?.length ? ` via ${spec.jump.map((h) => h.name ?? h.host).join(",")}` : "";
  return spec.name !== undefined && spec.name !== spec.host
    ? `${spec.name} (${address}${via})`
    : `${address}${via}`;
}

/** One host: its agent, its mailbox list (master), its requirements. The ok summary, or undefined after problems. */
async function checkTarget(
  t: Target,
  conn: HostConnection,
  lists: Map<string, Deferred<MailboxRef[]>>,
  problem: (t: Target, text: string) => void,
): Promise<string | undefined> {
  const list = lists.get(t.pair.name) ?? deferred<MailboxRef[]>();
  // Agent errors start with the host's name, which the line already gives.
  const own = (err: unknown) => {
    const text = errorMessage(err);
    return text.startsWith(`${conn.host}: `) ? text.slice(conn.host.length + 2) : text;
  };
  let agent: AgentClient;
  try {
    agent = await AgentClient.start(conn);
  } catch (err) {
    problem(t, own(err));
    if (t.side === "master") list.resolve([]);
    return undefined;
  }
  try {
    let found = 0;
    let mailboxes: MailboxRef[] = [];
    if (t.side === "master") {
      try {
        const listed = await listMailboxes(t.pair.mailboxes, conn, {});
        mailboxes = listed.mailboxes;
        if (mailboxes.length === 0) {
          found++;
          problem(t, "the mailbox list names no mailbox");
        }
        if (listed.excluded.length > 0) {
          found++;
          const first = listed.excluded[0];
          problem(
            t,
            `the mailbox list has ${listed.excluded.length} unusable entr${listed.excluded.length === 1 ? "y" : "ies"}, e.g. ${JSON.stringify(first?.name)}: ${first?.reason}`,
          );
        }
      } catch (err) {
        found++;
        problem(t, `cannot read the mailbox list: ${errorMessage(err)}`);
      } finally {
        list.resolve(mailboxes);
      }
    } else {
      mailboxes = await list.promise;
    }
    const report = await agent.request("check", { mailboxes });
    for (const line of report.problems) {
      found++;
      problem(t, line);
    }
    if (found > 0) return undefined;
    const free = report.space.map((s) => `${s.partition} ${mb(s.freeBytes)} free`).join(", ");
    return `guidup ${agent.hello.tool}, Node.js ${report.node}, ${report.platform} ${report.kernel} ${report.arch}, agent user ${report.user.name}${free ? `, ${free}` : ""}${t.side === "master" ? `, ${mailboxes.length} mailboxes listed` : ""}`;
  } catch (err) {
    problem(t, own(err));
    return undefined;
  } finally {
    await agent.close();
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

function mb(bytes: number): string {
  return bytes >= 10 * 1_073_741_824
    ? `${(bytes / 1_073_741_824).toFixed(0)} GB`
    : `${(bytes / 1_048_576).toFixed(0)} MB`;
}
