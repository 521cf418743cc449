// The error classes every part of guidup throws. Each failure the operator can
// act on has its own class with a stable `code` (travels on the wire) and an
// exit code (used by src/cli/main.ts, the only place that exits). Anything
// else is an InternalError: a bug, reported with a "please report" hint.

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

export abstract class GuidupError extends Error {
  abstract readonly code: string;
  readonly exitCode: ExitCode = ExitCode.badInput;
  /** Optional structured detail (sent on the wire, shown with --json). */
  readonly detail?: Record<string, unknown>;
  constructor(message: string, detail?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    if (detail !== undefined) this.detail = detail;
  }
}

/** An index, expunge, header or config file that is not what Cyrus writes. */
export class CyrusFormatError extends GuidupError {
  readonly code: string = "cyrus-format";
}

/** A file guidup needs could not be read or written (ENOENT, EACCES, ENOSPC, …). */
export class FileAccessError extends GuidupError {
  readonly code: string = "file-access";
}

/** A command-line option or input file that is invalid. */
export class UsageError extends GuidupError {
  readonly code: string = "usage";
}

/** A bug: something that should not happen. */
export class InternalError extends GuidupError {
  readonly code: string = "internal";
  override readonly exitCode = ExitCode.internal;
}

/** Formats an unknown thrown value as one line. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
