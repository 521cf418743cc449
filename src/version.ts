// guidup's own version, read once from package.json (one level above src/,
// two above dist/src/, since dist/ mirrors the source tree). Here, not under
// cli/, because the transport (the agent's hello) and the plan need it too.

import { readFileSync } from "node:fs";

function findPackageJson(): string {
  for (const rel of ["../package.json", "../../package.json"]) {
    const url = new URL(rel, import.meta.url);
    try {
      const pkg = JSON.parse(readFileSync(url, "utf8")) as { name?: string; version?: string };
      if (pkg.name === "guidup" && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return "0.0.0";
}

export const TOOL_VERSION: string = findPackageJson();
