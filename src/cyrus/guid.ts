// Message GUIDs as Cyrus 2.3 stores them (cyrus-2.3-spool.md section 5).
//
// On disk a v10 record holds 20 raw GUID bytes. Cyrus 2.3.10+ fills them with
// SHA1 over every byte of the `<uid>.` message file when `guid_mode: sha1`.
// Older ways leave an "old-style" GUID behind: all 20 bytes zero (the NULL
// GUID), or a 12-byte v7–v9 UUID padded with 8 zero bytes. Cyrus 2.4.0 uses
// exactly the test below (bytes 12..19 all zero) to decide a GUID needs
// recomputing, and so do we.

import { createHash } from "node:crypto";
import { open } from "node:fs/promises";

export const GUID_SIZE = 20;
/** Size of the v7–v9 MESSAGE_UUID slot. */
export const UUID_SIZE = 12;

export const NULL_GUID: Buffer = Buffer.alloc(GUID_SIZE);

/** True when bytes 12..19 are all zero: the NULL GUID or a padded UUID. */
export function isOldStyleGuid(guid: Uint8Array, at = 0): boolean {
  for (let i = UUID_SIZE; i < GUID_SIZE; i++) if (guid[at + i] !== 0) return false;
  return true;
}

/** True when all 20 bytes are zero. Replication treats it as "matches anything". */
export function isNullGuid(guid: Uint8Array, at = 0): boolean {
  for (let i = 0; i < GUID_SIZE; i++) if (guid[at + i] !== 0) return false;
  return true;
}

export function guidToHex(guid: Uint8Array): string {
  return Buffer.from(guid.buffer, guid.byteOffset, guid.byteLength).toString("hex");
}

/** Parses 40 lowercase hex digits. Returns undefined for anything else. */
export function guidFromHex(hex: string): Buffer | undefined {
  if (!/^[0-9a-f]{40}$/.test(hex)) return undefined;
  return Buffer.from(hex, "hex");
}

/** Bytes read per call while hashing: large reads, few syscalls. */
const HASH_CHUNK_BYTES = 1 << 20;

export interface FileSha1 {
  guid: Buffer;
  /** Bytes hashed: the file length at the time it was read. */
  size: number;
}

/**
 * SHA1 of a whole message file, streamed in 1 MiB reads so a large message
 * never sits in memory. Reads only; message files are never modified (they
 * may be hard links shared by many mailboxes).
 */
export async function sha1File(path: string, buffer?: Buffer): Promise<FileSha1> {
  const fh = await open(path, "r");
  try {
    const hash = createHash("sha1");
    const buf = buffer ?? Buffer.allocUnsafe(HASH_CHUNK_BYTES);
    let size = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      hash.update(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
      size += bytesRead;
    }
    return { guid: hash.digest(), size };
  } finally {
    await fh.close();
  }
}
