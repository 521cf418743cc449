// A generator of realistic Cyrus 2.3 spools (a master and its replica), with
// what real Cyrus 3.6 cannot write: `cyrus.expunge` files (unsorted, with
// repeated UIDs and UIDs still in the index), 12-byte v7–v9 UUIDs, padded
// and NULL GUIDs next to SHA1 GUIDs in v10, CONTENT_LINES 0xFFFFFFFF,
// MODSEQ 0 in v8/v9, 2.3-form `cyrus.header` files and 2.3 `cyrus.cache`
// records. Everything follows shared/docs/cyrus-2.3-spool.md (sections 1–8,
// 11); the layout comes from src/cyrus/mailbox-path.ts.
//
// Deterministic: one seeded PRNG drives every decision and every timestamp
// is derived from a fixed base, so the same options give a byte-identical
// spool (apart from the absolute paths inside imapd.conf).
//
// Used by the codec, agent, plan/apply tests, the benchmarks and `guidup demo`.

import { createHash } from "node:crypto";
import {
  appendFileSync,
  closeSync,
  existsSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmdirSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { encodeCyrusHeader23 } from "../cyrus/cyrus-header.js";
import type { FieldValue } from "../cyrus/field-codec.js";
import { formatFor, type IndexFormat } from "../cyrus/formats/index.js";
import { type ImapdConf, parseImapdConf, readImapdConf } from "../cyrus/imapd-conf.js";
import { IndexReader } from "../cyrus/index-file.js";
import {
  encodeHeader,
  encodeIndexFile,
  encodeRecord,
  type HeaderValues,
  type RecordValues,
} from "../cyrus/index-writer.js";
import { mailboxDataDir, mailboxMetaDir } from "../cyrus/mailbox-path.js";
import { buildMessage, type Person, randomSubject } from "./messages.js";
import { generateMailboxNames, type MailboxName } from "./names.js";
import { hashString, Prng } from "./prng.js";

export interface GenerateOptions {
  /** Output root; creates dir/master and dir/replica (or only master if pair=false). */
  dir: string;
  /** Default 1. */
  seed?: number;
  /** Default 200. */
  mailboxes?: number;
  /** Default true: master + replica with identical content. */
  pair?: boolean;
  /** Minors to pick from per mailbox, default [6,7,8,9,10] weighted toward 9/10. */
  versions?: number[];
  /** Fraction of mailboxes that get a cyrus.expunge (delayed expunge), default 0.2. */
  expungeFraction?: number;
  /** How many "large" mailboxes (2,000-5,000 messages), default 2. */
  largeMailboxes?: number;
  /** Range of message counts for normal mailboxes, default [0, 40]. */
  messagesPerMailbox?: [number, number];
  /** Message size range, default [300, 20000] (log-uniform; about 0.5% bigger, up to 10× the max). */
  messageBytes?: [number, number];
  /**
   * Instead of messageBytes: size classes picked by weight, each log-uniform
   * in its range, with an attachment when `attachment` says so (benchmarks
   * that need a given mix, e.g. 78 % short text and 22 % attachments).
   */
  sizeClasses?: readonly { weight: number; bytes: [number, number]; attachment: boolean }[];
  /** hashimapspool, default true (fulldirhash is always no). */
  hashSpool?: boolean;
  /** Default false. */
  virtdomains?: boolean;
  /** Default false: when true, header/index/cache/expunge live in a metapartition. */
  metapartition?: boolean;
}

export interface GeneratedHost {
  /** dir/master or dir/replica. */
  root: string;
  /** Path of this host's imapd.conf. */
  imapdConf: string;
  /** partition-default. */
  partitionRoot: string;
  /** metapartition-default, when metapartition was requested. */
  metaRoot?: string;
}

export interface GeneratedMailbox {
  name: string;
  minor: number;
  /** Records in cyrus.index (EXISTS). */
  records: number;
  /** Records in cyrus.expunge (EXISTS; 0 without the file). */
  expunged: number;
  hasExpunge: boolean;
  /**
   * Over the records of cyrus.index and cyrus.expunge together, the GUID each
   * record has (or would get from Cyrus's own upgrade to v10): `null` = all
   * zero (v≤6 records, NULL UUIDs/GUIDs), `padded` = a 12-byte UUID + 8 zero
   * bytes (v7–v9 schema-1 UUIDs, padded v10 GUIDs), `sha1` = SHA1 of the file.
   */
  guidKinds: { null: number; padded: number; sha1: number };
}

export interface GeneratedSpool {
  master: GeneratedHost;
  replica?: GeneratedHost;
  /** Sorted by name. */
  mailboxes: GeneratedMailbox[];
  /** Path of a `ctl_mboxlist -d`-style file (2.3.10+ format), sorted. */
  mailboxList: string;
  /** Path of a file with one mailbox name per line, sorted. */
  plainList: string;
}

/** 2009-12-01T00:00:00Z: "now" for the generated spool. */
const NOW = 1259625600;
const DAY = 86400;
const FULL_RIGHTS = "lrswipkxtecda";
const PARTITION = "default";
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
const CACHE_VERSION = 2;
const EMPTY = Buffer.alloc(0);
const CONTENT_LINES_UNKNOWN = 0xffffffff;
const USER_FLAG_NAMES = [
  "$Label1",
  "$Label2",
  "Junk",
  "NonJunk",
  "$Forwarded",
  "$MDNSent",
  "Important",
];

/** Default weights per minor: most mailboxes were touched by 2.3.7+ already. */
const VERSION_WEIGHTS: Record<number, number> = { 4: 1, 5: 1, 6: 1, 7: 1, 8: 1.5, 9: 3, 10: 6 };

// --- planning -------------------------------------------------------------

type GuidKind = "null" | "padded" | "sha1";

interface PlannedMessage {
  uid: number;
  /** The file's bytes; emptied once written (COPY links need only the other fields). */
  bytes: Buffer;
  size: number;
  sha1: Buffer;
  headerSize: number;
  contentLines: number;
  cache: Buffer;
  cacheOffset: number;
  internalDate: number;
  sentDate: number;
  lastUpdated: number;
  systemFlags: number;
  userFlags0: number;
  /** As stored in a v10 record (v7–v9: the first 12 bytes are the UUID). */
  guid: Buffer;
  modseq: bigint;
  contentLinesUnknown: boolean;
  /** Set when this file is a hard link of an earlier mailbox's message (COPY). */
  linkOf?: { mailbox: number; uid: number };
}

interface PlannedMailbox {
  index: number;
  spec: MailboxName;
  minor: number;
  format: IndexFormat;
  uidValidity: number;
  uniqueId: string;
  generation: number;
  userFlags: string[];
  acl: string;
  /** Every message with a file, in UID order. */
  messages: PlannedMessage[];
  /** UIDs in cyrus.index. */
  indexUids: number[];
  /** cyrus.expunge records in file order (UIDs may repeat or be in the index). */
  expunge: { uid: number; lastUpdated: number; modseq: bigint }[] | undefined;
  lastUid: number;
  options: number;
  pop3LastLogin: number;
  lastExpunge: number;
}

/** 2.3's mailbox_make_uniqueid: a name hash (×251 mod PRIME in u32) + UIDVALIDITY. */
export function cyrusUniqueId(name: string, uidValidity: number): string {
  const PRIME = 2147484043;
  let hash = 0;
  for (const b of Buffer.from(name, "utf8")) {
    hash = Math.imul(hash, 251) >>> 0;
    hash = (hash + b) >>> 0;
    hash %= PRIME;
  }
  return hash.toString(16).padStart(8, "0") + (uidValidity >>> 0).toString(16).padStart(8, "0");
}

function sha1(buf: Buffer): Buffer {
  return createHash("sha1").update(buf).digest();
}

function guidKindOf(minor: number, guid: Buffer): GuidKind {
  if (minor < 7) return "null";
  if (guid.every((b) => b === 0)) return "null";
  return guid.subarray(12).every((b) => b === 0) ? "padded" : "sha1";
}

/** A v7–v9 schema-1 UUID: 0x01, 8-byte prefix, 24-bit counter; padded to 20 bytes. */
function schema1Uuid(prefix: Buffer, counter: number): Buffer {
  const guid = Buffer.alloc(20);
  guid[0] = 0x01;
  prefix.copy(guid, 1, 0, 8);
  guid.writeUIntBE(counter & 0xffffff, 9, 3);
  return guid;
}

function weightedVersion(prng: Prng, versions: readonly number[]): number {
  return prng.weighted(versions.map((v) => [v, VERSION_WEIGHTS[v] ?? 1] as const));
}

function personFor(owner: string | undefined, prng: Prng): Person {
  if (owner === undefined) return { name: "Announcements", address: "announce@example.org" };
  const address = owner.includes("@") ? owner : `${owner}@example.org`;
  const local = owner.split("@")[0] ?? owner;
  const name = local.charAt(0).toUpperCase() + local.slice(1).replace(/[0-9]+$/, "");
  return {
    name: prng.chance(0.8)
      ? `${name} ${prng.pick(["Smith", "Jones", "Miller", "Baker", "Meyer"])}`
      : "",
    address,
  };
}

const CORRESPONDENTS: readonly Person[] = [
  { name: "Ken Murchison", address: "murch@example.net" },
  { name: "Bron Gondwana", address: "brong@example.com" },
  { name: "Helpdesk", address: "helpdesk@example.org" },
  { name: "", address: "noreply@shop.example" },
  { name: "Jane Doe", address: "jane.doe@example.edu" },
  { name: "Mailing list", address: "info-cyrus@lists.example.org" },
];

interface Ctx {
  prng: Prng;
  opts: Required<Omit<GenerateOptions, "dir">>;
  uuidPrefixes: Buffer[];
  /** Earlier planned mailboxes, by index. */
  planned: PlannedMailbox[];
}

function planMailbox(
  ctx: Ctx,
  index: number,
  spec: MailboxName,
  large: boolean,
  withExpunge: boolean,
): PlannedMailbox {
  const prng = ctx.prng.fork();
  const minor = weightedVersion(prng, ctx.opts.versions);
  const format = formatFor(minor) as IndexFormat;
  const uidValidity = NOW - prng.int(200 * DAY, 3 * 365 * DAY);
  const [minCount, maxCount] = ctx.opts.messagesPerMailbox;
  const total = spec.empty
    ? 0
    : large
      ? prng.int(2000, 5000)
      : Math.max(withExpunge ? 2 : 0, prng.int(minCount, maxCount));
  const userFlags = USER_FLAG_NAMES.filter(() => prng.chance(0.25));
  const mailbox: PlannedMailbox = {
    index,
    spec,
    minor,
    format,
    uidValidity,
    uniqueId: cyrusUniqueId(spec.name, uidValidity),
    generation: prng.int(1, 40),
    userFlags,
    acl:
      spec.owner === undefined
        ? `anyone\tlrs\tadmin\t${FULL_RIGHTS}\t`
        : `${spec.owner}\t${FULL_RIGHTS}\t`,
    messages: [],
    indexUids: [],
    expunge: undefined,
    lastUid: 0,
    options: 0,
    pop3LastLogin: prng.chance(0.3) ? NOW - prng.int(0, 30 * DAY) : 0,
    lastExpunge: 0,
  };

  // GUID policy of the mailbox (section 5.1, 5.3).
  const uuidPrefix = prng.pick(ctx.uuidPrefixes);
  let uuidCounter = prng.int(0, 0xfffff);
  const provideUuid = prng.chance(0.8); // v7–v9: services with provide_uuid=1
  // v10: messages before `upgradedBefore` came through an upgrade from v7–v9
  // (padded or NULL), later ones were appended by 2.3.10+ (SHA1 with
  // guid_mode: sha1, NULL with guid_mode: off; COPY keeps the source GUID).
  const v10Mode = prng.weighted([
    ["all-sha1", 2],
    ["mixed", 5],
    ["guid-off", 1.5],
    ["all-old", 1.5],
  ] as const);
  const upgradedBefore =
    v10Mode === "all-sha1" ? 0 : v10Mode === "all-old" ? total : prng.int(0, total);
  const condstore = minor >= 8 && prng.chance(0.3);
  if (minor >= 8) mailbox.options = condstore ? 2 : 0;
  else mailbox.options = prng.chance(0.1) ? 1 : 0;
  const modseqZeroes = (minor === 8 || minor === 9) && prng.chance(0.4);
  let modseqCounter = 1n;

  const owner = spec.owner;
  const self = personFor(owner, prng);
  const sent = /\.Sent$/.test(spec.name);
  const drafts = /\.Drafts$/.test(spec.name);
  // Earlier mailboxes of the same owner: sources for COPY hard links.
  const siblings = ctx.planned.filter(
    (m) => owner !== undefined && m.spec.owner === owner && m.indexUids.length > 0,
  );

  let uid = 0;
  let time = uidValidity + prng.int(0, 5 * DAY);
  const [minBytes, maxBytes] = ctx.opts.messageBytes;
  for (let n = 0; n < total; n++) {
    uid += 1 + (prng.chance(0.15) ? prng.int(1, 6) : 0);
    time += large ? prng.int(60, 4 * 3600) : prng.logInt(60, 10 * DAY);
    if (time > NOW - DAY) time = NOW - DAY - prng.int(0, 3600);

    let source: { mailbox: PlannedMailbox; message: PlannedMessage } | undefined;
    if (siblings.length > 0 && prng.chance(0.08)) {
      const from = prng.pick(siblings);
      const fromUid = prng.pick(from.indexUids);
      const message = from.messages.find((m) => m.uid === fromUid);
      if (message !== undefined) source = { mailbox: from, message };
    }

    let bytes: Buffer;
    let headerSize: number;
    let contentLines: number;
    let cache: Buffer;
    let digest: Buffer;
    let internalDate = time;
    let sentDate: number;
    if (source !== undefined) {
      ({ bytes, headerSize, contentLines, cache } = source.message);
      bytes = Buffer.alloc(0);
      digest = source.message.sha1;
      internalDate = source.message.internalDate; // COPY keeps INTERNALDATE
      sentDate = source.message.sentDate;
    } else {
      const sizeClass =
        ctx.opts.sizeClasses.length > 0
          ? prng.weighted(ctx.opts.sizeClasses.map((c) => [c, c.weight] as const))
          : undefined;
      const bigger = sizeClass === undefined && prng.chance(0.005);
      const target =
        sizeClass !== undefined
          ? prng.logInt(sizeClass.bytes[0], sizeClass.bytes[1])
          : bigger
            ? prng.logInt(maxBytes, maxBytes * 10)
            : prng.logInt(minBytes, maxBytes);
      const correspondent = prng.pick(CORRESPONDENTS);
      const outgoing = sent || drafts;
      const built = buildMessage(prng, {
        from: outgoing ? self : correspondent,
        to: outgoing ? [correspondent] : [self],
        cc: prng.chance(0.15) ? [prng.pick(CORRESPONDENTS)] : [],
        subject: randomSubject(prng),
        date: time - prng.int(2, 3600),
        received: time,
        messageId: `<${prng.u32().toString(16)}.${prng.u32().toString(16)}@${prng.pick(["mail.example.net", "example.com", "mx.example.org"])}>`,
        targetSize: target,
        attachment:
          sizeClass !== undefined
            ? sizeClass.attachment
            : bigger || (target > 6000 && prng.chance(0.15)),
      });
      ({ bytes, headerSize, contentLines, cache, sentDate } = built);
      digest = sha1(bytes);
    }

    // GUID as it sits in a record of this minor (20 bytes, v10 view).
    let guid: Buffer = Buffer.alloc(20);
    if (minor >= 7 && minor <= 9) {
      if (source !== undefined && source.mailbox.minor >= 7 && source.mailbox.minor <= 9) {
        guid = Buffer.from(source.message.guid);
      } else if (provideUuid && prng.chance(0.93)) {
        uuidCounter += prng.int(1, 40);
        guid = schema1Uuid(uuidPrefix, uuidCounter);
      }
    } else if (minor === 10) {
      if (source !== undefined && source.mailbox.minor === 10) {
        guid = Buffer.from(source.message.guid); // append_copy keeps the source GUID
      } else if (n < upgradedBefore) {
        if (provideUuid && prng.chance(0.85)) {
          uuidCounter += prng.int(1, 40);
          guid = schema1Uuid(uuidPrefix, uuidCounter);
        }
      } else if (v10Mode !== "guid-off" && prng.chance(0.92)) {
        guid = Buffer.from(digest);
      } else if (v10Mode !== "guid-off" && prng.chance(0.5)) {
        uuidCounter += prng.int(1, 40);
        guid = schema1Uuid(uuidPrefix, uuidCounter); // COPY of an old-style GUID
      }
    }

    let systemFlags = 0;
    if (prng.chance(sent ? 0.02 : 0.25)) systemFlags |= 1;
    if (prng.chance(0.1)) systemFlags |= 2;
    if (prng.chance(0.04)) systemFlags |= 4;
    if (drafts || prng.chance(0.01)) systemFlags |= 8;
    let userFlags0 = 0;
    if (userFlags.length > 0 && prng.chance(0.25)) {
      userFlags0 |= 1 << prng.int(0, userFlags.length - 1);
      if (prng.chance(0.3)) userFlags0 |= 1 << prng.int(0, userFlags.length - 1);
    }
    let modseq = 1n;
    if (condstore) {
      modseqCounter += 1n;
      modseq = modseqCounter;
    }
    if (modseqZeroes && prng.chance(0.05)) modseq = 0n;

    const message: PlannedMessage = {
      uid,
      bytes,
      size: source !== undefined ? source.message.size : bytes.length,
      sha1: digest,
      headerSize,
      contentLines,
      cache,
      cacheOffset: 0,
      internalDate,
      sentDate,
      lastUpdated: prng.chance(0.2) ? Math.min(NOW - 3600, time + prng.int(60, 30 * DAY)) : time,
      systemFlags,
      userFlags0: userFlags0 >>> 0,
      guid,
      modseq,
      contentLinesUnknown: minor >= 5 && prng.chance(0.05),
    };
    if (source !== undefined)
      message.linkOf = { mailbox: source.mailbox.index, uid: source.message.uid };
    mailbox.messages.push(message);
  }

  // Delayed expunge: move some messages from the index to cyrus.expunge, in
  // expunge order (not UID order); their files stay until cyr_expire.
  const expungedUids = new Set<number>();
  if (withExpunge && total > 0) {
    const k = Math.max(1, Math.min(total, Math.round(total * (0.05 + prng.next() * 0.3))));
    const order = prng.shuffle(mailbox.messages.map((m) => m.uid)).slice(0, k);
    if (order.length >= 2 && order.every((u, i) => i === 0 || u > (order[i - 1] as number))) {
      order.reverse();
    }
    for (const u of order) expungedUids.add(u);
    const modseqOf = new Map<number, bigint>();
    for (const u of order) {
      if (condstore) modseqCounter += 1n;
      modseqOf.set(u, condstore ? modseqCounter : 1n);
    }
    // Expunged, unexpunged and expunged again: the same UID twice.
    if (order.length > 0 && prng.chance(0.35)) {
      const first = prng.int(0, order.length - 1);
      order.splice(prng.int(first + 1, order.length), 0, order[first] as number);
    }
    // Unexpunged but still listed: a UID that is also in cyrus.index.
    const live = mailbox.messages.filter((m) => !expungedUids.has(m.uid));
    if (live.length > 0 && prng.chance(0.3)) {
      const back = prng.pick(live);
      modseqOf.set(back.uid, back.modseq);
      order.splice(prng.int(0, order.length), 0, back.uid);
    }
    // LAST_UPDATED = expunge time, growing along the file (records are appended).
    let latest = 0;
    for (const m of mailbox.messages) latest = Math.max(latest, m.lastUpdated);
    const times = order.map(() => prng.int(latest + 60, NOW)).sort((a, b) => a - b);
    mailbox.expunge = order.map((uid, i) => ({
      uid,
      lastUpdated: times[i] as number,
      modseq: modseqOf.get(uid) as bigint,
    }));
    mailbox.lastExpunge = times[times.length - 1] as number;
  }
  for (const m of mailbox.messages) {
    if (expungedUids.has(m.uid))
      m.systemFlags |= 4; // expunged messages were \Deleted
    else mailbox.indexUids.push(m.uid);
  }
  const maxUid =
    mailbox.messages.length > 0
      ? (mailbox.messages[mailbox.messages.length - 1] as PlannedMessage).uid
      : 0;
  mailbox.lastUid = maxUid + (prng.chance(0.3) ? prng.int(1, 4) : 0);

  // cyrus.cache: generation, then one record per message in append (UID) order.
  let cacheSize = 4;
  for (const m of mailbox.messages) {
    m.cacheOffset = cacheSize;
    cacheSize += m.cache.length;
  }
  return mailbox;
}

// --- encoding ---------------------------------------------------------------

function recordValues(
  mailbox: PlannedMailbox,
  m: PlannedMessage,
  lastUpdated: number,
  modseq: bigint,
): RecordValues {
  const values: RecordValues = {
    uid: m.uid,
    internalDate: m.internalDate,
    sentDate: m.sentDate,
    size: m.size,
    headerSize: m.headerSize,
    contentOffset: m.headerSize,
    cacheOffset: m.cacheOffset,
    lastUpdated,
    systemFlags: m.systemFlags,
    userFlags0: m.userFlags0,
    contentLines: m.contentLinesUnknown ? CONTENT_LINES_UNKNOWN : m.contentLines,
    cacheVersion: CACHE_VERSION,
    modseq,
  };
  const format = mailbox.format;
  if (format.recordField("uuid")) values.uuid = m.guid.subarray(0, 12);
  if (format.recordField("guid")) values.guid = m.guid;
  return values;
}

function headerValues(
  mailbox: PlannedMailbox,
  records: readonly RecordValues[],
  extra: { lastAppendDate: number; leakedCache: number; highestModseq: bigint },
): HeaderValues {
  let quota = 0;
  let deleted = 0;
  let answered = 0;
  let flagged = 0;
  for (const r of records) {
    quota += r.size as number;
    const flags = r.systemFlags as number;
    if (flags & 4) deleted++;
    if (flags & 1) answered++;
    if (flags & 2) flagged++;
  }
  return {
    generation: mailbox.generation,
    format: 0,
    lastAppendDate: extra.lastAppendDate,
    lastUid: mailbox.lastUid,
    quotaUsed: BigInt(quota),
    pop3LastLogin: mailbox.pop3LastLogin,
    uidValidity: mailbox.uidValidity,
    deleted,
    answered,
    flagged,
    options: mailbox.options,
    leakedCache: extra.leakedCache,
    highestModseq: extra.highestModseq,
  };
}

interface EncodedMailbox {
  header: Buffer;
  index: Buffer;
  cache: Buffer;
  expunge?: Buffer;
  result: GeneratedMailbox;
}

function encodeMailbox(mailbox: PlannedMailbox): EncodedMailbox {
  const byUid = new Map(mailbox.messages.map((m) => [m.uid, m]));
  const indexRecords = mailbox.indexUids.map((uid) => {
    const m = byUid.get(uid) as PlannedMessage;
    return recordValues(mailbox, m, m.lastUpdated, m.modseq);
  });
  const expungeRecords = (mailbox.expunge ?? []).map((e) => {
    const m = byUid.get(e.uid) as PlannedMessage;
    return recordValues(mailbox, m, e.lastUpdated, e.modseq);
  });
  let highestModseq = 1n;
  for (const r of [...indexRecords, ...expungeRecords]) {
    if ((r.modseq as bigint) > highestModseq) highestModseq = r.modseq as bigint;
  }
  const lastAppendDate = mailbox.messages.reduce((t, m) => Math.max(t, m.internalDate), 0);
  const expungedOnly = new Set((mailbox.expunge ?? []).map((e) => e.uid));
  for (const uid of mailbox.indexUids) expungedOnly.delete(uid);

  const index = encodeIndexFile(
    mailbox.format,
    headerValues(mailbox, indexRecords, {
      lastAppendDate,
      leakedCache: expungedOnly.size,
      highestModseq,
    }),
    indexRecords,
  );
  const expunge =
    mailbox.expunge === undefined
      ? undefined
      : encodeIndexFile(
          mailbox.format,
          headerValues(mailbox, expungeRecords, {
            lastAppendDate: mailbox.lastExpunge,
            leakedCache: 0,
            highestModseq,
          }),
          expungeRecords,
        );
  const generation = Buffer.alloc(4);
  generation.writeUInt32BE(mailbox.generation);
  const cache = Buffer.concat([generation, ...mailbox.messages.map((m) => m.cache)]);
  const header = encodeCyrusHeader23({
    ...(mailbox.spec.quotaRoot === undefined ? {} : { quotaRoot: mailbox.spec.quotaRoot }),
    uniqueId: mailbox.uniqueId,
    userFlags: mailbox.userFlags,
    acl: mailbox.acl,
  });

  const guidKinds = { null: 0, padded: 0, sha1: 0 };
  for (const r of [...indexRecords, ...expungeRecords]) {
    const guid = (r.guid ??
      (r.uuid ? Buffer.concat([r.uuid as Buffer, Buffer.alloc(8)]) : Buffer.alloc(20))) as Buffer;
    guidKinds[guidKindOf(mailbox.minor, guid)]++;
  }
  return {
    header,
    index,
    cache,
    ...(expunge === undefined ? {} : { expunge }),
    result: {
      name: mailbox.spec.name,
      minor: mailbox.minor,
      records: indexRecords.length,
      expunged: expungeRecords.length,
      hasExpunge: expunge !== undefined,
      guidKinds,
    },
  };
}

// --- writing ----------------------------------------------------------------

function writeNewFile(path: string, data: Buffer | string): void {
  writeFileSync(path, data, { mode: FILE_MODE, flag: "wx" });
}

function makeDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: DIR_MODE });
}

