import { defineConfig } from "vitest/config";

// Tests spawn real agents, real sshd and real Cyrus tools: give them time, and
// run files in parallel only as far as a 2-core machine allows. Every process
// they start is marked, and the run fails if any outlives it
// (test/global-process-check.ts).
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: 2,
    globalSetup: ["test/global-process-check.ts"],
    setupFiles: ["test/helpers/mark-test-file.ts"],
  },
});
