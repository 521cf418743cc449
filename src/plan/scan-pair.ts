// Moved to src/apply/scan-pair.ts (a plan is data: plan/ must not reach hosts).
// This re-export keeps imports of the old path working until the branches
// written against it are merged; the import rules (.dependency-cruiser.cjs)
// exempt this one file. Delete it once nothing imports it.
export * from "../apply/scan-pair.js";
