// Minor version 5 (76-byte header, 56-byte record): v4 plus CONTENT_LINES,
// from the 2.2 development branch (commit b64deef44b). Read-only.

import { recordPrefix } from "./common.js";
import type { VersionTable } from "./types.js";
import { v4 } from "./v04.js";

export const v5 = {
  minor: 5,
  headerSize: 76,
  recordSize: 56,
  writtenBy: "Cyrus 2.2 development (commit b64deef44b)",
  writable: false,
  header: v4.header,
  record: [...recordPrefix, { name: "contentLines", type: "u32", size: 4 }],
} as const satisfies VersionTable;
