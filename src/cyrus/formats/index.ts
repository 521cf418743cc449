// The supported index minor versions, one table each. Everything that reads,
// writes or converts an index or expunge file looks its version up here.

import type {
  FieldRow,
  HeaderFieldName,
  PlacedField,
  RecordFieldName,
  VersionTable,
} from "./types.js";
import { placeFields } from "./types.js";
import { v4 } from "./v04.js";
import { v5 } from "./v05.js";
import { v6 } from "./v06.js";
import { v7 } from "./v07.js";
import { v8 } from "./v08.js";
import { v9 } from "./v09.js";
import { v10 } from "./v10.js";

export type {
  FieldRow,
  FieldType,
  HeaderFieldName,
  RecordFieldName,
  VersionTable,
} from "./types.js";

/** A version table with field offsets resolved and name lookups built. */
export interface IndexFormat extends VersionTable {
  readonly headerFields: readonly PlacedField<HeaderFieldName>[];
  readonly recordFields: readonly PlacedField<RecordFieldName>[];
  headerField(name: HeaderFieldName): PlacedField<HeaderFieldName> | undefined;
  recordField(name: RecordFieldName): PlacedField<RecordFieldName> | undefined;
}

function resolve(table: VersionTable): IndexFormat {
  const headerFields = placeFields(table.header);
  const recordFields = placeFields(table.record);
  const headerByName = new Map(headerFields.map((f) => [f.name, f]));
  const recordByName = new Map(recordFields.map((f) => [f.name, f]));
  return {
    ...table,
    headerFields,
    recordFields,
    headerField: (name) => headerByName.get(name),
    recordField: (name) => recordByName.get(name),
  };
}

export const TABLES: readonly VersionTable[] = [v4, v5, v6, v7, v8, v9, v10];

const FORMATS = new Map<number, IndexFormat>(TABLES.map((t) => [t.minor, resolve(t)]));

export const OLDEST_READABLE_MINOR = 4;
export const TARGET_MINOR = 10;
/** Minors guidup can write: 10, and 6..9 for a downgrade. */
export const WRITABLE_MINORS: readonly number[] = TABLES.filter((t) => t.writable).map(
  (t) => t.minor,
);

/** The format of a supported minor version, or undefined. */
export function formatFor(minor: number): IndexFormat | undefined {
  return FORMATS.get(minor);
}

export function writableFormat(minor: number): IndexFormat | undefined {
  const format = FORMATS.get(minor);
  return format?.writable ? format : undefined;
}

export type { PlacedField };
export type FieldRows<N extends string> = readonly FieldRow<N>[];
