// Lines of a file, read in 1 MiB chunks from a byte offset: the plan's
// streaming reader walks a plan of a million entries with this in flat
// memory. Each line carries its 1-based number and the byte offset where it
// starts, so a later pass can start again at a known line.

import { open } from "node:fs/promises";

export interface Line {
  text: string;
  /** 1-based. */
  number: number;
  /** Byte offset of the line's first character. */
  offset: number;
  /** Whether a newline ended it (false only for a last line without one). */
  terminated: boolean;
}

const CHUNK = 1 << 20;

/**
 * The lines of `path` from byte `start` (which must begin a line, numbered
 * `firstLine`). Stops early when the consumer stops (the file is closed).
 */
export async function* readLines(
  path: string,
  start = 0,
  firstLine = 1,
): AsyncGenerator<Line, void, undefined> {
  const file = await open(path, "r");
  try {
    let carry: Buffer = Buffer.alloc(0);
    let carryOffset = start;
    let position = start;
    let number = firstLine;
    const chunk = Buffer.allocUnsafe(CHUNK);
    for (;;) {
      const { bytesRead } = await file.read(chunk, 0, CHUNK, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const data = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk;
      const end = carry.length > 0 ? data.length : bytesRead;
      let from = 0;
      for (;;) {
        const nl = data.indexOf(10, from);
        if (nl < 0 || nl >= end) break;
        yield {
          text: data.toString("utf8", from, nl),
          number: number++,
          offset: carryOffset + from,
          terminated: true,
        };
        from = nl + 1;
      }
      // The unfinished tail is copied: `chunk` is reused by the next read.
      carry = Buffer.from(data.subarray(from, end));
      carryOffset += from;
    }
    if (carry.length > 0)
      yield { text: carry.toString("utf8"), number, offset: carryOffset, terminated: false };
  } finally {
    await file.close();
  }
}
