import { describe, expect, it } from "vitest";
import {
  DEFAULT_MAX_LINE_BYTES,
  encodeLine,
  LineReader,
  LineTooLongError,
} from "../../src/protocol/framing.js";

/** Feeds `bytes` to a fresh reader cut at the given offsets; returns all lines and the end remainder. */
function feedInPieces(bytes: Buffer, cuts: number[], maxLineBytes?: number) {
  const reader = new LineReader(maxLineBytes === undefined ? {} : { maxLineBytes });
  const lines: string[] = [];
  let prev = 0;
  for (const cut of [...cuts, bytes.length]) {
    lines.push(...reader.push(bytes.subarray(prev, cut)));
    prev = cut;
  }
  return { lines, rest: reader.end() };
}

describe("LineReader", () => {
  it("splits on newlines and keeps the partial tail for the next chunk", () => {
    const reader = new LineReader();
    expect(reader.push(Buffer.from('{"a":1}\n{"b"'))).toEqual(['{"a":1}']);
    expect(reader.pendingBytes).toBe(4);
    expect(reader.push(Buffer.from(":2}\n\n"))).toEqual(['{"b":2}', ""]);
    expect(reader.end()).toBeUndefined();
  });

  it("decodes multibyte characters cut at every possible chunk boundary", () => {
    // 2-, 3- and 4-byte UTF-8 sequences, one line each plus one spanning all.
    const text = "é\n€uro\n🦀 crab\nGrüße aus Köln — 日本 🎉\n";
    const bytes = Buffer.from(text, "utf8");
    const expected = text.split("\n").slice(0, -1);
    for (let cut = 0; cut <= bytes.length; cut++) {
      expect(feedInPieces(bytes, [cut]).lines).toEqual(expected);
    }
    // One byte at a time: every character is split across chunks.
    const oneByOne = feedInPieces(
      bytes,
      Array.from({ length: bytes.length }, (_, i) => i),
    );
    expect(oneByOne.lines).toEqual(expected);
  });

  it("tolerates CRLF, also when the CR and LF arrive in different chunks", () => {
    const bytes = Buffer.from("one\r\ntwo\r\nthree\n");
    for (let cut = 0; cut <= bytes.length; cut++) {
      expect(feedInPieces(bytes, [cut]).lines).toEqual(["one", "two", "three"]);
    }
  });

  it("keeps a CR that is not at the end of the line", () => {
    expect(new LineReader().push(Buffer.from("a\rb\n"))).toEqual(["a\rb"]);
  });

  it("returns an unterminated last line from end()", () => {
    const reader = new LineReader();
    expect(reader.push(Buffer.from("x\ny"))).toEqual(["x"]);
    expect(reader.end()).toBe("y");
    expect(reader.end()).toBeUndefined();
  });

  it("accepts a line of exactly maxLineBytes and refuses one byte more", () => {
    expect(feedInPieces(Buffer.from("12345\n"), [2], 5).lines).toEqual(["12345"]);
    expect(() => feedInPieces(Buffer.from("123456\n"), [3], 5)).toThrow(LineTooLongError);
  });

  it("refuses an overlong line before its newline arrives, without buffering it", () => {
    const reader = new LineReader({ maxLineBytes: 10 });
    reader.push(Buffer.from("12345678"));
    let caught: unknown;
    try {
      reader.push(Buffer.from("901"));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(LineTooLongError);
    expect((caught as LineTooLongError).code).toBe("line-too-long");
    expect((caught as Error).message).toMatch(/longer than 10 bytes/);
    expect(reader.pendingBytes).toBe(0);
    // The stream has lost its framing: the reader stays failed.
    expect(() => reader.push(Buffer.from("\nok\n"))).toThrow(LineTooLongError);
  });

  it("counts the cap per line, not per chunk", () => {
    const lines = new LineReader({ maxLineBytes: 4 }).push(Buffer.from("abcd\nefgh\nijkl\n"));
    expect(lines).toEqual(["abcd", "efgh", "ijkl"]);
  });

  it("defaults to a 64 MiB cap and rejects nonsense caps", () => {
    expect(new LineReader().maxLineBytes).toBe(64 * 1024 * 1024);
    expect(DEFAULT_MAX_LINE_BYTES).toBe(64 * 1024 * 1024);
    expect(() => new LineReader({ maxLineBytes: 0 })).toThrow(RangeError);
  });

  it("gives the same lines whole-chunk and byte by byte, for any cut (CR, LF, multibyte, long lines)", () => {
    // A chunk holding many whole lines takes the one-decode path; a chunk
    // continuing a line takes the per-line path. Both must agree everywhere.
    const text = `a\r\n\n€😀x\r\r\n${"z".repeat(40)}\nü\n\r\nend`;
    const bytes = Buffer.from(text, "utf8");
    const expected = text.split("\n").map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
    const whole = feedInPieces(bytes, []);
    expect([...whole.lines, whole.rest]).toEqual(expected);
    for (let cut = 1; cut < bytes.length; cut++) {
      const got = feedInPieces(bytes, [cut]);
      expect([...got.lines, got.rest], `cut at ${cut}`).toEqual(expected);
    }
    const bytewise = feedInPieces(
      bytes,
      Array.from({ length: bytes.length - 1 }, (_, i) => i + 1),
    );
    expect([...bytewise.lines, bytewise.rest]).toEqual(expected);
  });

  it("checks the cap per line when a chunk holds whole lines longer than the cap", () => {
    const reader = new LineReader({ maxLineBytes: 8 });
    expect(reader.push(Buffer.from("12345678\n1\n"))).toEqual(["12345678", "1"]);
    const strict = new LineReader({ maxLineBytes: 8 });
    expect(() => strict.push(Buffer.from("1\n123456789\n"))).toThrow(LineTooLongError);
  });

  it("does not let a caller's reused buffer corrupt the held tail", () => {
    const reader = new LineReader();
    const chunk = Buffer.from("abc");
    reader.push(chunk);
    chunk.write("zzz");
    expect(reader.push(Buffer.from("\n"))).toEqual(["abc"]);
  });
});

describe("encodeLine", () => {
  it("is JSON plus one newline, with newlines inside strings escaped", () => {
    const line = encodeLine({ op: "scan", name: "user.a\nb", n: 1 });
    expect(line).toBe('{"op":"scan","name":"user.a\\nb","n":1}\n');
    expect(line.indexOf("\n")).toBe(line.length - 1);
    expect(JSON.parse(line)).toEqual({ op: "scan", name: "user.a\nb", n: 1 });
  });

  it("round-trips through LineReader", () => {
    const objs = [
      { id: 1, s: "Grüße 🦀" },
      { id: 2, s: "\r\n\u2028" },
    ];
    const bytes = Buffer.from(objs.map(encodeLine).join(""), "utf8");
    const { lines } = feedInPieces(bytes, [7, 13]);
    expect(lines.map((l) => JSON.parse(l))).toEqual(objs);
  });

  it("refuses values that have no JSON text", () => {
    expect(() => encodeLine(undefined)).toThrow(TypeError);
  });
});
