// A setup file (vitest `setupFiles`): runs in the worker before each test
// file and names that file in the environment every process it starts
// inherits, so a process still running at the end of the run can be traced
// to the file that started it (see test/global-process-check.ts).

import path from "node:path";
import { expect } from "vitest";
import { FILE_MARKER } from "./test-processes.js";

const testPath = expect.getState().testPath;
process.env[FILE_MARKER] =
  testPath === undefined ? "(unknown test file)" : path.relative(process.cwd(), testPath);
