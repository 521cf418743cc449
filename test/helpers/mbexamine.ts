// A parser for the output of Cyrus 3.6 `mbexamine MAILBOX` as kept in the
// fixtures (`vNN/mbexamine.txt`). Only the lines the index holds are parsed:
// the index header block and, per record, the UID, INT_DATE/SENTDATE/SIZE,
// HDRSIZE/LASTUPD/SYSFLAGS/CACHEVER[/GUID][/MODSEQ] and USERFLAGS lines. Cache
// lines (Envel>, BdyStr>, …) are skipped.
//
// mbexamine prints what Cyrus 3.6 derived from the file, not always the bytes
// in it (e.g. HIGHESTMODSEQ 1 for v6/v7, whose headers have none); the
// fixtures test decides per field and version what can be compared.
//
// Anything unexpected throws, naming the mailbox and line: a format change in
// the fixtures must fail the tests, not silently compare less.

/** MAILBOX_OPTIONS names as mbexamine prints them (mailbox.h@2.3.16 `OPT_*`). */
const OPTION_BITS: Readonly<Record<string, number>> = {
  POP3_NEW_UIDL: 1 << 0,
  IMAP_CONDSTORE: 1 << 1,
  IMAP_SHAREDSEEN: 1 << 2,
  IMAP_DUPDELIVER: 1 << 3,
};

export interface MbexamineHeader {
  readonly generation: number;
  readonly minorVersion: number;
  readonly headerSize: number;
  readonly recordSize: number;
  /** "Number of Messages" */
  readonly exists: number;
  /** "Mailbox Size" (QUOTA_MAILBOX_USED) */
  readonly quotaUsed: bigint;
  readonly lastAppendDate: number;
  readonly uidValidity: number;
  readonly lastUid: number;
  readonly deleted: number;
  readonly answered: number;
  readonly flagged: number;
  /** "Mailbox Options" as bits (names mapped by OPTION_BITS). */
  readonly options: number;
  readonly pop3LastLogin: number;
  /** "Highest Mod Sequence", only where shown. */
  readonly highestModseq?: bigint;
}

export interface MbexamineRecord {
  readonly uid: number;
  readonly internalDate: number;
  readonly sentDate: number;
  /** 3.x only (no counterpart in a ≤ v10 index). */
  readonly saveDate: number;
  readonly size: number;
  readonly headerSize: number;
  readonly lastUpdated: number;
  readonly systemFlags: number;
  readonly cacheVersion: number;
  /** 40 hex digits, only where shown (not for v6). */
  readonly guid?: string;
  /** Only where shown (v8+). */
  readonly modseq?: bigint;
  /**
   * USER_FLAGS words in index order [0, 1, 2, 3]. mbexamine prints them from
   * word 3 down to word 0; this parser reverses them.
   */
  readonly userFlags: readonly [number, number, number, number];
}

export interface MbexamineMailbox {
  readonly name: string;
  /** "Path to mailbox", with `<spool>` for the spool root. */
  readonly path: string;
  readonly header: MbexamineHeader;
  readonly records: readonly MbexamineRecord[];
}

const EXAMINING = /^Examining (.+)\.\.\. Mailbox Header Info:$/;
const RECORD_LINE1 =
  /^\d+> UID:(\d+)\s+INT_DATE:(\d+)\s+SENTDATE:(\d+)\s+SAVEDATE:(\d+)\s+SIZE:(\d+)\s*$/;
const RECORD_LINE2 =
  /^\s+> HDRSIZE:(\d+)\s+LASTUPD :(\d+)\s+SYSFLAGS:([0-9a-f]{8})\s+> CACHEVER:(\d+)(?: GUID:([0-9a-f]{40}))?(?: MODSEQ:(\d+))?\s*$/;
const USERFLAGS_LINE =
  /^\s+> USERFLAGS: ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8})\s*$/;

/** Parses every mailbox block of an mbexamine output, in order. */
export function parseMbexamine(text: string): MbexamineMailbox[] {
  const lines = text.split("\n");
  const starts: number[] = [];
  lines.forEach((line, i) => {
    if (EXAMINING.test(line)) starts.push(i);
  });
  return starts.map((start, k) => parseMailbox(lines.slice(start, starts[k + 1] ?? lines.length)));
}

