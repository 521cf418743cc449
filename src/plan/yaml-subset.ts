// A fast reader and writer for the small part of YAML that plan files use.
//
// Why not the yaml library for everything: on a 100,000-mailbox plan (about
// 90 MB) its document model needs more than 4 GB of heap, and parsing entry by
// entry still takes about a minute. Plans are written by writePlan in a
// narrow style — block mappings and sequences, one-line flow lists and maps of
// scalars, plain or double-quoted strings, integers — and that style is read
// here in one pass over the text.
//
// The contract: parseYamlSubset either returns exactly what a YAML 1.2 parser
// (core schema) returns for the text, or says "unsupported", and the caller
// falls back to the yaml library. Anything outside the style — anchors, tags,
// block scalars, multi-line scalars, floats, duplicate keys, tabs — is
// unsupported rather than guessed at. Hand edits that stay in the style (and
// comments anywhere) keep the fast path.

import type { SourcePosition } from "./schema-check.js";
import { pointerChild } from "./schema-check.js";

/** Where each value and each mapping key starts, by JSON pointer; filled only when asked for. */
export interface SubsetPositions {
  /**
   * Record only these pointers (and the keys of their mappings); they must
   * include their ancestors. Undefined = all: fine for small files, a few
   * million map entries for a large plan.
   */
  wanted?: ReadonlySet<string>;
  values: Map<string, SourcePosition>;
  keys: Map<string, SourcePosition>;
}

function tracks(positions: SubsetPositions | undefined, pointer: string): boolean {
  return (
    positions !== undefined && (positions.wanted === undefined || positions.wanted.has(pointer))
  );
}

export type SubsetResult = { ok: true; value: unknown } | { ok: false; reason: string };

class Unsupported extends Error {}

// --- scalars, shared by reader and writer --------------------------------------

