// Minor version 4 (76-byte header, 52-byte record): pre-2.3 Cyrus, which a 2.3
// server can still meet on disk. Read-only: guidup never writes it.
// Source: cyrus-2.3-spool.md tables 1.2 and 2 (commit 5d52ed9f46).

import { headerPrefix, recordPrefix } from "./common.js";
import type { VersionTable } from "./types.js";

export const v4 = {
  minor: 4,
  headerSize: 76,
  recordSize: 52,
  writtenBy: "Cyrus 2.1/2.2 development (commit 5d52ed9f46)",
  writable: false,
  header: [
    ...headerPrefix,
    { name: "quotaUsed", type: "u32", size: 4 }, // u32 before v6
    { name: "pop3LastLogin", type: "u32", size: 4 },
    { name: "uidValidity", type: "u32", size: 4 },
    { name: "deleted", type: "u32", size: 4 },
    { name: "answered", type: "u32", size: 4 },
    { name: "flagged", type: "u32", size: 4 },
    { name: "options", type: "u32", size: 4 }, // POP3_NEW_UIDL
    // SPARE0. Cyrus 2.3.16's upgrade moves it to offset 64, which is
    // LEAKED_CACHE in v6+, so it is named after what it becomes (trap 11.9).
    { name: "leakedCache", type: "u32", size: 4 },
    { name: "spare1", type: "u32", size: 4 },
    { name: "spare2", type: "u32", size: 4 },
    { name: "spare3", type: "u32", size: 4 },
  ],
  record: [...recordPrefix],
} as const satisfies VersionTable;
