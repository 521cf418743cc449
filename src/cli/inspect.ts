// guidup inspect FILE [--json]: prints an index or expunge file, header then
// one line per record, like Cyrus's mbexamine. Reads only, takes no lock.

import type { FieldValue } from "../cyrus/field-codec.js";
import type { HeaderFieldName, RecordFieldName } from "../cyrus/formats/index.js";
import { guidToHex, isNullGuid, isOldStyleGuid } from "../cyrus/guid.js";
import { IndexReader, type IndexRecord } from "../cyrus/index-file.js";
import { ExitCode } from "../errors.js";
import { parseCommandArgs } from "./args.js";
import type { Io } from "./io.js";

const HELP = `usage: guidup inspect FILE [--json] [--expunge]

Prints a cyrus.index or cyrus.expunge file: the header, then one line per record.
  --json     one JSON object: {"file", "header": {...}, "records": [...]};
             64-bit values as decimal strings, GUIDs as lowercase hex
  --expunge  read as cyrus.expunge (UIDs may repeat and come in any order);
             the default is taken from the file name
Exit codes: 0 ok, 2 unreadable or invalid file.
`;

export async function run(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parseCommandArgs("inspect", args, {
    json: { type: "boolean" },
    expunge: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  const file = positionals[0];
  if (file === undefined || positionals.length > 1) {
    io.err(HELP);
    return ExitCode.badInput;
  }
  const kind = values.expunge || /expunge(\.NEW)?$/.test(file) ? "expunge" : "index";
  const reader = await IndexReader.open(file, { kind });
  try {
    if (values.json) await printJson(reader, io);
    else await printText(reader, io);
  } finally {
    await reader.close();
  }
  return ExitCode.ok;
}

/** JSON-safe form of a field: u64 as decimal string, bytes as hex. */
function jsonValue(value: FieldValue): number | string {
  if (typeof value === "bigint") return value.toString();
  if (Buffer.isBuffer(value)) return value.toString("hex");
  return value;
}

export function headerJson(reader: IndexReader): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const [name, value] of reader.header.values) {
    if (!name.startsWith("spare")) out[name] = jsonValue(value);
  }
  return out;
}

export function recordJson(record: IndexRecord): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const userFlags: number[] = [];
  for (const [name, value] of record) {
    if (name.startsWith("userFlags")) userFlags.push(value as number);
    else if (name === "uuid") out.guid = jsonValue(value);
    else out[name] = jsonValue(value);
  }
  out.userFlags = userFlags;
  return out;
}

async function printJson(reader: IndexReader, io: Io): Promise<void> {
  // Streamed: a million records never sit in memory as one string.
  io.out(
    `{"file":${JSON.stringify(reader.file)},"header":${JSON.stringify(headerJson(reader))},"records":[`,
  );
  let first = true;
  for await (const record of reader.records()) {
    io.out(`${first ? "" : ","}\n${JSON.stringify(recordJson(record))}`);
    first = false;
    await io.drained();
  }
  io.out("\n]}\n");
}

const HEADER_LABELS: [HeaderFieldName, string][] = [
  ["generation", "Generation Number"],
  ["format", "Format"],
  ["minorVersion", "Minor Version"],
  ["startOffset", "Header Size"],
  ["recordSize", "Record Size"],
  ["exists", "Number of Messages"],
  ["quotaUsed", "Mailbox Size"],
  ["lastAppendDate", "Last Append Date"],
  ["uidValidity", "UIDValidity"],
  ["lastUid", "Last UID"],
  ["deleted", "Deleted"],
  ["answered", "Answered"],
  ["flagged", "Flagged"],
  ["options", "Mailbox Options"],
  ["leakedCache", "Leaked Cache"],
  ["pop3LastLogin", "Last POP3 Login"],
  ["highestModseq", "Highest Mod Sequence"],
];

function guidKind(guid: Buffer): string {
  if (isNullGuid(guid)) return "null";
  if (isOldStyleGuid(guid)) return "padded";
  return "sha1";
}

async function printText(reader: IndexReader, io: Io): Promise<void> {
  const { values, format } = reader.header;
  io.out(`${reader.file}: ${reader.kind} version ${format.minor} (${format.writtenBy})\n`);
  for (const [name, label] of HEADER_LABELS) {
    const value = values.get(name);
    if (value !== undefined) io.out(`  ${label}: ${String(value)}\n`);
  }
  io.out("\n");
  let msgno = 0;
  for await (const record of reader.records()) {
    msgno++;
    io.out(`${formatRecordLine(msgno, record)}\n`);
    await io.drained();
  }
}

function get(record: IndexRecord, name: RecordFieldName): FieldValue | undefined {
  return record.get(name);
}

function formatRecordLine(msgno: number, record: IndexRecord): string {
  const parts = [
    `${String(msgno).padStart(6, "0")}> UID:${get(record, "uid")}`,
    `INT_DATE:${get(record, "internalDate")}`,
    `SENTDATE:${get(record, "sentDate")}`,
    `SIZE:${get(record, "size")}`,
    `HDRSIZE:${get(record, "headerSize")}`,
    `LASTUPD:${get(record, "lastUpdated")}`,
    `SYSFLAGS:${(get(record, "systemFlags") as number).toString(16).padStart(8, "0")}`,
    `USERFLAGS:${[0, 1, 2, 3].map((k) => (get(record, `userFlags${k}` as RecordFieldName) as number).toString(16).padStart(8, "0")).join(" ")}`,
  ];
  const lines = get(record, "contentLines");
  if (lines !== undefined) parts.push(`LINES:${lines === 0xffffffff ? "unknown" : lines}`);
  const cacheVersion = get(record, "cacheVersion");
  if (cacheVersion !== undefined) parts.push(`CACHEVER:${cacheVersion}`);
  const guid = get(record, "guid") as Buffer | undefined;
  if (guid !== undefined) parts.push(`GUID:${guidToHex(guid)} (${guidKind(guid)})`);
  const uuid = get(record, "uuid") as Buffer | undefined;
  if (uuid !== undefined) parts.push(`UUID:${guidToHex(uuid)}`);
  const modseq = get(record, "modseq");
  if (modseq !== undefined) parts.push(`MODSEQ:${modseq}`);
  return parts.join(" ");
}
