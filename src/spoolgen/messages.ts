// RFC 822 messages (CRLF) and their Cyrus 2.3 cache records, for the spool
// generator. Content is plausible mail, not a parser test suite: headers a
// 2.3 delivery leaves (Return-Path, Received, Message-ID, Date, From, To,
// Subject, MIME), text bodies wrapped at 72 columns, and now and then a
// multipart message with a base64 attachment.

import type { Prng } from "./prng.js";

export interface Person {
  name: string;
  address: string;
}

export interface MessageSpec {
  from: Person;
  to: readonly Person[];
  cc: readonly Person[];
  subject: string;
  /** Date: header, seconds since the epoch. */
  date: number;
  /** Time of delivery, for the Received: header. */
  received: number;
  messageId: string;
  /** Approximate total size in bytes; the message is at least its headers. */
  targetSize: number;
  attachment: boolean;
}

export interface BuiltMessage {
  bytes: Buffer;
  /** Bytes up to and including the blank line. */
  headerSize: number;
  /** Number of lines in the body. */
  contentLines: number;
  /**
   * SENTDATE as 2.3 stores it (`message_parse_date(date, 0)`): the calendar
   * day written in the Date: header, at midnight server time (UTC here).
   */
  sentDate: number;
  /** One cyrus.cache record: 10 items of u32 length + bytes padded to 4. */
  cache: Buffer;
}

const WORDS = (
  "the of and to a in is it you that he was for on are with as his they be at one have this " +
  "from or had by word but what some we can out other were all there when up use your how " +
  "said an each she which do their time if will way about many then them write would like " +
  "so these her long make thing see him two has look more day could go come did number " +
  "sound no most people my over know water than call first who may down side been now find " +
  "meeting report server mailbox quota replica backup upgrade schedule budget review draft " +
  "invoice release patch ticket customer contract project deadline tomorrow thanks regards"
).split(" ");

const SUBJECTS = [
  "Re: quarterly report",
  "Meeting next week",
  "Fwd: invoice 2009-114",
  "Lunch?",
  "Server maintenance window",
  "Re: Re: backup schedule",
  "Photos from the weekend",
  "[cyrus-devel] replication and GUIDs",
  "Your order has shipped",
  "Budget draft v3",
  "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=",
  "=?ISO-8859-1?B?UmU6IFLpc3Vtw6k=?=",
  "Re: mailbox quota exceeded",
  "Holiday plans",
  "Minutes of the board meeting",
  "Release notes 2.3.16",
  "",
];

const ZONES: readonly (readonly [string, number])[] = [
  ["+0000", 0],
  ["+0100", 3600],
  ["+0200", 7200],
  ["-0500", -18000],
  ["-0800", -28800],
  ["+1000", 36000],
];

const DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTH_NAMES = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
];

