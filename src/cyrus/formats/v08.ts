// Minor version 8 (92-byte header, 80-byte record), written by Cyrus
// 2.3.4-2.3.6: CONDSTORE added HIGHESTMODSEQ and the record MODSEQ.

import { headerPrefix } from "./common.js";
import type { VersionTable } from "./types.js";
import { v7 } from "./v07.js";

export const v8 = {
  minor: 8,
  headerSize: 92,
  recordSize: 80,
  writtenBy: "Cyrus 2.3.4-2.3.6",
  writable: true,
  header: [
    ...headerPrefix,
    { name: "quotaUsed", type: "u64", size: 8 },
    { name: "pop3LastLogin", type: "u32", size: 4 },
    { name: "uidValidity", type: "u32", size: 4 },
    { name: "deleted", type: "u32", size: 4 },
    { name: "answered", type: "u32", size: 4 },
    { name: "flagged", type: "u32", size: 4 },
    { name: "options", type: "u32", size: 4 }, // MAILBOX_OPTIONS
    { name: "leakedCache", type: "u32", size: 4 },
    { name: "highestModseq", type: "u64", size: 8 },
    { name: "spare0", type: "u32", size: 4 },
    { name: "spare1", type: "u32", size: 4 },
    { name: "spare2", type: "u32", size: 4 },
    { name: "spare3", type: "u32", size: 4 },
  ],
  record: [...v7.record, { name: "modseq", type: "u64", size: 8 }],
} as const satisfies VersionTable;
