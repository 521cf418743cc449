// bench/linked-spool.ts makes a million mailboxes affordable by hard-linking
// identical files. Applying a linked mailbox must never change its siblings:
// apply writes a new index and renames it over the old name (a new inode).
// Here a small linked spool (no mailbox with its own files) is planned with
// `discover: true`, three mailboxes are applied, and every other mailbox's
// files are byte for byte what they were, still the shared inodes; the
// applied ones pass `guidup verify`.

import { readFileSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generateLinked } from "../../bench/linked-spool.js";
import { parseImapdConf } from "../../src/cyrus/imapd-conf.js";
import { mailboxDataDir } from "../../src/cyrus/mailbox-path.js";
import { cli, stateOf, statusOf } from "../helpers/apply-harness.js";

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

const SIDES = ["master", "replica"] as const;
const FILES = ["cyrus.header", "cyrus.index", "1."] as const;

describe("linked bench spool", () => {
  it("applying three linked mailboxes leaves the other nine byte for byte and linked", async () => {
    const root = await mkdtemp(join(tmpdir(), "guidup-linked-"));
    dirs.push(root);
    const spool = generateLinked(root, 12, 0);
    const conf = Object.fromEntries(
      SIDES.map((side) => {
        const file = join(root, side, "imapd.conf");
        return [side, parseImapdConf(readFileSync(file, "utf8"), file)];
      }),
    ) as Record<(typeof SIDES)[number], ReturnType<typeof parseImapdConf>>;
    const template = (side: (typeof SIDES)[number], f: string) => join(spool.templates[side], f);
    const before = Object.fromEntries(
      SIDES.flatMap((side) => FILES.map((f) => [`${side}/${f}`, readFileSync(template(side, f))])),
    ) as Record<string, Buffer>;
    // Every mailbox directory holds the shared inodes, one set per side.
    for (const side of SIDES)
      for (const f of FILES) expect(statSync(template(side, f)).nlink).toBe(12 + 1);
    expect(statSync(template("master", "cyrus.index")).ino).not.toBe(
      statSync(template("replica", "cyrus.index")).ino,
    );

    const host = (side: string) =>
      [
        `    ${side}:`,
        "      transport: local",
        `      config: ${JSON.stringify(join(root, side, "imapd.conf"))}`,
        `      name: ${side}`,
      ].join("\n");
    const inventory = join(root, "inventory.yaml");
    await writeFile(
      inventory,
      `pairs:\n  - name: linked\n    mailboxes: { discover: true }\n${host("master")}\n${host("replica")}\n`,
    );
    const plan = join(root, "plan.yaml");
    await cli(["plan", "--inventory", inventory, "--out", plan], 0);
    expect((await statusOf(plan)).counts.pending).toBe(12);

    await cli(["apply", plan, "--batch", "3"], 1);
    expect((await statusOf(plan)).counts.done).toBe(3);
    const applied: string[] = [];
    for (const name of spool.names)
      if ((await stateOf(plan, name))?.phase === "done") applied.push(name);
    expect(applied).toHaveLength(3);
    expect(applied).toEqual(spool.names.slice(0, 3));

    for (const side of SIDES) {
      // The applied mailboxes' indexes are new inodes; the shared ones lost
      // exactly those three links and kept their bytes.
      expect(statSync(template(side, "cyrus.index")).nlink).toBe(12 - 3 + 1);
      expect(statSync(template(side, "cyrus.header")).nlink).toBe(12 + 1);
      for (const f of FILES)
        expect(readFileSync(template(side, f))).toEqual(before[`${side}/${f}`]);
      const shared = statSync(template(side, "cyrus.index")).ino;
      for (const name of spool.names) {
        const dir = mailboxDataDir(conf[side], name, "default");
        const index = statSync(join(dir, "cyrus.index"));
        if (applied.includes(name)) {
          expect(index.ino, `${side} ${name}`).not.toBe(shared);
          expect(readFileSync(join(dir, "cyrus.index"))).not.toEqual(before[`${side}/cyrus.index`]);
        } else {
          expect(index.ino, `${side} ${name}`).toBe(shared);
          for (const f of FILES)
            expect(readFileSync(join(dir, f)), `${side} ${name} ${f}`).toEqual(
              before[`${side}/${f}`],
            );
        }
      }
    }

    const verify = await cli(
      ["verify", "--plan", plan, ...applied.flatMap((name) => ["--only", name])],
      0,
    );
    expect(verify.out).toContain("verify linked: 3 mailboxes, 3 + 3 records hashed: OK");
  });
});
