// The error classes every part of guidup throws, and the one closed table of
// their codes. Each failure the operator can act on has its own class with a
// stable `code` from ERRORS (it travels on the wire and into state files); the
// table says, per code, the exit status (src/cli/main.ts is the only place
// that exits), whether running the same command again may succeed without a
// change, and what the operator does next. Anything else is an
// InternalError: a bug, reported with a "please report" hint.
// src/transport/agent-client.ts turns an agent's wire code back into an
// error with this table's meaning; a code it does not know is internal.

/** Exit codes shared by all commands (documented in the README). */
export const ExitCode = {
  ok: 0,
  /** generic failure: something did not hold (verify found problems, …) */
  failed: 1,
  /** bad input: unreadable or invalid file, bad option, unreachable host */
  badInput: 2,
  /** apply finished but at least one mailbox is replica-ahead */
  replicaAhead: 3,
  /** apply finished with failed, diverged or stale mailboxes */
  incomplete: 4,
  /** interrupted by SIGINT/SIGTERM */
  interrupted: 130,
  internal: 70,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** One row of ERRORS. */
export interface ErrorSpec {
  /** Stable name on the wire, in state files (lastError.code) and in --json. */
  readonly code: string;
  /** The exit status of a command that ends with this error. */
  readonly exit: ExitCode;
  /** The same command, run again unchanged, may succeed (something was busy or away). */
  readonly retryable: boolean;
  /** What the operator does next. */
  readonly next: string;
}

const bad = ExitCode.badInput;

/**
 * Every error code guidup uses, closed: a class takes its code from here, and
 * code compares against `ERRORS.x.code`, never a string literal.
 */
export const ERRORS = {
  usage: {
    code: "usage",
    exit: bad,
    retryable: false,
    next: "correct the option or input named in the message (guidup <command> --help)",
  },
  fileAccess: {
    code: "file-access",
    exit: bad,
    retryable: false,
    next: "make the named file readable/writable (path, permissions, free space) and run again",
  },
  cyrusFormat: {
    code: "cyrus-format",
    exit: bad,
    retryable: false,
    next: "check the named Cyrus file (reconstruct the mailbox with Cyrus's tools), then plan again",
  },
  cyrusCorrupt: {
    code: "cyrus-corrupt",
    exit: bad,
    retryable: false,
    next: "reconstruct the named mailbox with Cyrus's tools, then plan again",
  },
  cyrusVersion: {
    code: "cyrus-version",
    exit: bad,
    retryable: false,
    next: "this index version is not one guidup upgrades; leave the mailbox out of the list",
  },
  mailboxName: {
    code: "mailbox-name",
    exit: bad,
    retryable: false,
    next: "correct or remove the named mailbox in the mailbox list",
  },
  messageFile: {
    code: "message-file",
    exit: bad,
    retryable: false,
    next: "restore or reconstruct the mailbox whose message file is missing or unreadable",
  },
  cacheFormat: {
    code: "cache-format",
    exit: bad,
    retryable: false,
    next: "remove the named sha1 cache (guidup cache clean) and run again",
  },
  lockTimeout: {
    code: "lock-timeout",
    exit: bad,
    retryable: true,
    next: "a mailbox was busy: run again (apply retries it), or raise --lock-timeout",
  },
  lockUnavailable: {
    code: "lock-unavailable",
    exit: bad,
    retryable: false,
    next: "run on Linux ≥ 3.15 with open file description locks (guidup check)",
  },
  pairLocked: {
    code: "pair-locked",
    exit: bad,
    retryable: true,
    next: "another guidup apply works on this pair: wait for it to end, then run again",
  },
  stateLocked: {
    code: "state-locked",
    exit: bad,
    retryable: true,
    next: "another guidup apply uses this plan's state: wait for it to end, then run again",
  },
  stateFile: {
    code: "state-file",
    exit: bad,
    retryable: false,
    next: "restore or remove the named state file (guidup status reads it), then run again",
  },
  stateOwner: {
    code: "state-owner",
    exit: bad,
    retryable: false,
    next: "the state belongs to another plan: use that plan, or another --state",
  },
  plan: {
    code: "plan",
    exit: bad,
    retryable: false,
    next: "run guidup plan again and apply the new plan",
  },
  inventory: {
    code: "inventory",
    exit: bad,
    retryable: false,
    next: "correct the inventory at the place named in the message",
  },
  sshConfig: {
    code: "ssh-config",
    exit: bad,
    retryable: false,
    next: "correct the OpenSSH client configuration named in the message",
  },
  suspiciousInput: {
    code: "suspicious-input",
    exit: bad,
    retryable: false,
    next: "check the named input; if it is right, run again with the option the message names",
  },
  outOfOrder: {
    code: "out-of-order",
    exit: bad,
    retryable: false,
    next: "a bug in the controller's request order: report it with the command you ran",
  },
  inconsistent: {
    code: "inconsistent",
    exit: bad,
    retryable: false,
    next: "the mailbox changed in a way guidup cannot follow: plan again",
  },
  protocol: {
    code: "protocol",
    exit: bad,
    retryable: false,
    next: "controller and agent disagree on the protocol: install the same guidup on both (guidup agent install)",
  },
  unknownOp: {
    code: "unknown-op",
    exit: bad,
    retryable: false,
    next: "install the same guidup version on the host (guidup agent install)",
  },
  protocolVersion: {
    code: "protocol-version",
    exit: bad,
    retryable: false,
    next: "install this guidup version on the host (guidup agent install --inventory FILE)",
  },
  lineTooLong: {
    code: "line-too-long",
    exit: bad,
    retryable: false,
    next: "the peer sent a runaway line: check the agent command and its output",
  },
  hostKey: {
    code: "host-key",
    exit: bad,
    retryable: false,
    next: "check the host's key, then record it (--accept-new-host-keys or ssh-keyscan)",
  },
  hostUnreachable: {
    code: "host-unreachable",
    exit: bad,
    retryable: true,
    next: "check the host name, port, network and bastions (guidup check), then run again",
  },
  sshAuth: {
    code: "ssh-auth",
    exit: bad,
    retryable: false,
    next: "give a key the host accepts (identityFile, ssh-agent), then run again",
  },
  transport: {
    code: "transport",
    exit: bad,
    retryable: true,
    next: "the connection or agent went away: check the host (guidup check), then run again",
  },
  internal: {
    code: "internal",
    exit: ExitCode.internal,
    retryable: false,
    next: "a bug in guidup: report it with the command you ran and its output",
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = (typeof ERRORS)[keyof typeof ERRORS]["code"];

/** Every code of ERRORS, in the table's order. */
export const ERROR_CODES: readonly ErrorCode[] = Object.values(ERRORS).map((e) => e.code);

const BY_CODE: ReadonlyMap<string, ErrorSpec> = new Map(
  Object.values(ERRORS).map((e) => [e.code, e]),
);

/** The table's row of a code, or undefined for a code guidup does not know (from the wire). */
export function errorSpecOf(code: string): ErrorSpec | undefined {
  return BY_CODE.get(code);
}

/** True when `code` is one of ERRORS. */
export function isErrorCode(code: string): code is ErrorCode {
  return BY_CODE.has(code);
}

export abstract class GuidupError extends Error {
  abstract readonly code: ErrorCode;
  /** Optional structured detail (sent on the wire, shown with --json). */
  readonly detail?: Record<string, unknown>;
  constructor(message: string, detail?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    if (detail !== undefined) this.detail = detail;
  }
  /** The exit status of a command that ends with this error (from ERRORS). */
  get exitCode(): ExitCode {
    return errorSpecOf(this.code)?.exit ?? ExitCode.internal;
  }
  /** Whether the same command, run again unchanged, may succeed (from ERRORS). */
  get retryable(): boolean {
    return errorSpecOf(this.code)?.retryable ?? false;
  }
}

/** An index, expunge, header or config file that is not what Cyrus writes. */
export class CyrusFormatError extends GuidupError {
  readonly code: ErrorCode = ERRORS.cyrusFormat.code;
}

/** A file guidup needs could not be read or written (ENOENT, EACCES, ENOSPC, …). */
export class FileAccessError extends GuidupError {
  readonly code: ErrorCode = ERRORS.fileAccess.code;
}

/** A command-line option or input file that is invalid. */
export class UsageError extends GuidupError {
  readonly code: ErrorCode = ERRORS.usage.code;
}

/** A bug: something that should not happen. */
export class InternalError extends GuidupError {
  readonly code: ErrorCode = ERRORS.internal.code;
}

/** Formats an unknown thrown value as one line. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
