// Every list of values that is written both in TypeScript and in a JSON
// schema (schemas/*.schema.json) must be the same list: a value added on one
// side only would make valid plans or states fail validation, or let invalid
// ones through. Each TypeScript list is the one `as const` array its type is
// derived from (or, for ops, a Record over the union), so comparing against
// it compares against the type.

import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { OUTCOME_CODES, PHASES, STEPS } from "../../src/apply/state.js";
import { ERROR_CODES, ERRORS } from "../../src/errors.js";
import {
  ACTIONS,
  PLAN_FORMAT,
  PLAN_FORMAT_V2,
  type PlanFormat,
  SKIP_REASONS,
} from "../../src/plan/model.js";
import { CUTOVER_PATHS, OPS } from "../../src/protocol/messages.js";
import { REPO_ROOT } from "../helpers/fixtures.js";

function schema(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(REPO_ROOT, "schemas", `${name}.schema.json`), "utf8"));
}

/** The enum at a JSON pointer of a schema, e.g. "/$defs/skipReason". */
function enumAt(name: string, pointer: string): unknown[] {
  let node: unknown = schema(name);
  for (const key of pointer.split("/").slice(1)) node = (node as Record<string, unknown>)[key];
  const values = (node as { enum?: unknown[] } | undefined)?.enum;
  if (!Array.isArray(values)) throw new Error(`${name}.schema.json${pointer} has no enum`);
  return values;
}

const sorted = (xs: Iterable<unknown>) => [...xs].map(String).sort();

describe("the JSON schemas' enums equal the TypeScript lists", () => {
  it("plan: skip reasons", () => {
    expect(sorted(enumAt("plan", "/$defs/skipReason"))).toEqual(sorted(SKIP_REASONS));
  });

  it("plan: the formats read, the one written first", () => {
    const formats: Record<PlanFormat, true> = { [PLAN_FORMAT]: true, [PLAN_FORMAT_V2]: true };
    expect(enumAt("plan", "/properties/format")).toEqual([PLAN_FORMAT, PLAN_FORMAT_V2]);
    expect(sorted(enumAt("plan", "/properties/format"))).toEqual(sorted(Object.keys(formats)));
  });

  it("plan: actions", () => {
    expect(sorted(enumAt("plan", "/$defs/action"))).toEqual(sorted(ACTIONS));
  });

  it("state: phases, in PHASES's order", () => {
    expect(enumAt("state", "/properties/phase")).toEqual([...PHASES]);
  });

  it("state: cut-over paths, the last attempt's and each side's", () => {
    expect(enumAt("state", "/properties/path")).toEqual([...CUTOVER_PATHS]);
    expect(enumAt("state", "/properties/paths/properties/master")).toEqual([...CUTOVER_PATHS]);
    expect(enumAt("state", "/properties/paths/properties/replica")).toEqual([...CUTOVER_PATHS]);
  });

  it("state: steps, also where an error names its step", () => {
    expect(sorted(enumAt("state", "/properties/step"))).toEqual(sorted(STEPS));
    const lastError = (schema("state").properties as Record<string, unknown>).lastError as {
      properties: { step: { $ref: string } };
    };
    expect(lastError.properties.step).toEqual({ $ref: "#/properties/step" });
  });
});

describe("error codes", () => {
  it("state: lastError.code is an ERRORS code or an outcome code, each once", () => {
    const all = [...ERROR_CODES, ...OUTCOME_CODES];
    expect(new Set(all).size).toBe(all.length);
    const lastError = (schema("state").properties as Record<string, unknown>).lastError as {
      properties: { code: { enum: string[] } };
    };
    expect(sorted(lastError.properties.code.enum)).toEqual(sorted(all));
  });

  it("ERRORS is keyed once per code, and only internal exits 70", () => {
    expect(ERROR_CODES).toHaveLength(Object.keys(ERRORS).length);
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    expect(Object.values(ERRORS).filter((e) => e.exit === 70)).toEqual([ERRORS.internal]);
  });
});

describe("protocol ops", () => {
  it("OPS lists every request type of the protocol once", () => {
    expect(new Set(OPS).size).toBe(OPS.length);
    expect(OPS).toContain("pair-lock");
    expect(OPS).toHaveLength(15);
  });
});