function parseMailbox(lines: string[]): MbexamineMailbox {
  const name = EXAMINING.exec(lines[0] ?? "")?.[1];
  if (name === undefined) throw new Error("mbexamine: block without an Examining line");
  const fail = (what: string): never => {
    throw new Error(`mbexamine ${name}: ${what}`);
  };
  const messageInfo = lines.indexOf(" Message Info:");
  if (messageInfo < 0) fail("no 'Message Info:' line");
  const headerLines = lines.slice(0, messageInfo);
  const find = (re: RegExp, what: string): RegExpExecArray => {
    for (const line of headerLines) {
      const m = re.exec(line);
      if (m) return m;
    }
    return fail(`no ${what} line`);
  };
  const num = (m: RegExpExecArray, i: number): number => Number(m[i]);

  const path = find(/^ {2}Path to mailbox: (.*)$/, "Path to mailbox")[1] as string;
  const gen = find(/^ {2}Generation Number: (\d+)$/, "Generation Number");
  const minor = find(/^ {2}Minor Version: (\d+)$/, "Minor Version");
  const sizes = find(/^ {2}Header Size: (\d+) bytes {2}Record Size: (\d+) bytes$/, "Header Size");
  const counts = find(
    /^ {2}Number of Messages: (\d+) {2}Mailbox Size: (\d+) bytes {2}Annotations Size: \d+ bytes$/,
    "Number of Messages",
  );
  const append = find(/^ {2}Last Append Date: \((\d+)\) /, "Last Append Date");
  const uids = find(/^ {2}UIDValidity: (\d+) {2}Last UID: (\d+)$/, "UIDValidity");
  const flags = find(/^ {2}Deleted: (\d+) {2}Answered: (\d+) {2}Flagged: (\d+)$/, "Deleted");
  const optionNames = find(/^ {2}Mailbox Options:(.*)$/, "Mailbox Options")[1] as string;
  const pop3 = find(/^ {2}Last POP3 Login: \((\d+)\) /, "Last POP3 Login");
  const modseqLine = headerLines.find((l) => l.startsWith("  Highest Mod Sequence: "));

  let options = 0;
  for (const option of optionNames.trim().split(/\s+/).filter(Boolean)) {
    const bit = OPTION_BITS[option];
    if (bit === undefined) fail(`unknown mailbox option ${option}`);
    options |= bit as number;
  }
  let highestModseq: bigint | undefined;
  if (modseqLine !== undefined) {
    const m = /^ {2}Highest Mod Sequence: (\d+)$/.exec(modseqLine);
    if (!m) fail(`bad line ${JSON.stringify(modseqLine)}`);
    highestModseq = BigInt((m as RegExpExecArray)[1] as string);
  }

  const header: MbexamineHeader = {
    generation: num(gen, 1),
    minorVersion: num(minor, 1),
    headerSize: num(sizes, 1),
    recordSize: num(sizes, 2),
    exists: num(counts, 1),
    quotaUsed: BigInt(counts[2] as string),
    lastAppendDate: num(append, 1),
    uidValidity: num(uids, 1),
    lastUid: num(uids, 2),
    deleted: num(flags, 1),
    answered: num(flags, 2),
    flagged: num(flags, 3),
    options,
    pop3LastLogin: num(pop3, 1),
    ...(highestModseq === undefined ? {} : { highestModseq }),
  };

  const records: MbexamineRecord[] = [];
  for (let i = messageInfo + 1; i < lines.length; i++) {
    const m1 = RECORD_LINE1.exec(lines[i] as string);
    if (!m1) {
      if (/^\d+> UID:/.test(lines[i] as string))
        fail(`bad record line ${JSON.stringify(lines[i])}`);
      continue;
    }
    const m2 = RECORD_LINE2.exec(lines[i + 1] ?? "");
    if (!m2) fail(`bad HDRSIZE line after UID ${m1[1]}: ${JSON.stringify(lines[i + 1])}`);
    const userFlagsLine = lines.slice(i + 2, i + 4).find((l) => USERFLAGS_LINE.test(l));
    const m3 = USERFLAGS_LINE.exec(userFlagsLine ?? "");
    if (!m3) fail(`no USERFLAGS line after UID ${m1[1]}`);
    const r2 = m2 as RegExpExecArray;
    const r3 = m3 as RegExpExecArray;
    const hex = (s: string | undefined): number => Number.parseInt(s as string, 16);
    records.push({
      uid: num(m1, 1),
      internalDate: num(m1, 2),
      sentDate: num(m1, 3),
      saveDate: num(m1, 4),
      size: num(m1, 5),
      headerSize: num(r2, 1),
      lastUpdated: num(r2, 2),
      systemFlags: hex(r2[3]),
      cacheVersion: num(r2, 4),
      ...(r2[5] === undefined ? {} : { guid: r2[5] }),
      ...(r2[6] === undefined ? {} : { modseq: BigInt(r2[6]) }),
      userFlags: [hex(r3[4]), hex(r3[3]), hex(r3[2]), hex(r3[1])],
    });
  }
  return { name, path, header, records };
}
