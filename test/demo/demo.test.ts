// `guidup demo` end to end, as `npm run demo` runs it (a child process of the
// built CLI), at a small size: it generates a pair, runs hash → plan → show →
// apply (two batches) → status → verify, and exits 0 only if verify passed.
// Needs the build (npx tsc -p tsconfig.json).

import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DIST_MAIN, runCliProcess } from "../helpers/pair-fixtures.js";

let root: string | undefined;
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe("guidup demo", () => {
  it("runs the whole job on 20 mailboxes, verify passes, and refuses an existing spool", async () => {
    root = await mkdtemp(path.join(tmpdir(), "guidup-demo-test-"));
    const dir = path.join(root, "d");
    const r = await runCliProcess(["demo", "--dir", dir, "--mailboxes", "20"], {
      timeoutMs: 90_000,
    });
    expect(r.code, `${r.out}\n${r.err}`).toBe(0);
    expect(r.out).toMatch(/^verify demo: 20 mailboxes, \d+ \+ \d+ records hashed: OK$/m);
    expect(r.out).toMatch(/^== done in [\d.]+ s: .*verified\.$/m);
    // The steps an operator would run, in order.
    const steps = [...r.out.matchAll(/^\$ guidup (\w+)/gm)].map((m) => m[1]);
    expect(steps).toEqual(["hash", "plan", "show", "apply", "status", "apply", "status", "verify"]);

    // Not on PATH here: the demo says how to run its commands as printed.
    expect(r.out).toMatch(/guidup is not on your PATH: .* run `npm link` once in /);
    // …and they run as printed, with `guidup` on PATH (what npm link gives).
    const bin = path.join(root, "bin");
    await mkdir(bin);
    await writeFile(
      path.join(bin, "guidup"),
      `#!/bin/sh\nexec '${process.execPath}' '${DIST_MAIN}' "$@"\n`,
      { mode: 0o755 },
    );
    const printed = [
      ...r.out.matchAll(/^\$ (guidup (?:show|status|verify) .*)$/gm),
      ...r.out.matchAll(/^ {3}inspect a mailbox \([^)]*\): (guidup inspect .*)$/gm),
    ].map((m) => m[1]!);
    expect(printed.length).toBe(5);
    for (const line of printed) {
      const ran = spawnSync("sh", ["-c", line], {
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
        encoding: "utf8",
      });
      expect(ran.status, `${line}\n${ran.stderr}`).toBe(0);
    }

    const again = await runCliProcess(["demo", "--dir", dir, "--mailboxes", "20"]);
    expect(again.code).toBe(2);
    expect(again.err).toMatch(/already holds a demo spool/);
  });
});
