// How a command shows its result: one view per command, with a human and a
// JSON implementation (Terraform's views split). The command computes its
// result without printing it; the view chosen by --json renders it.

import type { Io } from "./io.js";

export interface View<R> {
  render(io: Io, result: R): void;
}

/** A command's two views. */
export interface Views<R> {
  human: View<R>;
  json: View<R>;
}

export function chooseView<R>(json: boolean, views: Views<R>): View<R> {
  return json ? views.json : views.human;
}

/** The JSON view: `shape(result)`, indented, one document on stdout. */
export function jsonView<R>(shape: (result: R) => unknown): View<R> {
  return { render: (io, result) => io.out(`${JSON.stringify(shape(result), null, 2)}\n`) };
}
