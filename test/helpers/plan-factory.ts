// Builds valid plans for tests: deterministic, varied enough to exercise
// every optional field (expunge facts, partition, cached, highestModseq) and
// both actions, with a summary consistent with the entries.

import { createHash } from "node:crypto";
import { summarize } from "../../src/plan/build.js";
import {
  type Action,
  PLAN_FORMAT,
  type Plan,
  type PlannedMailbox,
  type SideFacts,
  SKIP_REASONS,
  type SkippedMailbox,
  type SkipReason,
} from "../../src/plan/model.js";
import type { FileFacts } from "../../src/protocol/messages.js";

export interface PlanFactoryOptions {
  pair?: string;
  target?: number;
  /** Skipped entries after the n planned ones; default 0. */
  skipped?: number;
  id?: string;
  created?: string;
  tool?: string;
  /** Changes every fingerprint, as a rescan after mail arrived would (not the planned sets: appends leave them). */
  seed?: string;
  /** Prefix of the planned mailbox names; default "user.u". */
  prefix?: string;
}

/** The reasons the factory cycles through (the plan tests count on this cycle of six). */
const FACTORY_SKIP_REASONS: readonly SkipReason[] = SKIP_REASONS.filter(
  (r) => r !== "corrupt" && r !== "invalid-name",
);

export function sha1Hex(text: string): string {
  return createHash("sha1").update(text).digest("hex");
}

function facts(i: number, minor: number, kind: "index" | "expunge"): FileFacts {
  const records = kind === "index" ? 10 + ((i * 37) % 500) : 1 + (i % 7);
  const oldStyle = minor === 10 ? i % 3 : records;
  return {
    minor,
    records,
    oldStyle,
    nullGuids: minor < 7 ? oldStyle : 0,
    oldStyleBytes: oldStyle * (2000 + (i % 11) * 1000),
    lastUid: records + 5 + (i % 13),
    uidValidity: 1_200_000_000 + i,
    ...(minor >= 8 ? { highestModseq: String(records * 3 + i) } : {}),
  };
}

function side(
  pair: string,
  name: string,
  which: string,
  i: number,
  minor: number,
  seed: string,
): SideFacts {
  const index = facts(i, minor, "index");
  return {
    index,
    ...(i % 3 === 0 ? { expunge: facts(i, minor, "expunge") } : {}),
    fingerprint: sha1Hex(`${seed}:${pair}:${name}:${which}`),
    planned: { records: index.records, digest: sha1Hex(`planned:${pair}:${name}:${which}`) },
    ...(i % 4 !== 1 ? { cached: Math.floor(index.oldStyle / ((i % 4) + 1)) } : {}),
  };
}

export function makeMailbox(i: number, opts: PlanFactoryOptions = {}): PlannedMailbox {
  const pair = opts.pair ?? "slot1";
  const name = `${opts.prefix ?? "user.u"}${String(i).padStart(6, "0")}`;
  const minor = [6, 7, 8, 9, 10][i % 5] as number;
  const actions: Action[] = minor === 10 ? ["guid"] : ["version", "guid"];
  const seed = opts.seed ?? "";
  return {
    name,
    ...(i % 5 === 2 ? { partition: "p2" } : {}),
    actions,
    master: side(pair, name, "master", i, minor, seed),
    replica: side(pair, name, "replica", i, minor, seed),
  };
}

export function makeSkipped(i: number): SkippedMailbox {
  const reason = FACTORY_SKIP_REASONS[i % FACTORY_SKIP_REASONS.length] as SkipReason;
  return {
    name: `user.s${String(i).padStart(6, "0")}`,
    reason,
    detail: `master: cyrus.index of user.s${i}: ${reason} (case ${i})`,
  };
}

/** A valid plan with `n` planned mailboxes (user.u000000 …) and opts.skipped skipped ones. */
export function makePlan(n: number, opts: PlanFactoryOptions = {}): Plan {
  const pair = opts.pair ?? "slot1";
  const mailboxes = Array.from({ length: n }, (_, i) => makeMailbox(i, opts));
  const skipped = Array.from({ length: opts.skipped ?? 0 }, (_, i) => makeSkipped(i));
  return {
    format: PLAN_FORMAT,
    id: opts.id ?? `${pair}-20250102T030405Z-a1b2c3`,
    created: opts.created ?? "2025-01-02T03:04:05.678Z",
    tool: opts.tool ?? "0.1.0",
    pair,
    target: opts.target ?? 10,
    hosts: {
      master: {
        host: "imap1.example.com",
        user: "cyrus",
        identityFile: "/home/op/.ssh/id_ed25519",
        config: "/etc/imapd.conf",
      },
      replica: {
        transport: "local",
        command: ["node", "/opt/guidup/main.js", "serve"],
        config: "/srv/replica/imapd.conf",
        name: "replica",
      },
    },
    summary: summarize(n + skipped.length + 3, mailboxes, skipped, 3),
    mailboxes,
    skipped,
  };
}
