// OpenSSH client configuration: an inventory host may name just an alias
// (`host: imap1`) and is then resolved the way `ssh imap1` would resolve it,
// from ~/.ssh/config (then /etc/ssh/ssh_config) or from the one file the
// inventory names (`sshConfig: FILE`, like `ssh -F FILE`; `none` reads
// nothing). Parsing and Host/Match evaluation are the `ssh-config` package's;
// this file picks the directives guidup uses, expands OpenSSH's `%` tokens
// and `~`, splices `Include`, and lets explicit inventory fields win.
//
// What is used: HostName, Port, User, IdentityFile (the first one that
// exists), IdentitiesOnly, UserKnownHostsFile (all files read, new keys
// written to the first), GlobalKnownHostsFile (read) when set, ProxyJump
// (each hop resolved from the same configuration, its own ProxyJump not
// followed), ServerAliveInterval, ServerAliveCountMax. ProxyCommand is
// refused rather than ignored. `Match exec` is not run: it counts as not
// matching (guidup does not run shell commands from a config file).

import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import type SSHConfig from "ssh-config";
import { ERRORS, type ErrorCode, GuidupError } from "../errors.js";
import { JUMP_HOP_KEYS, type SshHostSpec, type SshJumpHop } from "../host-spec.js";

/** A configuration file that cannot be read or asks for something guidup cannot do. */
export class SshConfigError extends GuidupError {
  readonly code: ErrorCode = ERRORS.sshConfig.code;
}

/** An inventory ssh host as written: resolved fields plus how to resolve the rest. */
export type UnresolvedSshHost = SshHostSpec & {
  /** OpenSSH client config to resolve from; "none" for none. */
  sshConfig?: string;
  /** OpenSSH ProxyJump syntax: "[user@]host[:port],…" or "none". */
  proxyJump?: string;
};

/** Parsed configuration text, and where it came from (for messages). */
export interface LoadedSshConfig {
  files: string[];
  config: SSHConfig | undefined;
}

const MAX_INCLUDE_DEPTH = 16;

function home(): string {
  return os.homedir();
}

function expandHome(p: string): string {
  if (p === "~") return home();
  if (p.startsWith("~/")) return path.join(home(), p.slice(2));
  return p;
}

/**
 * The `ssh-config` package, loaded when a configuration is parsed (its CommonJS
 * build, synchronously): an inventory of local hosts only (guidup hash and
 * the demo over local agents) does not pay for loading it at start-up.
 */
function sshConfigPackage(): typeof SSHConfig {
  return (createRequire(import.meta.url)("ssh-config") as { default: typeof SSHConfig }).default;
}

/**
 * Reads the configuration guidup resolves hosts from. `file` undefined: the
 * user's ~/.ssh/config then /etc/ssh/ssh_config, each optional, as ssh does;
 * "none": nothing; a path: that file only, which must exist.
 */
export function loadSshConfig(file: string | undefined): LoadedSshConfig {
  if (file === "none") return { files: [], config: undefined };
  const sources =
    file === undefined
      ? [
          { file: path.join(home(), ".ssh", "config"), base: path.join(home(), ".ssh") },
          { file: "/etc/ssh/ssh_config", base: "/etc/ssh" },
        ].filter((s) => fs.existsSync(s.file))
      : [{ file, base: path.join(home(), ".ssh") }];
  const texts: string[] = [];
  for (const source of sources) texts.push(readWithIncludes(source.file, source.base, 0));
  if (texts.length === 0) return { files: [], config: undefined };
  let config: SSHConfig;
  try {
    config = sshConfigPackage().parse(texts.join("\n"));
  } catch (err) {
    throw new SshConfigError(
      `cannot parse ssh config ${sources.map((s) => s.file).join(", ")}: ${(err as Error).message}`,
    );
  }
  return { files: sources.map((s) => s.file), config };
}

/** The file's text with each `Include` line replaced by the files it names (missing ones skipped, as ssh does). */
function readWithIncludes(file: string, base: string, depth: number): string {
  if (depth > MAX_INCLUDE_DEPTH)
    throw new SshConfigError(`ssh config ${file}: Include nested too deeply (a loop?)`);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new SshConfigError(`cannot read ssh config ${file}: ${(err as Error).message}`);
  }
  return text
    .split("\n")
    .map((line) => {
      const m = /^\s*include(?:\s*=\s*|\s+)(.+?)\s*$/i.exec(line);
      if (!m?.[1]) return line;
      return m[1]
        .split(/\s+/)
        .flatMap((pattern) => globFiles(pattern.replace(/^"|"$/g, ""), base))
        .map((included) => readWithIncludes(included, base, depth + 1))
        .join("\n");
    })
    .join("\n");
}

