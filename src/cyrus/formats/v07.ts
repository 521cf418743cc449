// Minor version 7 (76-byte header, 72-byte record), written by Cyrus
// 2.3.0-2.3.3: v6 plus the 12-byte MESSAGE_UUID used by replication.

import type { VersionTable } from "./types.js";
import { v6 } from "./v06.js";

export const v7 = {
  minor: 7,
  headerSize: 76,
  recordSize: 72,
  writtenBy: "Cyrus 2.3.0-2.3.3",
  writable: true,
  header: v6.header,
  record: [...v6.record, { name: "uuid", type: "bytes", size: 12 }],
} as const satisfies VersionTable;
