// Mailbox names for a generated spool: a fixed set of interesting names first
// (nested folders, spaces, shared mailboxes, a DELETED mailbox, empty ones),
// then users from a small pool, numbered once the pool is used up, each with
// a random set of folders.

import type { Prng } from "./prng.js";

export type MailboxKind = "user" | "shared" | "deleted";

export interface MailboxName {
  /** Internal name, with `<domain>!` in front for a non-default domain. */
  name: string;
  kind: MailboxKind;
  /** The owner as it appears in ACLs (`bob`, `dave@example.com`); shared: undefined. */
  owner?: string;
  /** `user.<id>` (with domain prefix) of the owner: the quota root. */
  quotaRoot?: string;
  /** Created empty (no messages ever). */
  empty: boolean;
  /** The user's INBOX (user.<id> itself). */
  inbox: boolean;
}

const SPECIAL: readonly MailboxName[] = [
  {
    name: "user.alice",
    kind: "user",
    owner: "alice",
    quotaRoot: "user.alice",
    empty: false,
    inbox: true,
  },
  {
    name: "user.alice.Sent",
    kind: "user",
    owner: "alice",
    quotaRoot: "user.alice",
    empty: false,
    inbox: false,
  },
  {
    name: "user.alice.Archive",
    kind: "user",
    owner: "alice",
    quotaRoot: "user.alice",
    empty: true,
    inbox: false,
  },
  {
    name: "user.alice.Archive.2009",
    kind: "user",
    owner: "alice",
    quotaRoot: "user.alice",
    empty: false,
    inbox: false,
  },
  {
    name: "user.bob",
    kind: "user",
    owner: "bob",
    quotaRoot: "user.bob",
    empty: false,
    inbox: true,
  },
  {
    name: "user.bob.Some Folder",
    kind: "user",
    owner: "bob",
    quotaRoot: "user.bob",
    empty: false,
    inbox: false,
  },
  {
    name: "user.bob.Trash",
    kind: "user",
    owner: "bob",
    quotaRoot: "user.bob",
    empty: true,
    inbox: false,
  },
  { name: "shared.Announcements", kind: "shared", empty: false, inbox: false },
  {
    name: "DELETED.user.bob.Trash.4B1C2D3E",
    kind: "deleted",
    owner: "bob",
    empty: false,
    inbox: false,
  },
  { name: "Archive", kind: "shared", empty: false, inbox: false },
];

const USER_POOL = [
  "carol",
  "dave",
  "erin",
  "frank",
  "grace",
  "heidi",
  "ivan",
  "judy",
  "mallory",
  "niaj",
  "oscar",
  "peggy",
  "rupert",
  "sybil",
  "trent",
  "victor",
  "walter",
  "wendy",
];

/** Folder templates: [path, probability]; a child is only tried after its parent. */
const FOLDERS: readonly (readonly [string, number])[] = [
  ["Sent", 0.8],
  ["Drafts", 0.6],
  ["Trash", 0.7],
  ["Junk", 0.3],
  ["Some Folder", 0.15],
  ["Archive", 0.3],
  ["Archive.2009", 0.5],
  ["Archive.2010 Q1", 0.3],
  ["Lists", 0.2],
  ["Lists.cyrus-devel", 0.9],
  ["Lists.info-cyrus", 0.5],
  ["Projects", 0.2],
  ["Projects.Big Plan", 0.5],
  ["Projects.Big Plan.Notes", 0.4],
];

const DOMAINS = ["example.com", "example.net"];

/** `count` mailbox names, deterministic for a given PRNG state. */
export function generateMailboxNames(
  prng: Prng,
  count: number,
  virtdomains: boolean,
): MailboxName[] {
  const names: MailboxName[] = SPECIAL.slice(0, count).map((m) => ({ ...m }));
  for (let i = 0; names.length < count; i++) {
    const base = USER_POOL[i % USER_POOL.length] as string;
    const round = Math.floor(i / USER_POOL.length);
    const user = round === 0 ? base : `${base}${round + 1}`;
    const domain = virtdomains && i % 3 !== 0 ? DOMAINS[i % 2] : undefined;
    const prefix = domain === undefined ? "" : `${domain}!`;
    const owner = domain === undefined ? user : `${user}@${domain}`;
    const quotaRoot = `${prefix}user.${user}`;
    const chosen = new Set<string>();
    const mine: MailboxName[] = [
      { name: quotaRoot, kind: "user", owner, quotaRoot, empty: false, inbox: true },
    ];
    for (const [path, p] of FOLDERS) {
      const dot = path.lastIndexOf(".");
      if (dot !== -1 && !chosen.has(path.slice(0, dot))) continue;
      if (!prng.chance(p)) continue;
      chosen.add(path);
      const empty = (path === "Trash" || path === "Drafts") && prng.chance(0.3);
      mine.push({
        name: `${quotaRoot}.${path}`,
        kind: "user",
        owner,
        quotaRoot,
        empty,
        inbox: false,
      });
    }
    names.push(...mine.slice(0, count - names.length));
  }
  return names;
}
