// The plan file: a Plan as reviewable YAML, and back.
//
// writePlan writes format guidup-plan/3 (plan-stream.ts: the header in the
// model's key order, block mappings, no anchors or aliases; then one line per
// entry): the same plan gives the same bytes, and two plans of the same spools
// differ only in id and created.
//
// readPlan reads a plan whole through plan-stream.ts (a /3 plan entry by
// entry, a /2 plan here). parseWholePlan → validatePlan: schema
// (schemas/plan.schema.json), then the named rules below; every problem is
// reported as "file:line:col: path: message". Files in /2's style are read by
// yaml-subset.ts in one pass; anything else goes through the yaml library
// (slower, heavier on huge files).

import { LineCounter, parseDocument } from "yaml";
import { ERRORS, type ErrorCode, GuidupError } from "../errors.js";
import {
  type HostSpec,
  JUMP_HOP_KEYS,
  LOCAL_HOST_KEYS,
  SSH_HOST_KEYS,
  type SshJumpHop,
} from "../host-spec.js";
import type { FileFacts } from "../protocol/messages.js";
import { compareNames } from "./build.js";
import {
  ACTIONS,
  OLD_PLAN_FORMATS,
  type Plan,
  type PlanHeader,
  type PlannedMailbox,
  type PlanSummary,
  SKIP_REASONS,
  type SkippedMailbox,
} from "./model.js";
import { formatPlanV3, openPlan, PlanWriter } from "./plan-stream.js";
import {
  documentLocator,
  formatProblems,
  type Locate,
  limitLines,
  type Problem,
  pointerChild,
  schemaProblems,
} from "./schema-check.js";
import { parseYamlSubset, type SubsetPositions, yamlKey, yamlScalar } from "./yaml-subset.js";

/** A plan file that is not valid YAML, breaks the schema, or breaks a rule. */
export class PlanError extends GuidupError {
  readonly code: ErrorCode = ERRORS.plan.code;
}

/** The text a plan was read from: names the file in messages and locates problems. */
export interface PlanSource {
  file: string;
  text: string;
}

// --- reading -------------------------------------------------------------------

/**
 * Reads and checks a plan file, whole (small plans, tools that need every
 * entry at once). Commands stream it instead (plan-stream.ts openPlan).
 * Throws PlanError listing the problems, FileAccessError if unreadable.
 */
export async function readPlan(path: string): Promise<Plan> {
  const stream = await openPlan(path);
  const mailboxes: PlannedMailbox[] = [];
  for await (const m of stream.mailboxes()) mailboxes.push(m);
  const skipped: SkippedMailbox[] = [];
  for await (const s of stream.skipped()) skipped.push(s);
  return { ...stream.header, mailboxes, skipped };
}

/** readPlan without the read (any format, whole). */
export function parsePlan(text: string, file: string): Plan {
  return parseWholePlan(text, file);
}

/**
 * A plan's text parsed whole: the fast reader for /2's style, else the yaml
 * library (a /3 plan's one-line entries among them), then schema and rules.
 */
export function parseWholePlan(text: string, file: string): Plan {
  const fast = parseYamlSubset(text);
  if (fast.ok) return checkPlan(fast.value, { file, text });
  const { doc, lineCounter } = parseFull(text, file);
  return checkPlan(
    doc.toJS({ maxAliasCount: 100 }),
    { file, text },
    documentLocator(doc, lineCounter),
  );
}

function parseFull(text: string, file: string) {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const lines = doc.errors.map((e) => {
      const pos = e.linePos?.[0];
      return `${pos ? `${file}:${pos.line}:${pos.col}` : file}: ${e.message.split("\n")[0]}`;
    });
    throw new PlanError(limitLines(lines), { file, problems: lines });
  }
  return { doc, lineCounter };
}

/**
 * Checks a parsed plan: the schema, then the rules. With `source`, problems
 * are located in its text (which is parsed again only when there are any).
 */
export function validatePlan(json: unknown, source?: PlanSource): Plan {
  return checkPlan(json, source);
}

/** validatePlan, for the streaming reader's header (a plan with empty lists). */
export function checkPlanValue(json: unknown, source?: PlanSource): Plan {
  return checkPlan(json, source);
}

