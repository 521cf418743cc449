// Lines of a file, read in 1 MiB chunks from a byte offset: the plan's
// streaming reader walks a plan of a million entries with this in flat
// memory. Each line carries its 1-based number and the byte offset where it
// starts, so a later pass can start again at a known line. Lines come in
// batches (one per chunk read): a million lines one await each cost more
// than reading them.

import { isAscii } from "node:buffer";
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
 * `firstLine`), a chunk's worth at a time. Stops early when the consumer
 * stops (the file is closed). One buffer is reused throughout: a line
 * longer than it grows it.
 */
export async function* readLineBatches(
  path: string,
  start = 0,
  firstLine = 1,
): AsyncGenerator<Line[], void, undefined> {
  const file = await open(path, "r");
  try {
    let buf = Buffer.allocUnsafe(2 * CHUNK);
    // buf[0, have) holds unread bytes; the first of them is at file offset `base`.
    let have = 0;
    let base = start;
    let position = start;
    let number = firstLine;
    for (;;) {
      if (buf.length - have < CHUNK) {
        const bigger = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(bigger, 0, 0, have);
        buf = bigger;
      }
      const { bytesRead } = await file.read(buf, have, CHUNK, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      have += bytesRead;
      const batch: Line[] = [];
      let from = 0;
      const whole = buf.subarray(0, have);
      if (isAscii(whole)) {
        // One decode for the chunk and a slice per line (characters are
        // bytes here): a million lines decoded one by one cost a second
        // more. A line's text shares the chunk's string while it lives;
        // what readers keep of a line (names, values) is parsed out of it
        // (JSON.parse, Number), a string of its own.
        const chunk = whole.toString("latin1");
        for (;;) {
          const nl = chunk.indexOf("\n", from);
          if (nl < 0) break;
          batch.push({
            text: chunk.slice(from, nl),
            number: number++,
            offset: base + from,
            terminated: true,
          });
          from = nl + 1;
        }
      } else
        for (;;) {
          const nl = buf.indexOf(10, from);
          if (nl < 0 || nl >= have) break;
          batch.push({
            text: buf.toString("utf8", from, nl),
            number: number++,
            offset: base + from,
            terminated: true,
          });
          from = nl + 1;
        }
      buf.copy(buf, 0, from, have);
      have -= from;
      base += from;
      if (batch.length > 0) yield batch;
    }
    if (have > 0)
      yield [{ text: buf.toString("utf8", 0, have), number, offset: base, terminated: false }];
  } finally {
    await file.close();
  }
}

/** readLineBatches one line at a time (short files, headers). */
export async function* readLines(
  path: string,
  start = 0,
  firstLine = 1,
): AsyncGenerator<Line, void, undefined> {
  for await (const batch of readLineBatches(path, start, firstLine)) yield* batch;
}