function imapdConfText(host: GeneratedHost, opts: Ctx["opts"]): string {
  const lines = [
    "# Generated by guidup src/spoolgen/spool-generator.ts (Cyrus 2.3 layout)",
    `configdirectory: ${join(host.root, "config")}`,
    `defaultpartition: ${PARTITION}`,
    `partition-${PARTITION}: ${host.partitionRoot}`,
  ];
  if (host.metaRoot !== undefined) {
    lines.push(
      `metapartition-${PARTITION}: ${host.metaRoot}`,
      "metapartition_files: header index cache expunge squat",
    );
  }
  lines.push(
    `hashimapspool: ${opts.hashSpool ? "yes" : "no"}`,
    "fulldirhash: no",
    "unixhierarchysep: no",
    `virtdomains: ${opts.virtdomains ? "on" : "off"}`,
  );
  if (opts.virtdomains) lines.push("defaultdomain: example.org");
  lines.push("expunge_mode: delayed", "delete_mode: delayed", "guid_mode: sha1", "");
  return lines.join("\n");
}

function makeHost(root: string, opts: Ctx["opts"]): { host: GeneratedHost; conf: ImapdConf } {
  if (existsSync(root))
    throw new Error(`spool generator: ${root} already exists; give an empty or new dir`);
  const host: GeneratedHost = {
    root,
    imapdConf: join(root, "imapd.conf"),
    partitionRoot: join(root, "spool"),
    ...(opts.metapartition ? { metaRoot: join(root, "meta") } : {}),
  };
  makeDir(root);
  makeDir(join(root, "config"));
  makeDir(host.partitionRoot);
  if (host.metaRoot !== undefined) makeDir(host.metaRoot);
  const text = imapdConfText(host, opts);
  writeNewFile(host.imapdConf, text);
  return { host, conf: parseImapdConf(text, host.imapdConf) };
}

