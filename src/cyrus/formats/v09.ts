// Minor version 9 (96-byte header, 80-byte record), written by Cyrus
// 2.3.7-2.3.9: the header grew to 96 bytes so the u64 MODSEQ is 8-aligned.

import type { VersionTable } from "./types.js";
import { v8 } from "./v08.js";

export const v9 = {
  minor: 9,
  headerSize: 96,
  recordSize: 80,
  writtenBy: "Cyrus 2.3.7-2.3.9",
  writable: true,
  header: [...v8.header, { name: "spare4", type: "u32", size: 4 }],
  record: v8.record,
} as const satisfies VersionTable;
