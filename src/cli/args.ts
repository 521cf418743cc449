// Option parsing shared by the commands: node's parseArgs, with errors turned
// into UsageError (exit code 2) and a standard --help.

import { type ParseArgsConfig, parseArgs } from "node:util";
import { UsageError } from "../errors.js";

export type OptionSpec = NonNullable<ParseArgsConfig["options"]>;

export function parseCommandArgs<O extends OptionSpec>(
  command: string,
  args: string[],
  options: O,
  allowPositionals = true,
) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message} (see guidup ${command} --help)`);
  }
}

/** Parses a duration like "30s", "500ms", "2m", or plain milliseconds. */
export function parseDurationMs(text: string, option: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`--${option}: "${text}" is not a duration (e.g. 500ms, 30s, 2m)`);
  const n = Number(m[1]);
  const unit = m[2] ?? "ms";
  const factor = unit === "ms" ? 1 : unit === "s" ? 1000 : unit === "m" ? 60_000 : 3_600_000;
  return Math.round(n * factor);
}

export function parseIntOption(
  text: string,
  option: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`--${option}: "${text}" is not a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`--${option}: ${n} is outside ${min}..${max}`);
  return n;
}
