#!/usr/bin/env node
// guidup's entry point: picks the command, runs it, maps errors to exit codes.
// The only place that calls process.exit.

import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ERRORS, ExitCode, errorMessage, GuidupError } from "../errors.js";
import { timelineMark } from "../timeline.js";
import { TOOL_VERSION } from "../version.js";
import { type Io, processIo } from "./io.js";

type CommandModule = { run(args: string[], io: Io): Promise<number> };

/** Each command lives in its own file and is loaded only when used. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandModule> }> = {
  demo: {
    summary: "run the whole job on a generated master/replica pair",
    load: () => import("./demo.js"),
  },
  hash: {
    summary: "precompute message SHA1s into each mailbox's sha1 cache",
    load: () => import("./hash.js"),
  },
  plan: {
    summary: "scan master and replica, write a reviewable plan",
    load: () => import("./plan.js"),
  },
  show: { summary: "summarise a plan for review", load: () => import("./show.js") },
  diff: { summary: "compare two plans of the same pair", load: () => import("./diff.js") },
  apply: {
    summary: "carry a plan out with the locked two-phase protocol",
    load: () => import("./apply.js"),
  },
  status: { summary: "where an apply of a plan stands", load: () => import("./status.js") },
  verify: {
    summary: "check versions, GUIDs = SHA1 of files, master = replica",
    load: () => import("./verify.js"),
  },
  cache: {
    summary: "cache clean: remove the sha1 caches once done",
    load: () => import("./cache.js"),
  },
  inspect: {
    summary: "print an index or expunge file (like mbexamine)",
    load: () => import("./inspect.js"),
  },
  agent: {
    summary: "agent install: put this guidup version on every ssh host",
    load: () => import("./agent-install.js"),
  },
  check: {
    summary: "preflight: reach every host, check agents and host requirements",
    load: () => import("./check.js"),
  },
  serve: {
    summary: "run the agent on a Cyrus host (started by the controller)",
    load: () => import("./serve.js"),
  },
};

function usage(): string {
  const names = Object.keys(COMMANDS);
  const width = Math.max(...names.map((n) => n.length));
  const lines = names.map((n) => `  ${n.padEnd(width)}  ${COMMANDS[n]?.summary ?? ""}`);
  return [
    `guidup ${TOOL_VERSION} — upgrade Cyrus 2.3 mailbox indexes to v10 with SHA1 GUIDs`,
    "",
    "usage: guidup <command> [options]   (guidup <command> --help for its options)",
    "",
    "commands:",
    ...lines,
    "",
  ].join("\n");
}

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    io.out(usage());
    return name === undefined ? ExitCode.badInput : ExitCode.ok;
  }
  if (name === "--version" || name === "-V") {
    io.out(`${TOOL_VERSION}\n`);
    return ExitCode.ok;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    io.err(`guidup: unknown command "${name}"\n${usage()}`);
    return ExitCode.badInput;
  }
  try {
    timelineMark("main loaded");
    const mod = await command.load();
    timelineMark(`${name} command loaded`);
    return await mod.run(rest, io);
  } catch (err) {
    if (err instanceof GuidupError) {
      // An internal error from an agent is a bug too: say what to do with it.
      const hint = err.code === ERRORS.internal.code ? `${ERRORS.internal.next}\n` : "";
      io.err(`guidup ${name}: ${err.message}\n${hint}`);
      return err.exitCode;
    }
    io.err(
      `guidup ${name}: internal error: ${errorMessage(err)}\n${(err as Error)?.stack ?? ""}\nThis is a bug in guidup; please report it with the command you ran.\n`,
    );
    return ExitCode.internal;
  }
}

/** True when this file is the program node was started with (the bin, via any symlink). */
function isEntryPoint(): boolean {
  const argv1 = process.argv[1];
  if (argv1 === undefined) return false;
  try {
    return realpathSync(argv1) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  // A reader that stops early (guidup inspect … | head) is not an error.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(ExitCode.ok);
    throw err;
  });
  main(process.argv.slice(2)).then(
    (code) => {
      timelineMark("exit");
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`guidup: ${errorMessage(err)}\n`);
      process.exitCode = ExitCode.internal;
    },
  );
}
