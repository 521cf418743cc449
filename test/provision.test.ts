// test/provision.mjs (run by `npm test` before vitest): not root and missing a
// tool, it names the package to install and fails instead of letting the suite
// check less. (As root it installs; that path is what `npm test` on CI takes.)
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, expect, it } from "vitest";
import { REPO_ROOT } from "./helpers/fixtures.js";

const script = path.join(REPO_ROOT, "test", "provision.mjs");
let dir: string | undefined;
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

it("as a user without openssl on PATH, names the package to install and fails", () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-provision-"));
  fs.chmodSync(dir, 0o755);
  // Only presence is checked, so stand-ins will do; openssl is left out.
  for (const tool of ["ssh", "ssh-keygen", "python3", "ip"])
    fs.writeFileSync(path.join(dir, tool), "#!/bin/sh\n", { mode: 0o755 });
  const r = spawnSync(process.execPath, [script], {
    env: { PATH: dir },
    uid: 65534,
    gid: 65534,
    encoding: "utf8",
  });
  expect(r.status, r.stderr).toBe(1);
  expect(r.stderr).toMatch(/^npm test needs, as root/);
  expect(r.stderr).toMatch(/^ {2}apt-get install openssl$/m);
  expect(r.stderr).not.toMatch(/openssh|python3/);
});
