// Building index and expunge files from field values, driven by the version
// tables. Used to generate test spools and by property tests; the upgrade
// itself goes through convert.ts, which never decodes records.

import { encodeField, type FieldValue } from "./field-codec.js";
import type { HeaderFieldName, IndexFormat, RecordFieldName } from "./formats/index.js";

export type HeaderValues = Partial<Record<HeaderFieldName, FieldValue>>;
export type RecordValues = Partial<Record<RecordFieldName, FieldValue>>;

/**
 * A header of `format` with the given values; MINOR_VERSION, START_OFFSET,
 * RECORD_SIZE come from the table and EXISTS from `exists`, unless `values`
 * overrides them (tests build broken files that way). Missing fields are 0.
 */
export function encodeHeader(format: IndexFormat, values: HeaderValues, exists: number): Buffer {
  const out = Buffer.alloc(format.headerSize);
  const fixed: HeaderValues = {
    minorVersion: format.minor,
    startOffset: format.headerSize,
    recordSize: format.recordSize,
    exists,
  };
  for (const field of format.headerFields) {
    encodeField(field, values[field.name] ?? fixed[field.name] ?? 0, out, 0);
  }
  return out;
}

export function encodeRecord(format: IndexFormat, values: RecordValues): Buffer {
  const out = Buffer.alloc(format.recordSize);
  for (const field of format.recordFields) {
    const value = values[field.name];
    if (value !== undefined) encodeField(field, value, out, 0);
  }
  return out;
}

/** A whole file: header then records. */
export function encodeIndexFile(
  format: IndexFormat,
  header: HeaderValues,
  records: readonly RecordValues[],
): Buffer {
  return Buffer.concat([
    encodeHeader(format, header, records.length),
    ...records.map((r) => encodeRecord(format, r)),
  ]);
}
