// The plan file: a Plan as reviewable YAML, and back.
//
// writePlan writes keys in the model's order (model.ts), one block entry per
// mailbox, small records (file facts, per-side counts, action lists) as
// one-line flow collections, no anchors or aliases: the same plan gives the
// same bytes, and two plans of the same spools differ only in id and created.
//
// readPlan → validatePlan: schema (schemas/plan.schema.json), then the named
// rules below; every problem is reported as "file:line:col: path: message".
// Files in writePlan's style are read by yaml-subset.ts in one pass; anything
// else goes through the yaml library (slower, heavier on huge files).

import { randomBytes } from "node:crypto";
import { type FileHandle, mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { ERRORS, type ErrorCode, FileAccessError, GuidupError, InternalError } from "../errors.js";
import { fsyncDir } from "../fsutil/atomic-file.js";
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
  type PlannedMailbox,
  type PlanSummary,
  type SideFacts,
  SKIP_REASONS,
  type SkippedMailbox,
} from "./model.js";
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

/** Reads and checks a plan file. Throws PlanError listing every problem, FileAccessError if unreadable. */
export async function readPlan(path: string): Promise<Plan> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new FileAccessError(`cannot read plan ${path}: ${(err as Error).message}`);
  }
  return parsePlan(text, path);
}

/** readPlan without the read. */
export function parsePlan(text: string, file: string): Plan {
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

const FILE_FACTS_KEYS = [
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

/** "{ a: 1, b: x }" of the keys present, in the given order. */
function flowMap<T extends object>(value: T, keys: readonly (keyof T & string)[]): string {
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

function sideLines(name: "master" | "replica", facts: SideFacts): string {
  const lines = [`    ${name}:`, `      index: ${flowMap(facts.index, FILE_FACTS_KEYS)}`];
  if (facts.expunge) lines.push(`      expunge: ${flowMap(facts.expunge, FILE_FACTS_KEYS)}`);
  // Quoted always: a fingerprint of digits only would otherwise read as a number.
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
  lines.push(`    actions: ${flowList(m.actions)}`);
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

/**
 * The plan file's text in pieces, in order. Does not check the plan (see
 * writePlan). The opening comment has no file name in it, so that two plans
 * of the same spools stay identical but for id and created.
 */
export function* planChunks(plan: Plan): Generator<string> {
  yield [
    `# guidup plan for pair ${plan.pair} — review, then: guidup apply <file>`,
    "#",
    "# guidup show <file> summarises it; guidup diff <old> <file> compares it with an",
    "# earlier plan. Deleting a mailbox entry leaves that mailbox alone; apply does",
    "# exactly an entry's actions ([version]: no GUID work; [guid]: no version",
    "# change) or refuses the entry. Checked against schemas/plan.schema.json.",
    "# Under the locks apply re-checks each side's facts: appends above lastUid,",
    "# expunges, expunge clean-up, flag and modseq changes are tolerated and",
    "# counted; a changed uidValidity, an index/expunge version moved other than",
    "# to the target, lastUid lower than planned, a changed `planned` (uid, GUID)",
    "# set (an unplanned UID up to lastUid, a changed SHA1 GUID) or a vanished",
    "# mailbox make the entry stale, naming the field: so does an edited fact.",
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
    "",
  ].join("\n");
  if (plan.mailboxes.length === 0) yield "mailboxes: []\n";
  else {
    yield "mailboxes:\n";
    for (const m of plan.mailboxes) yield mailboxEntry(m);
  }
  if (plan.skipped.length === 0) yield "skipped: []\n";
  else {
    yield "skipped:\n";
    for (const s of plan.skipped) yield skippedEntry(s);
  }
}

/** The whole plan file as one string (small plans, tests); writePlan streams instead. */
export function formatPlan(plan: Plan): string {
  return [...planChunks(plan)].join("");
}

/**
 * Checks the plan, then writes it atomically: a temporary file in the same
 * directory, fsync, rename over `path`, fsync of the directory. Creates the
 * directory. A crash leaves either the old file or the new one, and at worst
 * a stray ".<name>.tmp-*" next to it. An invalid plan is a bug (InternalError).
 */
export async function writePlan(path: string, plan: Plan): Promise<void> {
  try {
    validatePlan(plan);
  } catch (err) {
    if (err instanceof PlanError)
      throw new InternalError(`refusing to write an invalid plan: ${err.message}`);
    throw err;
  }
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    await mkdir(dir, { recursive: true });
    const file = await open(tmp, "wx", 0o644);
    try {
      // Batched: one write per ~1 MB rather than one per entry.
      let batch: string[] = [];
      let size = 0;
      for (const chunk of planChunks(plan)) {
        batch.push(chunk);
        size += chunk.length;
        if (size >= 1 << 20) {
          await writeAll(file, batch.join(""));
          batch = [];
          size = 0;
        }
      }
      if (batch.length > 0) await writeAll(file, batch.join(""));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
    await fsyncDir(dir);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw new FileAccessError(`cannot write plan ${path}: ${(err as Error).message}`);
  }
}

async function writeAll(file: FileHandle, text: string): Promise<void> {
  const data = Buffer.from(text, "utf8");
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await file.write(data, done, data.length - done);
    done += bytesWritten;
  }
}
