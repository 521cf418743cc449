// guidup agent install --inventory FILE [--pair NAME] [--dir DIR] [--node PATH]:
// puts exactly this guidup version on every ssh host of the inventory, so
// that its agent matches this controller.
//
// What goes over: a self-contained bundle — this build's compiled code, a
// package.json naming the version, and koffi with the prebuilt native binary
// for the host's platform (no npm, no compiler on the host) — copied over
// SFTP into a staging directory, checked there file by file with sha256sum
// against a manifest, started once (`--version` must print this version),
// and only then renamed to DIR/<version> (default ~/.guidup/agent/<version>).
// A directory already there whose files pass the manifest is kept.
// Printed per host: the inventory `command:` and the authorized_keys line.
//
// The host needs a shell login for this (uname, sha256sum, mkdir, mv): run it
// before restricting the key to the forced command it prints.

import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MIN_NODE_MAJOR } from "../agent/requirements.js";
import { ExitCode, errorMessage, UsageError } from "../errors.js";
import type { SshHostSpec } from "../host-spec.js";
import type { PairSpec } from "../plan/inventory.js";
import { connectHost } from "../transport/index.js";
import { SshConnection, shellQuote } from "../transport/ssh.js";
import { TOOL_VERSION } from "../version.js";
import {
  PAIR_FLAGS,
  type PairOptions,
  pairOptions,
  pairsFor,
  parseFlags,
  withHostKeyNotices,
} from "./flag-groups.js";
import type { Io } from "./io.js";

const HELP = `usage: guidup agent install --inventory FILE [--pair NAME] [--dir DIR]
                            [--node PATH] [--accept-new-host-keys]

Installs this guidup version (${TOOL_VERSION}) as the agent on every ssh host of
the inventory: a self-contained bundle (no npm, no compiler on the host; the
native lock helper for the host's platform included) copied over SFTP,
verified by SHA-256, in DIR/<version> (default ~/.guidup/agent/<version> of
the login user). Prints the inventory command and the authorized_keys line to
use. Needs a shell login on the host (install before restricting the key).
  --inventory FILE        the pairs
  --pair NAME             only this pair's hosts
  --dir DIR               where versions are kept on the hosts
  --node PATH             Node.js on the hosts (default: \`command -v node\` there)
  --accept-new-host-keys  record unknown SSH host keys instead of refusing them
Exit codes: 0 installed everywhere, 1 some host failed, 2 bad input.
`;

/** The package root (the bundle is taken from its dist/): where guidup's package.json is, above this file. */
const PACKAGE_ROOT = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as {
        name?: string;
      };
      if (pkg.name === "guidup") return dir;
    } catch {
      // not here: one level up
    }
    if (path.dirname(dir) === dir) return from;
  }
}
/**
 * authorized_keys options beside the forced command: spelled out rather than
 * `restrict`, which OpenSSH before 7.2 (still on old Cyrus hosts) rejects.
 */
const FORCED_COMMAND_OPTIONS = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding";
/** Source files of the native part of koffi: not needed where its binary is prebuilt. */
const SOURCE_FILE = /\.(cc|hh|c|h|S|asm)$|(^|\/)CMakeLists\.txt$/;

export async function run(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h") {
    io.out(HELP);
    return sub === undefined ? ExitCode.badInput : ExitCode.ok;
  }
  if (sub !== "install")
    throw new UsageError(
      `agent ${sub}: unknown subcommand (have: install; see guidup agent --help)`,
    );
  const options = parseAgentInstallOptions(rest);
  if (options === "help") {
    io.out(HELP);
    return ExitCode.ok;
  }
  const pairs = await pairsFor(options);
  return await withHostKeyNotices(io, () => installAll(pairs, options, io));
}

export interface AgentInstallOptions extends PairOptions {
  /** Absolute directory on the hosts (default: the install's own). */
  dir: string | undefined;
  /** The Node.js binary on the hosts. */
  node: string | undefined;
}

export function parseAgentInstallOptions(args: string[]): AgentInstallOptions | "help" {
  const values = parseFlags("agent install", args, {
    ...PAIR_FLAGS,
    dir: { type: "string" },
    node: { type: "string" },
  });
  if (values.help) return "help";
  const pair = pairOptions("agent install", values);
  if (values.dir !== undefined && !values.dir.startsWith("/"))
    throw new UsageError(`--dir ${values.dir}: give an absolute path on the hosts`);
  return { ...pair, dir: values.dir, node: values.node };
}

