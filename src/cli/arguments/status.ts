// guidup status's options, parsed and checked: what the command needs, typed.

import { UsageError } from "../../errors.js";
import { parseCommandArgs } from "../args.js";

export interface StatusArguments {
  help: boolean;
  plans: string[];
  only: string[];
  json: boolean;
}

export function parseStatusArgs(args: string[]): StatusArguments {
  const { values, positionals } = parseCommandArgs("status", args, {
    only: { type: "string", multiple: true },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  const parsed = {
    help: values.help === true,
    plans: positionals,
    only: values.only ?? [],
    json: values.json === true,
  };
  if (!parsed.help && parsed.plans.length === 0)
    throw new UsageError("status takes one or more PLAN files (see guidup status --help)");
  return parsed;
}
