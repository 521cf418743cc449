// The line reader: text, number and byte offset of every line, the same
// whether a chunk is plain ASCII (decoded once and sliced) or holds UTF-8
// (decoded line by line), across chunk boundaries and from a start offset.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type Line, readLineBatches } from "../../src/plan/line-reader.js";

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function readAll(file: string, start = 0, first = 1): Promise<Line[]> {
  const out: Line[] = [];
  for await (const batch of readLineBatches(file, start, first)) out.push(...batch);
  return out;
}

describe("readLineBatches", () => {
  it("gives every line's text, number and byte offset over ASCII and UTF-8 chunks", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "guidup-lines-"));
    dirs.push(dir);
    // About 3 MiB: ASCII chunks, then chunks with UTF-8 (2- and 3-byte characters).
    const texts: string[] = [];
    for (let i = 0; i < 40_000; i++)
      texts.push(`  - { "name": "user.a${i}", "pad": "${"x".repeat(i % 50)}" }`);
    for (let i = 0; i < 20_000; i++)
      texts.push(`# Notiz über Postfach ${i} — ✓ ${"é".repeat(i % 30)}`);
    for (let i = 0; i < 10_000; i++) texts.push(`plain ${i}`);
    const file = path.join(dir, "lines.txt");
    await writeFile(file, `${texts.join("\n")}\nunterminated tail`);

    const lines = await readAll(file);
    expect(lines).toHaveLength(texts.length + 1);
    let offset = 0;
    texts.forEach((text, i) => {
      expect(lines[i]).toEqual({ text, number: i + 1, offset, terminated: true });
      offset += Buffer.byteLength(text) + 1;
    });
    expect(lines.at(-1)).toEqual({
      text: "unterminated tail",
      number: texts.length + 1,
      offset,
      terminated: false,
    });

    // From a line's offset, numbered on from there.
    const from = lines[45_000] as Line;
    const rest = await readAll(file, from.offset, from.number);
    expect(rest[0]).toEqual(from);
    expect(rest.at(-1)).toEqual(lines.at(-1));
  });
});
