// The FIRST apply of a plan file at the 1M shape (issue #11: apply starts
// its first mailbox within a few seconds at any plan size). A plan file's
// first apply must know every entry good before it touches a mailbox: the
// plan as guidup wrote it proves that by its bodySha256 (one pass over the
// names hashes the body), the same plan without that line has every entry
// checked first — what every first apply did before the digest. Both are
// copies of the grown plan with a copy of its state, applied with --batch 1
// in alternation (the plan-checked marker removed before each run, so each
// run is a first one); figures per run: launch to the first mailbox (the
// startup timeline) and launch to exit.

import { createReadStream, createWriteStream } from "node:fs";
import { cp, open, rm } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { PLAN_CHECKED_FILE, stateDirFor } from "../src/apply/state-store.js";
import { type Goal, goalLine } from "./report.js";

export interface RunFigures {
  ms: number;
  maxRssBytes: number;
  cpuMs: number;
  /** "<ms> <step>" lines of the startup timeline. */
  timeline: string[];
}

type Run = (label: string, args: string[], okCodes: number[]) => Promise<RunFigures>;

const VARIANTS = ["bodySha256", "no digest"] as const;
type Variant = (typeof VARIANTS)[number];

/** `plan` without its header's bodySha256 line (a plan of a guidup before it). */
async function withoutDigest(plan: string, out: string): Promise<void> {
  const file = await open(plan, "r");
  let head: string;
  try {
    const buf = Buffer.alloc(1 << 16);
    const { bytesRead } = await file.read(buf, 0, buf.length, 0);
    head = buf.toString("latin1", 0, bytesRead);
  } finally {
    await file.close();
  }
  const m = /\nbodySha256: [^\n]*\n/.exec(head);
  if (!m) throw new Error(`${plan}: no bodySha256 line in its first 64 KiB`);
  const cut = m.index + 1;
  const w = createWriteStream(out);
  w.write(Buffer.from(head.slice(0, cut), "latin1"));
  await pipeline(createReadStream(plan, { start: cut + m[0].length - 1 }), w);
}

function firstMailboxMs(f: RunFigures): number | undefined {
  const line = f.timeline.find((l) => l.endsWith(" first mailbox begins"));
  return line === undefined ? undefined : Number(line.split(" ")[0]);
}

const s = (ms: number | undefined) => (ms === undefined ? "—" : `${(ms / 1000).toFixed(2)} s`);

/**
 * Runs the first applies of `big` (a grown plan with its state) `repeat`
 * times per variant, alternating; returns the lines to print and the goals.
 */
export async function firstApplies(
  big: string,
  repeat: number,
  run: Run,
): Promise<{ lines: string[]; goals: string[] }> {
  const files: Record<Variant, string> = {
    bodySha256: big.replace(/\.yaml$/, "-first.yaml"),
    "no digest": big.replace(/\.yaml$/, "-nodigest.yaml"),
  };
  await cp(big, files.bodySha256);
  await withoutDigest(big, files["no digest"]);
  for (const v of VARIANTS)
    await cp(stateDirFor(big), stateDirFor(files[v]), { recursive: true, force: true });
  const lines: string[] = [];
  const seen: Record<Variant, RunFigures[]> = { bodySha256: [], "no digest": [] };
  try {
    for (let r = 0; r < repeat; r++)
      for (const v of r % 2 === 0 ? [...VARIANTS].reverse() : VARIANTS) {
        await rm(`${stateDirFor(files[v])}/${PLAN_CHECKED_FILE}`, { force: true });
        const f = await run(
          `first apply --batch 1 (${v})`,
          ["apply", files[v], "--batch", "1"],
          [0, 1],
        );
        seen[v].push(f);
        lines.push(
          `      first apply, plan ${v === "bodySha256" ? "as guidup wrote it (bodySha256 matches)" : "without bodySha256 (every entry checked)"}: launch to first mailbox ${s(firstMailboxMs(f))}, to exit ${s(f.ms)}, peak RSS ${(f.maxRssBytes / 2 ** 20).toFixed(0)} MiB, CPU ${s(f.cpuMs)}`,
          `        timeline (ms since launch): ${f.timeline.join(" · ")}`,
        );
      }
  } finally {
    for (const v of VARIANTS) {
      await rm(files[v], { force: true });
      await rm(stateDirFor(files[v]), { recursive: true, force: true });
    }
  }
  const best = (v: Variant, of: (f: RunFigures) => number | undefined) =>
    Math.min(...seen[v].map((f) => of(f) ?? Number.POSITIVE_INFINITY));
  const first = best("bodySha256", firstMailboxMs);
  const firstBefore = best("no digest", firstMailboxMs);
  const exit = best("bodySha256", (f) => f.ms);
  const exitBefore = best("no digest", (f) => f.ms);
  lines.push(
    `      first apply, best of ${repeat}: launch to first mailbox ${s(first)} (without the digest ${s(firstBefore)}: ${(firstBefore / first).toFixed(1)}× faster), launch to exit ${s(exit)} (${s(exitBefore)}: ${(exitBefore / exit).toFixed(1)}×)`,
  );
  const goals: Goal[] = [
    {
      name: "first apply at 1M shape: launch to first mailbox",
      value: first / 1000,
      op: "<=",
      target: 5,
      unit: " s",
    },
    {
      name: "first apply at 1M shape: a batch of 1, launch to exit",
      value: exit / 1000,
      op: "<=",
      target: 5,
      unit: " s",
    },
  ];
  return { lines, goals: goals.map(goalLine) };
}
