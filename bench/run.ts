// `npm run bench`: every benchmark, one after the other, each in its own
// child process with its default options, then a summary. A benchmark whose
// source (bench/<name>.ts) is not in the repository is skipped with a note.
//
// Run: `node dist/bench/run.js [--only NAME]` (NAME: codec, hash, lock-hold,
// hash-apply, plan, apply, fleet, live, scale; or one not in the default set:
// million). Exit code 1 when any benchmark run failed.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** In the order they run. */
export const BENCHES = [
  "codec",
  "hash",
  "lock-hold",
  "hash-apply",
  "plan",
  "apply",
  "fleet",
  "live",
  "scale",
] as const;

/**
 * Run only when named with --only: million (bench/scale-million.ts) takes
 * well over ten minutes and most of the machine's spare memory.
 */
export const ONLY_ON_REQUEST = ["million"] as const;

type BenchName = (typeof BENCHES)[number] | (typeof ONLY_ON_REQUEST)[number];

/** A benchmark's source file when it is not bench/<name>.ts. */
const SOURCE_OF: Partial<Record<BenchName, string>> = {
  live: "live-traffic",
  million: "scale-million",
};

interface Outcome {
  name: string;
  status: "ok" | "failed" | "skipped";
  seconds: number;
  note?: string;
}

function runChild(file: string): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file], { stdio: "inherit" });
    child.on("error", reject);
    child.on("close", (code, signal) => resolve(signal ? 128 : code));
  });
}

export async function runBenches(only?: string): Promise<Outcome[]> {
  const names = only === undefined ? [...BENCHES] : [only];
  const outcomes: Outcome[] = [];
  for (const name of names) {
    // This file is dist/bench/run.js: the sources are ../../bench/, the
    // compiled benchmarks sit beside it.
    const file = SOURCE_OF[name as BenchName] ?? name;
    const source = fileURLToPath(new URL(`../../bench/${file}.ts`, import.meta.url));
    const compiled = fileURLToPath(new URL(`./${file}.js`, import.meta.url));
    if (!existsSync(source)) {
      console.log(`\n=== ${name}: skipped (bench/${file}.ts is not in this repository)`);
      outcomes.push({ name, status: "skipped", seconds: 0, note: "no source" });
      continue;
    }
    if (!existsSync(compiled)) {
      console.log(`\n=== ${name}: skipped (${compiled} missing: run npx tsc -p tsconfig.json)`);
      outcomes.push({ name, status: "skipped", seconds: 0, note: "not built" });
      continue;
    }
    console.log(`\n=== ${name}: node ${compiled}`);
    const t0 = Date.now();
    const code = await runChild(compiled);
    const seconds = (Date.now() - t0) / 1000;
    outcomes.push(
      code === 0
        ? { name, status: "ok", seconds }
        : { name, status: "failed", seconds, note: `exit ${code}` },
    );
  }
  console.log("\n=== summary");
  for (const o of outcomes)
    console.log(
      `  ${o.name.padEnd(11)} ${o.status.padEnd(8)} ${o.seconds.toFixed(1).padStart(7)} s${o.note ? `  (${o.note})` : ""}`,
    );
  return outcomes;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { only: { type: "string" } } });
  const known: readonly string[] = [...BENCHES, ...ONLY_ON_REQUEST];
  if (values.only !== undefined && !known.includes(values.only)) {
    console.error(`--only: unknown benchmark "${values.only}" (have: ${known.join(", ")})`);
    process.exit(2);
  }
  const outcomes = await runBenches(values.only);
  process.exitCode = outcomes.some((o) => o.status === "failed") ? 1 : 0;
}