async function installAll(
  pairs: PairSpec[],
  options: Pick<AgentInstallOptions, "dir" | "node">,
  io: Io,
): Promise<number> {
  // One install per machine and login, whichever pairs and sides name it.
  const hosts = new Map<string, { spec: SshHostSpec; configs: string[] }>();
  for (const p of pairs) {
    for (const spec of [p.master, p.replica]) {
      if (spec.transport === "local") continue;
      const key = JSON.stringify([spec.host, spec.port ?? 22, spec.user ?? "", spec.jump ?? []]);
      const entry = hosts.get(key) ?? { spec, configs: [] };
      if (!entry.configs.includes(spec.config)) entry.configs.push(spec.config);
      hosts.set(key, entry);
    }
  }
  if (hosts.size === 0) {
    io.out("no ssh hosts in the inventory: local hosts run this guidup itself\n");
    return ExitCode.ok;
  }

  const bundle = await buildBundle();
  let failed = 0;
  try {
    await Promise.all(
      [...hosts.values()].map(async ({ spec, configs }) => {
        const label = spec.name ?? spec.host;
        try {
          const lines = await installOn(spec, configs, bundle, options.dir, options.node);
          io.out(`${lines.join("\n")}\n`);
        } catch (err) {
          failed++;
          io.out(`FAIL ${label}: ${errorMessage(err)}\n`);
        }
      }),
    );
  } finally {
    fs.rmSync(bundle.tempDir, { recursive: true, force: true });
  }
  return failed > 0 ? ExitCode.failed : ExitCode.ok;
}

interface BundleFile {
  /** Path inside the bundle, with "/". */
  rel: string;
  local: string;
  sha256: string;
}

interface Bundle {
  files: BundleFile[];
  /** Holds the generated package.json and manifest. */
  tempDir: string;
  /** Per platform ("linux-x64"): koffi's native package, or why there is none. */
  native: (platform: string) => BundleFile[] | string;
}

function sha256(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

/** Every file under dir (relative paths), skipping what `skip` says. */
function walk(dir: string, skip: (rel: string) => boolean, prefix = ""): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (skip(rel)) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(full, skip, rel));
    else if (entry.isFile()) out.push(rel);
  }
  return out;
}

function files(dir: string, into: string, skip: (rel: string) => boolean): BundleFile[] {
  return walk(dir, skip).map((rel) => {
    const local = path.join(dir, rel);
    return { rel: `${into}/${rel}`, local, sha256: sha256(local) };
  });
}

/** What every host gets, and the per-platform native part. */
async function buildBundle(): Promise<Bundle> {
  if (!fs.existsSync(path.join(PACKAGE_ROOT, "dist", "src", "cli", "main.js"))) {
    throw new UsageError(`no compiled guidup in ${PACKAGE_ROOT}/dist: run npm run build first`);
  }
  const tempDir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-bundle-"));
  const packageJson = path.join(tempDir, "package.json");
  fs.writeFileSync(
    packageJson,
    `${JSON.stringify({ name: "guidup", version: TOOL_VERSION, type: "module", private: true }, null, 2)}\n`,
  );
  const require = createRequire(path.join(PACKAGE_ROOT, "package.json"));
  // koffi's exports hide its package.json: from its entry up to its directory.
  let koffiDir = path.dirname(require.resolve("koffi"));
  while (!fs.existsSync(path.join(koffiDir, "package.json"))) koffiDir = path.dirname(koffiDir);
  const koffiVersion = (
    JSON.parse(fs.readFileSync(path.join(koffiDir, "package.json"), "utf8")) as {
      version: string;
    }
  ).version;
  const common = [
    { rel: "package.json", local: packageJson, sha256: sha256(packageJson) },
    ...files(path.join(PACKAGE_ROOT, "dist", "src"), "dist/src", (rel) =>
      /\.(map|d\.ts)$/.test(rel),
    ),
    ...files(
      koffiDir,
      "node_modules/koffi",
      (rel) => rel === "doc" || rel === "vendor" || SOURCE_FILE.test(rel),
    ),
  ];
  const native = (platform: string): BundleFile[] | string => {
    const name = `@koromix/koffi-${platform}`;
    // npm installs it beside koffi (hoisted) or inside it.
    const dir = [
      path.join(path.dirname(koffiDir), name),
      path.join(koffiDir, "node_modules", name),
    ].find((d) => fs.existsSync(path.join(d, "package.json")));
    if (dir === undefined) {
      return `koffi's native binary for ${platform} is not on this machine; fetch it with \`npm install --no-save --force ${name}@${koffiVersion}\` in ${PACKAGE_ROOT} and run again`;
    }
    return files(dir, `node_modules/${name}`, () => false);
  };
  return { files: common, tempDir, native };
}

/** `uname -m` → Node's process.arch. */
const ARCHES: Record<string, string> = {
  x86_64: "x64",
  amd64: "x64",
  aarch64: "arm64",
  arm64: "arm64",
};

