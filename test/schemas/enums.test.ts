// Every list of values that is written both in TypeScript and in a JSON
// schema (schemas/*.schema.json) must be the same list: a value added on one
// side only would make valid plans or states fail validation, or let invalid
// ones through. The Record<Union, true> objects below do not compile when the
// TypeScript union gains or loses a member, so each comparison is against the
// complete union, not a copy that could drift with it.

import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { PHASES, type Phase, type Step } from "../../src/apply/state.js";
import {
  type Action,
  PLAN_FORMAT,
  PLAN_FORMAT_V2,
  type PlanFormat,
  type SkipReason,
} from "../../src/plan/model.js";
import { OPS, type Op } from "../../src/protocol/messages.js";
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

const SKIP_REASONS: Record<SkipReason, true> = {
  "missing-on-master": true,
  "missing-on-replica": true,
  "uids-differ": true,
  "newer-than-target": true,
  unreadable: true,
  corrupt: true,
  "invalid-name": true,
  excluded: true,
};
const ACTIONS: Record<Action, true> = { version: true, guid: true };
const PHASE_SET: Record<Phase, true> = {
  pending: true,
  "in-progress": true,
  done: true,
  "replica-ahead": true,
  failed: true,
  diverged: true,
  stale: true,
  skipped: true,
  lagging: true,
};
const STEPS: Record<Step, true> = {
  "relay-cache": true,
  prepare: true,
  "lock-master": true,
  "lock-replica": true,
  "upgrade-master": true,
  "upgrade-replica": true,
  compare: true,
  "commit-replica": true,
  "commit-master": true,
  repair: true,
};
const OP_SET: Record<Op, true> = {
  scan: true,
  discover: true,
  hash: true,
  "cache-get": true,
  "cache-put": true,
  "cache-clean": true,
  prepare: true,
  lock: true,
  upgrade: true,
  commit: true,
  rollback: true,
  verify: true,
  status: true,
  "pair-lock": true,
  check: true,
};

describe("the JSON schemas' enums equal the TypeScript lists", () => {
  it("plan: skip reasons", () => {
    expect(sorted(enumAt("plan", "/$defs/skipReason"))).toEqual(sorted(Object.keys(SKIP_REASONS)));
  });

  it("plan: the formats read, the one written first", () => {
    const formats: Record<PlanFormat, true> = { [PLAN_FORMAT]: true, [PLAN_FORMAT_V2]: true };
    expect(enumAt("plan", "/properties/format")).toEqual([PLAN_FORMAT, PLAN_FORMAT_V2]);
    expect(sorted(enumAt("plan", "/properties/format"))).toEqual(sorted(Object.keys(formats)));
  });

  it("plan: actions", () => {
    expect(sorted(enumAt("plan", "/$defs/action"))).toEqual(sorted(Object.keys(ACTIONS)));
  });

  it("state: phases, in PHASES's order", () => {
    expect(enumAt("state", "/properties/phase")).toEqual([...PHASES]);
    expect(sorted(PHASES)).toEqual(sorted(Object.keys(PHASE_SET)));
  });

  it("state: steps, also where an error names its step", () => {
    expect(sorted(enumAt("state", "/properties/step"))).toEqual(sorted(Object.keys(STEPS)));
    const lastError = (schema("state").properties as Record<string, unknown>).lastError as {
      properties: { step: { $ref: string } };
    };
    expect(lastError.properties.step).toEqual({ $ref: "#/properties/step" });
  });
});

describe("protocol ops", () => {
  it("OPS lists every request type of the protocol once", () => {
    expect(new Set(OPS).size).toBe(OPS.length);
    expect(sorted(OPS)).toEqual(sorted(Object.keys(OP_SET)));
  });
});
