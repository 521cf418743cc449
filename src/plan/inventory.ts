// The inventory: which master/replica pairs exist and how to reach them.
// loadInventory reads the YAML file, checks it against
// schemas/inventory.schema.json, then applies the named rules below, and
// reports every problem at once, each as "file:line:col: path: message".
//
// Normalising (also here): relative paths on this machine (a mailbox list
// `file`, a local host's `config`, `identityFile`, `knownHostsFile`) are
// resolved against the inventory file's directory, and a leading "~/" is the
// home directory. Remote paths (an ssh host's `config`) are left alone.

import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { FileAccessError, GuidupError } from "../errors.js";
import type { HostSpec } from "../transport/types.js";
import {
  documentLocator,
  formatProblems,
  limitLines,
  type Problem,
  schemaProblems,
} from "./schema-check.js";

/** Where a pair's mailbox list comes from (paths already resolved). */
export type MailboxSource = { command: string } | { file: string } | { discover: true };

export interface PairSpec {
  name: string;
  mailboxes: MailboxSource;
  master: HostSpec;
  replica: HostSpec;
}

export interface Inventory {
  /** Absolute path of the inventory file. */
  file: string;
  pairs: PairSpec[];
}

/** An inventory file that is not valid YAML, breaks the schema, or breaks a rule. */
export class InventoryError extends GuidupError {
  readonly code: string = "inventory";
}

/** The inventory as the schema describes it, before normalising. */
interface RawInventory {
  pairs: PairSpec[];
}

/** Reads, checks and normalises an inventory. Throws InventoryError listing every problem. */
export async function loadInventory(path: string): Promise<Inventory> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new FileAccessError(`cannot read inventory ${path}: ${(err as Error).message}`);
  }
  return parseInventory(text, path);
}

/** loadInventory without the read: `path` names the file in messages and anchors relative paths. */
export function parseInventory(text: string, path: string): Inventory {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const lines = doc.errors.map((e) => {
      const pos = e.linePos?.[0];
      const where = pos ? `${path}:${pos.line}:${pos.col}` : path;
      return `${where}: ${firstLine(e.message)}`;
    });
    fail(lines, path);
  }
  const value: unknown = doc.toJS();
  const locate = documentLocator(doc, lineCounter);
  const problems = schemaProblems("inventory", value);
  const file = resolve(path);
  if (problems.length === 0) problems.push(...inventoryRules(value as RawInventory, dirname(file)));
  if (problems.length > 0) fail(formatProblems(problems, path, locate), path);
  return normalise(value as RawInventory, file);
}

function fail(lines: string[], path: string): never {
  throw new InventoryError(limitLines(lines), { file: path, problems: lines });
}

function firstLine(text: string): string {
  return text.split("\n")[0] ?? text;
}

// --- rules ---------------------------------------------------------------------
// Each takes the schema-valid inventory and returns its problems.

type Rule = (inv: RawInventory, base: string) => Problem[];

/** Pair names name plan files and state directories: two pairs may not share one. */
const uniquePairNames: Rule = (inv) => {
  const seen = new Map<string, number>();
  const problems: Problem[] = [];
  inv.pairs.forEach((pair, i) => {
    const first = seen.get(pair.name);
    if (first === undefined) seen.set(pair.name, i);
    else
      problems.push({
        pointer: `/pairs/${i}/name`,
        message: `pair name '${pair.name}' is already used by pairs[${first}]`,
      });
  });
  return problems;
};

/** Upgrading one spool as both master and replica would lock it against itself. */
const distinctSides: Rule = (inv, base) => {
  const problems: Problem[] = [];
  inv.pairs.forEach((pair, i) => {
    if (hostIdentity(pair.master, base) === hostIdentity(pair.replica, base)) {
      problems.push({
        pointer: `/pairs/${i}/replica`,
        message: "master and replica are the same host and imapd.conf",
      });
    }
  });
  return problems;
};

/** ssh `~user/` is not expanded: say so rather than look for a file named "~user". */
const onlyHomeTilde: Rule = (inv) => {
  const problems: Problem[] = [];
  inv.pairs.forEach((pair, i) => {
    for (const side of ["master", "replica"] as const) {
      const host = pair[side];
      if (host.transport === "local") continue;
      for (const key of ["identityFile", "knownHostsFile"] as const) {
        const value = host[key];
        if (value?.startsWith("~") && value !== "~" && !value.startsWith("~/")) {
          problems.push({
            pointer: `/pairs/${i}/${side}/${key}`,
            message: `only "~/" is expanded; write the full path instead of "${value}"`,
          });
        }
      }
    }
  });
  return problems;
};

const RULES: readonly Rule[] = [uniquePairNames, distinctSides, onlyHomeTilde];

function inventoryRules(inv: RawInventory, base: string): Problem[] {
  return RULES.flatMap((rule) => rule(inv, base));
}

/** Same transport, machine (host and port) and imapd.conf = the same spool. */
function hostIdentity(host: HostSpec, base: string): string {
  if (host.transport === "local") return JSON.stringify(["local", localPath(host.config, base)]);
  return JSON.stringify(["ssh", host.host.toLowerCase(), host.port ?? 22, host.config]);
}

// --- normalising ---------------------------------------------------------------

function normalise(inv: RawInventory, file: string): Inventory {
  const base = dirname(file);
  return {
    file,
    pairs: inv.pairs.map((pair) => ({
      name: pair.name,
      mailboxes:
        "file" in pair.mailboxes ? { file: localPath(pair.mailboxes.file, base) } : pair.mailboxes,
      master: normaliseHost(pair.master, base),
      replica: normaliseHost(pair.replica, base),
    })),
  };
}

function normaliseHost(host: HostSpec, base: string): HostSpec {
  if (host.transport === "local") return { ...host, config: localPath(host.config, base) };
  const out = { ...host };
  if (out.identityFile !== undefined) out.identityFile = localPath(out.identityFile, base);
  if (out.knownHostsFile !== undefined) out.knownHostsFile = localPath(out.knownHostsFile, base);
  return out;
}

/** "~" and "~/…" → the home directory; relative → against the inventory's directory. */
export function localPath(path: string, base: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return resolve(homedir(), path.slice(2));
  return isAbsolute(path) ? path : resolve(base, path);
}
