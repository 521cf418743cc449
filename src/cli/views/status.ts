// How guidup status shows where applies stand: a human view (a block per
// plan, then fleet totals when there are several) and a JSON one (one
// plan: its object; several: {"plans": [...], "fleet": {...}}).

import type { PairStatus } from "../../apply/pair-status.js";
import { PHASES, type Phase } from "../../apply/state.js";
import { ExitCode } from "../../errors.js";
import type { Io } from "../io.js";
import { formatLockHold } from "../lock-hold.js";

export interface StatusEntry {
  status: PairStatus;
  exitCode: ExitCode;
  /** Planned mailboxes before --only. */
  planned: number;
  filtered: boolean;
}

export interface StatusView {
  show(entries: readonly StatusEntry[]): void;
}

export function statusView(io: Io, json: boolean): StatusView {
  return json ? new StatusJsonView(io) : new StatusHumanView(io);
}

/** Fleet totals over several plans. */
export function fleetStatus(entries: readonly StatusEntry[]) {
  const counts = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  for (const e of entries) for (const p of PHASES) counts[p] += e.status.counts[p];
  return {
    plans: entries.length,
    running: entries.filter((e) => e.status.running !== null).length,
    total: entries.reduce((n, e) => n + e.status.total, 0),
    counts,
  };
}

class StatusJsonView implements StatusView {
  constructor(private readonly io: Io) {}

  show(entries: readonly StatusEntry[]): void {
    const body =
      entries.length === 1
        ? entries[0]?.status
        : { plans: entries.map((e) => e.status), fleet: fleetStatus(entries) };
    this.io.out(`${JSON.stringify(body, null, 2)}\n`);
  }
}

class StatusHumanView implements StatusView {
  constructor(private readonly io: Io) {}

  show(entries: readonly StatusEntry[]): void {
    entries.forEach((e, i) => {
      if (i > 0) this.io.out("\n");
      this.#one(e);
    });
    if (entries.length < 2) return;
    const f = fleetStatus(entries);
    const byPhase = PHASES.filter((p) => f.counts[p] > 0).map((p) => `${p} ${f.counts[p]}`);
    this.io.out(
      `\nfleet: ${f.plans} plans, ${f.total} planned mailboxes${f.running > 0 ? `, ${f.running} being applied now` : ""}: ${byPhase.join(", ") || "nothing planned"}\n`,
    );
  }

  #one({ status: s, exitCode, planned, filtered }: StatusEntry): void {
    const io = this.io;
    const of = filtered ? ` of ${planned}, matching --only` : "";
    io.out(`${s.plan} (pair ${s.pair}, ${s.total} planned mailboxes${of})\n`);
    if (s.running) io.out(`  an apply of this plan is running: ${s.running}\n`);
    for (const p of PHASES) if (s.counts[p] > 0) io.out(`  ${p.padEnd(13)} ${s.counts[p]}\n`);
    const locks = formatLockHold(s.lockHoldMs);
    if (locks) io.out(`  ${locks} (of ${s.lockHoldMs.master?.n ?? 0} done)\n`);
    const pathList = Object.entries(s.paths).map(([k, v]) => `${k} ${v}`);
    if (pathList.length > 0) io.out(`  cut-over paths: ${pathList.join(", ")}\n`);
    if (s.mailboxes.length > 0) {
      io.out("\nneed attention:\n");
      for (const a of s.mailboxes)
        io.out(
          `  ${a.phase.padEnd(13)} ${a.name}${a.step ? ` [${a.step}]` : ""}: ${a.error ?? ""}\n`,
        );
    }
    if (exitCode === ExitCode.replicaAhead)
      io.out(`\nreplica-ahead mailboxes: run guidup apply ${s.plan} (it repairs them first)\n`);
    else if (exitCode === ExitCode.incomplete)
      io.out(
        `\nlook at the errors above; then guidup apply ${s.plan} retries them (stale ones need a new plan, or --allow-drift)\n`,
      );
  }
}