/** Characters of a plain (unquoted) string in this style; none is a YAML indicator inside a scalar. */
const PLAIN_CHAR = /[A-Za-z0-9._\-/^@+=~]/;
const PLAIN_STRING = /^[A-Za-z_/][A-Za-z0-9._\-/^@+=~]*$/;
/** Plain scalars that YAML 1.2's core schema reads as null or booleans (plus YAML 1.1's, for other readers). */
const SPECIAL_WORD =
  /^(null|Null|NULL|true|True|TRUE|false|False|FALSE|y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$/;
const INTEGER = /^-?(0|[1-9][0-9]*)$/;
const KEY = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** A string as this style writes it: plain when unambiguous, else a JSON (= YAML double-quoted) string. */
export function yamlString(value: string): string {
  if (PLAIN_STRING.test(value) && !SPECIAL_WORD.test(value)) return value;
  // JSON leaves DEL, C1 controls and a few invisible code points raw; YAML wants them escaped.
  return JSON.stringify(value).replace(
    /[\u007f-\u009f\u2028\u2029\ufeff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** A mapping key as this style writes it; keys outside the style are a bug of the writer. */
export function yamlKey(key: string): string {
  if (!KEY.test(key) || SPECIAL_WORD.test(key))
    throw new Error(`unsupported plan key ${JSON.stringify(key)}`);
  return key;
}

export function yamlScalar(value: string | number | boolean): string {
  if (typeof value === "string") return yamlString(value);
  if (typeof value === "number" && !Number.isSafeInteger(value))
    throw new Error(`unsupported plan number ${value}`);
  return String(value);
}

function resolvePlain(token: string): unknown {
  if (INTEGER.test(token)) {
    const n = Number(token);
    if (!Number.isSafeInteger(n) || token === "-0") throw new Unsupported("large integer");
    return n;
  }
  if (!/^[A-Za-z_/]/.test(token)) throw new Unsupported(`plain scalar "${token}"`);
  if (/^(true|True|TRUE)$/.test(token)) return true;
  if (/^(false|False|FALSE)$/.test(token)) return false;
  if (/^(null|Null|NULL)$/.test(token)) return null;
  return token;
}

// --- reader --------------------------------------------------------------------

interface Line {
  /** 1-based line number. */
  no: number;
  indent: number;
  /** The line after its indentation (for a compact "- key: v", after the "- "). */
  text: string;
  /** 1-based column where `text` starts. */
  col: number;
}

/** Parses `text` if it is in the plan style; with `positions`, records where each node is. */
export function parseYamlSubset(text: string, positions?: SubsetPositions): SubsetResult {
  if (/[\r\t\uFEFF]/.test(text)) return { ok: false, reason: "tab, CR or BOM" };
  try {
    const value = new SubsetParser(text, positions).document();
    return { ok: true, value };
  } catch (err) {
    if (err instanceof Unsupported) return { ok: false, reason: err.message };
    throw err;
  }
}

class SubsetParser {
  private offset = 0;
  private lineNo = 0;
  private current: Line | undefined;

  constructor(
    private readonly text: string,
    private readonly positions: SubsetPositions | undefined,
  ) {}

  document(): unknown {
    const first = this.peek();
    if (!first) return null;
    const value = this.block(first.indent, "");
    if (this.peek()) throw new Unsupported(`line ${this.peek()?.no}: unexpected indentation`);
    return value;
  }

  /** The next line that is neither blank nor only a comment. */
  private peek(): Line | undefined {
    while (!this.current && this.offset < this.text.length) {
      let end = this.text.indexOf("\n", this.offset);
      if (end < 0) end = this.text.length;
      const raw = this.text.slice(this.offset, end);
      this.offset = end + 1;
      this.lineNo++;
      let indent = 0;
      while (raw.charCodeAt(indent) === 32) indent++;
      const rest = raw.slice(indent);
      if (rest === "" || /^ *$/.test(rest) || rest.startsWith("#")) continue;
      this.current = { no: this.lineNo, indent, text: rest.trimEnd(), col: indent + 1 };
    }
    return this.current;
  }

  private advance(): void {
    this.current = undefined;
  }

  private mark(pointer: string, line: Line): void {
    if (tracks(this.positions, pointer))
      this.positions?.values.set(pointer, { line: line.no, col: line.col });
  }

  private block(indent: number, pointer: string): unknown {
    const line = this.peek() as Line;
    return isSeqItem(line.text) ? this.sequence(indent, pointer) : this.mapping(indent, pointer);
  }

  private mapping(indent: number, pointer: string): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.mark(pointer, this.peek() as Line);
    for (let line = this.peek(); line && line.indent >= indent; line = this.peek()) {
      if (line.indent > indent) throw new Unsupported(`line ${line.no}: unexpected indentation`);
      const m = /^([^\s:#]+):(?= |$)/.exec(line.text);
      const key = m?.[1];
      if (!m || key === undefined || !isPlainKey(key))
        throw new Unsupported(`line ${line.no}: not a simple "key: value"`);
      if (Object.hasOwn(out, key)) throw new Unsupported(`line ${line.no}: duplicate key ${key}`);
      const tracked = tracks(this.positions, pointer);
      const child = tracked ? pointerChild(pointer, key) : "";
      if (tracked) this.positions?.keys.set(child, { line: line.no, col: line.col });
      let at = m[0].length;
      if (isEmptyRest(line.text, at)) {
        this.advance();
        out[key] = this.nested(indent, child, true);
      } else {
        while (line.text.charCodeAt(at) === 32) at++;
        out[key] = this.inline(line, at, child);
      }
    }
    return out;
  }

  private sequence(indent: number, pointer: string): unknown[] {
    const out: unknown[] = [];
    this.mark(pointer, this.peek() as Line);
    for (let line = this.peek(); line && line.indent >= indent; line = this.peek()) {
      if (line.indent > indent) throw new Unsupported(`line ${line.no}: unexpected indentation`);
      if (!isSeqItem(line.text)) break;
      const child = tracks(this.positions, pointer) ? pointerChild(pointer, out.length) : "";
      let at = 1;
      while (line.text.charCodeAt(at) === 32) at++;
      if (isEmptyRest(line.text, at)) {
        this.advance();
        out.push(this.nested(indent, child, false));
      } else if (isSeqItem(line.text.slice(at)) || /^[^\s:#]+:(?= |$)/.test(line.text.slice(at))) {
        // "- key: v" / "- - v": the rest of the line opens a block at its column.
        line.indent += at;
        line.col += at;
        line.text = line.text.slice(at);
        out.push(this.block(line.indent, child));
      } else {
        out.push(this.inline(line, at, child));
      }
    }
    return out;
  }

  /** The value of "key:" or "-" with nothing after it on the line. */
  private nested(indent: number, pointer: string, sameIndentSeq: boolean): unknown {
    const line = this.peek();
    if (line && line.indent > indent) return this.block(line.indent, pointer);
    if (line && sameIndentSeq && line.indent === indent && isSeqItem(line.text))
      return this.sequence(indent, pointer);
    return null;
  }

  /** A scalar or one-line flow collection from `at` to the end of the line (bar a comment). */
  private inline(line: Line, at: number, pointer: string): unknown {
    const scanner = new Scanner(line, at, this.positions);
    const value = scanner.value(pointer, true);
    scanner.end();
    this.advance();
    return value;
  }
}

class Scanner {
  private readonly s: string;
  constructor(
    private readonly line: Line,
    private pos: number,
    private readonly positions: SubsetPositions | undefined,
  ) {
    this.s = line.text;
  }

  private fail(what: string): never {
    throw new Unsupported(`line ${this.line.no} column ${this.line.col + this.pos}: ${what}`);
  }

  private spaces(): void {
    while (this.s.charCodeAt(this.pos) === 32) this.pos++;
  }

  private mark(pointer: string, map: "values" | "keys" = "values"): void {
    this.positions?.[map].set(pointer, { line: this.line.no, col: this.line.col + this.pos });
  }

  private tracks(pointer: string): boolean {
    return tracks(this.positions, pointer);
  }

  /** Nothing but spaces and a comment may follow. */
  end(): void {
    const start = this.pos;
    this.spaces();
    if (this.pos === this.s.length) return;
    if (this.s[this.pos] === "#" && this.pos > start) return;
    this.fail("unexpected text after the value");
  }

  value(pointer: string, collections: boolean): unknown {
    if (this.tracks(pointer)) this.mark(pointer);
    const c = this.s[this.pos];
    if (c === '"') return this.doubleQuoted();
    if (c === "'") return this.singleQuoted();
    if (c === "[" || c === "{") {
      if (!collections) this.fail("nested flow collection");
      return c === "[" ? this.flowSequence(pointer) : this.flowMapping(pointer);
    }
    const start = this.pos;
    while (this.pos < this.s.length && PLAIN_CHAR.test(this.s[this.pos] as string)) this.pos++;
    if (this.pos === start) this.fail("not a scalar");
    return resolvePlain(this.s.slice(start, this.pos));
  }

  private doubleQuoted(): string {
    let j = this.pos + 1;
    while (j < this.s.length && this.s[j] !== '"') j += this.s[j] === "\\" ? 2 : 1;
    if (j >= this.s.length) this.fail("unterminated or multi-line string");
    const literal = this.s.slice(this.pos, j + 1);
    this.pos = j + 1;
    try {
      // JSON's escapes are a subset of YAML's, with the same meanings.
      return JSON.parse(literal) as string;
    } catch {
      return this.fail("string escape outside JSON's");
    }
  }

  private singleQuoted(): string {
    let j = this.pos + 1;
    for (;;) {
      if (j >= this.s.length) this.fail("unterminated or multi-line string");
      if (this.s[j] === "'") {
        if (this.s[j + 1] !== "'") break;
        j += 2;
      } else j++;
    }
    const value = this.s.slice(this.pos + 1, j).replace(/''/g, "'");
    this.pos = j + 1;
    return value;
  }

  private flowSequence(pointer: string): unknown[] {
    const out: unknown[] = [];
    this.pos++;
    this.spaces();
    if (this.s[this.pos] === "]") {
      this.pos++;
      return out;
    }
    for (;;) {
      this.spaces();
      const child = this.tracks(pointer) ? pointerChild(pointer, out.length) : "";
      out.push(this.value(child, false));
      this.spaces();
      const c = this.s[this.pos++];
      if (c === "]") return out;
      if (c !== ",") this.fail('expected "," or "]"');
    }
  }

  private flowMapping(pointer: string): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.pos++;
    this.spaces();
    if (this.s[this.pos] === "}") {
      this.pos++;
      return out;
    }
    for (;;) {
      this.spaces();
      const m = /^([^\s:,{}[\]#]+): /.exec(this.s.slice(this.pos, this.pos + 80));
      const key = m?.[1];
      if (!m || key === undefined || !isPlainKey(key)) this.fail("not a simple key");
      if (Object.hasOwn(out, key)) this.fail(`duplicate key ${key}`);
      const tracked = this.tracks(pointer);
      const child = tracked ? pointerChild(pointer, key) : "";
      if (tracked) this.mark(child, "keys");
      this.pos += m[0].length;
      this.spaces();
      out[key] = this.value(child, false);
      this.spaces();
      const c = this.s[this.pos++];
      if (c === "}") return out;
      if (c !== ",") this.fail('expected "," or "}"');
    }
  }
}

function isSeqItem(text: string): boolean {
  return text === "-" || text.startsWith("- ");
}

function isPlainKey(key: string): boolean {
  return KEY.test(key) && !SPECIAL_WORD.test(key) && key !== "__proto__";
}

/** Only spaces, or spaces then a comment, from `at` on. */
function isEmptyRest(text: string, at: number): boolean {
  const rest = text.slice(at);
  return rest === "" || /^ +(#.*)?$/.test(rest);
}
