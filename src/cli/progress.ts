// Progress for long commands. On a terminal: one live line (or a few) per
// task, redrawn in place at the bottom of stderr, with messages (notices)
// printed above it as they come. Otherwise (logs, CI, pipes): a plain line
// per task every few seconds, each starting with a UTC timestamp, so a
// non-TTY run still shows it is alive and when.
//
// The terminal view hides no cursor, switches no terminal mode and installs
// no signal handler: whatever ends the process, the terminal is left as it
// was. Signals are the commands' business (src/cli/interrupts.ts).

import type { Io } from "./io.js";

/** Plain mode prints at most one line per task per this many milliseconds. */
const PLAIN_INTERVAL_MS = 2_000;
/** Plain mode repeats an unchanged followed line after this long (a sign of life). */
const PLAIN_QUIET_MS = 60_000;
/** The terminal view redraws at most this often (and animates its spinner). */
const REDRAW_MS = 120;
const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Replaces a task's progress text (may hold "\n": several lines on a terminal). */
export type Update = (text: string) => void;
export interface ProgressTask<T> {
  title: string;
  /** `io` writes messages above the live lines (ProgressView.io). */
  run: (update: Update, io: Io) => Promise<T>;
}

/** A UTC timestamp for plain lines: 2026-12-05T10:59:01Z. */
export function timestamp(date = new Date()): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

/**
 * The bottom-of-screen view of a few tasks. `io` is what the command should
 * write its messages through while the view is live: its `err` becomes a
 * notice, so nothing scribbles over the live lines.
 */
export class ProgressView {
  readonly #base: Io;
  readonly #titles: string[];
  readonly #texts: string[];
  readonly #finished: boolean[];
  readonly #tty: boolean;
  readonly #lastPlain: number[];
  readonly #pendingPlain: (string | undefined)[];
  readonly #sources: ((() => string) | undefined)[];
  readonly #lastPlainText: (string | undefined)[];
  #plainTimer: NodeJS.Timeout | undefined;
  #drawn = 0;
  #frame = 0;
  #timer: NodeJS.Timeout | undefined;
  #ended = false;
  readonly io: Io;

