// Minor version 6 (76-byte header, 60-byte record), written by Cyrus 2.2.x.
// The quota became a u64 at offset 32, pushing every later header field down
// by 4 bytes; records gained CACHE_VERSION.

import { headerPrefix, recordPrefix } from "./common.js";
import type { VersionTable } from "./types.js";

export const v6 = {
  minor: 6,
  headerSize: 76,
  recordSize: 60,
  writtenBy: "Cyrus 2.2.x",
  writable: true,
  header: [
    ...headerPrefix,
    { name: "quotaUsed", type: "u64", size: 8 },
    { name: "pop3LastLogin", type: "u32", size: 4 },
    { name: "uidValidity", type: "u32", size: 4 },
    { name: "deleted", type: "u32", size: 4 },
    { name: "answered", type: "u32", size: 4 },
    { name: "flagged", type: "u32", size: 4 },
    // POP3_NEW_UIDL, a boolean: only bit 0 of the later MAILBOX_OPTIONS
    // survives a downgrade (as Cyrus 3.x writes it for v6/v7).
    { name: "options", type: "u32", size: 4, writeMask: 1 },
    { name: "leakedCache", type: "u32", size: 4 },
    { name: "spare1", type: "u32", size: 4 },
    { name: "spare2", type: "u32", size: 4 },
  ],
  record: [
    ...recordPrefix,
    { name: "contentLines", type: "u32", size: 4 },
    { name: "cacheVersion", type: "u32", size: 4 },
  ],
} as const satisfies VersionTable;
