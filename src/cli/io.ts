// What a command may touch of the outside world: its output streams. Commands
// write through this so tests can capture what they print.

export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Whether stdout is a terminal. */
  isTTY: boolean;
  /** Whether stderr is a terminal: progress is drawn live there (default: isTTY). */
  errIsTTY?: boolean;
  /** Resolves when `out` can take more without buffering (pipe backpressure). */
  drained: () => Promise<void>;
}

export const processIo: Io = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  isTTY: process.stdout.isTTY === true,
  errIsTTY: process.stderr.isTTY === true,
  drained: () =>
    process.stdout.writableNeedDrain
      ? new Promise((resolve) => process.stdout.once("drain", () => resolve()))
      : Promise.resolve(),
};