/** Files matching an Include pattern: `*` and `?` in the last component only, sorted. */
function globFiles(pattern: string, base: string): string[] {
  const full = path.resolve(base, expandHome(pattern));
  const dir = path.dirname(full);
  const name = path.basename(full);
  if (!/[*?]/.test(name)) return fs.existsSync(full) ? [full] : [];
  const re = new RegExp(
    `^${name
      .split("")
      .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[\\^$.|+()[\]{}]/g, "\\$&")))
      .join("")}$`,
  );
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return entries
    .filter((e) => re.test(e))
    .sort()
    .map((e) => path.join(dir, e));
}

type Computed = Record<string, string | string[]>;

function compute(loaded: LoadedSshConfig, alias: string, user?: string): Computed {
  if (loaded.config === undefined) return {};
  return loaded.config.compute(user === undefined ? { Host: alias } : { Host: alias, User: user }, {
    ignoreCase: true,
    matchExec: false,
  });
}

function first(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function all(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

interface TokenContext {
  alias: string;
  host: string;
  port: number;
  remoteUser: string;
}

/** OpenSSH's `%` tokens (ssh_config(5) TOKENS) that make sense without a connection. */
function expandTokens(value: string, ctx: TokenContext, directive: string, where: string): string {
  return value.replace(/%(.)/g, (_all, c: string) => {
    switch (c) {
      case "%":
        return "%";
      case "h":
        return ctx.host;
      case "n":
        return ctx.alias;
      case "p":
        return String(ctx.port);
      case "r":
        return ctx.remoteUser;
      case "u":
        return os.userInfo().username;
      case "d":
        return home();
      case "i":
        return String(os.userInfo().uid);
      case "l":
        return os.hostname().split(".")[0] ?? os.hostname();
      case "L":
        return os.hostname();
      default:
        throw new SshConfigError(
          `${where}: ${directive} uses the token %${c}, which guidup does not expand`,
        );
    }
  });
}

function parsePort(value: string | undefined, where: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 65535)
    throw new SshConfigError(`${where}: Port ${JSON.stringify(value)} is not a port number`);
  return n;
}

function parseSeconds(value: string | undefined, what: string, where: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value))
    throw new SshConfigError(`${where}: ${what} ${JSON.stringify(value)} is not a number`);
  return Number(value);
}

function yes(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  return value.toLowerCase() === "yes";
}

/** Where the config came from, for messages. */
function origin(loaded: LoadedSshConfig): string {
  return loaded.files.length === 0 ? "ssh config" : `ssh config ${loaded.files.join(", ")}`;
}

interface Endpoint extends SshJumpHop {
  computed: Computed;
}

/**
 * One endpoint (the host or a hop) from its alias and explicit fields:
 * explicit wins, then the configuration, then nothing (the transport's
 * defaults apply).
 */
function resolveEndpoint(
  alias: string,
  explicit: Partial<Omit<Endpoint, "host" | "computed">>,
  loaded: LoadedSshConfig,
): Endpoint {
  const where = `${origin(loaded)} (Host ${alias})`;
  const c = compute(loaded, alias, explicit.user);
  const hostName = first(c.hostname);
  const tokenBase = { alias, host: alias, port: 22, remoteUser: os.userInfo().username };
  const host =
    hostName === undefined ? alias : expandTokens(hostName, tokenBase, "HostName", where);
  const port = explicit.port ?? parsePort(first(c.port), where);
  const user = explicit.user ?? first(c.user);
  const ctx: TokenContext = {
    alias,
    host,
    port: port ?? 22,
    remoteUser: user ?? os.userInfo().username,
  };
  const pathOf = (p: string, directive: string) =>
    path.resolve(expandHome(expandTokens(p, ctx, directive, where)));
  let identityFile = explicit.identityFile;
  if (identityFile === undefined) {
    // ssh tries each IdentityFile and skips those that do not exist; guidup uses one key.
    const files = all(c.identityfile).map((f) => pathOf(f, "IdentityFile"));
    identityFile = files.find((f) => fs.existsSync(f));
  }
  // ssh reads every file named and writes new keys to the first; an explicit
  // knownHostsFile replaces the config's user files.
  let knownHostsFile = explicit.knownHostsFile;
  const more: string[] = [];
  if (knownHostsFile === undefined) {
    const files = all(c.userknownhostsfile)
      .flatMap((f) => f.split(/\s+/))
      .filter((f) => f !== "" && f !== "none")
      .map((f) => pathOf(f, "UserKnownHostsFile"));
    knownHostsFile = files[0];
    more.push(...files.slice(1));
  }
  more.push(
    ...all(c.globalknownhostsfile)
      .flatMap((f) => f.split(/\s+/))
      .filter((f) => f !== "" && f !== "none")
      .map((f) => pathOf(f, "GlobalKnownHostsFile")),
  );
  const identitiesOnly = explicit.identitiesOnly ?? yes(first(c.identitiesonly));
  const endpoint: Endpoint = { host, computed: c };
  if (port !== undefined) endpoint.port = port;
  if (user !== undefined) endpoint.user = user;
  if (identityFile !== undefined) endpoint.identityFile = identityFile;
  if (identitiesOnly !== undefined) endpoint.identitiesOnly = identitiesOnly;
  if (knownHostsFile !== undefined) endpoint.knownHostsFile = knownHostsFile;
  if (more.length > 0) endpoint.moreKnownHostsFiles = [...new Set(more)];
  const name = explicit.name ?? (host !== alias ? alias : undefined);
  if (name !== undefined) endpoint.name = name;
  return endpoint;
}

