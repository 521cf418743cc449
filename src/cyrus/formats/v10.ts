// Minor version 10 (96-byte header, 88-byte record), written by Cyrus
// 2.3.10-2.3.20: the 20-byte MESSAGE_GUID replaced the 12-byte UUID and
// MODSEQ moved from 72 to 80. guidup's upgrade target.

import { recordPrefix } from "./common.js";
import type { VersionTable } from "./types.js";
import { v9 } from "./v09.js";

export const v10 = {
  minor: 10,
  headerSize: 96,
  recordSize: 88,
  writtenBy: "Cyrus 2.3.10-2.3.20",
  writable: true,
  header: v9.header,
  record: [
    ...recordPrefix,
    { name: "contentLines", type: "u32", size: 4 },
    { name: "cacheVersion", type: "u32", size: 4 },
    { name: "guid", type: "bytes", size: 20 },
    { name: "modseq", type: "u64", size: 8 },
  ],
} as const satisfies VersionTable;
