// A plan scans small mailboxes with synchronous reads (readMailboxSync) and
// large ones, and every locked read, asynchronously (readMailbox): both must
// give the same facts, digests, fingerprint and planned set. Checked over
// every fixture mailbox of every version (the fixtures have no cyrus.expunge
// with records; an expunge is read by the same code as an index).

import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readMailbox, readMailboxSync } from "../../src/agent/mailbox-scan.js";
import { FIXTURE_VERSIONS, fixtureMailboxes } from "../helpers/fixtures.js";

describe("readMailboxSync", () => {
  for (const version of FIXTURE_VERSIONS) {
    it(`v${version}: reads every mailbox as readMailbox does`, async () => {
      let compared = 0;
      for (const mailbox of fixtureMailboxes(version)) {
        const expunge = join(mailbox.path, "cyrus.expunge");
        const hasExpunge = existsSync(expunge) && statSync(expunge).size > 0;
        const asynchronous = await readMailbox(
          mailbox.name,
          { path: mailbox.indexPath, kind: "index" },
          hasExpunge ? { path: expunge, kind: "expunge" } : undefined,
          true,
          true,
        );
        const synchronous = readMailboxSync(
          mailbox.name,
          mailbox.indexPath,
          hasExpunge ? expunge : undefined,
          true,
        );
        expect(synchronous).toEqual(asynchronous);
        expect(synchronous.scan.fingerprint).toMatch(/^[0-9a-f]{40}$/);
        compared++;
      }
      expect(compared).toBeGreaterThan(0);
    });
  }
});
