// guidup apply's options, parsed and checked: every flag becomes a typed
// field, every mistake a UsageError naming the flag, before anything is read
// or contacted.

import { DEFAULT_CONCURRENCY, MAX_CONCURRENCY } from "../../apply/engine.js";
import {
  DEFAULT_PAIRS_IN_FLIGHT,
  MAX_PAIRS_IN_FLIGHT,
  type PairApplyOptions,
} from "../../apply/fleet.js";
import { UsageError } from "../../errors.js";
import { parseCommandArgs, parseDurationMs, parseIntOption, parseMaxRate } from "../args.js";

export interface ApplyArguments {
  help: boolean;
  plans: string[];
  /** Pairs in flight (several plans). */
  pairs: number;
  /** What every pair's engine gets. */
  engine: PairApplyOptions;
  dryRun: boolean;
  acceptNewHostKeys: boolean;
  json: boolean;
}

export function parseApplyArgs(args: string[]): ApplyArguments {
  const { values, positionals } = parseCommandArgs("apply", args, {
    batch: { type: "string" },
    only: { type: "string", multiple: true },
    exclude: { type: "string", multiple: true },
    concurrency: { type: "string" },
    pairs: { type: "string" },
    "max-failures": { type: "string" },
    "lock-timeout": { type: "string" },
    "pause-file": { type: "string" },
    "control-file": { type: "string" },
    "exact-plan": { type: "boolean" },
    "master-lock-wait": { type: "string" },
    retries: { type: "string" },
    "retry-backoff": { type: "string" },
    "max-lock-hold": { type: "string" },
    "max-rate": { type: "string" },
    "allow-drift": { type: "boolean" },
    "relay-cache": { type: "boolean" },
    "relay-sample": { type: "string" },
    "dry-run": { type: "boolean" },
    "accept-new-host-keys": { type: "boolean" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  const rest = {
    dryRun: values["dry-run"] === true,
    acceptNewHostKeys: values["accept-new-host-keys"] === true,
    json: values.json === true,
  };
  if (values.help)
    return {
      help: true,
      plans: [],
      pairs: DEFAULT_PAIRS_IN_FLIGHT,
      engine: engineDefaults(),
      ...rest,
    };
  if (positionals.length === 0)
    throw new UsageError("apply takes one or more PLAN files (see guidup apply --help)");
  const int = (name: string, min: number, max?: number): number | undefined => {
    const text = values[name as keyof typeof values];
    return typeof text === "string" ? parseIntOption(text, name, min, max) : undefined;
  };
  const duration = (name: string): number | undefined => {
    const text = values[name as keyof typeof values];
    return typeof text === "string" ? parseDurationMs(text, name) : undefined;
  };
  if (values["allow-drift"] && values["exact-plan"])
    throw new UsageError("--allow-drift and --exact-plan contradict each other: give one");
  const maxBytesPerSec = parseMaxRate(values["max-rate"]);
  const optional = <K extends string, V>(key: K, value: V | undefined) =>
    (value === undefined ? {} : { [key]: value }) as Partial<Record<K, V>>;
  const engine: PairApplyOptions = {
    ...engineDefaults(),
    concurrency: int("concurrency", 1, MAX_CONCURRENCY) ?? DEFAULT_CONCURRENCY,
    ...optional("batch", int("batch", 1)),
    only: values.only ?? [],
    exclude: values.exclude ?? [],
    ...optional("maxFailures", int("max-failures", 1)),
    lockTimeoutMs: duration("lock-timeout") ?? 30_000,
    ...optional("pauseFile", values["pause-file"]),
    ...optional("controlFile", values["control-file"]),
    drift: values["allow-drift"] ? "any" : values["exact-plan"] ? "exact" : "contract",
    ...optional("masterLockWaitMs", duration("master-lock-wait")),
    ...optional("retries", int("retries", 0, 100)),
    ...optional("retryBackoffMs", duration("retry-backoff")),
    ...optional("maxLockHoldMs", duration("max-lock-hold")),
    ...optional("maxBytesPerSec", maxBytesPerSec),
    relayCache: values["relay-cache"] === true,
    ...optional("relaySample", int("relay-sample", 1)),
  };
  return {
    help: false,
    plans: positionals,
    pairs: int("pairs", 1, MAX_PAIRS_IN_FLIGHT) ?? DEFAULT_PAIRS_IN_FLIGHT,
    engine,
    ...rest,
  };
}

function engineDefaults(): PairApplyOptions {
  return {
    concurrency: DEFAULT_CONCURRENCY,
    only: [],
    exclude: [],
    lockTimeoutMs: 30_000,
    drift: "contract",
    relayCache: false,
  };
}
