// The shape of one index format table. A table lists the header and record
// fields of one minor version in on-disk order; offsets are derived by summing
// sizes, so a table cannot disagree with itself. Reading, writing and
// converting (index-file.ts, index-codec.ts, convert.ts) are driven only by
// these rows.

export type FieldType = "u32" | "u64" | "bytes";

/** Every header field name any supported version uses (Cyrus spelling in comments). */
export type HeaderFieldName =
  | "generation" // GENERATION_NO: must equal the first 4 bytes of cyrus.cache
  | "format" // FORMAT: 0 normal, 1 netnews
  | "minorVersion" // MINOR_VERSION
  | "startOffset" // START_OFFSET = header size
  | "recordSize" // RECORD_SIZE = record stride
  | "exists" // EXISTS: number of records
  | "lastAppendDate" // LAST_APPENDDATE
  | "lastUid" // LAST_UID
  | "quotaUsed" // QUOTA_MAILBOX_USED (u32 before v6, u64 from v6)
  | "pop3LastLogin" // POP3_LAST_LOGIN
  | "uidValidity" // UIDVALIDITY
  | "deleted" // DELETED count
  | "answered" // ANSWERED count
  | "flagged" // FLAGGED count
  | "options" // POP3_NEW_UIDL before v8; MAILBOX_OPTIONS (bit 0 = POP3_NEW_UIDL) from v8
  | "leakedCache" // LEAKED_CACHE
  | "highestModseq" // HIGHESTMODSEQ (u64)
  | "spare0"
  | "spare1"
  | "spare2"
  | "spare3"
  | "spare4";

/** Every record field name any supported version uses. */
export type RecordFieldName =
  | "uid"
  | "internalDate"
  | "sentDate"
  | "size"
  | "headerSize"
  | "contentOffset"
  | "cacheOffset"
  | "lastUpdated"
  | "systemFlags"
  | "userFlags0"
  | "userFlags1"
  | "userFlags2"
  | "userFlags3"
  | "contentLines" // CONTENT_LINES (v5+); 0xFFFFFFFF = unknown
  | "cacheVersion" // CACHE_VERSION (v6+)
  | "uuid" // MESSAGE_UUID, 12 raw bytes (v7–v9)
  | "guid" // MESSAGE_GUID, 20 raw bytes (v10)
  | "modseq"; // MODSEQ (u64, v8+)

export interface FieldRow<N extends string> {
  readonly name: N;
  readonly type: FieldType;
  readonly size: number;
  /**
   * Keep only these bits when writing this version (the value read keeps all
   * bits). Used where an older version's field holds one bit of a newer one.
   */
  readonly writeMask?: number;
}

export interface VersionTable {
  readonly minor: number;
  /** START_OFFSET this version's writers used. */
  readonly headerSize: number;
  /** RECORD_SIZE this version's writers used. */
  readonly recordSize: number;
  /** Which Cyrus wrote it (for messages and docs). */
  readonly writtenBy: string;
  /** Whether guidup may write this version (targets 6..10 only). */
  readonly writable: boolean;
  readonly header: readonly FieldRow<HeaderFieldName>[];
  readonly record: readonly FieldRow<RecordFieldName>[];
}

/** A field with its derived byte offset. */
export interface PlacedField<N extends string> extends FieldRow<N> {
  readonly offset: number;
}

export function placeFields<N extends string>(rows: readonly FieldRow<N>[]): PlacedField<N>[] {
  let offset = 0;
  return rows.map((row) => {
    const placed = { ...row, offset };
    offset += row.size;
    return placed;
  });
}