/** One ProxyJump hop, "[user@]host[:port]" or "ssh://[user@]host[:port]". */
export function parseJumpHop(text: string): { alias: string; user?: string; port?: number } {
  let rest = text.trim().replace(/^ssh:\/\//, "");
  let user: string | undefined;
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
  }
  let alias = rest;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest);
  if (bracketed) {
    alias = bracketed[1] ?? "";
    portText = bracketed[2];
  } else if ((rest.match(/:/g) ?? []).length === 1) {
    [alias = "", portText] = rest.split(":");
  }
  if (alias === "" || /[\s/]/.test(alias) || user === "")
    throw new SshConfigError(`ProxyJump hop ${JSON.stringify(text)} is not [user@]host[:port]`);
  const port = parsePort(portText, `ProxyJump hop ${JSON.stringify(text)}`);
  return {
    alias,
    ...(user === undefined ? {} : { user }),
    ...(port === undefined ? {} : { port }),
  };
}

/**
 * Resolves an inventory ssh host: its alias through the configuration,
 * explicit fields winning. The result holds everything the transport needs
 * (the plan records it, so apply reaches the same hosts without the config).
 */
export function resolveSshHost(raw: UnresolvedSshHost, loaded: LoadedSshConfig): SshHostSpec {
  const { sshConfig: _file, proxyJump: explicitJump, ...spec } = raw;
  const explicit: Partial<Omit<Endpoint, "host" | "computed">> = {};
  if (spec.port !== undefined) explicit.port = spec.port;
  if (spec.user !== undefined) explicit.user = spec.user;
  if (spec.identityFile !== undefined) explicit.identityFile = spec.identityFile;
  if (spec.identitiesOnly !== undefined) explicit.identitiesOnly = spec.identitiesOnly;
  if (spec.knownHostsFile !== undefined) explicit.knownHostsFile = spec.knownHostsFile;
  if (spec.name !== undefined) explicit.name = spec.name;
  const target = resolveEndpoint(spec.host, explicit, loaded);
  const c = target.computed;
  const where = `${origin(loaded)} (Host ${spec.host})`;

  const jumpText = explicitJump ?? first(c.proxyjump);
  if (jumpText === undefined && first(c.proxycommand) !== undefined) {
    throw new SshConfigError(
      `${where}: ProxyCommand is not supported by guidup; use ProxyJump (or set proxyJump in the inventory)`,
    );
  }
  const jump: SshJumpHop[] = [];
  if (jumpText !== undefined && jumpText !== "none") {
    for (const hopText of jumpText.split(",")) {
      const hop = parseJumpHop(hopText);
      const e = resolveEndpoint(
        hop.alias,
        {
          ...(hop.user === undefined ? {} : { user: hop.user }),
          ...(hop.port === undefined ? {} : { port: hop.port }),
        },
        loaded,
      );
      const { computed: _c, ...fields } = e;
      jump.push({ ...fields, ...(fields.name === undefined ? { name: hop.alias } : {}) });
    }
  }

  const out: SshHostSpec = { ...spec, host: target.host };
  for (const key of JUMP_HOP_KEYS) {
    if (key === "host") continue;
    const value = target[key];
    if (value !== undefined) (out as unknown as Record<string, unknown>)[key] = value;
  }
  if (jump.length > 0) out.jump = jump;
  const interval = parseSeconds(first(c.serveraliveinterval), "ServerAliveInterval", where);
  if (interval !== undefined && spec.serverAliveInterval === undefined)
    out.serverAliveInterval = interval;
  const countMax = parseSeconds(first(c.serveralivecountmax), "ServerAliveCountMax", where);
  if (countMax !== undefined && spec.serverAliveCountMax === undefined)
    out.serverAliveCountMax = countMax;
  return out;
}
