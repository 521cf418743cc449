#!/usr/bin/env node
// Run by `npm test` before vitest: makes sure this machine has what the tests
// run for real — OpenSSH's sshd and client (test/helpers/sshd.ts), openssl,
// python3 (the foreign fcntl locker, the pty tests), iproute2 (bastion.ts) and Debian's Cyrus tools
// (../shared/tools/cyrus-check-guids.sh). As root it installs what is missing
// with apt-get, the way ../shared/tools/install-cyrus-tools.sh installs the
// Cyrus tools (which it runs); otherwise it names what to install and fails,
// so a fresh machine never runs a suite that checks less than it says.
// A no-op, in a few stat calls, when everything is there.

import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const installCyrusTools = resolve(repo, "../shared/tools/install-cyrus-tools.sh");

function executable(path) {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(command) {
  return (process.env.PATH ?? "")
    .split(delimiter)
    .some((dir) => dir && executable(join(dir, command)));
}

/** Each Debian package the tests need, with the check that says it is there. */
const NEEDS = [
  { pkg: "openssh-server", have: () => executable("/usr/sbin/sshd") },
  { pkg: "openssh-client", have: () => onPath("ssh-keygen") && onPath("ssh") },
  { pkg: "openssl", have: () => onPath("openssl") },
  { pkg: "python3", have: () => onPath("python3") },
  // `ip`, for the ProxyJump tests' network namespace (test/helpers/bastion.ts).
  { pkg: "iproute2", have: () => onPath("ip") },
];
const haveCyrusTools = () =>
  executable("/usr/lib/cyrus/bin/reconstruct") && executable("/usr/lib/cyrus/bin/mbexamine");

const missing = NEEDS.filter((n) => !n.have()).map((n) => n.pkg);
const isRoot = process.getuid?.() === 0;

function run(argv, env = {}) {
  const r = spawnSync(argv[0], argv.slice(1), {
    stdio: "inherit",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive", ...env },
  });
  if (r.status !== 0) {
    console.error(
      `provision: \`${argv.join(" ")}\` failed (${r.error?.message ?? `exit ${r.status}`})`,
    );
    process.exit(1);
  }
}

if (!isRoot) {
  const lines = [];
  if (missing.length > 0) lines.push(`  apt-get install ${missing.join(" ")}`);
  if (!haveCyrusTools()) lines.push(`  bash ${installCyrusTools}`);
  if (lines.length > 0) {
    console.error(
      `npm test needs, as root (some tests also run as root: file ownership, sshd):\n${lines.join("\n")}`,
    );
    process.exit(1);
  }
  console.error("provision: not root; tests that need root (ownership, sshd as root) will fail");
  process.exit(0);
}

if (missing.length > 0) {
  console.log(`provision: installing ${missing.join(" ")}`);
  run(["apt-get", "update", "-qq"]);
  run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...missing]);
}
if (!haveCyrusTools()) run(["bash", installCyrusTools]);
