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

/**
 * Parses a duration with its unit: "500ms", "30s", "2m", "1h". A bare number
 * is refused: "--lock-timeout 30" once meant 30 ms to guidup and 30 s to the
 * operator who typed it.
 */
export function parseDurationMs(text: string, option: string): number {
  const t = text.trim();
  if (/^\d+(?:\.\d+)?$/.test(t))
    throw new UsageError(
      `--${option} ${text}: give a unit, e.g. ${t}s for seconds or ${t}ms for milliseconds`,
    );
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(t);
  if (!m)
    throw new UsageError(`--${option} ${text}: not a duration; write e.g. 500ms, 30s, 2m or 1h`);
  const n = Number(m[1]);
  const unit = m[2];
  const factor = unit === "ms" ? 1 : unit === "s" ? 1000 : unit === "m" ? 60_000 : 3_600_000;
  return Math.round(n * factor);
}

/** Parses a whole number within min..max; the error says the range in words. */
export function parseIntOption(
  text: string,
  option: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  const bounded = max < Number.MAX_SAFE_INTEGER;
  const range = bounded
    ? `a whole number from ${min} to ${max}`
    : `a whole number, at least ${min}`;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`--${option} ${text}: give ${range}`);
  return n;
}

/** --max-rate MB/s (a positive number, fractions allowed) as bytes per second; undefined when not given. */
export function parseMaxRate(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const mb = Number(text);
  if (!Number.isFinite(mb) || mb <= 0)
    throw new UsageError(`--max-rate: "${text}" is not a positive number of MB/s`);
  return Math.round(mb * 1024 * 1024);
}
