// Checks that stop a plan which would look like success but only reflects a
// misconfiguration: a side that lacks most of the listed mailboxes (the
// wrong imapd.conf, a mistyped partition, the wrong host) would otherwise
// give a plan of nothing but missing-on-* entries and exit 0. Pure; the
// operator can override with --skip-sanity-checks.

import { ERRORS, type ErrorCode, GuidupError } from "../errors.js";
import type { MailboxRef, MailboxScan } from "../protocol/messages.js";

/** A plan input that is probably not what the operator meant. */
export class SuspiciousInputError extends GuidupError {
  readonly code: ErrorCode = ERRORS.suspiciousInput.code;
}

/** A side is taken for misconfigured when it lacks more than half of the list and at least this many. */
export const LACKING_MIN_MAILBOXES = 5;

export interface SideScans {
  side: "master" | "replica";
  /** What messages call the host. */
  host: string;
  scans: ReadonlyMap<string, MailboxScan>;
}

/**
 * One line per side that lacks most of the listed mailboxes (no cyrus.index
 * where its imapd.conf puts them), naming the host, the counts and an example.
 */
export function lackingSides(
  mailboxes: readonly MailboxRef[],
  sides: readonly SideScans[],
): string[] {
  return lackingFromCounts(
    mailboxes.length,
    sides.map(({ side, host, scans }) => {
      const missing = mailboxes
        .map((m) => scans.get(m.name))
        .filter((s): s is MailboxScan => s?.status === "missing");
      return { side, host, count: missing.length, ...(missing[0] ? { example: missing[0] } : {}) };
    }),
  );
}

/** lackingSides from counts kept as the scan went (a plan written window by window). */
export function lackingFromCounts(
  listed: number,
  sides: readonly { side: string; host: string; count: number; example?: MailboxScan }[],
): string[] {
  const problems: string[] = [];
  for (const { side, host, count, example } of sides) {
    if (count < LACKING_MIN_MAILBOXES || count * 2 <= listed || !example) continue;
    problems.push(
      `the ${side} (${host}) lacks ${count} of the ${listed} listed mailboxes (e.g. ${example.name}: ${example.reason ?? "no cyrus.index"}): is its config: the right imapd.conf, with the right partition roots?`,
    );
  }
  return problems;
}
