// Access to the read-only Cyrus 3.6 fixtures (/work/shared/fixtures/cyrus-3.6,
// described in its README.md) and to scratch directories for tests.
//
// The fixtures live beside the repository, never inside it. They are required:
// if the directory is missing, `fixturesDir()` throws, so every suite that uses
// them fails loudly instead of skipping. Nothing here writes to the fixtures;
// tests that change files copy them to a temp dir first (`copyToTemp`).

import { existsSync, readFileSync } from "node:fs";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";

/** The repository root (test/helpers/../..). */
export const REPO_ROOT: string = fileURLToPath(new URL("../..", import.meta.url));

/** Where the fixtures must be: `<repo root>/../shared/fixtures/cyrus-3.6`. */
export const FIXTURES_PATH: string = path.resolve(REPO_ROOT, "../shared/fixtures/cyrus-3.6");

/** The index minor versions the fixtures hold, as their directory names. */
export const FIXTURE_VERSIONS = ["06", "07", "08", "09", "10"] as const;
export type FixtureVersion = (typeof FIXTURE_VERSIONS)[number];

/** The fixtures directory; throws (never skips) when it is missing. */
export function fixturesDir(): string {
  if (!existsSync(path.join(FIXTURES_PATH, "README.md"))) {
    throw new Error(
      `Cyrus 3.6 fixtures not found at ${FIXTURES_PATH} (expected <repo root>/../shared/fixtures/cyrus-3.6 with README.md); these tests need them and do not skip`,
    );
  }
  return FIXTURES_PATH;
}

export interface FixtureMailbox {
  /** Internal mailbox name, e.g. `user.bob.Some Folder`. */
  readonly name: string;
  /** Directory relative to `vNN/spool/`. */
  readonly dir: string;
  /** Absolute mailbox directory in that version's spool. */
  readonly path: string;
  /** Absolute path of its cyrus.index. */
  readonly indexPath: string;
}

/** The mailboxes of one version, from `vNN/mailboxes.txt` (name TAB dir), in file order. */
export function fixtureMailboxes(version: FixtureVersion): FixtureMailbox[] {
  const root = fixturesDir();
  const text = readFileSync(path.join(root, `v${version}`, "mailboxes.txt"), "utf8");
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      const [name, dir, ...rest] = line.split("\t");
      if (name === undefined || dir === undefined || rest.length > 0) {
        throw new Error(`v${version}/mailboxes.txt: bad line ${JSON.stringify(line)}`);
      }
      const mailboxPath = path.join(root, `v${version}`, "spool", dir);
      return { name, dir, path: mailboxPath, indexPath: path.join(mailboxPath, "cyrus.index") };
    });
}

/** The message file `<uid>.` of a mailbox directory. */
export function messagePath(mailbox: FixtureMailbox, uid: number): string {
  return path.join(mailbox.path, `${uid}.`);
}

export interface Sha1Entry {
  readonly mailbox: string;
  readonly uid: number;
  /** SHA1 of the message file bytes, 40 lowercase hex digits. */
  readonly sha1: string;
  readonly size: number;
  /** false for `MISSING`: file deliberately removed, record still in the index. */
  readonly present: boolean;
}

/** `sha1sums.txt`: mailbox, uid, sha1, size, present/MISSING. */
export function fixtureSha1Sums(): Sha1Entry[] {
  const text = readFileSync(path.join(fixturesDir(), "sha1sums.txt"), "utf8");
  const entries: Sha1Entry[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "" || line.startsWith("#")) continue;
    const [mailbox, uid, sha1, size, state, ...rest] = line.split("\t");
    if (
      mailbox === undefined ||
      uid === undefined ||
      sha1 === undefined ||
      size === undefined ||
      (state !== "present" && state !== "MISSING") ||
      rest.length > 0 ||
      !/^[0-9a-f]{40}$/.test(sha1)
    ) {
      throw new Error(`sha1sums.txt: bad line ${JSON.stringify(line)}`);
    }
    entries.push({
      mailbox,
      uid: Number(uid),
      sha1,
      size: Number(size),
      present: state === "present",
    });
  }
  return entries;
}

/** sha1sums.txt entries keyed by `mailbox/uid`. */
export function sha1SumsByKey(): Map<string, Sha1Entry> {
  return new Map(fixtureSha1Sums().map((e) => [sha1Key(e.mailbox, e.uid), e]));
}

export function sha1Key(mailbox: string, uid: number): string {
  return `${mailbox}/${uid}`;
}

/** `vNN/mbexamine.txt` (or its `.gz`), as text. */
export function mbexamineText(version: FixtureVersion): string {
  const base = path.join(fixturesDir(), `v${version}`, "mbexamine.txt");
  if (existsSync(base)) return readFileSync(base, "utf8");
  if (existsSync(`${base}.gz`)) return gunzipSync(readFileSync(`${base}.gz`)).toString("utf8");
  throw new Error(`${base}: missing (neither .txt nor .txt.gz)`);
}

/** A fresh temp directory, and a function removing it. */
export async function makeTempDir(
  prefix = "guidup-test-",
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Copies one fixture file into `dir` (fixtures are read-only hard links). */
export async function copyToTemp(source: string, dir: string, name: string): Promise<string> {
  const target = path.join(dir, name);
  await copyFile(source, target);
  return target;
}
