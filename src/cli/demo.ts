// guidup demo [--dir DIR] [--mailboxes N]: the whole job on one machine.
// Generates a Cyrus 2.3 master and replica spool (v6–v10 indexes, padded
// UUIDs, NULL GUIDs, expunge files, nested folders, names with spaces, a few
// large mailboxes), an imapd.conf for each and an inventory with the local
// transport, then runs the real commands an operator would: hash → plan →
// show → apply in two batches → status → verify.

import { accessSync, constants, realpathSync } from "node:fs";
import { mkdir, mkdtemp, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import { readImapdConf } from "../cyrus/imapd-conf.js";
import { mailboxDataDir } from "../cyrus/mailbox-path.js";
import { ExitCode, UsageError } from "../errors.js";
import { generateSpool } from "../spoolgen/spool-generator.js";
import { parseCommandArgs, parseIntOption } from "./args.js";
import type { Io } from "./io.js";

const HELP = `usage: guidup demo [--dir DIR] [--mailboxes N] [--seed N]

Generates a Cyrus 2.3 master/replica pair (default 200 mailboxes) under DIR
(default a new temporary directory) and runs hash, plan, show, apply (two
batches), status and verify on it through the local transport.
Exit codes: 0 the demo ran and verify passed, 1 a step failed.
`;

type Step = {
  title: string;
  argv: string[];
  load: () => Promise<{ run(args: string[], io: Io): Promise<number> }>;
  okCodes?: number[];
};

export async function run(args: string[], io: Io): Promise<number> {
  const { values } = parseCommandArgs(
    "demo",
    args,
    {
      dir: { type: "string" },
      mailboxes: { type: "string" },
      seed: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    false,
  );
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  const count = values.mailboxes ? parseIntOption(values.mailboxes, "mailboxes", 1, 100_000) : 200;
  const seed = values.seed ? parseIntOption(values.seed, "seed") : 1;
  const dir = resolve(values.dir ?? (await mkdtemp(join(tmpdir(), "guidup-demo-"))));
  if (
    await stat(join(dir, "spool")).then(
      () => true,
      () => false,
    )
  ) {
    throw new UsageError(`${dir} already holds a demo spool; give an empty or new --dir`);
  }
  await mkdir(dir, { recursive: true });

  io.out(`guidup demo in ${dir}\n${runHint()}`);
  io.out(`\n== generating a Cyrus 2.3 master and replica with ${count} mailboxes\n`);
  const t0 = Date.now();
  const spool = await generateSpool({
    dir: join(dir, "spool"),
    mailboxes: count,
    seed,
    largeMailboxes: count >= 50 ? 2 : 0,
  });
  const versions = new Map<number, number>();
  let records = 0;
  let withExpunge = 0;
  for (const mb of spool.mailboxes) {
    versions.set(mb.minor, (versions.get(mb.minor) ?? 0) + 1);
    records += mb.records;
    if (mb.hasExpunge) withExpunge++;
  }
  io.out(
    `   ${spool.mailboxes.length} mailboxes, ${records} messages, ${withExpunge} with cyrus.expunge; index versions ${[
      ...versions,
    ]
      .sort((a, b) => a[0] - b[0])
      .map(([v, n]) => `v${v}×${n}`)
      .join(" ")} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`,
  );
  const inventory = join(dir, "inventory.yaml");
  await writeFile(
    inventory,
    `# guidup demo inventory: one pair, both hosts on this machine (local transport)\n${YAML.stringify(
      {
        pairs: [
          {
            name: "demo",
            mailboxes: { file: spool.mailboxList },
            master: { transport: "local", config: spool.master.imapdConf },
            replica: { transport: "local", config: spool.replica!.imapdConf },
          },
        ],
      },
    )}`,
  );
  const plan = join(dir, "plans", "demo.yaml");
  const half = String(Math.max(1, Math.floor(count / 4)));
  const steps: Step[] = [
    {
      title: "precompute SHA1s on both sides (days ahead, in real life)",
      argv: ["hash", "--inventory", inventory, "--side", "both"],
      load: () => import("./hash.js"),
    },
    {
      title: "scan both sides and write the plan",
      argv: ["plan", "--inventory", inventory, "--out", plan],
      load: () => import("./plan.js"),
    },
    { title: "review the plan", argv: ["show", plan], load: () => import("./show.js") },
    // Exit 1 = stopped by --batch with work left: expected here.
    {
      title: `apply a first batch of ${half}`,
      argv: ["apply", plan, "--batch", half],
      load: () => import("./apply.js"),
      okCodes: [0, 1],
    },
    { title: "where do we stand", argv: ["status", plan], load: () => import("./status.js") },
    { title: "apply the rest", argv: ["apply", plan], load: () => import("./apply.js") },
    { title: "where do we stand", argv: ["status", plan], load: () => import("./status.js") },
    {
      title: "verify both sides: versions, GUIDs = SHA1 of the files, master = replica",
      argv: ["verify", "--inventory", inventory],
      load: () => import("./verify.js"),
    },
  ];
  for (const step of steps) {
    io.out(`\n== ${step.title}\n$ guidup ${step.argv.map(quote).join(" ")}\n`);
    const code = await (await step.load()).run(step.argv.slice(1), io);
    if (!(step.okCodes ?? [0]).includes(code)) {
      io.err(`demo: "guidup ${step.argv[0]}" exited with ${code}; stopping\n`);
      return ExitCode.failed;
    }
  }
  const conf = await readImapdConf(spool.master.imapdConf);
  const first = spool.mailboxes[0]!;
  const index = join(mailboxDataDir(conf, first.name, conf.defaultPartition), "cyrus.index");
  io.out(
    `\n== done in ${((Date.now() - t0) / 1000).toFixed(1)} s: every mailbox of both sides is at index version 10 with SHA1 GUIDs, verified.\n   spool: ${join(dir, "spool")} (master/, replica/)\n   inventory: ${inventory}\n   plan and state: ${plan}, ${plan}.state/\n   inspect a mailbox (${first.name} on the master): guidup inspect ${quote(index)}\n`,
  );
  return ExitCode.ok;
}

/** This program's bin (dist/src/cli/main.js), and its package directory. */
function ownBin(): { main: string; packageDir: string } {
  const here = join(dirname(fileURLToPath(import.meta.url)), "main.js");
  let main = here;
  try {
    main = realpathSync(here);
  } catch {
    // run from the TypeScript source (tests): no main.js beside it
  }
  return { main, packageDir: resolve(dirname(main), "..", "..", "..") };
}

/** Whether `guidup` on PATH is this very program (npm link, npm install -g). */
function onPath(main: string): boolean {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, "guidup");
    try {
      accessSync(candidate, constants.X_OK);
      if (realpathSync(candidate) === main) return true;
    } catch {
      // not there
    }
  }
  return false;
}

/** How to run the printed `guidup …` commands when guidup is not on PATH. */
function runHint(): string {
  const { main, packageDir } = ownBin();
  if (onPath(main)) return "";
  return `(guidup is not on your PATH: to run the commands below as printed, run \`npm link\` once in ${packageDir}; or prefix them with \`npx\` there, or run \`node ${main}\` instead of \`guidup\`)\n`;
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}
