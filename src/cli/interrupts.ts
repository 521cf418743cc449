// How a long command answers SIGINT (Ctrl-C at a terminal) and SIGTERM.
//
// The first signal asks it to stop: start nothing new, let what is in flight
// finish (apply: a mailbox finishes or rolls back, state is written). The
// second asks it to hurry: abort what is in flight, which then rolls back
// what it can; the command still ends normally and reports what it left.
// Later ones only say that it is still stopping. The process is never exited
// from here: the command returns, and src/cli/main.ts exits (130).
//
// While installed, these handlers replace Node's default (die at once), and
// no library is allowed one of its own: a progress renderer that exits the
// process on SIGINT (listr2 did, with 127) left mailboxes in-progress at the
// replica-ahead step.

import type { Io } from "./io.js";

export interface InterruptHandlers {
  /** The first signal; returns the message to print. */
  first(name: string): string;
  /** The second signal; returns the message to print. */
  second(name: string): string;
}

export interface Interrupts {
  /** Aborted by the first signal. */
  readonly stop: AbortSignal;
  /** Aborted by the second signal. */
  readonly hurry: AbortSignal;
  /** Removes the handlers (Node's defaults apply again). */
  uninstall(): void;
}

/** Ctrl-C at a terminal is SIGINT; name it the way the operator typed it. */
export function signalName(signal: NodeJS.Signals, io: Io): string {
  return signal === "SIGINT" && (io.errIsTTY ?? io.isTTY) ? "Ctrl-C" : signal;
}

/** Installs SIGINT and SIGTERM handlers; `say` prints (through the progress view when live). */
export function installInterrupts(
  say: () => (text: string) => void,
  io: Io,
  handlers: InterruptHandlers,
): Interrupts {
  const stop = new AbortController();
  const hurry = new AbortController();
  let count = 0;
  const on = (signal: NodeJS.Signals) => {
    count++;
    const name = signalName(signal, io);
    if (count === 1) {
      say()(`\n${handlers.first(name)}\n`);
      stop.abort();
    } else if (count === 2) {
      say()(`\n${handlers.second(name)}\n`);
      hurry.abort();
    } else say()(`${name}: still stopping; the report follows when the agents are gone\n`);
  };
  const sigint = () => on("SIGINT");
  const sigterm = () => on("SIGTERM");
  process.on("SIGINT", sigint);
  process.on("SIGTERM", sigterm);
  return {
    stop: stop.signal,
    hurry: hurry.signal,
    uninstall: () => {
      process.off("SIGINT", sigint);
      process.off("SIGTERM", sigterm);
    },
  };
}
