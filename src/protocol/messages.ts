// The agent protocol: every message type, declared once, shared by the agent
// (src/agent) and the controller (src/apply, src/plan via src/transport).
//
// Newline-delimited JSON on the agent's stdin/stdout. The agent opens with a
// `hello` line; the controller refuses a protocol version it does not speak.
// Then one request → (progress lines) → one response, matched by `id`. The
// agent serves one request at a time per connection; a controller wanting
// parallelism opens more connections. stderr carries JSON log lines only.
//
// Compatibility: PROTOCOL_VERSION changes when a message changes meaning.
// Arguments are by name; the agent ignores names it does not know.

export const PROTOCOL_VERSION = 1;

export interface Hello {
  type: "hello";
  protocol: number;
  tool: string;
  host: string;
  pid: number;
  /** The imapd.conf the agent serves. */
  config: string;
}

/** A mailbox as the controller names it: internal name, optional partition. */
export interface MailboxRef {
  name: string;
  /** Partition from mailboxes.db; the agent's defaultpartition when absent. */
  partition?: string;
}

/** Facts about one index or expunge file. */
export interface FileFacts {
  minor: number;
  records: number;
  /** Records whose GUID is NULL or a padded UUID (bytes 12..19 zero). */
  oldStyle: number;
  /** Of those, all 20 bytes zero. */
  nullGuids: number;
  /** Sum of SIZE over old-style records: the bytes hashing them reads. */
  oldStyleBytes: number;
  lastUid: number;
  uidValidity: number;
  /** HIGHESTMODSEQ as a decimal string (v8+), else absent. */
  highestModseq?: string;
}

export interface MailboxScan {
  name: string;
  /**
   * corrupt: an index or expunge file that is damaged or not an index at all;
   * invalid-name: a name Cyrus would not accept (nothing was read).
   */
  status: "ok" | "missing" | "newer" | "unreadable" | "corrupt" | "invalid-name";
  /** Why, when status is not ok: one line naming the file. */
  reason?: string;
  index?: FileFacts;
  expunge?: FileFacts;
  /**
   * SHA1 over what the plan depends on: versions, UIDVALIDITY, the UID lists
   * and GUID bytes of index and expunge. Flag changes do not alter it;
   * appends, expunges, GUID rewrites and upgrades do.
   */
  fingerprint?: string;
  /** SHA1 over the index UID list: compared between master and replica. */
  uidsDigest?: string;
  /** SHA1 over (uid, GUID) of the index: equal on both sides once done. */
  guidDigest?: string;
  /** Old-style records that have a usable sha1-cache entry. */
  cached?: number;
}

export interface UpgradeCounts {
  /** Records written to cyrus.index.NEW and cyrus.expunge.NEW. */
  records: number;
  expungeRecords: number;
  /** GUIDs computed by hashing message files under the lock. */
  computed: number;
  /** GUIDs taken from the sha1 cache (local or relayed). */
  fromCache: number;
  /** Relayed cache entries checked by re-hashing (a sample). */
  relayedVerified: number;
  /** Records that already had an SHA1 GUID, kept. */
  kept: number;
}

/** What `verify` found in one mailbox: stored GUIDs against SHA1 of the files. */
export interface MailboxVerify {
  name: string;
  scan: MailboxScan;
  /** Records whose message file was hashed. */
  checked: number;
  /** Records whose stored GUID is not the SHA1 of their file. */
  mismatches: { uid: number; stored: string; actual: string }[];
  /** Records whose message file is missing or unreadable. */
  unreadable: { uid: number; reason: string }[];
}

/** Who asks for a pair lock: the apply that will work on the pair. */
export interface PairLockHolder {
  /** The plan's id. */
  plan: string;
  pair: string;
  /** The controller's host name, pid and user. */
  controller: string;
  pid: number;
  user: string;
}

/** What a host's pair lock file records about its holder (history once the holder is gone). */
export interface PairLockRecord extends PairLockHolder {
  /** The agent holding the lock: its host name and pid. */
  host: string;
  agentPid: number;
  /** ISO time the lock was taken. */
  since: string;
}

/** What the agent found about its host for `guidup check` (src/agent/requirements.ts). */
export interface HostCheck {
  node: string;
  platform: string;
  arch: string;
  /** Kernel release (uname -r). */
  kernel: string;
  user: { name: string; uid: number; gid: number };
  /** Free and (estimated) needed bytes per filesystem holding index files. */
  space: { partition: string; path: string; freeBytes: number; neededBytes: number }[];
  /** One line per requirement the host does not meet; empty when it is fit. */
  problems: string[];
}

