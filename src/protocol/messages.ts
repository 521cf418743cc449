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

// 2: the cut-over protocol (prepare converts outside the locks, lock compares
// and stages in one answer; `upgrade` only stages after a plain lock; rollback
// can return the (uid, GUID) list).
export const PROTOCOL_VERSION = 2;

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
  /** The planned set cut at this index's own LAST_UID (scan only: what a plan records). */
  planned?: PlannedSetFacts;
}

/**
 * The (uid, GUID) set a plan entry promises, as src/agent/planned-set.ts
 * computes it: distinct UIDs ≤ upTo over index ∪ expunge, old-style GUIDs as
 * zeros.
 */
export interface PlannedSetFacts {
  upTo: number;
  records: number;
  digest: string;
  /** cyrus.index records with UID ≤ upTo. */
  indexUpTo: number;
  /** cyrus.index records with UID > upTo (appends since the plan). */
  appended: number;
}

/** What prepare and lock are asked to stage: the conversion a commit swaps in. */
export interface StageArgs {
  target: number;
  /** Replace old-style GUIDs (the plan's `guid` action); false: version only. */
  guids: boolean;
  /** Cut the planned set at this LAST_UID (the plan's); absent: the file's own. */
  upTo?: number;
  verifySample?: number;
  /** Limit the reading rate of prepare's hashing (bytes/s); never applied under the locks. */
  maxBytesPerSec?: number;
}

/**
 * How a staged file came to be, per file and for the mailbox (the worst):
 *   prepared    — the locked bytes equal what prepare converted: only the swap
 *                 happens under the lock;
 *   appended    — records were appended since prepare: only those converted
 *                 under the lock;
 *   reconverted — anything else changed: converted under the lock, reusing
 *                 prepare's GUIDs by UID;
 *   unchanged   — already at the target: nothing to write.
 */
export const CUTOVER_PATHS = ["unchanged", "prepared", "appended", "reconverted"] as const;
export type CutoverPath = (typeof CUTOVER_PATHS)[number];

export interface Staged {
  path: CutoverPath;
  files: { index: CutoverPath; expunge?: CutoverPath };
  /** Whether commit will rename anything. */
  changed: boolean;
  /** SHA1 over (uid, GUID) of cyrus.index as it will be after commit. */
  guidDigest: string;
  counts: UpgradeCounts;
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
  /** With withPairs: the index's (uid, GUID) list, 24 bytes a record (uid BE, GUID), base64. */
  pairs?: string;
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
    /**
     * Without `page`, the whole discovery in one reply (one line: at a
     * million mailboxes ~50 MB, near the framing's cap). With `page`, the
     * agent keeps what it found (walked afresh when `from` is 0) and answers
     * `size` mailboxes and `size` invalid entries from `from` on, with
     * `more` while either list goes on: the controller never holds the
     * whole list. An agent that predates paging ignores `page` and answers
     * everything, without `more`.
     */
    args: { page?: { from: number; size: number } };
    result: {
      mailboxes: MailboxRef[];
      /** Directories with a cyrus.header that are no valid mailbox's (name or path, and why). */
      invalid?: { name: string; reason: string }[];
      /** Paged: another page follows (ask with from + size). */
      more?: boolean;
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
     * Before lock, without locks: read index and expunge whole, decide every
     * old-style record's GUID (cache entries checked, missing ones hashed),
     * convert both files to guidup-private temporary names and fsync them.
     * The session keeps the input bytes for the next lock of the same mailbox.
     */
    args: { mailbox: MailboxRef; stage: StageArgs };
    result: {
      scan: MailboxScan;
      check?: PlannedSetFacts;
      staged?: Staged;
      needs: number;
      computed: number;
      fromCache: number;
      relayedVerified: number;
    };
  };
  lock: {
    /**
     * Takes the locks (header, index, expunge), removes .NEW leftovers, reads
     * both files through the locked fds. With `stage`: compares them byte for
     * byte with what prepare converted and stages the conversion (see
     * CutoverPath), all in this one answer.
     */
    args: { mailbox: MailboxRef; timeoutMs: number; stage?: StageArgs };
    result: {
      scan: MailboxScan;
      check?: PlannedSetFacts;
      staged?: Staged;
      /** Leftover .NEW files of an earlier crash, removed under the locks. */
      removedStale: string[];
      /** Milliseconds spent waiting for the locks. */
      waitedMs: number;
    };
  };
  upgrade: {
    /**
     * After a lock without `stage`: stage now from what the lock read (the
     * `reconverted` path, no prepare). For tools and tests; apply stages in
     * its lock request.
     */
    args: { target: number; guids?: boolean; verifySample?: number };
    result: {
      changed: boolean;
      counts: UpgradeCounts;
      /** SHA1 over (uid, stored GUID) of the new index, in file order. */
      guidDigest: string;
      expungeDigest?: string;
    };
  };
  commit: { args: Record<string, never>; result: { renamed: string[]; lockHeldMs: number } };
  rollback: {
    /** pairs: also answer cyrus.index's (uid, GUID) list as it is or would be after commit. */
    args: { pairs?: boolean };
    result: {
      removed: string[];
      lockHeldMs: number;
      /** Base64 of (uid u32 BE, GUID 20 bytes) pairs, in file order. */
      pairs?: string;
    };
  };
  verify: {
    /**
     * sample: hash only this many random records per mailbox (default all).
     * withPairs: also answer each mailbox's index (uid, GUID) list (asked
     * only for mailboxes whose two sides differ, to name the UIDs).
     */
    args: { mailboxes: MailboxRef[]; sample?: number; withPairs?: boolean };
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
/** Every op once: a Record over Op, so a request type added to Requests but not here fails to compile. */
const OP_SET: Record<Op, true> = {
  scan: true,
  discover: true,
  hash: true,
  "cache-get": true,
  "cache-put": true,
  "cache-clean": true,
  prepare: true,
  lock: true,
  upgrade: true,
  commit: true,
  rollback: true,
  verify: true,
  status: true,
  "pair-lock": true,
  check: true,
};
export const OPS: readonly Op[] = Object.keys(OP_SET) as Op[];

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
