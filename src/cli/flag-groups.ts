// The flags several commands share, declared once as groups, and the typed
// options each group parses to. A command spreads the groups it takes into
// its own flag table (`{ ...INVENTORY_FLAGS, ...HOST_KEY_FLAGS, out: … }`),
// parses with parseFlags, and turns the values into its options with the
// group's reader (inventoryOptions, hostKeyOptions), so "--inventory FILE is
// required", "--pair NAME: no such pair" and the host-key policy read the
// same in every command.

import { UsageError } from "../errors.js";
import { loadInventory, type PairSpec } from "../plan/inventory.js";
import { type OptionSpec, parseCommandArgs } from "./args.js";
import type { Io } from "./io.js";
import { pairsToRun, withHostKeyPolicy } from "./pairs.js";

/** --help / -h, taken by every command. */
export const HELP_FLAG = { help: { type: "boolean", short: "h" } } as const satisfies OptionSpec;

/** --inventory FILE (-i) and --pair NAME: which pairs of which inventory. */
export const INVENTORY_FLAGS = {
  inventory: { type: "string", short: "i" },
  pair: { type: "string" },
} as const satisfies OptionSpec;

/** --accept-new-host-keys: record an unknown SSH host key instead of refusing it. */
export const HOST_KEY_FLAGS = {
  "accept-new-host-keys": { type: "boolean" },
} as const satisfies OptionSpec;

/** --json: the command's JSON view instead of its human one. */
export const JSON_FLAG = { json: { type: "boolean" } } as const satisfies OptionSpec;

/**
 * Parses `args` against `flags` plus --help; no positionals. `help: true`
 * means the command prints its help and exits 0.
 */
export function parseFlags<O extends OptionSpec>(command: string, args: string[], flags: O) {
  const { values } = parseCommandArgs(command, args, { ...flags, ...HELP_FLAG }, false);
  return values;
}

/** What INVENTORY_FLAGS parse to. */
export interface InventoryOptions {
  /** The inventory file. */
  inventory: string;
  /** Only this pair (undefined: every pair). */
  pair: string | undefined;
}

/** INVENTORY_FLAGS' values as options; --inventory is required. */
export function inventoryOptions(
  command: string,
  values: { inventory?: string | undefined; pair?: string | undefined },
): InventoryOptions {
  if (!values.inventory)
    throw new UsageError(`--inventory FILE is required (see guidup ${command} --help)`);
  return { inventory: values.inventory, pair: values.pair };
}

/** What HOST_KEY_FLAGS parse to. */
export interface HostKeyOptions {
  acceptNewHostKeys: boolean;
}

export function hostKeyOptions(values: {
  "accept-new-host-keys"?: boolean | undefined;
}): HostKeyOptions {
  return { acceptNewHostKeys: values["accept-new-host-keys"] === true };
}

/** The inventory, pair and host-key groups together: what a command working on pairs takes. */
export const PAIR_FLAGS = { ...INVENTORY_FLAGS, ...HOST_KEY_FLAGS } as const satisfies OptionSpec;

/** What PAIR_FLAGS parse to. */
export type PairOptions = InventoryOptions & HostKeyOptions;

/** PAIR_FLAGS' values as options; --inventory is required. */
export function pairOptions(
  command: string,
  values: Parameters<typeof inventoryOptions>[1] & Parameters<typeof hostKeyOptions>[0],
): PairOptions {
  return { ...inventoryOptions(command, values), ...hostKeyOptions(values) };
}

/** The inventory's pairs the options select (all, or the --pair one), without the host-key policy. */
export async function selectedPairs(options: InventoryOptions): Promise<PairSpec[]> {
  const inventory = await loadInventory(options.inventory);
  return pairsToRun(inventory.pairs, options.pair);
}

/** The inventory's pairs the options select, with the host-key policy applied to each host. */
export async function pairsFor(options: PairOptions): Promise<PairSpec[]> {
  return (await selectedPairs(options)).map((p) => withHostKeyPolicy(p, options.acceptNewHostKeys));
}

/**
 * Runs `body` with the notices of host keys recorded under
 * --accept-new-host-keys going to the command's stderr (io), in order with
 * its other lines, then puts the previous sink back.
 */
export async function withHostKeyNotices<T>(io: Io, body: () => Promise<T>): Promise<T> {
  // Imported here, not at the top: every command parses its flags through
  // this file, and ssh2 (which ssh.ts loads) is a good part of a local
  // run's start-up (guidup hash over local agents needs none of it).
  const { setHostKeyNotice } = await import("../transport/ssh.js");
  const previous = setHostKeyNotice((line) => io.err(`${line}\n`));
  try {
    return await body();
  } finally {
    setHostKeyNotice(previous);
  }
}
