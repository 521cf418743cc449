// `cyrus.header`: the 115-byte magic, then either the 2.3 lines
// (`quotaroot TAB uniqueid`, user flag names, ACL) or the one-line dlist form
// `%(…)` that Cyrus 3.x writes (cyrus-2.3-spool.md section 6). guidup never
// changes this file; it reads it to find user flag names and the uniqueid,
// and a test-spool generator writes the 2.3 form.

import { CyrusFormatError } from "../errors.js";

/** MAILBOX_HEADER_MAGIC of mailbox.h@2.3.16, without a NUL. */
export const CYRUS_HEADER_MAGIC: Buffer = Buffer.concat([
  Buffer.from([0xa1, 0x02, 0x8b, 0x0d]),
  Buffer.from(
    'Cyrus mailbox header\n"The best thing about this system was that it had lots of goals."\n\t--Jim Morris on Andrew\n',
    "latin1",
  ),
]);

/** MAX_USER_FLAGS of 2.3: four u32 USER_FLAGS words in each index record. */
export const MAX_USER_FLAGS = 128;

export interface CyrusHeader {
  form: "2.3" | "dlist";
  /** Absent when the header names no quota root. */
  quotaRoot?: string;
  /** Absent in the old 2.3 form (no TAB); 2.3.16 then generates one on open. */
  uniqueId?: string;
  /** Index n is user flag n (USER_FLAGS bit n); "" marks an unused slot. No trailing unused slots. */
  userFlags: string[];
  /** In 2.3 form: `id TAB rights TAB …`. The dlist `A` list is converted to the same form. */
  acl?: string;
  /** The mailbox name, only recorded in the dlist form (`N`). */
  name?: string;
}

/** What encodeCyrusHeader23 writes. */
export interface CyrusHeader23Fields {
  quotaRoot?: string;
  /** Omitted: the old form without TAB, as written before uniqueids existed. */
  uniqueId?: string;
  /** "" leaves a slot unused (an extra SPACE), so later flags keep their bit numbers. */
  userFlags: readonly string[];
  acl?: string;
}

function headerError(file: string, why: string): CyrusFormatError {
  return new CyrusFormatError(`${file}: not a Cyrus mailbox header: ${why}`, { file });
}

function withoutTrailingEmpty(flags: string[]): string[] {
  let end = flags.length;
  while (end > 0 && flags[end - 1] === "") end--;
  return flags.slice(0, end);
}

/** Parses a whole `cyrus.header` file. Throws CyrusFormatError naming `file`. */
export function parseCyrusHeader(buf: Buffer, file: string): CyrusHeader {
  if (buf.length < CYRUS_HEADER_MAGIC.length) throw headerError(file, "shorter than the magic");
  if (!buf.subarray(0, CYRUS_HEADER_MAGIC.length).equals(CYRUS_HEADER_MAGIC)) {
    throw headerError(file, "bad magic");
  }
  // Names, flags and ACL identifiers are bytes to Cyrus; UTF-8 covers what
  // 2.3 allows (ASCII) and keeps any 8-bit identifier readable.
  const body = buf.subarray(CYRUS_HEADER_MAGIC.length).toString("utf8");
  if (body.startsWith("%")) {
    const eol = body.indexOf("\n");
    if (eol === -1) throw headerError(file, "dlist line not terminated by LF");
    return parseDlistHeader(body.slice(0, eol), file);
  }
  return parse23Header(body, file);
}

