// What every benchmark prints besides its figures: the machine it ran on
// (figures from another machine are not comparable) and, per goal of the
// issue it measures, whether this run met it. Goals are ratios against a
// baseline measured in the same run, so a busy machine skews both sides.

import { cpus, loadavg } from "node:os";

export interface MachineInfo {
  cores: number;
  model: string;
  /** 1-minute load average when the benchmark started. */
  load1: number;
}

export function machineInfo(): MachineInfo {
  const list = cpus();
  const model = list[0]?.model.trim() || "unknown CPU";
  return { cores: list.length, model, load1: loadavg()[0] ?? 0 };
}

/** One line: "machine: 2 cores, AMD EPYC, load 3.1 (1 min) at start". */
export function machineLine(m: MachineInfo = machineInfo()): string {
  return `machine: ${m.cores} cores, ${m.model}, load ${m.load1.toFixed(1)} (1 min) at start`;
}

export interface Goal {
  /** What is compared, e.g. "guidup hash 1 worker / openssl". */
  name: string;
  /** The measured value (a ratio). */
  value: number;
  /** The goal, e.g. ">= 0.9" or "<= 2". */
  op: ">=" | "<=";
  target: number;
  /** Unit after the numbers; default "×". */
  unit?: string;
}

export function goalMet(g: Goal): boolean {
  return g.op === ">=" ? g.value >= g.target : g.value <= g.target;
}

/** "goal guidup hash 1 worker / openssl >= 0.90×: 0.95× MET". */
export function goalLine(g: Goal): string {
  const u = g.unit ?? "×";
  const digits = g.value >= 10 ? 1 : 2;
  return `goal ${g.name} ${g.op} ${g.target}${u}: ${g.value.toFixed(digits)}${u} ${goalMet(g) ? "MET" : "NOT MET"}`;
}