export type Requests = {
  scan: { args: { mailboxes: MailboxRef[] }; result: { mailboxes: MailboxScan[] } };
  discover: {
    args: Record<string, never>;
    result: {
      mailboxes: MailboxRef[];
      /** Directories with a cyrus.header that are no valid mailbox's (name or path, and why). */
      invalid?: { name: string; reason: string }[];
    };
  };
  hash: {
    args: {
      mailboxes: MailboxRef[];
      maxBytesPerSec?: number;
      lowPriority?: boolean;
      /** Hashing threads; default one per core of the host. */
      workers?: number;
    };
    result: {
      mailboxes: number;
      hashed: number;
      hashedBytes: number;
      alreadyCached: number;
      failed: { mailbox: string; uid?: number; reason: string }[];
    };
  };
  "cache-get": { args: { mailbox: MailboxRef }; result: { entries: number; data: string } };
  "cache-put": { args: { mailbox: MailboxRef; data: string }; result: { entries: number } };
  "cache-clean": { args: { mailboxes: MailboxRef[] }; result: { removed: number } };
  prepare: {
    /**
     * Before lock, without locks: read the mailbox and decide every old-style
     * record's GUID (cache entries checked, missing ones hashed), so that the
     * locked window holds no hashing and no per-file checks. The session keeps
     * the result for the next lock of the same mailbox, which uses it only if
     * the mailbox's fingerprint is unchanged under the locks.
     */
    args: { mailbox: MailboxRef; verifySample?: number };
    result: {
      fingerprint?: string;
      needs: number;
      computed: number;
      fromCache: number;
      relayedVerified: number;
    };
  };
  lock: {
    args: { mailbox: MailboxRef; timeoutMs: number };
    result: {
      scan: MailboxScan;
      /** Leftover .NEW files of an earlier crash, removed under the locks. */
      removedStale: string[];
      /** Milliseconds spent waiting for the locks. */
      waitedMs: number;
      /** Whether the prepared GUIDs are still valid (fingerprint unchanged). */
      prepared: boolean;
    };
  };
  upgrade: {
    args: {
      target: number;
      /** Refuse (code "stale") unless the locked mailbox still has this fingerprint. */
      expectFingerprint?: string;
      /** How many relayed cache entries to verify by hashing (default: a few). */
      verifySample?: number;
    };
    result: {
      changed: boolean;
      counts: UpgradeCounts;
      /** SHA1 over (uid, stored GUID) of the new index, in file order. */
      guidDigest: string;
      expungeDigest?: string;
    };
  };
  commit: { args: Record<string, never>; result: { renamed: string[]; lockHeldMs: number } };
  rollback: { args: Record<string, never>; result: { removed: string[]; lockHeldMs: number } };
  verify: {
    /** sample: hash only this many random records per mailbox (default all). */
    args: { mailboxes: MailboxRef[]; sample?: number };
    result: { mailboxes: MailboxVerify[] };
  };
  "pair-lock": {
    /**
     * Takes this host's pair lock (an OFD write lock on `guidup.lock` in the
     * Cyrus configdirectory) for the rest of this agent's life, and records
     * the holder in the file. Refused (code "pair-locked", detail {lockFile,
     * holder}) while another agent holds it. The lock dies with the agent.
     */
    args: { holder: PairLockHolder };
    result: { lockFile: string; holder: PairLockRecord };
  };
  check: {
    /** Host requirements; mailboxes (optional) size the free-space estimate. Reads only. */
    args: { mailboxes?: MailboxRef[] };
    result: HostCheck;
  };
  status: {
    args: { mailbox?: MailboxRef };
    result: {
      session: "idle" | "locked" | "upgraded";
      mailbox?: string;
      scan?: MailboxScan;
      newFiles?: string[];
    };
  };
};

export type Op = keyof Requests;
export const OPS: readonly Op[] = [
  "scan",
  "discover",
  "hash",
  "cache-get",
  "cache-put",
  "cache-clean",
  "prepare",
  "lock",
  "upgrade",
  "commit",
  "rollback",
  "verify",
  "status",
  "pair-lock",
  "check",
];

export type Request<K extends Op = Op> = { id: number; op: K } & Requests[K]["args"];

export interface WireError {
  code: string;
  message: string;
  detail?: Record<string, unknown>;
}

export type Response<K extends Op = Op> =
  | { id: number; ok: true; result: Requests[K]["result"] }
  | { id: number; ok: false; error: WireError };

/** Sent before the response of a long request. */
export interface Progress {
  id: number;
  progress: Record<string, number | string>;
}

export type AgentLine = Hello | Response | Progress;

/** A stderr log line of the agent. */
export interface LogLine {
  level: "debug" | "info" | "warn" | "error";
  msg: string;
  [key: string]: unknown;
}
