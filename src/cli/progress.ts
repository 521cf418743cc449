// Progress for long commands: listr2 on a terminal (one task per pair, its
// output line updated in place), plain timestamped lines every few seconds
// otherwise (logs, CI, pipes), so a non-TTY run still shows it is alive.

import type { Io } from "./io.js";

/** Plain mode prints at most one line per this many milliseconds. */
const PLAIN_INTERVAL_MS = 2_000;

export type Update = (text: string) => void;

export interface ProgressTask<T> {
  title: string;
  run: (update: Update) => Promise<T>;
}

/** Runs the tasks concurrently, rendering their progress; resolves with their results in order. */
export async function withProgress<T>(io: Io, tasks: ProgressTask<T>[]): Promise<T[]> {
  if (!io.isTTY) return Promise.all(tasks.map((t) => runPlain(io, t)));
  // Loaded only for a terminal: it is most of a piped run's start-up otherwise.
  const { Listr } = await import("listr2");
  const results: T[] = new Array(tasks.length);
  const list = new Listr(
    tasks.map((t, i) => ({
      title: t.title,
      task: async (_ctx: unknown, task: { output: string }) => {
        results[i] = await t.run((text) => {
          task.output = text;
        });
      },
      rendererOptions: { persistentOutput: true, outputBar: 1 },
    })),
    { concurrent: true, exitOnError: true, rendererOptions: { collapseErrors: false } },
  );
  await list.run();
  return results;
}

async function runPlain<T>(io: Io, t: ProgressTask<T>): Promise<T> {
  let last = 0;
  let pending: string | undefined;
  const update: Update = (text) => {
    pending = text;
    const now = Date.now();
    if (now - last >= PLAIN_INTERVAL_MS) {
      last = now;
      io.err(`${t.title}: ${text}\n`);
      pending = undefined;
    }
  };
  const result = await t.run(update);
  if (pending !== undefined) io.err(`${t.title}: ${pending}\n`);
  return result;
}
