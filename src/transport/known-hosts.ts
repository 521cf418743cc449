// OpenSSH known_hosts files: reading them to decide whether an SSH server's
// host key is the one we have on record, and appending a new key when the
// operator asked to accept new hosts. Follows sshd(8) "SSH_KNOWN_HOSTS FILE
// FORMAT": one key per line, `[marker] hostpatterns keytype base64key
// [comment]`. A host is looked up as `host` on port 22 and `[host]:port`
// otherwise; patterns are comma-separated globs (`*`, `?`) with `!` negation,
// or one hashed name `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
// Synchronous on purpose: it runs inside ssh2's host key callback, once per
// connection, on a small file.

import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {
  ERRORS,
  type ErrorCode,
  FileAccessError,
  GuidupError,
  InternalError,
  UsageError,
} from "../errors.js";

/** An SSH host key that is not on record, differs from the record, or is revoked. */
export class HostKeyError extends GuidupError {
  readonly code: ErrorCode = ERRORS.hostKey.code;
}

/** The outcome of looking a key up; `line` is 1-based, in the file that was read. */
export type HostKeyCheck =
  | "match"
  | "unknown"
  | { changed: true; line: number }
  | { revoked: true; line: number };

/** The name a host is recorded under: `host` for port 22, `[host]:port` otherwise (lowercase, as OpenSSH). */
export function knownHostsName(host: string, port: number): string {
  const name = host.toLowerCase();
  return port === 22 ? name : `[${name}]:${port}`;
}

/** OpenSSH's fingerprint of a key blob: "SHA256:" + unpadded base64 of its SHA-256. */
export function fingerprintSha256(keyBlob: Buffer): string {
  return `SHA256:${createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "")}`;
}

/** The key type named at the start of an SSH public key blob ("ssh-ed25519", "ssh-rsa", …). */
export function keyTypeOfBlob(keyBlob: Buffer): string {
  if (keyBlob.length < 4) throw new HostKeyError("malformed SSH public key: too short");
  const length = keyBlob.readUInt32BE(0);
  if (length === 0 || length > 64 || 4 + length > keyBlob.length) {
    throw new HostKeyError("malformed SSH public key: bad key type field");
  }
  return keyBlob.subarray(4, 4 + length).toString("latin1");
}

/** One key line of a known_hosts file. */
export interface KnownHostsEntry {
  line: number;
  marker: "revoked" | undefined;
  hostField: string;
  keyType: string;
  keyBlob: Buffer;
}

/** Reads and parses a known_hosts file; a missing file is an empty one. */
function readEntries(file: string): KnownHostsEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new FileAccessError(`cannot read known_hosts file ${file}: ${(err as Error).message}`, {
      path: file,
    });
  }
  return parseKnownHosts(text);
}

/**
 * Parses known_hosts text. Lines it cannot use are skipped, as ssh does:
 * comments, blanks, @cert-authority lines (we do not do host certificates),
 * unknown markers, old SSH1 "bits e n" keys, bad base64.
 */
export function parseKnownHosts(text: string): KnownHostsEntry[] {
  const entries: KnownHostsEntry[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const trimmed = (lines[i] ?? "").trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const fields = trimmed.split(/[ \t]+/);
    let marker: KnownHostsEntry["marker"];
    if (fields[0]?.startsWith("@")) {
      const m = fields.shift();
      if (m !== "@revoked") continue;
      marker = "revoked";
    }
    const [hostField, keyType, keyBase64] = fields;
    if (hostField === undefined || keyType === undefined || keyBase64 === undefined) continue;
    if (/^\d+$/.test(keyType)) continue;
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(keyBase64)) continue;
    entries.push({
      line: i + 1,
      marker,
      hostField,
      keyType,
      keyBlob: Buffer.from(keyBase64, "base64"),
    });
  }
  return entries;
}

/** Whether an entry's host field names `name` (already in known_hosts form and lowercase). */
function hostFieldMatches(hostField: string, name: string): boolean {
  if (hostField.startsWith("|")) return hashedNameMatches(hostField, name);
  // sshd(8): a name matching a negated pattern is not accepted by the line,
  // even if another pattern on it matches.
  let positive = false;
  for (const pattern of hostField.split(",")) {
    const negated = pattern.startsWith("!");
    const glob = negated ? pattern.slice(1) : pattern;
    if (!globMatches(glob.toLowerCase(), name)) continue;
    if (negated) return false;
    positive = true;
  }
  return positive;
}

function hashedNameMatches(hostField: string, name: string): boolean {
  const parts = hostField.split("|");
  // "|1|salt|hash" splits into ["", "1", salt, hash]; only HMAC-SHA1 ("1") exists.
  if (parts.length !== 4 || parts[1] !== "1") return false;
  const salt = Buffer.from(parts[2] ?? "", "base64");
  const expected = Buffer.from(parts[3] ?? "", "base64");
  const actual = createHmac("sha1", salt).update(name).digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** OpenSSH match_pattern(): `*` any run of characters, `?` exactly one; nothing else is special. */
function globMatches(glob: string, text: string): boolean {
  const source = glob
    .split("")
    .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[\\^$.|+()[\]{}]/g, "\\$&")))
    .join("");
  return new RegExp(`^${source}$`, "s").test(text);
}

/** Hashes a host name as `ssh-keygen -H` does (for tests and tools; guidup itself writes plain names). */
export function hashKnownHostsName(name: string, salt: Buffer): string {
  const hash = createHmac("sha1", salt).update(name).digest("base64");
  return `|1|${salt.toString("base64")}|${hash}`;
}

