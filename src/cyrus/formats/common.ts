// Rows shared by several version tables. Only the leading 32 bytes of the
// header and the first 52 bytes of a record never changed between v4 and v10.

import type { FieldRow, HeaderFieldName, RecordFieldName } from "./types.js";

/** Header bytes 0..31: identical in every supported version. */
export const headerPrefix: readonly FieldRow<HeaderFieldName>[] = [
  { name: "generation", type: "u32", size: 4 },
  { name: "format", type: "u32", size: 4 },
  { name: "minorVersion", type: "u32", size: 4 },
  { name: "startOffset", type: "u32", size: 4 },
  { name: "recordSize", type: "u32", size: 4 },
  { name: "exists", type: "u32", size: 4 },
  { name: "lastAppendDate", type: "u32", size: 4 },
  { name: "lastUid", type: "u32", size: 4 },
];

/** Record bytes 0..51: identical in every supported version. */
export const recordPrefix: readonly FieldRow<RecordFieldName>[] = [
  { name: "uid", type: "u32", size: 4 },
  { name: "internalDate", type: "u32", size: 4 },
  { name: "sentDate", type: "u32", size: 4 },
  { name: "size", type: "u32", size: 4 },
  { name: "headerSize", type: "u32", size: 4 },
  { name: "contentOffset", type: "u32", size: 4 },
  { name: "cacheOffset", type: "u32", size: 4 },
  { name: "lastUpdated", type: "u32", size: 4 },
  { name: "systemFlags", type: "u32", size: 4 },
  { name: "userFlags0", type: "u32", size: 4 },
  { name: "userFlags1", type: "u32", size: 4 },
  { name: "userFlags2", type: "u32", size: 4 },
  { name: "userFlags3", type: "u32", size: 4 },
];
