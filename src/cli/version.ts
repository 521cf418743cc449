// guidup's own version, read once from package.json (two levels above dist/src/cli
// and above src/cli alike, since dist/ mirrors the source tree).

import { readFileSync } from "node:fs";

function findPackageJson(): string {
  for (const rel of ["../../package.json", "../../../package.json"]) {
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
