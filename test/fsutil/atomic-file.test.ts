import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  isReplaceTemp,
  replaceFile,
  replaceFileSync,
  tempPathFor,
} from "../../src/fsutil/atomic-file.js";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "guidup-atomic-"));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("replaceFileSync / replaceFile", () => {
  it("replaces the content whole and leaves no temp file", async () => {
    const target = path.join(dir, "state.json");
    fs.writeFileSync(target, "old content that is longer than the new one\n");
    replaceFileSync(target, "new\n");
    expect(fs.readFileSync(target, "utf8")).toBe("new\n");
    await replaceFile(target, async (file) => {
      await file.write("pie");
      await file.write("ces\n");
    });
    expect(fs.readFileSync(target, "utf8")).toBe("pieces\n");
    expect(fs.readdirSync(dir)).toEqual(["state.json"]);
  });

  it("on an error before the rename, keeps the old file and removes the temp file", async () => {
    const target = path.join(dir, "plan.yaml");
    fs.writeFileSync(target, "old\n");
    await expect(
      replaceFile(target, async (file) => {
        await file.write("half of the new");
        throw new Error("disk full");
      }),
    ).rejects.toThrow("disk full");
    expect(fs.readFileSync(target, "utf8")).toBe("old\n");
    expect(fs.readdirSync(dir)).toEqual(["plan.yaml"]);
  });

  it("a leftover temp file of a crashed writer is hidden, recognisable and never reused", () => {
    const target = path.join(dir, "cache");
    const leftover = tempPathFor(target);
    fs.writeFileSync(leftover, "partial");
    expect(path.basename(leftover).startsWith(".cache.tmp-")).toBe(true);
    expect(isReplaceTemp(path.basename(leftover))).toBe(true);
    expect(isReplaceTemp("cache")).toBe(false);
    replaceFileSync(target, "whole\n");
    expect(fs.readFileSync(target, "utf8")).toBe("whole\n");
    expect(fs.readFileSync(leftover, "utf8")).toBe("partial");
    expect(fs.readdirSync(dir).sort()).toEqual([path.basename(leftover), "cache"].sort());
  });

  it("fails naming no partial file when the directory is missing", () => {
    const target = path.join(dir, "missing", "f");
    expect(() => replaceFileSync(target, "x")).toThrow(/ENOENT/);
    expect(fs.existsSync(path.join(dir, "missing"))).toBe(false);
  });
});