function checkPlan(json: unknown, source?: PlanSource, locate?: Locate): Plan {
  const format = (json as { format?: unknown } | null)?.format;
  if (typeof format === "string" && OLD_PLAN_FORMATS.includes(format)) {
    const where = source?.file ?? "plan";
    throw new PlanError(
      `${where}: plan format ${format} was written by an older guidup; its entries lack the (uid, GUID) digests apply now checks: run guidup plan again`,
      { ...(source ? { file: source.file } : {}) },
    );
  }
  const problems = schemaProblems("plan", json);
  if (problems.length === 0) problems.push(...planRules(json as Plan));
  if (problems.length === 0) return json as Plan;
  const lines = formatProblems(
    problems,
    source?.file,
    source ? (locate ?? locator(source, problems)) : undefined,
  );
  throw new PlanError(limitLines(lines), {
    ...(source ? { file: source.file } : {}),
    problems: lines,
  });
}

/** Positions for a text already known to parse: the fast reader's if it can, else the yaml library's. */
function locator(source: PlanSource, problems: readonly Problem[]): Locate {
  const wanted = new Set<string>();
  for (const { pointer } of problems)
    for (let p = pointer; !wanted.has(p); p = p.slice(0, Math.max(0, p.lastIndexOf("/")))) {
      wanted.add(p);
      if (p === "") break;
    }
  const positions: SubsetPositions = { wanted, values: new Map(), keys: new Map() };
  if (parseYamlSubset(source.text, positions).ok) {
    return (pointer, key) =>
      key === undefined
        ? positions.values.get(pointer)
        : positions.keys.get(pointerChild(pointer, key));
  }
  const { doc, lineCounter } = parseFull(source.text, source.file);
  return documentLocator(doc, lineCounter);
}

// --- rules ---------------------------------------------------------------------
// Each takes a schema-valid plan and returns its problems. The summary is
// display only and deliberately not checked against the entries.

type Rule = (plan: Plan) => Problem[];

/** Apply works through the mailboxes in name order and finds entries by name. */
const sortedUniqueNames: Rule = (plan) => [
  ...sortedUnique(plan.mailboxes, "/mailboxes"),
  ...sortedUnique(plan.skipped, "/skipped"),
];

function sortedUnique(list: readonly { name: string }[], pointer: string): Problem[] {
  const problems: Problem[] = [];
  for (let i = 1; i < list.length; i++) {
    const prev = (list[i - 1] as { name: string }).name;
    const name = (list[i] as { name: string }).name;
    const order = compareNames(prev, name);
    if (order === 0) {
      problems.push({
        pointer: `${pointer}/${i}/name`,
        message: `mailbox ${JSON.stringify(name)} is listed twice (also at index ${i - 1})`,
      });
    } else if (order > 0) {
      problems.push({
        pointer: `${pointer}/${i}/name`,
        message: `not sorted by name: ${JSON.stringify(name)} comes after ${JSON.stringify(prev)}`,
      });
    }
  }
  return problems;
}

/** A mailbox is either planned or skipped, never both. */
const plannedOrSkipped: Rule = (plan) => {
  const planned = new Map(plan.mailboxes.map((m, i) => [m.name, i]));
  const problems: Problem[] = [];
  plan.skipped.forEach((s, i) => {
    const at = planned.get(s.name);
    if (at !== undefined)
      problems.push({
        pointer: `/skipped/${i}/name`,
        message: `mailbox ${JSON.stringify(s.name)} is also planned (mailboxes[${at}])`,
      });
  });
  return problems;
};

const RULES: readonly Rule[] = [sortedUniqueNames, plannedOrSkipped];

function planRules(plan: Plan): Problem[] {
  return RULES.flatMap((rule) => rule(plan));
}

// --- writing -------------------------------------------------------------------
// Key orders are the model's; `satisfies` makes a renamed field fail to compile.

export const FILE_FACTS_KEYS = [
  "minor",
  "records",
  "oldStyle",
  "nullGuids",
  "oldStyleBytes",
  "lastUid",
  "uidValidity",
  "highestModseq",
] as const satisfies readonly (keyof FileFacts)[];
type Scalar = string | number | boolean;

/** "{ a: 1, b: x }" of the keys present, in the given order (also /2's entry layout, test/helpers/plan-v2.ts). */
export function flowMap<T extends object>(value: T, keys: readonly (keyof T & string)[]): string {
  const parts: string[] = [];
  for (const k of keys) {
    const v = value[k];
    if (v !== undefined) parts.push(`${yamlKey(k)}: ${yamlScalar(v as Scalar)}`);
  }
  return parts.length === 0 ? "{}" : `{ ${parts.join(", ")} }`;
}

function flowList(values: readonly Scalar[]): string {
  return `[${values.map(yamlScalar).join(", ")}]`;
}

