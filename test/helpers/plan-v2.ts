// Plans in format guidup-plan/2 (block entries), which guidup no longer
// writes but still reads: the fixtures of the tests that prove it does. The
// entries' layout is /2's writer's, kept here.

import type { Plan, PlannedMailbox, SideFacts, SkippedMailbox } from "../../src/plan/model.js";
import { FILE_FACTS_KEYS, flowMap, planHeaderText } from "../../src/plan/plan-file.js";
import { yamlScalar } from "../../src/plan/yaml-subset.js";

function sideLines(name: "master" | "replica", facts: SideFacts): string {
  const lines = [`    ${name}:`, `      index: ${flowMap(facts.index, FILE_FACTS_KEYS)}`];
  if (facts.expunge) lines.push(`      expunge: ${flowMap(facts.expunge, FILE_FACTS_KEYS)}`);
  lines.push(`      fingerprint: ${JSON.stringify(facts.fingerprint)}`);
  lines.push(
    `      planned: { records: ${facts.planned.records}, digest: ${JSON.stringify(facts.planned.digest)} }`,
  );
  if (facts.cached !== undefined) lines.push(`      cached: ${facts.cached}`);
  return lines.join("\n");
}

function mailboxEntry(m: PlannedMailbox): string {
  const lines = [`  - name: ${yamlScalar(m.name)}`];
  if (m.partition !== undefined) lines.push(`    partition: ${yamlScalar(m.partition)}`);
  lines.push(`    actions: [${m.actions.map(yamlScalar).join(", ")}]`);
  lines.push(sideLines("master", m.master), sideLines("replica", m.replica));
  return `${lines.join("\n")}\n`;
}

function skippedEntry(s: SkippedMailbox): string {
  return [
    `  - name: ${yamlScalar(s.name)}`,
    `    reason: ${yamlScalar(s.reason)}`,
    `    detail: ${yamlScalar(s.detail)}\n`,
  ].join("\n");
}

/** The plan as guidup 0.1.x wrote it (format guidup-plan/2). */
export function formatPlanV2(plan: Plan): string {
  const parts = [planHeaderText({ ...plan, format: "guidup-plan/2" })];
  if (plan.mailboxes.length === 0) parts.push("mailboxes: []\n");
  else parts.push("mailboxes:\n", ...plan.mailboxes.map(mailboxEntry));
  if (plan.skipped.length === 0) parts.push("skipped: []\n");
  else parts.push("skipped:\n", ...plan.skipped.map(skippedEntry));
  return parts.join("");
}

/** A plan object as a /2 plan reads back. */
export function asV2(plan: Plan): Plan {
  return { ...plan, format: "guidup-plan/2" };
}
