// Decoding and encoding of table fields. All integers are unsigned big-endian
// (cyrus-2.3-spool.md section 0); u64 values are bigint so HIGHESTMODSEQ and
// MODSEQ never lose precision.

import type { FieldType, PlacedField } from "./formats/index.js";

export type FieldValue = number | bigint | Buffer;

export function decodeField(type: FieldType, buf: Buffer, at: number, size: number): FieldValue {
  switch (type) {
    case "u32":
      return buf.readUInt32BE(at);
    case "u64":
      return buf.readBigUInt64BE(at);
    case "bytes":
      return Buffer.from(buf.subarray(at, at + size));
  }
}

/**
 * Writes `value` as `field` at `base + field.offset`. Numbers and bigints are
 * interchangeable (a u32 quota widens to u64 on upgrade); a value that does not
 * fit is an InternalError-worthy bug, so it throws.
 */
export function encodeField<N extends string>(
  field: PlacedField<N>,
  value: FieldValue,
  buf: Buffer,
  base: number,
): void {
  const at = base + field.offset;
  switch (field.type) {
    case "u32": {
      let n = typeof value === "bigint" ? Number(value) : (value as number);
      if (field.writeMask !== undefined) n = (n & field.writeMask) >>> 0;
      buf.writeUInt32BE(n, at);
      return;
    }
    case "u64":
      buf.writeBigUInt64BE(typeof value === "bigint" ? value : BigInt(value as number), at);
      return;
    case "bytes": {
      const bytes = value as Buffer;
      if (bytes.length !== field.size) {
        throw new RangeError(`${field.name}: ${bytes.length} bytes for a ${field.size}-byte field`);
      }
      bytes.copy(buf, at);
      return;
    }
  }
}

export function decodeFields<N extends string>(
  fields: readonly PlacedField<N>[],
  buf: Buffer,
  base: number,
): Map<N, FieldValue> {
  const values = new Map<N, FieldValue>();
  for (const f of fields) values.set(f.name, decodeField(f.type, buf, base + f.offset, f.size));
  return values;
}
