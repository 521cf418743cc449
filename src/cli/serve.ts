// guidup serve --config /etc/imapd.conf: the host agent. Started by the
// controller over SSH (an exec channel) or as a local child process; speaks
// the agent protocol on stdin/stdout. Not meant to be run by hand.

import { serve } from "../agent/serve.js";
import { readImapdConf } from "../cyrus/imapd-conf.js";
import { ExitCode, UsageError } from "../errors.js";
import { TOOL_VERSION } from "../version.js";
import { parseCommandArgs } from "./args.js";
import type { Io } from "./io.js";

const HELP = `usage: guidup serve --config /etc/imapd.conf

Runs the guidup agent on this Cyrus host: newline-delimited JSON requests on
stdin, responses on stdout, JSON logs on stderr. The controller (guidup plan,
apply, hash, verify) starts it; see the README for an authorized_keys entry.
`;

export async function run(args: string[], io: Io): Promise<number> {
  const { values } = parseCommandArgs(
    "serve",
    args,
    {
      config: { type: "string", short: "C" },
      help: { type: "boolean", short: "h" },
    },
    false,
  );
  if (values.help) {
    io.out(HELP);
    return ExitCode.ok;
  }
  if (!values.config) throw new UsageError("--config PATH (the host's imapd.conf) is required");
  const conf = await readImapdConf(values.config);
  // Ctrl-C in a terminal signals the whole process group: the controller and
  // the local agents it started. The controller handles it by closing our
  // stdin, and then we stop, save the sha1 caches and roll back; dying on the
  // SIGINT instead would lose the hashing of the mailbox in progress (hashed
  // again on the rerun) and answer nothing. Only when run by hand on a
  // terminal does Ctrl-C end the agent. SIGTERM still does.
  const ignoreSigint = () => {};
  if (!process.stdin.isTTY) process.on("SIGINT", ignoreSigint);
  // When the connection drops, stdout and stderr lose their reader too: a
  // write then fails with EPIPE, and an unhandled stream error would end the
  // process in the middle of its rollback (the temporary index files of the
  // mailbox in progress left behind). Nobody is left to read either stream:
  // drop what cannot be written and finish the clean-up.
  const unread = () => {};
  process.stdout.on("error", unread);
  process.stderr.on("error", unread);
  await serve({
    conf,
    configPath: values.config,
    tool: TOOL_VERSION,
    input: process.stdin,
    output: process.stdout,
    log: (line) =>
      process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...line })}\n`),
  });
  process.off("SIGINT", ignoreSigint);
  return ExitCode.ok;
}