function hostLines(
  host: HostSpec,
  indent: string,
  keys: readonly string[] = host.transport === "local" ? LOCAL_HOST_KEYS : SSH_HOST_KEYS,
): string[] {
  const lines: string[] = [];
  for (const k of keys) {
    const v = (host as unknown as Record<string, unknown>)[k];
    if (v === undefined) continue;
    if (k === "jump") {
      // A block sequence of block mappings, one per hop: the style yaml-subset reads.
      lines.push(`${indent}jump:`);
      for (const hop of v as SshJumpHop[]) {
        hostLines(hop as unknown as HostSpec, `${indent}    `, JUMP_HOP_KEYS).forEach((line, i) => {
          lines.push(i === 0 ? `${indent}  - ${line.trimStart()}` : line);
        });
      }
      continue;
    }
    lines.push(
      `${indent}${yamlKey(k)}: ${Array.isArray(v) ? flowList(v as Scalar[]) : yamlScalar(v as Scalar)}`,
    );
  }
  return lines;
}

function summaryLines(s: PlanSummary): string[] {
  const side = ["master", "replica"] as const;
  return [
    "summary:",
    `  mailboxes: ${s.mailboxes}`,
    `  toApply: ${s.toApply}`,
    `  upToDate: ${s.upToDate}`,
    `  skipped: ${s.skipped}`,
    `  byAction: ${flowMap(s.byAction, ACTIONS)}`,
    `  bySkipReason: ${flowMap(s.bySkipReason, SKIP_REASONS)}`,
    `  records: ${flowMap(s.records, side)}`,
    `  oldStyleGuids: ${flowMap(s.oldStyleGuids, side)}`,
    `  bytesToHash: ${flowMap(s.bytesToHash, side)}`,
  ];
}

/**
 * The plan file's header: the opening comment and every field but the
 * entries, ending with a newline. The comment has no file name in it, so
 * that two plans of the same spools stay identical but for id and created.
 */
export function planHeaderText(plan: PlanHeader): string {
  return [
    `# guidup plan for pair ${plan.pair} — review, then: guidup apply <file>`,
    "#",
    "# guidup show <file> summarises it; guidup diff <old> <file> compares it with an",
    "# earlier plan. Deleting a mailbox entry leaves that mailbox alone; apply does",
    "# exactly an entry's actions ([version]: no GUID work; [guid]: no version",
    "# change) or refuses the entry. Checked against schemas/plan.schema.json;",
    '# one line per entry (guidup-plan/3), the plan closed by a "..." line.',
    "# Under the locks apply re-checks each side's facts: appends above lastUid,",
    "# expunges, expunge clean-up, flag and modseq changes are tolerated and",
    "# counted; a changed uidValidity, an index/expunge version moved other than",
    "# to the target, lastUid lower than planned, a changed `planned` (uid, GUID)",
    "# set (an unplanned UID up to lastUid, a changed SHA1 GUID) or a vanished",
    "# mailbox make the entry stale, naming the field: so does an edited fact.",
    "# bodySha256 is the digest of the entries and what follows them as guidup",
    "# wrote them: edit entries freely; apply then checks each one before its",
    "# first mailbox (it skips that pass while the digest still matches).",
    "",
    `format: ${yamlScalar(plan.format)}`,
    `id: ${yamlScalar(plan.id)}`,
    `created: ${yamlScalar(plan.created)}`,
    `tool: ${yamlScalar(plan.tool)}`,
    `pair: ${yamlScalar(plan.pair)}`,
    `target: ${yamlScalar(plan.target)}`,
    "hosts:",
    "  master:",
    ...hostLines(plan.hosts.master, "    "),
    "  replica:",
    ...hostLines(plan.hosts.replica, "    "),
    ...summaryLines(plan.summary),
    // Always quoted: some digests would read as numbers unquoted.
    ...(plan.bodySha256 === undefined ? [] : [`bodySha256: ${JSON.stringify(plan.bodySha256)}`]),
    "",
  ].join("\n");
}

/** The whole plan file as one string (small plans, tests); writePlan streams instead. */
export function formatPlan(plan: Plan): string {
  return formatPlanV3(plan);
}

/**
 * Writes the plan atomically in format /3 (PlanWriter: a
 * temporary file in the same directory, fsync, rename over `path`, fsync of
 * the directory). Creates the directory. An invalid plan is a bug
 * (InternalError).
 */
export async function writePlan(path: string, plan: Plan): Promise<void> {
  // The writer checks each entry as it goes and the header at commit.
  const { format: _f, summary, mailboxes, skipped, ...head } = plan;
  const writer = await PlanWriter.create(path, head);
  try {
    for (const m of mailboxes) await writer.add(m);
    for (const s of skipped) await writer.skip(s);
  } catch (err) {
    await writer.abort();
    throw err;
  }
  await writer.commit({ summary });
}
