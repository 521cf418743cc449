// Reading the PLAN argument of apply, status and show, and checking --only
// globs against the plan: the mistakes an operator makes at the prompt get a
// message that says what the file or the pattern is and what to run instead.

import { readFile } from "node:fs/promises";
import YAML from "yaml";
import { globToRegExp } from "../apply/glob.js";
import { UsageError } from "../errors.js";
import type { Plan } from "../plan/model.js";
import { PlanError, readPlan } from "../plan/plan-file.js";
import { openPlan, type PlanStream } from "../plan/plan-stream.js";

/**
 * readPlan, but an inventory given where a plan belongs is named as such
 * (the schema check alone would answer "unknown key pairs (did you mean
 * 'pair'?)").
 */
export function readPlanArg(path: string, command: string): Promise<Plan> {
  return withInventoryHint(path, command, () => readPlan(path));
}

/** openPlan (the header now, entries as they are read), with readPlanArg's message for an inventory. */
export function openPlanArg(path: string, command: string): Promise<PlanStream> {
  return withInventoryHint(path, command, () => openPlan(path));
}

/** Every plan's names, one plan after the other (read from the files, not held). */
export async function* namesOfPlans(plans: Iterable<PlanStream>): AsyncGenerator<string> {
  for (const plan of plans) yield* plan.names();
}

async function withInventoryHint<T>(
  path: string,
  command: string,
  read: () => Promise<T>,
): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof PlanError && (await looksLikeInventory(path)))
      throw new UsageError(
        `${path} is an inventory, not a plan: make a plan with guidup plan --inventory ${path}, then run guidup ${command} on the plan file it writes`,
      );
    throw err;
  }
}

async function looksLikeInventory(path: string): Promise<boolean> {
  try {
    const doc = YAML.parse(await readFile(path, "utf8")) as unknown;
    return (
      typeof doc === "object" &&
      doc !== null &&
      Array.isArray((doc as { pairs?: unknown }).pairs) &&
      !("mailboxes" in doc)
    );
  } catch {
    return false;
  }
}

/**
 * Refuses an --only GLOB that matches none of `names` (a typo would
 * otherwise look like "nothing to do"), naming every such glob.
 */
export function requireOnlyMatches(
  only: readonly string[],
  names: readonly string[],
  where: string,
): void {
  const unmatched = only.filter((g) => {
    const re = globToRegExp(g);
    return !names.some((n) => re.test(n));
  });
  if (unmatched.length === 0) return;
  const example = names[0] ? ` (names look like ${names[0]})` : "";
  throw new UsageError(
    `--only ${unmatched.map((g) => `'${g}'`).join(", ")} matches none of the ${names.length} mailboxes of ${where}${example}; check the pattern: * matches any run of characters, ? one`,
  );
}

/** requireOnlyMatches over a plan's names as they are read: stops once every glob has matched. */
export async function requireOnlyMatchesIn(
  only: readonly string[],
  names: AsyncIterable<string>,
  where: string,
): Promise<void> {
  if (only.length === 0) return;
  const left = new Map(only.map((g) => [g, globToRegExp(g)]));
  let count = 0;
  let first: string | undefined;
  for await (const name of names) {
    count++;
    first ??= name;
    for (const [g, re] of left) if (re.test(name)) left.delete(g);
    if (left.size === 0) return;
  }
  const example = first !== undefined ? ` (names look like ${first})` : "";
  throw new UsageError(
    `--only ${[...left.keys()].map((g) => `'${g}'`).join(", ")} matches none of the ${count} mailboxes of ${where}${example}; check the pattern: * matches any run of characters, ? one`,
  );
}