  constructor(io: Io, titles: string[]) {
    this.#base = io;
    this.#titles = titles;
    this.#texts = titles.map(() => "");
    this.#finished = titles.map(() => false);
    this.#tty = io.errIsTTY ?? io.isTTY;
    this.#lastPlain = titles.map(() => 0);
    this.#pendingPlain = titles.map(() => undefined);
    this.#sources = titles.map(() => undefined);
    this.#lastPlainText = titles.map(() => undefined);
    this.io = { ...io, err: (text) => this.notice(text) };
    if (this.#tty) {
      this.#timer = setInterval(() => {
        this.#frame++;
        this.#draw();
      }, REDRAW_MS);
      this.#timer.unref();
      this.#draw();
    }
  }

  update(task: number, text: string): void {
    if (this.#ended) return;
    this.#texts[task] = text;
    if (this.#tty) return; // drawn on the next tick
    this.#pendingPlain[task] = text;
    const now = Date.now();
    if (now - (this.#lastPlain[task] ?? 0) >= PLAIN_INTERVAL_MS) this.#flushPlain(task, now);
  }

  /**
   * Makes `source` the task's text, asked for at every redraw (terminal) or
   * every 2 s (plain: printed when it changed, or after a quiet minute), so
   * a rate or a pause shows as time passes, not only when something happens.
   */
  follow(task: number, source: () => string): void {
    this.#sources[task] = source;
    if (this.#tty || this.#plainTimer) return;
    this.#plainTimer = setInterval(() => {
      const now = Date.now();
      this.#sources.forEach((src, i) => {
        if (!src) return;
        const text = src();
        if (text === this.#lastPlainText[i] && now - (this.#lastPlain[i] ?? 0) < PLAIN_QUIET_MS)
          return;
        this.#pendingPlain[i] = text;
        this.#flushPlain(i, now);
      });
    }, PLAIN_INTERVAL_MS);
    this.#plainTimer.unref();
  }

  /** Prints a message above the live lines (terminal) or as a line of its own (plain). */
  notice(text: string): void {
    if (!this.#tty || this.#ended) {
      this.#base.err(text);
      return;
    }
    this.#base.err(`${this.#clear()}${text.endsWith("\n") ? text : `${text}\n`}`);
    this.#drawn = 0;
    this.#draw();
  }

  /** Marks a task finished (its line stays, without a spinner). */
  finish(task: number): void {
    this.#finished[task] = true;
    if (!this.#tty) this.#flushPlain(task, Date.now());
  }

  /**
   * Draws the final lines and stops; later updates are ignored. `silent`:
   * erase the live lines and print nothing (the command failed before its
   * work began: its error alone is the output).
   */
  end(options: { silent?: boolean } = {}): void {
    if (this.#ended) return;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#plainTimer) clearInterval(this.#plainTimer);
    if (options.silent) {
      if (this.#tty && this.#drawn > 0) this.#base.err(this.#clear());
      this.#drawn = 0;
      this.#ended = true;
      return;
    }
    this.#sources.forEach((src, i) => {
      if (!src) return;
      const text = src();
      this.#texts[i] = text;
      // The last state once more, unless plain mode just printed exactly it.
      if (text !== this.#lastPlainText[i]) this.#pendingPlain[i] = text;
    });
    if (this.#tty) {
      this.#finished.fill(true);
      this.#draw();
    } else for (let i = 0; i < this.#titles.length; i++) this.#flushPlain(i, Date.now());
    this.#ended = true;
  }

  #flushPlain(task: number, now: number): void {
    const text = this.#pendingPlain[task];
    if (text === undefined) return;
    this.#pendingPlain[task] = undefined;
    this.#lastPlain[task] = now;
    this.#lastPlainText[task] = text;
    this.#base.err(
      `${timestamp(new Date(now))} ${this.#titles[task]}: ${text.replace(/\n/g, " · ")}\n`,
    );
  }

  /** Moves to the first live line and erases from there down. */
  #clear(): string {
    return this.#drawn > 0 ? `\r\x1b[${this.#drawn}F\x1b[J` : "\r\x1b[J";
  }

  #draw(): void {
    if (this.#ended) return;
    this.#sources.forEach((src, i) => {
      if (src) this.#texts[i] = src();
    });
    const width = Math.max(20, (process.stderr.columns ?? 100) - 1);
    const lines: string[] = [];
    this.#titles.forEach((title, i) => {
      const mark = this.#finished[i] ? "•" : SPINNER[this.#frame % SPINNER.length];
      const [first = "", ...more] = (this.#texts[i] ?? "").split("\n");
      lines.push(`${mark} ${title}${first ? `: ${first}` : ""}`);
      for (const m of more) lines.push(`    ${m}`);
    });
    const text = lines.map((l) => (l.length > width ? `${l.slice(0, width - 1)}…` : l));
    this.#base.err(`${this.#clear()}${text.join("\n")}\n`);
    this.#drawn = text.length;
  }
}

/**
 * Runs the tasks concurrently with a ProgressView; resolves with their
 * results in order. `onView` gets the view (to print notices through it).
 */
export async function withProgress<T>(
  io: Io,
  tasks: ProgressTask<T>[],
  onView?: (view: ProgressView) => void,
): Promise<T[]> {
  const view = new ProgressView(
    io,
    tasks.map((t) => t.title),
  );
  onView?.(view);
  try {
    return await Promise.all(
      tasks.map(async (t, i) => {
        const result = await t.run((text) => view.update(i, text), view.io);
        view.finish(i);
        return result;
      }),
    );
  } finally {
    view.end();
  }
}
