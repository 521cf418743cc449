// Line framing for the agent protocol: newline-delimited JSON in both
// directions. The reader is fed raw chunks as they arrive from a pipe or an
// SSH channel; chunk boundaries fall anywhere, including inside a multibyte
// UTF-8 character, so bytes are kept until a whole line is there and only then
// decoded. The length cap bounds what a misbehaving peer can make us buffer.
// Pure: no I/O, no timers.

import { ERRORS, type ErrorCode, GuidupError } from "../errors.js";

/** Default cap on one line: generous for a large scan reply, finite for a runaway peer. */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

/** A peer sent a line longer than the reader's cap (no newline within maxLineBytes). */
export class LineTooLongError extends GuidupError {
  readonly code: ErrorCode = ERRORS.lineTooLong.code;
}

export interface LineReaderOptions {
  /**
   * Longest line accepted, in bytes, not counting the "\n" (a CRLF peer's
   * "\r" does count). Checked as bytes arrive, so at most this much is held.
   */
  maxLineBytes?: number;
}

/**
 * Splits a byte stream into lines. `push` returns the lines completed by a
 * chunk; `end` returns what is left after the last newline. A trailing "\r"
 * is dropped from each line, so a CRLF peer is read the same as an LF one.
 * Empty lines are returned as "" (what they mean is the caller's business).
 * After a LineTooLongError the reader stays failed: the stream has lost its
 * framing and every later push throws the same error.
 */
export class LineReader {
  readonly maxLineBytes: number;
  /** Bytes after the last newline seen, in arrival order; joined only once a line completes. */
  private tail: Buffer[] = [];
  private tailBytes = 0;
  private failure: LineTooLongError | undefined;

  constructor(options: LineReaderOptions = {}) {
    const max = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`maxLineBytes must be a positive integer, got ${max}`);
    }
    this.maxLineBytes = max;
  }

  /** Feeds one chunk; returns the whole lines it completed (possibly none). */
  push(chunk: Buffer): string[] {
    if (this.failure !== undefined) throw this.failure;
    const last = chunk.lastIndexOf(NEWLINE);
    if (this.tailBytes === 0 && last !== -1 && last <= this.maxLineBytes) {
      // The usual case: the chunk starts a line and holds whole lines, none
      // of which can be too long (all of them together are not). Decode them
      // in one go and split the string: one decode per chunk, not per line.
      const lines = chunk.toString("utf8", 0, last).split("\n");
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i] as string;
        if (line.charCodeAt(line.length - 1) === CARRIAGE_RETURN) lines[i] = line.slice(0, -1);
      }
      if (last + 1 < chunk.length) this.keep(chunk.subarray(last + 1));
      return lines;
    }
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      this.checkLength(this.tailBytes + piece.length);
      lines.push(this.takeLine(piece));
      start = nl + 1;
    }
    if (start < chunk.length) this.keep(chunk.subarray(start));
    return lines;
  }

  /** Holds the start of a line not complete yet. */
  private keep(rest: Buffer): void {
    this.checkLength(this.tailBytes + rest.length);
    // Copy: a caller may reuse its buffer after push returns.
    this.tail.push(Buffer.from(rest));
    this.tailBytes += rest.length;
  }

  /**
   * Ends the stream: returns the bytes after the last newline as a line, or
   * undefined if the stream ended on a newline. The reader is empty afterwards.
   */
  end(): string | undefined {
    if (this.failure !== undefined) throw this.failure;
    if (this.tailBytes === 0) return undefined;
    return this.takeLine(Buffer.alloc(0));
  }

  /** Bytes held for the line in progress (for tests and diagnostics). */
  get pendingBytes(): number {
    return this.tailBytes;
  }

  /** Joins the held tail and `last` into one line, decodes it, and empties the tail. */
  private takeLine(last: Buffer): string {
    let bytes = this.tailBytes === 0 ? last : Buffer.concat([...this.tail, last]);
    this.tail = [];
    this.tailBytes = 0;
    if (bytes.length > 0 && bytes[bytes.length - 1] === CARRIAGE_RETURN) {
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    return bytes.toString("utf8");
  }

  private checkLength(bytes: number): void {
    if (bytes <= this.maxLineBytes) return;
    this.tail = [];
    this.tailBytes = 0;
    this.failure = new LineTooLongError(
      `peer sent a line longer than ${this.maxLineBytes} bytes; the stream is no longer framed`,
      { maxLineBytes: this.maxLineBytes },
    );
    throw this.failure;
  }
}

/** One protocol line: the JSON text of `obj` and a newline. */
export function encodeLine(obj: unknown): string {
  const text = JSON.stringify(obj);
  if (text === undefined) {
    throw new TypeError(`cannot encode ${typeof obj} as a protocol line`);
  }
  // JSON.stringify escapes control characters inside strings, so the only
  // newline is the one we add: the framing cannot be broken by content.
  return `${text}\n`;
}