function writeMailbox(
  conf: ImapdConf,
  mailbox: PlannedMailbox,
  encoded: EncodedMailbox,
  all: readonly PlannedMailbox[],
): void {
  const name = mailbox.spec.name;
  const dataDir = mailboxDataDir(conf, name, PARTITION);
  makeDir(dataDir);
  const meta = (file: "header" | "index" | "cache" | "expunge"): string => {
    const dir = mailboxMetaDir(conf, name, PARTITION, file);
    makeDir(dir);
    return join(dir, `cyrus.${file}`);
  };
  for (const m of mailbox.messages) {
    const path = join(dataDir, `${m.uid}.`);
    if (m.linkOf !== undefined) {
      const from = all[m.linkOf.mailbox] as PlannedMailbox;
      linkSync(join(mailboxDataDir(conf, from.spec.name, PARTITION), `${m.linkOf.uid}.`), path);
    } else {
      writeNewFile(path, m.bytes);
      utimesSync(path, m.internalDate, m.internalDate);
    }
  }
  writeNewFile(meta("cache"), encoded.cache);
  if (encoded.expunge !== undefined) writeNewFile(meta("expunge"), encoded.expunge);
  writeNewFile(meta("index"), encoded.index);
  writeNewFile(meta("header"), encoded.header);
}

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Generates a master (and replica) spool under `opts.dir`. Deterministic per seed. */
export async function generateSpool(options: GenerateOptions): Promise<GeneratedSpool> {
  const opts: Ctx["opts"] = {
    seed: options.seed ?? 1,
    mailboxes: options.mailboxes ?? 200,
    pair: options.pair ?? true,
    versions: options.versions ?? [6, 7, 8, 9, 10],
    expungeFraction: options.expungeFraction ?? 0.2,
    largeMailboxes: options.largeMailboxes ?? 2,
    messagesPerMailbox: options.messagesPerMailbox ?? [0, 40],
    messageBytes: options.messageBytes ?? [300, 20000],
    sizeClasses: options.sizeClasses ?? [],
    hashSpool: options.hashSpool ?? true,
    virtdomains: options.virtdomains ?? false,
    metapartition: options.metapartition ?? false,
  };
  if (opts.versions.length === 0) throw new RangeError("spool generator: versions is empty");
  for (const v of opts.versions) {
    if (formatFor(v) === undefined)
      throw new RangeError(`spool generator: no index format for minor ${v}`);
  }
  const dir = resolve(options.dir);
  const prng = new Prng(opts.seed);
  const ctx: Ctx = {
    prng,
    opts,
    uuidPrefixes: [0, 1, 2].map(() => prng.fill(Buffer.alloc(8))),
    planned: [],
  };

  const names = generateMailboxNames(prng.fork(), opts.mailboxes, opts.virtdomains);
  const choose = prng.fork();
  const largeCandidates = [
    ...choose.shuffle(names.filter((n) => !n.empty && n.inbox)),
    ...choose.shuffle(names.filter((n) => !n.empty && !n.inbox && n.kind === "user")),
  ];
  const large = new Set(largeCandidates.slice(0, opts.largeMailboxes).map((n) => n.name));
  // No cyrus.expunge under DELETED.*: legal in 2.3, but Cyrus 3.6's mbexamine
  // refuses the scratch child mailbox cyrus-check-guids.sh makes to check it.
  const expungeCandidates = choose.shuffle(names.filter((n) => !n.empty && n.kind !== "deleted"));
  const withExpunge = new Set(
    expungeCandidates.slice(0, Math.round(opts.expungeFraction * names.length)).map((n) => n.name),
  );

  makeDir(dir);
  const master = makeHost(join(dir, "master"), opts);
  const replica = opts.pair ? makeHost(join(dir, "replica"), opts) : undefined;
  const hosts = replica === undefined ? [master] : [master, replica];

  const results: GeneratedMailbox[] = [];
  const dumpLines: string[] = [];
  for (let i = 0; i < names.length; i++) {
    const spec = names[i] as MailboxName;
    const mailbox = planMailbox(ctx, i, spec, large.has(spec.name), withExpunge.has(spec.name));
    const encoded = encodeMailbox(mailbox);
    for (const h of hosts) writeMailbox(h.conf, mailbox, encoded, ctx.planned.concat(mailbox));
    ctx.planned.push(mailbox);
    for (const m of mailbox.messages) m.bytes = EMPTY;
    results.push(encoded.result);
    dumpLines.push(`${spec.name}\t0 ${PARTITION} ${mailbox.acl}`);
    if (mailbox.messages.length > 500) await new Promise<void>((r) => setImmediate(r));
  }

  results.sort((a, b) => compareNames(a.name, b.name));
  dumpLines.sort(compareNames);
  const mailboxList = join(dir, "mailboxes.dump");
  const plainList = join(dir, "mailboxes.txt");
  writeNewFile(mailboxList, dumpLines.map((l) => `${l}\n`).join(""));
  writeNewFile(plainList, results.map((r) => `${r.name}\n`).join(""));
  return {
    master: master.host,
    ...(replica === undefined ? {} : { replica: replica.host }),
    mailboxes: results,
    mailboxList,
    plainList,
  };
}