async function installOn(
  spec: SshHostSpec,
  configs: string[],
  bundle: Bundle,
  dirOption: string | undefined,
  nodeOption: string | undefined,
): Promise<string[]> {
  const conn = await connectHost(spec);
  try {
    if (!(conn instanceof SshConnection)) throw new UsageError("not an ssh host");
    const nodeWord = nodeOption === undefined ? '"$(command -v node)"' : shellQuote(nodeOption);
    const probe = await conn.runCommand(
      `n=${nodeWord}; printf 'os=%s\\narch=%s\\nhome=%s\\nnode=%s\\n' "$(uname -s)" "$(uname -m)" "$HOME" "$n"; ` +
        `if [ -n "$n" ] && [ -x "$n" ]; then printf 'version=%s\\n' "$("$n" --version)"; fi`,
    );
    const facts = Object.fromEntries(
      probe.stdout
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    ) as Record<string, string | undefined>;
    if (facts.os !== "Linux")
      throw new UsageError(`the host runs ${facts.os ?? "?"}: the agent needs Linux`);
    const arch = ARCHES[facts.arch ?? ""];
    if (arch === undefined)
      throw new UsageError(
        `the host's CPU is ${facts.arch}: the agent supports x86_64 and aarch64`,
      );
    const node = facts.node ?? "";
    if (node === "" || facts.version === undefined) {
      throw new UsageError(
        `no Node.js ${nodeOption === undefined ? "on the login PATH" : `at ${nodeOption}`}: install Node.js >= ${MIN_NODE_MAJOR} there (or pass --node PATH)`,
      );
    }
    const major = Number(/^v(\d+)\./.exec(facts.version)?.[1]);
    if (!(major >= MIN_NODE_MAJOR)) {
      throw new UsageError(
        `Node.js ${facts.version} at ${node} is too old: the agent needs >= ${MIN_NODE_MAJOR}`,
      );
    }
    const native = bundle.native(`linux-${arch}`);
    if (typeof native === "string") throw new UsageError(native);
    const all = [...bundle.files, ...native].sort((a, b) => (a.rel < b.rel ? -1 : 1));
    const manifest = all.map((f) => `${f.sha256}  ${f.rel}\n`).join("");
    const manifestFile = path.join(bundle.tempDir, `MANIFEST-linux-${arch}.sha256`);
    fs.writeFileSync(manifestFile, manifest);

    const base = dirOption ?? `${facts.home}/.guidup/agent`;
    const target = `${base}/${TOOL_VERSION}`;
    const main = `${target}/dist/src/cli/main.js`;
    const command = `${word(node)} ${word(main)} serve`;
    const verify = (dir: string) =>
      `cd ${shellQuote(dir)} && sha256sum --quiet --strict -c MANIFEST.sha256 && ` +
      `${shellQuote(node)} dist/src/cli/main.js --version`;

    let how: string;
    const existing = await conn
      .runCommand(
        `[ -f ${shellQuote(`${target}/MANIFEST.sha256`)} ] && cmp -s - ${shellQuote(`${target}/MANIFEST.sha256`)} <<'EOF' && ${verify(target)}\n${manifest}EOF`,
      )
      .then((r) => r.stdout.trim())
      .catch(() => undefined);
    if (existing === TOOL_VERSION) {
      how = `already installed, ${all.length} files verified`;
    } else {
      const staging = `${target}.partial-${randomBytes(4).toString("hex")}`;
      const dirs = [...new Set(all.map((f) => path.posix.dirname(`${staging}/${f.rel}`)))];
      await conn.runCommand(`mkdir -p -m 0755 -- ${dirs.map(shellQuote).join(" ")}`);
      try {
        await conn.putFiles([
          ...all.map((f) => ({ local: f.local, remote: `${staging}/${f.rel}` })),
          { local: manifestFile, remote: `${staging}/MANIFEST.sha256` },
        ]);
        const ran = (await conn.runCommand(verify(staging))).stdout.trim();
        if (ran !== TOOL_VERSION) {
          throw new UsageError(`the copied agent says it is version "${ran}", not ${TOOL_VERSION}`);
        }
        await conn.runCommand(
          `rm -rf -- ${shellQuote(target)} && mv -- ${shellQuote(staging)} ${shellQuote(target)}`,
        );
      } catch (err) {
        await conn.runCommand(`rm -rf -- ${shellQuote(staging)}`).catch(() => undefined);
        throw err;
      }
      how = `installed, ${all.length} files, SHA-256 verified`;
    }

    const where =
      spec.name !== undefined && spec.name !== spec.host
        ? `${spec.name} (${spec.host})`
        : spec.host;
    const key = publicKey(spec.identityFile);
    return [
      `${where}: guidup ${TOOL_VERSION} ${how} in ${target} (linux-${arch}, Node.js ${facts.version} at ${node})`,
      `  inventory command: ${JSON.stringify(command)}`,
      ...configs.map(
        (config) =>
          `  authorized_keys:   command="${`${command} --config ${word(config)}`.replace(/["\\]/g, "\\$&")}",${FORCED_COMMAND_OPTIONS} ${key}`,
      ),
    ];
  } finally {
    await conn.close();
  }
}

/** A word for a shell command line: as is when nothing in it is special, else quoted. */
function word(text: string): string {
  return /^[A-Za-z0-9_/.:@%+=,-]+$/.test(text) ? text : shellQuote(text);
}

/** The controller's public key for the authorized_keys line, when it is beside the identity file. */
function publicKey(identityFile: string | undefined): string {
  if (identityFile !== undefined) {
    try {
      return fs.readFileSync(`${identityFile}.pub`, "utf8").trim();
    } catch {
      // not there: the operator fills it in
    }
  }
  return "<the controller's public key>";
}
