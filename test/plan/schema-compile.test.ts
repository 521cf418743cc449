// The validators compiled at build time (schema-compile.ts, run by
// `npm run build` into dist/src/plan/schema-validators) must judge every
// document exactly as ajv compiling the schema at run time does: same
// verdict, same errors (the messages users read come from them). Checked over
// a valid inventory, plan and state and every one-step mutation of them
// (each value deleted, replaced by a number, a string, null; an unknown key
// added to each object). The same for the plan entry definitions the
// streaming reader checks line by line (PRECOMPILED_DEFS), and reading a plan
// then loads none of ajv's compiler. `npm test` builds first.

import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ValidateFunction } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { MailboxState } from "../../src/apply/state.js";
import { formatPlan, writePlan } from "../../src/plan/plan-file.js";
import {
  defValidator,
  loadSchemaText,
  newAjv,
  PRECOMPILED_DEFS,
  SCHEMA_NAMES,
  type SchemaName,
} from "../../src/plan/schema-check.js";
import { precompiledDefSource, precompiledSource } from "../../src/plan/schema-compile.js";
import { REPO_ROOT } from "../helpers/fixtures.js";
import { makePlan, makeSkipped } from "../helpers/plan-factory.js";

const require = createRequire(import.meta.url);

function built(name: SchemaName, def?: string): { default: ValidateFunction; schemaText: string } {
  const file = `${REPO_ROOT}/dist/src/plan/schema-validators/${name}${def === undefined ? "" : `.${def}`}.cjs`;
  try {
    return require(file);
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message} (run npm run build first)`);
  }
}

function samples(name: SchemaName): unknown {
  switch (name) {
    case "inventory":
      return parse(readFileSync(`${REPO_ROOT}/examples/inventory.yaml`, "utf8"));
    case "plan": {
      const plan = makePlan(2);
      plan.skipped.push(makeSkipped(9));
      return parse(formatPlan(plan));
    }
    case "state": {
      const state: MailboxState = {
        name: "user.a",
        planId: "0123456789abcdef",
        phase: "done",
        attempts: 1,
        firstStarted: "2026-12-05T10:00:00.000Z",
        updated: "2026-12-05T10:00:01.000Z",
        finished: "2026-12-05T10:00:01.000Z",
        lastError: { code: "lock-timeout", message: "busy", host: "master" },
        lockHeldMs: { master: 3, replica: 2 },
      };
      return JSON.parse(JSON.stringify(state));
    }
  }
}

/** The document and each of its one-step mutations. */
function* mutations(doc: unknown): Generator<unknown> {
  yield doc;
  const paths: (string | number)[][] = [];
  const walk = (v: unknown, path: (string | number)[]) => {
    paths.push(path);
    if (Array.isArray(v)) for (const [i, x] of v.entries()) walk(x, [...path, i]);
    else if (v !== null && typeof v === "object")
      for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
  };
  walk(doc, []);
  for (const path of paths) {
    for (const change of ["delete", 42, "x", null, "unknown-key"] as const) {
      const copy = structuredClone(doc) as Record<string | number, unknown>;
      let parent: Record<string | number, unknown> | undefined;
      let node: unknown = copy;
      for (const key of path) {
        parent = node as Record<string | number, unknown>;
        node = parent[key];
      }
      const key = path[path.length - 1];
      if (change === "unknown-key") {
        if (node === null || typeof node !== "object" || Array.isArray(node)) continue;
        (node as Record<string, unknown>).notInTheSchema = 1;
      } else if (parent === undefined || key === undefined) continue;
      else if (change === "delete") {
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete parent[key];
      } else parent[key] = change;
      yield copy;
    }
  }
}

describe("validators compiled at build time", () => {
  for (const name of SCHEMA_NAMES) {
    it(`${name}: built from today's schema, same source as compiling it now`, () => {
      const mod = built(name);
      expect(mod.schemaText).toBe(loadSchemaText(name));
      expect(
        readFileSync(
          fileURLToPath(
            new URL(`../../dist/src/plan/schema-validators/${name}.cjs`, import.meta.url),
          ),
          "utf8",
        ),
      ).toBe(precompiledSource(name));
    });

    it(`${name}: same verdict and errors as ajv at run time, over a document and its mutations`, () => {
      const atBuild = built(name).default;
      const atRun = newAjv().compile(JSON.parse(loadSchemaText(name)) as object);
      let valid = 0;
      let invalid = 0;
      for (const doc of mutations(samples(name))) {
        const a = atRun(doc);
        const b = atBuild(doc);
        expect(b).toBe(a);
        expect(JSON.stringify(atBuild.errors)).toBe(JSON.stringify(atRun.errors));
        if (a) valid++;
        else invalid++;
      }
      expect(valid).toBeGreaterThan(0);
      expect(invalid).toBeGreaterThan(10);
    });
  }
});

