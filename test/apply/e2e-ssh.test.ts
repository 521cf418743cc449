// plan → apply → verify end to end over real SSH: an OpenSSH sshd on
// loopback (test/helpers/sshd.ts), both hosts reached through it, the agent
// started by the login shell as `node dist/src/cli/main.js serve`. On a
// generated 2.3 pair (cyrus.expunge files, padded UUIDs) and on the real
// Cyrus 3.6 fixtures; the same checks as over the local transport: exact v10
// files, verify OK, Cyrus's own check on both hosts, a second apply writes
// nothing.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  endToEnd,
  fixturePair,
  generatedPair,
  type SshTarget,
  sshHost,
  type TestPair,
} from "../helpers/apply-harness.js";
import { type SshdHandle, startSshd } from "../helpers/sshd.js";

let sshd: SshdHandle;
let target: SshTarget;
const pairs: TestPair[] = [];

beforeAll(async () => {
  sshd = await startSshd();
  target = {
    port: sshd.port,
    user: sshd.user,
    identityFile: sshd.clientKeyPath,
    knownHostsFile: sshd.knownHostsPath,
  };
});

afterAll(async () => {
  await Promise.all(pairs.map((p) => p.cleanup()));
  await sshd?.stop();
});

function hosts(pair: TestPair) {
  return { master: sshHost(pair, "master", target), replica: sshHost(pair, "replica", target) };
}

describe("apply end to end over OpenSSH", () => {
  it("generated 2.3 pair (expunge files, padded UUIDs and GUIDs)", async () => {
    const pair = await generatedPair({
      seed: 12,
      mailboxes: 10,
      expungeFraction: 0.5,
      largeMailboxes: 0,
      messagesPerMailbox: [1, 8],
      messageBytes: [300, 3000],
    });
    pairs.push(pair);
    expect(pair.generated!.some((m) => m.hasExpunge && m.expunged > 0)).toBe(true);
    expect(pair.generated!.some((m) => m.guidKinds.padded > 0)).toBe(true);
    await endToEnd(pair, hosts(pair));
  });

  it("real Cyrus 3.6 fixtures at v08", async () => {
    const pair = await fixturePair("08");
    pairs.push(pair);
    const { planned } = await endToEnd(pair, hosts(pair));
    expect(planned).toContain("user.bob.Some Folder");
  });
});
