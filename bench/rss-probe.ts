// Loaded into a guidup process by bench/scale.ts (node --import): at exit,
// prints the process's own peak RSS and CPU time on stderr, so that the
// controller's figures are its own and not those of the agents it spawns.

import { writeSync } from "node:fs";

process.on("exit", () => {
  const r = process.resourceUsage();
  const figures = {
    pid: process.pid,
    maxRssBytes: r.maxRSS * 1024,
    cpuMs: (r.userCPUTime + r.systemCPUTime) / 1000,
  };
  writeSync(2, `\nBENCH-PROBE ${JSON.stringify(figures)}\n`);
});
