// Build step (`npm run build`): compiles the JSON Schemas of schemas/, and
// the plan entry definitions the streaming plan reader checks line by line
// (PRECOMPILED_DEFS), to validator code with ajv's standalone generator, next
// to the compiled schema-check.js, so that a command needs neither ajv nor a
// schema compile at start-up (together about a fifth of a second of `guidup
// hash`, `plan`, `apply` or `show` on a small machine). Each file carries the
// schema text it was compiled from; schema-check uses it only for exactly
// that text and otherwise compiles at run time, so a stale or missing build
// step costs time, never correctness.
//
// Run: node dist/src/plan/schema-compile.js

import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  defValidator,
  loadSchemaText,
  newAjv,
  PRECOMPILED_DEFS,
  precompiledValidatorPath,
  SCHEMA_NAMES,
  type SchemaName,
} from "./schema-check.js";

const require = createRequire(import.meta.url);

/** The CommonJS module of one schema's validator, with the schema text it checks. */
export function precompiledSource(name: SchemaName): string {
  const standalone = (
    require("ajv/dist/standalone/index.js") as {
      default: (ajv: unknown, validate: unknown) => string;
    }
  ).default;
  const text = loadSchemaText(name);
  const ajv = newAjv({ code: { source: true } });
  const validate = ajv.compile(JSON.parse(text) as object);
  return `${standalone(ajv, validate)}\nmodule.exports.schemaText = ${JSON.stringify(text)};\n`;
}

/** The same for `$defs/<def>` of a schema, checked on its own (PRECOMPILED_DEFS). */
export function precompiledDefSource(name: SchemaName, def: string): string {
  const standalone = (
    require("ajv/dist/standalone/index.js") as {
      default: (ajv: unknown, validate: unknown) => string;
    }
  ).default;
  const text = loadSchemaText(name);
  const ajv = newAjv({ code: { source: true } });
  const validate = defValidator(ajv, name, text, def);
  return `${standalone(ajv, validate)}\nmodule.exports.schemaText = ${JSON.stringify(text)};\n`;
}

export function writePrecompiledValidators(): string[] {
  const written: string[] = [];
  const write = (file: string, source: string) => {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(`${file}.tmp`, source);
    renameSync(`${file}.tmp`, file);
    written.push(file);
  };
  for (const name of SCHEMA_NAMES)
    write(fileURLToPath(precompiledValidatorPath(name)), precompiledSource(name));
  for (const { name, def } of PRECOMPILED_DEFS)
    write(fileURLToPath(precompiledValidatorPath(name, def)), precompiledDefSource(name, def));
  return written;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  writePrecompiledValidators();
}