// --- helpers that make the two sides differ -----------------------------------

interface MailboxPaths {
  dataDir: string;
  index: string;
  cache: string;
  metaDirs: string[];
}

async function mailboxPaths(host: GeneratedHost, mailbox: string): Promise<MailboxPaths> {
  const conf = await readImapdConf(host.imapdConf);
  const p = conf.defaultPartition;
  const metaDirs = (["header", "index", "cache", "expunge", "squat"] as const).map((f) =>
    mailboxMetaDir(conf, mailbox, p, f),
  );
  return {
    dataDir: mailboxDataDir(conf, mailbox, p),
    index: join(mailboxMetaDir(conf, mailbox, p, "index"), "cyrus.index"),
    cache: join(mailboxMetaDir(conf, mailbox, p, "cache"), "cyrus.cache"),
    metaDirs: [...new Set(metaDirs)],
  };
}

/** Cache items for a message given as raw bytes: empty envelope data, real sizes. */
function minimalCacheRecord(headerSize: number, size: number): Buffer {
  const item = (data: Buffer) => {
    const out = Buffer.alloc(4 + ((data.length + 3) & ~3));
    out.writeUInt32BE(data.length, 0);
    data.copy(out, 4);
    return out;
  };
  const section = Buffer.alloc(24);
  section.writeUInt32BE(1, 0);
  section.writeUInt32BE(headerSize, 8);
  section.writeUInt32BE(headerSize, 12);
  section.writeUInt32BE(size - headerSize, 16);
  const structure = Buffer.from(`("TEXT" "PLAIN" NIL NIL NIL "7BIT" ${size - headerSize} 0)`);
  return Buffer.concat([
    item(Buffer.from("(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")),
    item(structure),
    item(structure),
    item(section),
    ...Array.from({ length: 6 }, () => item(Buffer.alloc(0))),
  ]);
}

