// Schema, then rules: the shared half of reading an inventory or a plan. Loads
// the JSON Schemas of schemas/, runs ajv over a parsed value, and turns ajv's
// errors and the named rules' findings into one line per problem, located in
// the source file ("plan.yaml:40:9: mailboxes[3].actions[0]: …").
//
// A Problem carries a JSON pointer (ajv's instancePath form); a Locate
// function maps it to a line and column. Locating is separate from parsing so
// that a large file is parsed cheaply and located only when it is wrong.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type Ajv2020Module from "ajv/dist/2020.js";
import type { ErrorObject, Options, ValidateFunction } from "ajv/dist/2020.js";
import { type Document, isMap, isNode, isScalar, isSeq, type LineCounter } from "yaml";
import { InternalError } from "../errors.js";

/** 1-based, as editors count. */
export interface SourcePosition {
  line: number;
  col: number;
}

/**
 * Where the value at `pointer` (a JSON pointer such as "/pairs/0/master")
 * starts, or with `key`, where that key of the mapping at `pointer` is
 * written. Undefined when the file has no such node.
 */
export type Locate = (pointer: string, key?: string) => SourcePosition | undefined;

export interface Problem {
  /** JSON pointer of the value concerned ("" = the whole document). */
  pointer: string;
  /** A key of that mapping the problem is about (an unknown key). */
  key?: string;
  message: string;
}

/** Problems as lines "file:line:col: path: message", in file order. */
export function formatProblems(
  problems: readonly Problem[],
  file?: string,
  locate?: Locate,
): string[] {
  const located = problems.map((p) => {
    const pos = locate ? locateNearest(locate, p.pointer, p.key) : undefined;
    const where = file === undefined ? "" : pos ? `${file}:${pos.line}:${pos.col}: ` : `${file}: `;
    const path = displayPath(p.pointer, p.key);
    return { pos, text: `${where}${path === "" ? "" : `${path}: `}${p.message}` };
  });
  located.sort(
    (a, b) => (a.pos?.line ?? 0) - (b.pos?.line ?? 0) || (a.pos?.col ?? 0) - (b.pos?.col ?? 0),
  );
  return [...new Set(located.map((l) => l.text))];
}

/** At most `max` lines, then "… and N more". */
export function limitLines(lines: readonly string[], max = 20): string {
  if (lines.length <= max) return lines.join("\n");
  return [...lines.slice(0, max), `… and ${lines.length - max} more problems`].join("\n");
}

/** The node itself, else its nearest ancestor the file has. */
function locateNearest(locate: Locate, pointer: string, key?: string): SourcePosition | undefined {
  if (key !== undefined) {
    const pos = locate(pointer, key);
    if (pos) return pos;
  }
  let p = pointer;
  for (;;) {
    const pos = locate(p);
    if (pos || p === "") return pos;
    p = p.slice(0, p.lastIndexOf("/"));
  }
}