/**
 * Looks up host:port's key in a known_hosts file. A revoked key wins over
 * everything; then any line with exactly this key is a match (a host may
 * have several keys on record); then a line with another key of the same
 * type means the key changed. Keys of other types say nothing: the server
 * may simply have offered a type we have no record of.
 */
export function checkHostKey(
  file: string,
  host: string,
  port: number,
  keyType: string,
  keyBlob: Buffer,
): HostKeyCheck {
  const name = knownHostsName(host, port);
  let matched = false;
  let changedLine: number | undefined;
  for (const entry of readEntries(file)) {
    if (!hostFieldMatches(entry.hostField, name)) continue;
    const sameKey = entry.keyType === keyType && entry.keyBlob.equals(keyBlob);
    if (entry.marker === "revoked") {
      if (sameKey) return { revoked: true, line: entry.line };
      continue;
    }
    if (sameKey) matched = true;
    else if (entry.keyType === keyType) changedLine ??= entry.line;
  }
  if (matched) return "match";
  if (changedLine !== undefined) return { changed: true, line: changedLine };
  return "unknown";
}

/** Key types on record for host:port (not revoked), in file order, for choosing which host key to ask for. */
export function knownKeyTypes(
  file: string | readonly string[],
  host: string,
  port: number,
): string[] {
  const name = knownHostsName(host, port);
  const types: string[] = [];
  const entries = (typeof file === "string" ? [file] : file).flatMap((f) => readEntries(f));
  for (const entry of entries) {
    if (entry.marker === undefined && hostFieldMatches(entry.hostField, name)) {
      if (!types.includes(entry.keyType)) types.push(entry.keyType);
    }
  }
  return types;
}

/**
 * Appends a plain (not hashed) entry for host:port, creating the file (mode
 * 0600) and its directory (mode 0700) if missing, as ssh does.
 */
export function appendHostKey(
  file: string,
  host: string,
  port: number,
  keyType: string,
  keyBlob: Buffer,
): void {
  // Anything else could break the line apart or turn the name into a pattern.
  if (!/^[A-Za-z0-9._:%-]+$/.test(host)) {
    throw new UsageError(`cannot record a host key for ${JSON.stringify(host)}: not a host name`);
  }
  const line = `${knownHostsName(host, port)} ${keyType} ${keyBlob.toString("base64")}\n`;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    let prefix = "";
    try {
      // Do not glue our entry onto a last line that lacks its newline.
      const size = fs.statSync(file).size;
      if (size > 0) {
        const fd = fs.openSync(file, "r");
        try {
          const last = Buffer.alloc(1);
          fs.readSync(fd, last, 0, 1, size - 1);
          if (last[0] !== 0x0a) prefix = "\n";
        } finally {
          fs.closeSync(fd);
        }
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    fs.appendFileSync(file, prefix + line, { mode: 0o600 });
  } catch (err) {
    throw new FileAccessError(
      `cannot add the host key of ${knownHostsName(host, port)} to ${file}: ${(err as Error).message}`,
      { path: file },
    );
  }
}

export interface VerifyHostKeyOptions {
  /** Read, and written when a new key is accepted. */
  knownHostsFile: string;
  /** Read too, never written (OpenSSH's further UserKnownHostsFile files, GlobalKnownHostsFile). */
  moreKnownHostsFiles?: readonly string[];
  host: string;
  port: number;
  /** The raw public key blob the server presented. */
  keyBlob: Buffer;
  /** Record an unknown key instead of refusing it (never a changed or revoked one). */
  acceptNew: boolean;
}

/**
 * The whole host key decision: returns "match" or "added", or throws a
 * HostKeyError that says what was found and what to do about it. With more
 * than one file: a revocation in any wins, then a match in any, then a
 * changed key in any; an unknown key is recorded in the first.
 */
export function verifyHostKey(options: VerifyHostKeyOptions): "match" | "added" {
  const { knownHostsFile: first, host, port, keyBlob, acceptNew } = options;
  const files = [first, ...(options.moreKnownHostsFiles ?? [])];
  const keyType = keyTypeOfBlob(keyBlob);
  const name = knownHostsName(host, port);
  const key = `${keyType} ${fingerprintSha256(keyBlob)}`;
  const detail = {
    host: name,
    knownHostsFile: first,
    keyType,
    fingerprint: fingerprintSha256(keyBlob),
  };
  const results = files.map((file) => ({
    file,
    result: checkHostKey(file, host, port, keyType, keyBlob),
  }));
  const found =
    results.find((r) => typeof r.result === "object" && "revoked" in r.result) ??
    results.find((r) => r.result === "match") ??
    results.find((r) => typeof r.result === "object");
  if (found === undefined) {
    if (acceptNew) {
      appendHostKey(first, host, port, keyType, keyBlob);
      return "added";
    }
    throw new HostKeyError(
      `host key for ${name} is not in ${files.join(" or ")} (${key}); add it with ssh-keyscan or run with --accept-new-host-keys`,
      detail,
    );
  }
  const { file, result } = found;
  if (result === "match") return "match";
  if (result === "unknown") throw new InternalError("verifyHostKey: unknown counted as found");
  if ("revoked" in result) {
    throw new HostKeyError(
      `host key for ${name} (${key}) is marked @revoked in ${file} line ${result.line}; refusing to connect`,
      { ...detail, line: result.line },
    );
  }
  throw new HostKeyError(
    `HOST KEY FOR ${name} HAS CHANGED (now ${key}; ${file} line ${result.line} has another) — ` +
      `possible man-in-the-middle; remove the old entry if the change is expected ` +
      `(ssh-keygen -R '${name}' -f ${file})`,
    { ...detail, line: result.line },
  );
}
