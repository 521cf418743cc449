// The inventory: which master/replica pairs exist and how to reach them.
// loadInventory reads the YAML file, checks it against
// schemas/inventory.schema.json, then applies the named rules below, and
// reports every problem at once, each as "file:line:col: path: message".
//
// Normalising (also here): relative paths on this machine (a mailbox list
// `file`, a local host's `config`, `identityFile`, `knownHostsFile`,
// `sshConfig`) are resolved against the inventory file's directory, and a
// leading "~/" is the home directory. Remote paths (an ssh host's `config`)
// are left alone. Each ssh host is then resolved through the OpenSSH client
// configuration (src/plan/ssh-config.ts): `host` may be just an alias,
// explicit fields win, and what comes out is all the transport needs.

import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { ERRORS, type ErrorCode, FileAccessError, GuidupError } from "../errors.js";
import type { HostSpec } from "../host-spec.js";
import {
  documentLocator,
  formatProblems,
  limitLines,
  type Problem,
  schemaProblems,
} from "./schema-check.js";
import {
  type LoadedSshConfig,
  loadSshConfig,
  resolveSshHost,
  SshConfigError,
  type UnresolvedSshHost,
} from "./ssh-config.js";

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
  readonly code: ErrorCode = ERRORS.inventory.code;
}

/** A host as the inventory may write it: an ssh host can still name an alias and a ProxyJump. */
type RawHost = HostSpec | UnresolvedSshHost;

/** The inventory as the schema describes it, before normalising. */
interface RawInventory {
  /** OpenSSH client config for every ssh host without its own; "none" for none. */
  sshConfig?: string;
  pairs: (Omit<PairSpec, "master" | "replica"> & { master: RawHost; replica: RawHost })[];
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
  const inventory = normalise(value as RawInventory, file, problems);
  if (problems.length === 0) problems.push(...distinctSides(inventory));
  if (problems.length > 0) fail(formatProblems(problems, path, locate), path);
  return inventory;
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

/**
 * Upgrading one spool as both master and replica would lock it against
 * itself. Checked on the resolved inventory: two aliases may name one host.
 */
function distinctSides(inv: Inventory): Problem[] {
  const problems: Problem[] = [];
  inv.pairs.forEach((pair, i) => {
    if (hostIdentity(pair.master) === hostIdentity(pair.replica)) {
      problems.push({
        pointer: `/pairs/${i}/replica`,
        message: "master and replica are the same host and imapd.conf",
      });
    }
  });
  return problems;
}

/** ssh `~user/` is not expanded: say so rather than look for a file named "~user". */
const onlyHomeTilde: Rule = (inv) => {
  const problems: Problem[] = [];
  inv.pairs.forEach((pair, i) => {
    for (const side of ["master", "replica"] as const) {
      const host = pair[side];
      if (host.transport === "local") continue;
      for (const key of ["identityFile", "knownHostsFile", "sshConfig"] as const) {
        const value = (host as UnresolvedSshHost)[key];
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

const RULES: readonly Rule[] = [uniquePairNames, onlyHomeTilde];

function inventoryRules(inv: RawInventory, base: string): Problem[] {
  return RULES.flatMap((rule) => rule(inv, base));
}

/** Same transport, machine (host and port) and imapd.conf = the same spool (paths already resolved). */
function hostIdentity(host: HostSpec): string {
  if (host.transport === "local") return JSON.stringify(["local", host.config]);
  return JSON.stringify(["ssh", host.host.toLowerCase(), host.port ?? 22, host.config]);
}

// --- normalising ---------------------------------------------------------------

/** Resolves paths and ssh hosts; a host that cannot be resolved adds a problem at its `host`. */
function normalise(inv: RawInventory, file: string, problems: Problem[]): Inventory {
  const base = dirname(file);
  const configs = new Map<string, LoadedSshConfig>();
  const configFor = (name: string | undefined): LoadedSshConfig => {
    const key = name ?? "";
    let loaded = configs.get(key);
    if (loaded === undefined) {
      loaded = loadSshConfig(name);
      configs.set(key, loaded);
    }
    return loaded;
  };
  const host = (raw: RawHost, pointer: string): HostSpec => {
    try {
      return normaliseHost(raw, base, inv.sshConfig, configFor);
    } catch (err) {
      if (!(err instanceof SshConfigError)) throw err;
      problems.push({ pointer, message: err.message });
      return raw as HostSpec;
    }
  };
  return {
    file,
    pairs: inv.pairs.map((pair, i) => ({
      name: pair.name,
      mailboxes:
        "file" in pair.mailboxes ? { file: localPath(pair.mailboxes.file, base) } : pair.mailboxes,
      master: host(pair.master, `/pairs/${i}/master`),
      replica: host(pair.replica, `/pairs/${i}/replica`),
    })),
  };
}

function normaliseHost(
  host: RawHost,
  base: string,
  inventoryConfig: string | undefined,
  configFor: (name: string | undefined) => LoadedSshConfig,
): HostSpec {
  if (host.transport === "local") return { ...host, config: localPath(host.config, base) };
  const out: UnresolvedSshHost = { ...host };
  if (out.identityFile !== undefined) out.identityFile = localPath(out.identityFile, base);
  if (out.knownHostsFile !== undefined) out.knownHostsFile = localPath(out.knownHostsFile, base);
  const configName = out.sshConfig ?? inventoryConfig;
  const config =
    configName === undefined || configName === "none" ? configName : localPath(configName, base);
  return resolveSshHost(out, configFor(config));
}

/** "~" and "~/…" → the home directory; relative → against the inventory's directory. */
export function localPath(path: string, base: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return resolve(homedir(), path.slice(2));
  return isAbsolute(path) ? path : resolve(base, path);
}