export function pointerSegments(pointer: string): string[] {
  if (pointer === "") return [];
  return pointer
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

export function pointerChild(pointer: string, segment: string | number): string {
  return `${pointer}/${String(segment).replace(/~/g, "~0").replace(/\//g, "~1")}`;
}

/** "/pairs/0/master" → "pairs[0].master"; keys that are not identifiers are quoted. */
export function displayPath(pointer: string, key?: string): string {
  const segments = pointerSegments(pointer);
  if (key !== undefined) segments.push(key);
  let out = "";
  for (const s of segments) {
    if (/^(0|[1-9][0-9]*)$/.test(s)) out += `[${s}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(s)) out += out === "" ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

/** Locates nodes of a document parsed by the yaml library with a LineCounter. */
export function documentLocator(doc: Document, lineCounter: LineCounter): Locate {
  return (pointer, key) => {
    let node: unknown = doc.contents;
    for (const segment of pointerSegments(pointer)) {
      if (isMap(node)) {
        node = node.items.find((pair) => keyText(pair.key) === segment)?.value;
      } else if (isSeq(node)) {
        node = node.items[Number(segment)];
      } else {
        return undefined;
      }
    }
    let target: unknown = node;
    if (key !== undefined) {
      if (!isMap(node)) return undefined;
      target = node.items.find((pair) => keyText(pair.key) === key)?.key;
    }
    if (!isNode(target) || target.range == null)
      return pointer === "" && key === undefined ? { line: 1, col: 1 } : undefined;
    return lineCounter.linePos(target.range[0]);
  };
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return typeof key === "string" ? key : undefined;
}

// --- schemas -----------------------------------------------------------------

export type SchemaName = "inventory" | "plan" | "state";

const validators = new Map<SchemaName, ValidateFunction>();
const defValidators = new Map<string, ValidateFunction>();

export const SCHEMA_NAMES: readonly SchemaName[] = ["inventory", "plan", "state"];

/**
 * ajv's options, the same for the validators compiled at build time and at
 * run time. verbose: errors carry the offending value and schema, for
 * clearer messages. unicodeRegExp off: the schemas' patterns are ASCII
 * classes, anchors and counts, which match the same strings with or
 * without the "u" flag, and without it V8 runs them several times faster
 * (four 40-hex patterns per plan entry were an eighth of checking a
 * million entries).
 */
export const AJV_OPTIONS: Options = {
  allErrors: true,
  verbose: true,
  strict: true,
  strictRequired: false,
  unicodeRegExp: false,
};

/** ajv itself, and the CommonJS validators built by schema-compile.ts. */
const require = createRequire(import.meta.url);

/**
 * The text of schemas/<name>.schema.json of this package: two levels above
 * src/plan, or three above dist/src/plan.
 */
export function loadSchemaText(name: SchemaName): string {
  const tried: string[] = [];
  for (const rel of ["../../schemas/", "../../../schemas/"]) {
    const url = new URL(`${rel}${name}.schema.json`, import.meta.url);
    tried.push(url.pathname);
    try {
      return readFileSync(url, "utf8");
    } catch {
      // Try the next place.
    }
  }
  throw new InternalError(`schema ${name}.schema.json not found (looked at ${tried.join(", ")})`);
}

/**
 * Where `npm run build` puts the validator of a schema, or of one of its
 * `$defs`, compiled to code (see schema-compile.ts).
 */
export function precompiledValidatorPath(name: SchemaName, def?: string): URL {
  return new URL(
    `./schema-validators/${name}${def === undefined ? "" : `.${def}`}.cjs`,
    import.meta.url,
  );
}

/**
 * The definitions checked on their own (schemaDefProblems) that the build
 * compiles too: the streaming plan reader checks every entry line with them,
 * and apply, show and verify would otherwise load ajv to compile them.
 */
export const PRECOMPILED_DEFS: readonly { name: SchemaName; def: string }[] = [
  { name: "plan", def: "plannedMailbox" },
  { name: "plan", def: "skippedMailbox" },
];

/** The validator of `$defs/<def>` of a schema, compiled by `ajv` (one that has the schema added). */
export function defValidator(
  ajv: InstanceType<typeof Ajv2020Module.default>,
  name: SchemaName,
  text: string,
  def: string,
): ValidateFunction {
  const schema = JSON.parse(text) as { $id: string; $defs: Record<string, unknown> };
  if (!(def in schema.$defs)) throw new InternalError(`${name}.schema.json has no $defs/${def}`);
  ajv.addSchema(schema);
  return ajv.getSchema(`${schema.$id}#/$defs/${def}`) as ValidateFunction;
}

/** An ajv instance with this module's options (loaded only when needed: it is large). */
export function newAjv(extra: Options = {}): InstanceType<typeof Ajv2020Module.default> {
  const Ajv = (require("ajv/dist/2020.js") as typeof Ajv2020Module).default;
  return new Ajv({ ...AJV_OPTIONS, ...extra });
}

/**
 * The build's validator of `name` if it was compiled from exactly this
 * schema text; otherwise (running from sources, or a schema edited since the
 * build) undefined. Loading ajv and compiling a schema at start-up cost
 * about a fifth of a second of every command that reads an inventory or a
 * plan.
 */
function precompiled(name: SchemaName, text: string, def?: string): ValidateFunction | undefined {
  let mod: { default?: ValidateFunction; schemaText?: string };
  try {
    mod = require(fileURLToPath(precompiledValidatorPath(name, def))) as typeof mod;
  } catch {
    return undefined;
  }
  return mod.schemaText === text ? mod.default : undefined;
}

function validator(name: SchemaName): ValidateFunction {
  const known = validators.get(name);
  if (known) return known;
  const text = loadSchemaText(name);
  const validate = precompiled(name, text) ?? newAjv().compile(JSON.parse(text) as object);
  validators.set(name, validate);
  return validate;
}

/**
 * Checks `value` against one definition of a schema (`$defs/<def>`): a plan
 * entry read on its own, as the streaming plan reader does.
 */
export function schemaDefProblems(name: SchemaName, def: string, value: unknown): Problem[] {
  const key = `${name}#${def}`;
  let validate = defValidators.get(key);
  if (!validate) {
    // The build's validator when it was compiled from this schema text
    // (PRECOMPILED_DEFS); otherwise compiled here, loading ajv.
    const text = loadSchemaText(name);
    validate = precompiled(name, text, def) ?? defValidator(newAjv(), name, text, def);
    defValidators.set(key, validate);
  }
  if (validate(value)) return [];
  return ajvProblems(validate.errors ?? []);
}

/** Checks `value` against schemas/<name>.schema.json; no problems = valid. */
export function schemaProblems(name: SchemaName, value: unknown): Problem[] {
  const validate = validator(name);
  if (validate(value)) return [];
  return ajvProblems(validate.errors ?? []);
}

/** ajv's errors as problems, with the noise of schema combinators removed. */
export function ajvProblems(errors: readonly ErrorObject[]): Problem[] {
  // A failed oneOf reports every branch's failure too; the oneOf's own
  // message says it better. A failed if/then adds "must match then".
  const oneOfPaths = errors
    .filter((e) => e.keyword === "oneOf")
    .map((e) => ({ instancePath: e.instancePath, schemaPath: `${e.schemaPath}/` }));
  const problems: Problem[] = [];
  for (const e of errors) {
    if (e.keyword === "if") continue;
    if (
      oneOfPaths.some(
        (o) => e.instancePath === o.instancePath && e.schemaPath.startsWith(o.schemaPath),
      )
    )
      continue;
    problems.push(ajvProblem(e));
  }
  return problems;
}

function ajvProblem(e: ErrorObject): Problem {
  const params = e.params as Record<string, unknown>;
  const pointer = e.instancePath;
  switch (e.keyword) {
    case "additionalProperties": {
      const key = String(params.additionalProperty);
      const known = Object.keys(
        ((e.parentSchema as { properties?: object } | undefined)?.properties ?? {}) as object,
      );
      const guess = closest(key, known);
      const hint = guess
        ? ` (did you mean '${guess}'?)`
        : known.length > 0
          ? ` (known keys: ${known.join(", ")})`
          : "";
      return { pointer, key, message: `unknown key${hint}` };
    }
    case "oneOf": {
      const branches = (e.parentSchema as { oneOf?: { required?: string[] }[] } | undefined)?.oneOf;
      const names = branches?.map((b) => b.required?.[0]);
      if (names?.every((n) => n !== undefined)) {
        return {
          pointer,
          message: `must have exactly one of ${names.map((n) => `'${n}'`).join(", ")}`,
        };
      }
      return { pointer, message: e.message ?? "must match exactly one schema in oneOf" };
    }
    case "enum":
      return {
        pointer,
        message: `${e.message}: ${(params.allowedValues as unknown[]).map(show).join(", ")}${got(e.data)}`,
      };
    case "const":
      return { pointer, message: `must be ${show(params.allowedValue)}${got(e.data)}` };
    case "required":
      return { pointer, message: e.message ?? "missing property" };
    case "pattern": {
      const said = PATTERN_MESSAGES[String(params.pattern)];
      return { pointer, message: `${said ?? e.message}${got(e.data)}` };
    }
    default:
      return { pointer, message: `${e.message ?? e.keyword}${got(e.data)}` };
  }
}

/** What the schemas' patterns mean, said plainly; others get ajv's "must match pattern". */
const PATTERN_MESSAGES: Record<string, string> = {
  "^/": "must be an absolute path",
  "^[0-9a-f]{40}$": "must be a SHA1: 40 lowercase hex digits",
  "^[A-Za-z0-9][A-Za-z0-9._-]*$":
    "must be letters, digits, '.', '_' or '-', starting with a letter or digit",
};

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** ", got <value>" for a scalar value; nothing for objects and lists. */
function got(data: unknown): string {
  if (data === null || typeof data !== "object") return `, got ${show(data)}`;
  return "";
}

/** The known key a typo most likely meant: same letters ignoring case, or one or two edits away. */
function closest(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase();
  const exact = known.find((k) => k.toLowerCase() === lower);
  if (exact) return exact;
  let best: { k: string; d: number } | undefined;
  for (const k of known) {
    const d = editDistance(lower, k.toLowerCase());
    if (d <= Math.min(2, Math.floor(k.length / 3)) && (!best || d < best.d)) best = { k, d };
  }
  return best?.k;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}