/** The 2.3 form: three LF-terminated lines, read like 2.3.16's `mailbox_read_header`. */
function parse23Header(body: string, file: string): CyrusHeader {
  const lines = body.split("\n");
  // Three terminated lines means at least four pieces after the split.
  if (lines.length < 4) throw headerError(file, "truncated (expected quota, flag and ACL lines)");
  const quotaLine = lines[0] ?? "";
  const flagLine = lines[1] ?? "";
  const aclLine = lines[2] ?? "";

  const header: CyrusHeader = { form: "2.3", userFlags: [], acl: aclLine };
  const tab = quotaLine.indexOf("\t");
  const quotaRoot = tab === -1 ? quotaLine : quotaLine.slice(0, tab);
  if (quotaRoot !== "") header.quotaRoot = quotaRoot;
  if (tab !== -1) {
    const uniqueId = quotaLine.slice(tab + 1);
    if (uniqueId === "") throw headerError(file, "TAB but no uniqueid");
    header.uniqueId = uniqueId;
  }

  // Each name is followed by one SPACE; empty words are unused slots.
  const flags = withoutTrailingEmpty(flagLine.split(" "));
  if (flags.length > MAX_USER_FLAGS) {
    throw headerError(file, `${flags.length} user flags, at most ${MAX_USER_FLAGS}`);
  }
  header.userFlags = flags;
  return header;
}

// --- dlist form ----------------------------------------------------------
//
// The subset of Cyrus's dlist text syntax a header line uses: `%(key value
// …)` maps, `(value …)` lists, atoms, `NIL` and "quoted" strings with `\`
// escapes. Literals (`{n}` + CRLF) cannot appear: Cyrus 3.x itself only
// reads the header up to the first LF.

type DlistValue = string | null | DlistValue[] | DlistMap;
interface DlistMap {
  kind: "map";
  entries: [string, DlistValue][];
}

class DlistReader {
  private pos = 0;
  constructor(
    private readonly text: string,
    private readonly file: string,
  ) {}

  fail(why: string): CyrusFormatError {
    return headerError(this.file, `dlist: ${why} at offset ${this.pos}`);
  }

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  private peek(): string | undefined {
    return this.text[this.pos];
  }

  private skipSpaces(): void {
    while (this.peek() === " ") this.pos++;
  }

  value(): DlistValue {
    const ch = this.peek();
    if (ch === undefined) throw this.fail("unexpected end");
    if (ch === "%") {
      if (this.text[this.pos + 1] !== "(") throw this.fail("unsupported '%' item");
      this.pos += 2;
      return this.map();
    }
    if (ch === "(") {
      this.pos++;
      return this.list();
    }
    if (ch === '"') return this.quoted();
    if (ch === "{") throw this.fail("literal not supported in a header line");
    const atom = this.atom();
    return atom === "NIL" ? null : atom;
  }

  private atom(): string {
    const start = this.pos;
    while (!this.atEnd() && !' ()"'.includes(this.peek() as string)) this.pos++;
    if (this.pos === start) throw this.fail("expected a value");
    return this.text.slice(start, this.pos);
  }

  private quoted(): string {
    this.pos++;
    let out = "";
    for (;;) {
      const ch = this.peek();
      if (ch === undefined) throw this.fail("unterminated quoted string");
      this.pos++;
      if (ch === '"') return out;
      if (ch === "\\") {
        const next = this.peek();
        if (next === undefined) throw this.fail("unterminated quoted string");
        this.pos++;
        out += next;
      } else {
        out += ch;
      }
    }
  }

  private list(): DlistValue[] {
    const items: DlistValue[] = [];
    for (;;) {
      this.skipSpaces();
      if (this.peek() === ")") {
        this.pos++;
        return items;
      }
      if (this.atEnd()) throw this.fail("unexpected end");
      items.push(this.value());
    }
  }

  private map(): DlistMap {
    const entries: [string, DlistValue][] = [];
    for (;;) {
      this.skipSpaces();
      if (this.peek() === ")") {
        this.pos++;
        return { kind: "map", entries };
      }
      if (this.atEnd()) throw this.fail("unexpected end");
      // Keys are written raw, up to the SPACE before the value.
      const start = this.pos;
      while (!this.atEnd() && this.peek() !== " " && this.peek() !== ")") this.pos++;
      const key = this.text.slice(start, this.pos);
      if (key === "") throw this.fail("empty key");
      if (this.peek() !== " ") throw this.fail(`key ${key} without a value`);
      this.pos++;
      entries.push([key, this.value()]);
    }
  }
}

