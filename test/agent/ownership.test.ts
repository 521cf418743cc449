// Files the agent writes keep the owner, group and mode of the files they
// replace (the agent runs as root; the spool belongs to someone else), and
// mailbox names can never make the agent touch a path outside its partition.
// Runs as root and fails (does not skip) otherwise.

import { chmod, chown, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  AgentProcess,
  exists,
  killAll,
  makeFixtureSpool,
  messages,
  snapshot,
  type TempSpool,
  writeMailbox,
} from "../helpers/agent-process.js";

const UID = 12345;
const GID = 23456;

const agents: AgentProcess[] = [];
const spools: TempSpool[] = [];

beforeAll(() => {
  if (process.getuid?.() !== 0) {
    throw new Error("ownership tests must run as root (they chown the spool to another user)");
  }
});

afterEach(async () => {
  await killAll(agents);
  await Promise.all(spools.splice(0).map((s) => s.cleanup()));
});

async function chownTree(dir: string): Promise<void> {
  await chown(dir, UID, GID);
  await chmod(dir, 0o750);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await chownTree(p);
    else {
      await chown(p, UID, GID);
      await chmod(p, 0o640);
    }
  }
}

function owner(st: { uid: number; gid: number; mode: number }) {
  return { uid: st.uid, gid: st.gid, mode: (st.mode & 0o7777).toString(8) };
}

describe("ownership and mode of upgraded files", () => {
  it("cyrus.index, cyrus.expunge, their staged temporary files and cyrus.sha1s keep the originals' owner, group and mode", async () => {
    const spool = await makeFixtureSpool("09");
    spools.push(spool);
    await writeMailbox(spool, "user.dora", {
      minor: 9,
      messages: messages("user.dora", [1, 2, 4]),
      expunge: messages("user.dora", [3]),
    });
    await chownTree(spool.spool);
    const dora = spool.dir("user.dora");
    // A different mode for the expunge file: each .NEW follows its own original.
    await chmod(path.join(dora, "cyrus.expunge"), 0o600);
    const agent = await AgentProcess.start(spool.conf);
    agents.push(agent);

    for (const name of ["user.alice", "user.dora"]) {
      const dir = spool.dir(name);
      const files = ["cyrus.index", ...(name === "user.dora" ? ["cyrus.expunge"] : [])].map((f) =>
        path.join(dir, f),
      );
      const before = await Promise.all(files.map(async (f) => owner(await stat(f))));
      await agent.call("lock", { mailbox: { name }, timeoutMs: 2000 });
      await agent.call("upgrade", { target: 10 });
      for (const [i, f] of files.entries()) {
        const tmp = `${f}.guidup-${agent.hello.pid}`;
        expect(owner(await stat(tmp)), tmp).toEqual(before[i]);
      }
      const commit = await agent.call("commit", {});
      expect(commit.renamed).toEqual([...files].reverse());
      for (const [i, f] of files.entries()) {
        const st = await stat(f);
        expect(owner(st), f).toEqual(before[i]);
        expect(st.uid).toBe(UID);
        expect(st.gid).toBe(GID);
      }
      const cache = await stat(path.join(dir, "cyrus.sha1s"));
      expect(owner(cache)).toEqual(owner(await stat(path.join(dir, "cyrus.index"))));
    }
    expect(owner(await stat(path.join(dora, "cyrus.expunge"))).mode).toBe("600");
    expect(owner(await stat(path.join(dora, "cyrus.index"))).mode).toBe("640");
  });
});

describe("path confinement", () => {
  const hostile = [
    "../x",
    "user.a/../../etc",
    "user..x",
    "/etc",
    "/tmp/guidup-evil",
    "user.a\u0000b",
    "..",
    ".",
    "user.",
    ".user",
    "user.alice/..",
    "user.alice\n",
  ];

  it("refuses hostile mailbox names in every op that takes one (scan reports them as invalid-name), with code mailbox-name, creating nothing", async () => {
    const spool = await makeFixtureSpool("09");
    spools.push(spool);
    const agent = await AgentProcess.start(spool.conf);
    agents.push(agent);
    await agent.call("hash", { mailboxes: [{ name: "user.alice" }] });
    const { data } = await agent.call("cache-get", { mailbox: { name: "user.alice" } });
    const before = await snapshot(spool.root);

    for (const name of hostile) {
      const mailbox = { name };
      const attempts = [
        agent.fail("lock", { mailbox, timeoutMs: 500 }),
        agent.fail("hash", { mailboxes: [mailbox] }),
        agent.fail("cache-get", { mailbox }),
        agent.fail("cache-put", { mailbox, data }),
        agent.fail("cache-clean", { mailboxes: [mailbox] }),
        agent.fail("status", { mailbox }),
        agent.fail("verify", { mailboxes: [mailbox] }),
      ];
      const ops = ["lock", "hash", "cache-get", "cache-put", "cache-clean", "status", "verify"];
      for (const [i, p] of attempts.entries()) {
        const err = await p;
        expect(err.code, `${ops[i]} ${JSON.stringify(name)}`).toBe("mailbox-name");
      }
      // scan reads only: it reports the name as invalid-name, per mailbox, so
      // that one bad name in a list costs only itself (issue #10 item 7).
      const scan = await agent.call("scan", { mailboxes: [{ name: "user.alice" }, mailbox] });
      expect(
        scan.mailboxes.map((m) => m.status),
        JSON.stringify(name),
      ).toEqual(["ok", "invalid-name"]);
      expect(scan.mailboxes[1]?.reason).toMatch(/^invalid mailbox name /);
    }
    // A partition that is not in imapd.conf is refused too.
    const badPartition = await agent.fail("lock", {
      mailbox: { name: "user.alice", partition: "../../etc" },
      timeoutMs: 500,
    });
    expect(badPartition.code).toBe("usage");

    expect(await agent.call("status", {})).toEqual({ session: "idle" });
    expect(await snapshot(spool.root)).toEqual(before);
    for (const f of ["cyrus.index.NEW", "cyrus.expunge.NEW", "cyrus.sha1s"]) {
      expect(await exists(path.join("/etc", f)), f).toBe(false);
      expect(await exists(path.join("/tmp/guidup-evil", f)), f).toBe(false);
    }
  });
});