/** A plan entry of each precompiled definition, as the streaming reader parses it. */
function defSample(name: SchemaName, def: string): unknown {
  if (name === "plan" && def === "plannedMailbox")
    return (parse(formatPlan(makePlan(1))) as { mailboxes: unknown[] }).mailboxes[0];
  if (name === "plan" && def === "skippedMailbox")
    return JSON.parse(JSON.stringify(makeSkipped(9)));
  throw new Error(`no sample for ${name}#${def}: add one`);
}

describe("definitions compiled at build time", () => {
  for (const { name, def } of PRECOMPILED_DEFS) {
    it(`${name}#${def}: built from today's schema, same source as compiling it now`, () => {
      expect(built(name, def).schemaText).toBe(loadSchemaText(name));
      expect(
        readFileSync(`${REPO_ROOT}/dist/src/plan/schema-validators/${name}.${def}.cjs`, "utf8"),
      ).toBe(precompiledDefSource(name, def));
    });

    it(`${name}#${def}: same verdict and errors as ajv at run time, over an entry and its mutations`, () => {
      const atBuild = built(name, def).default;
      const atRun = defValidator(newAjv(), name, loadSchemaText(name), def);
      let valid = 0;
      let invalid = 0;
      for (const doc of mutations(defSample(name, def))) {
        const a = atRun(doc);
        const b = atBuild(doc);
        expect(b).toBe(a);
        expect(JSON.stringify(atBuild.errors)).toBe(JSON.stringify(atRun.errors));
        if (a) valid++;
        else invalid++;
      }
      expect(valid).toBeGreaterThan(0);
      expect(invalid).toBeGreaterThan(10);
    });
  }

  it("reading every entry of a plan loads none of ajv's compiler, only its run-time helpers", async () => {
    const dir = await mkdtemp(join(tmpdir(), "guidup-no-ajv-"));
    try {
      const plan = makePlan(3);
      plan.skipped.push(makeSkipped(9));
      const file = join(dir, "plan.yaml");
      await writePlan(file, plan);
      const script = join(dir, "read.mjs");
      writeFileSync(
        script,
        [
          'import { createRequire } from "node:module";',
          `const { openPlan } = await import(${JSON.stringify(`${REPO_ROOT}/dist/src/plan/plan-stream.js`)});`,
          `const plan = await openPlan(${JSON.stringify(file)});`,
          "let n = 0;",
          "for await (const _ of plan.mailboxes()) n++;",
          "for await (const _ of plan.skipped()) n++;",
          "const loaded = Object.keys(createRequire(import.meta.url).cache);",
          'console.log(JSON.stringify({ n, ajv: loaded.filter((k) => k.includes("/node_modules/ajv/")) }));',
        ].join("\n"),
      );
      const out = JSON.parse(execFileSync(process.execPath, [script], { encoding: "utf8" })) as {
        n: number;
        ajv: string[];
      };
      expect(out.n).toBe(4);
      expect(out.ajv.filter((k) => !k.includes("/node_modules/ajv/dist/runtime/"))).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