function headerSizeOf(body: Buffer): number {
  const crlf = body.indexOf("\r\n\r\n");
  const lf = body.indexOf("\n\n");
  if (crlf !== -1 && (lf === -1 || crlf < lf)) return crlf + 4;
  if (lf !== -1) return lf + 2;
  return body.length;
}

function writeAtomically(path: string, data: Buffer): void {
  const tmp = `${path}.NEW`;
  const fd = openSync(tmp, "w", FILE_MODE);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/**
 * Appends a message the way 2.3 does: writes `<uid>.`, appends a cache
 * record (same generation), then replaces cyrus.index (`.NEW` + rename) with
 * one more record and updated EXISTS, LAST_UID, LAST_APPENDDATE, quota and
 * HIGHESTMODSEQ. The GUID is SHA1 of the file in v10 (guid_mode: sha1), NULL
 * in v7–v9. Without `body` a deterministic message is made from the mailbox
 * name and UID. Returns the new UID.
 */
export async function appendMessage(
  host: GeneratedHost,
  mailbox: string,
  body?: Buffer,
): Promise<number> {
  const paths = await mailboxPaths(host, mailbox);
  const reader = await IndexReader.open(paths.index, { kind: "index" });
  const chunks: Buffer[] = [];
  let header: Map<string, FieldValue>;
  let format: IndexFormat;
  try {
    for await (const chunk of reader.chunks()) chunks.push(chunk.buf);
    header = new Map(reader.header.values);
    format = reader.format;
  } finally {
    await reader.close();
  }
  const lastUid = header.get("lastUid") as number;
  const uid = lastUid + 1;
  const lastAppend = header.get("lastAppendDate") as number;
  const internalDate = Math.max(lastAppend, header.get("uidValidity") as number) + 60;

  let bytes: Buffer;
  let headerSize: number;
  let contentLines: number;
  let cache: Buffer;
  let sentDate = internalDate - (internalDate % 86400);
  if (body === undefined) {
    const prng = new Prng(hashString(`${mailbox}\0${uid}`));
    const built = buildMessage(prng, {
      from: CORRESPONDENTS[0] as Person,
      to: [{ name: "", address: "rcpt@example.org" }],
      cc: [],
      subject: `Appended message ${uid}`,
      date: internalDate - 30,
      received: internalDate,
      messageId: `<append.${uid}.${prng.u32().toString(16)}@example.org>`,
      targetSize: prng.logInt(400, 5000),
      attachment: false,
    });
    ({ bytes, headerSize, contentLines, cache } = built);
    sentDate = built.sentDate;
  } else {
    bytes = body;
    headerSize = headerSizeOf(body);
    contentLines = 0;
    for (let i = headerSize; i < body.length; i++) if (body[i] === 0x0a) contentLines++;
    cache = minimalCacheRecord(headerSize, body.length);
  }

  writeNewFile(join(paths.dataDir, `${uid}.`), bytes);
  const cacheOffset = statSync(paths.cache).size;
  appendFileSync(paths.cache, cache);

  const condstore = ((header.get("options") as number) & 2) !== 0;
  const highest = (header.get("highestModseq") as bigint | undefined) ?? 0n;
  const modseq = condstore ? highest + 1n : 1n;
  const record: RecordValues = {
    uid,
    internalDate,
    sentDate,
    size: bytes.length,
    headerSize,
    contentOffset: headerSize,
    cacheOffset,
    lastUpdated: internalDate,
    systemFlags: 0,
    contentLines,
    cacheVersion: CACHE_VERSION,
    modseq,
  };
  if (format.recordField("uuid")) record.uuid = Buffer.alloc(12);
  if (format.recordField("guid")) record.guid = sha1(bytes);

  const values: HeaderValues = Object.fromEntries(header) as HeaderValues;
  const exists = (header.get("exists") as number) + 1;
  values.lastUid = uid;
  values.lastAppendDate = internalDate;
  values.quotaUsed = BigInt(header.get("quotaUsed") as number | bigint) + BigInt(bytes.length);
  if (format.headerField("highestModseq"))
    values.highestModseq = modseq > highest ? modseq : highest;
  values.exists = exists;
  writeAtomically(
    paths.index,
    Buffer.concat([encodeHeader(format, values, exists), ...chunks, encodeRecord(format, record)]),
  );
  return uid;
}

/** Replaces `<uid>.` with `body` as a new inode (temp file + rename), as sync does on a replica. The index is not touched. */
export async function replaceMessageFile(
  host: GeneratedHost,
  mailbox: string,
  uid: number,
  body: Buffer,
): Promise<void> {
  const { dataDir } = await mailboxPaths(host, mailbox);
  const path = join(dataDir, `${uid}.`);
  if (!existsSync(path)) throw new Error(`replaceMessageFile: ${path} does not exist`);
  const tmp = join(dataDir, `${uid}.tmp-replace`);
  writeFileSync(tmp, body, { mode: FILE_MODE });
  renameSync(tmp, path);
}

/**
 * Removes a mailbox from one host: its cyrus.* files and message files, and
 * its directories when nothing (such as a sub-mailbox) is left in them. The
 * mailbox list files are left alone, so the mailbox is "missing on one side".
 */
export async function removeMailbox(host: GeneratedHost, mailbox: string): Promise<void> {
  const paths = await mailboxPaths(host, mailbox);
  const dirs = [paths.dataDir, ...paths.metaDirs.filter((d) => d !== paths.dataDir)];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const cyrusFile = /^cyrus\.(header|index|cache|expunge|squat)(\.NEW)?$/.test(entry.name);
      const messageFile = dir === paths.dataDir && /^[1-9][0-9]*\.$/.test(entry.name);
      if (cyrusFile || messageFile) unlinkSync(join(dir, entry.name));
    }
    try {
      rmdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOTEMPTY") throw err;
    }
  }
}