function isMap(v: DlistValue): v is DlistMap {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** The dlist form, keys as 3.x `parseentry_cb` reads them: T N I Q A U. */
function parseDlistHeader(line: string, file: string): CyrusHeader {
  const reader = new DlistReader(line, file);
  const top = reader.value();
  if (!reader.atEnd()) throw reader.fail("text after the closing ')'");
  if (!isMap(top)) throw headerError(file, "dlist line is not a %(…) map");

  const header: CyrusHeader = { form: "dlist", userFlags: [] };
  const str = (key: string, v: DlistValue): string | undefined => {
    if (v === null) return undefined;
    if (typeof v !== "string") throw headerError(file, `dlist: ${key} is not a string`);
    return v;
  };
  for (const [key, v] of top.entries) {
    switch (key) {
      case "N": {
        const name = str(key, v);
        if (name !== undefined) header.name = name;
        break;
      }
      case "I": {
        const uniqueId = str(key, v);
        if (uniqueId !== undefined) header.uniqueId = uniqueId;
        break;
      }
      case "Q": {
        const quotaRoot = str(key, v);
        if (quotaRoot !== undefined && quotaRoot !== "") header.quotaRoot = quotaRoot;
        break;
      }
      case "A": {
        if (!isMap(v)) throw headerError(file, "dlist: A is not a %(…) map");
        // Same string as the 2.3 ACL line and mailboxes.db: `id TAB rights TAB …`.
        header.acl = v.entries.map(([id, rights]) => `${id}\t${str(id, rights) ?? ""}\t`).join("");
        break;
      }
      case "U": {
        if (!Array.isArray(v)) throw headerError(file, "dlist: U is not a list");
        const flags = withoutTrailingEmpty(v.map((f) => str("U", f) ?? ""));
        if (flags.length > MAX_USER_FLAGS) {
          throw headerError(file, `${flags.length} user flags, at most ${MAX_USER_FLAGS}`);
        }
        header.userFlags = flags;
        break;
      }
      default:
        // T (mailbox type) and keys of later releases say nothing guidup needs.
        break;
    }
  }
  return header;
}

/** Refuses a field value that would break the line structure of the file. */
function checkField(what: string, value: string, forbidden: RegExp): void {
  if (forbidden.test(value)) {
    throw new CyrusFormatError(`cannot write cyrus.header: ${what} ${JSON.stringify(value)}`);
  }
}

/**
 * Encodes a header in the 2.3 form, byte for byte as 2.3.16's
 * `mailbox_write_header` would (each flag name followed by one SPACE).
 */
export function encodeCyrusHeader23(fields: CyrusHeader23Fields): Buffer {
  const quotaRoot = fields.quotaRoot ?? "";
  checkField("quota root", quotaRoot, /[\t\n\0]/);
  let quotaLine = quotaRoot;
  if (fields.uniqueId !== undefined) {
    checkField("uniqueid", fields.uniqueId, /^$|[\t\n\0]/);
    quotaLine += `\t${fields.uniqueId}`;
  }
  if (fields.userFlags.length > MAX_USER_FLAGS) {
    throw new CyrusFormatError(
      `cannot write cyrus.header: ${fields.userFlags.length} user flags, at most ${MAX_USER_FLAGS}`,
    );
  }
  for (const flag of fields.userFlags) checkField("user flag", flag, /[ \t\n\0]/);
  const acl = fields.acl ?? "";
  checkField("ACL", acl, /[\n\0]/);
  const flagLine = fields.userFlags.map((f) => `${f} `).join("");
  return Buffer.concat([
    CYRUS_HEADER_MAGIC,
    Buffer.from(`${quotaLine}\n${flagLine}\n${acl}\n`, "utf8"),
  ]);
}
