// apply --control-file: how an operator steers a running apply without
// stopping it (gh-ost's throttle-control files). The file is read about once
// a second while apply runs; each line is one setting, `#` starts a comment:
//
//   concurrency=N   at most N mailboxes in flight (1 .. --concurrency)
//   pause           start no new mailbox (those in flight finish)
//   pairs=N         at most N pairs in flight (1 .. --pairs; apply PLAN...)
//
// With several plans the one file steers every pair: concurrency=N is each
// pair's lanes, pause pauses them all, pairs=N is the fleet's (src/apply/fleet.ts).
// No file, or an empty one, means no limit from it. A line it does not
// understand is reported once and ignored, so a typo never stops a run.

import { readFileSync } from "node:fs";

export interface ControlSettings {
  concurrency?: number;
  /** Pairs in flight (src/apply/fleet.ts); the engine of one pair ignores it. */
  pairs?: number;
  pause: boolean;
  /** Lines that were not understood, as written. */
  unknown: string[];
}

export function parseControl(text: string): ControlSettings {
  const out: ControlSettings = { pause: false, unknown: [] };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (line === "") continue;
    if (line === "pause") {
      out.pause = true;
      continue;
    }
    const m = /^(concurrency|pairs)\s*=\s*(\d+)$/.exec(line);
    if (m && Number(m[2]) >= 1) out[m[1] as "concurrency" | "pairs"] = Number(m[2]);
    else out.unknown.push(raw.trim());
  }
  return out;
}

/** The file's settings now; a missing or unreadable file sets nothing. */
export function readControl(path: string): ControlSettings {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return { pause: false, unknown: [] };
  }
  return parseControl(text);
}