function two(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** An RFC 2822 date in the given zone: "Tue, 13 Oct 2009 14:22:05 +0200". */
export function rfc2822Date(epochSeconds: number, zone: string, offsetSeconds: number): string {
  const d = new Date((epochSeconds + offsetSeconds) * 1000);
  return (
    `${DAY_NAMES[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTH_NAMES[d.getUTCMonth()]} ` +
    `${d.getUTCFullYear()} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:` +
    `${two(d.getUTCSeconds())} ${zone}`
  );
}

export function randomSubject(prng: Prng): string {
  return prng.pick(SUBJECTS);
}

export function randomZone(prng: Prng): readonly [string, number] {
  return prng.pick(ZONES);
}

function formatPerson(p: Person): string {
  return p.name === "" ? p.address : `"${p.name}" <${p.address}>`;
}

/** Text lines of about `bytes` bytes (CRLF included), wrapped at 72 columns. */
function textLines(prng: Prng, bytes: number): string[] {
  const lines: string[] = [];
  let total = 0;
  let line = "";
  while (total < bytes) {
    const word = prng.pick(WORDS);
    if (line.length + word.length + 1 > 72) {
      lines.push(line);
      total += line.length + 2;
      line = "";
      if (prng.chance(0.12)) {
        lines.push("");
        total += 2;
      }
      continue;
    }
    line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "") lines.push(line);
  return lines;
}

function base64Lines(prng: Prng, bytes: number): string[] {
  const raw = prng.fill(Buffer.allocUnsafe(Math.max(3, Math.floor((bytes * 3) / 4))));
  const b64 = raw.toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  return lines;
}

function countCrlf(s: string): number {
  let n = 0;
  for (let i = s.indexOf("\r\n"); i !== -1; i = s.indexOf("\r\n", i + 2)) n++;
  return n;
}

/** An IMAP string: quoted, or NIL. */
function imapString(s: string | undefined): string {
  if (s === undefined || s === "") return "NIL";
  return `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

function imapAddresses(people: readonly Person[]): string {
  if (people.length === 0) return "NIL";
  const parts = people.map((p) => {
    const at = p.address.indexOf("@");
    const mailbox = at === -1 ? p.address : p.address.slice(0, at);
    const host = at === -1 ? "" : p.address.slice(at + 1);
    return `(${imapString(p.name)} NIL ${imapString(mailbox)} ${imapString(host)})`;
  });
  return `(${parts.join("")})`;
}

function cacheItem(data: Buffer): Buffer {
  const padded = (data.length + 3) & ~3;
  const out = Buffer.alloc(4 + padded);
  out.writeUInt32BE(data.length, 0);
  data.copy(out, 4);
  return out;
}

export function buildMessage(prng: Prng, spec: MessageSpec): BuiltMessage {
  const [zone, zoneOffset] = randomZone(prng);
  const date = rfc2822Date(spec.date, zone, zoneOffset);
  const receivedDate = rfc2822Date(spec.received, "+0000", 0);
  const relay = `192.0.2.${prng.int(1, 254)}`;
  const headers = [
    `Return-Path: <${spec.from.address}>`,
    `Received: from mx${prng.int(1, 4)}.example.net (mx.example.net [${relay}])`,
    `\tby imap.example.org (Cyrus v2.3.16) with LMTPA;`,
    `\t${receivedDate}`,
    `Message-ID: ${spec.messageId}`,
    `Date: ${date}`,
    `From: ${formatPerson(spec.from)}`,
    `To: ${spec.to.map(formatPerson).join(", ")}`,
  ];
  if (spec.cc.length > 0) headers.push(`Cc: ${spec.cc.map(formatPerson).join(", ")}`);
  headers.push(`Subject: ${spec.subject}`, "MIME-Version: 1.0");
  if (prng.chance(0.3))
    headers.push(
      `X-Mailer: ${prng.pick(["Mutt/1.5.20", "Thunderbird 2.0.0.23", "Apple Mail (2.1077)", "Microsoft Outlook 12.0"])}`,
    );

  const boundary = `=_Part_${prng.u32().toString(16)}`;
  let bodyStructure: string;
  let body: string;
  const textHeaderLen = headers.reduce((n, h) => n + h.length + 2, 0) + 60;
  const bodyBytes = Math.max(2, spec.targetSize - textHeaderLen);
  if (spec.attachment) {
    headers.push(`Content-Type: multipart/mixed; boundary="${boundary}"`);
    const text = textLines(prng, Math.min(2000, Math.floor(bodyBytes / 10) + 100)).join("\r\n");
    const attachment = base64Lines(prng, Math.max(100, bodyBytes - text.length - 300)).join("\r\n");
    const name = `${prng.pick(["report", "scan", "photo", "slides", "archive"])}-${prng.int(1, 999)}.${prng.pick(["pdf", "jpg", "zip"])}`;
    body =
      `This is a multi-part message in MIME format.\r\n\r\n--${boundary}\r\n` +
      `Content-Type: text/plain; charset=us-ascii\r\n\r\n${text}\r\n\r\n--${boundary}\r\n` +
      `Content-Type: application/octet-stream; name="${name}"\r\n` +
      `Content-Transfer-Encoding: base64\r\n` +
      `Content-Disposition: attachment; filename="${name}"\r\n\r\n${attachment}\r\n--${boundary}--\r\n`;
    bodyStructure =
      `(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" ${text.length + 4} ${countCrlf(text) + 2} NIL NIL NIL)` +
      `("APPLICATION" "OCTET-STREAM" ("NAME" "${name}") NIL NIL "BASE64" ${attachment.length + 2} NIL ("ATTACHMENT" ("FILENAME" "${name}")) NIL) "MIXED" ("BOUNDARY" "${boundary}") NIL NIL)`;
  } else {
    headers.push("Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit");
    const lines = textLines(prng, bodyBytes);
    if (prng.chance(0.4)) lines.push("", "-- ", spec.from.name || spec.from.address);
    body = `${lines.join("\r\n")}\r\n`;
    bodyStructure = `("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" ${body.length} ${countCrlf(body)} NIL NIL NIL)`;
  }
  const headerText = `${headers.join("\r\n")}\r\n\r\n`;
  const bytes = Buffer.from(headerText + body, "latin1");
  const headerSize = Buffer.byteLength(headerText, "latin1");
  const contentLines = countCrlf(body);

  const envelope =
    `(${imapString(date)} ${imapString(spec.subject)} ${imapAddresses([spec.from])} ` +
    `${imapAddresses([spec.from])} ${imapAddresses([spec.from])} ${imapAddresses(spec.to)} ` +
    `${imapAddresses(spec.cc)} NIL NIL ${imapString(spec.messageId)})`;
  const section = Buffer.alloc(24);
  section.writeUInt32BE(1, 0); // one part
  section.writeUInt32BE(0, 4); // header offset
  section.writeUInt32BE(headerSize, 8);
  section.writeUInt32BE(headerSize, 12); // content offset
  section.writeUInt32BE(bytes.length - headerSize, 16);
  section.writeUInt32BE(0, 20); // encoding/charset
  const cache = Buffer.concat([
    cacheItem(Buffer.from(envelope, "latin1")),
    cacheItem(Buffer.from(bodyStructure, "latin1")),
    cacheItem(Buffer.from(bodyStructure.replace(/ NIL NIL NIL\)$/, ")"), "latin1")),
    cacheItem(section),
    cacheItem(Buffer.from(`Message-ID: ${spec.messageId}\r\n`, "latin1")),
    cacheItem(Buffer.from(formatPerson(spec.from), "latin1")),
    cacheItem(Buffer.from(spec.to.map(formatPerson).join(", "), "latin1")),
    cacheItem(Buffer.from(spec.cc.map(formatPerson).join(", "), "latin1")),
    cacheItem(Buffer.alloc(0)),
    cacheItem(Buffer.from(spec.subject, "latin1")),
  ]);
  const local = new Date((spec.date + zoneOffset) * 1000);
  const sentDate = Date.UTC(local.getUTCFullYear(), local.getUTCMonth(), local.getUTCDate()) / 1000;
  return { bytes, headerSize, contentLines, sentDate, cache };
}
