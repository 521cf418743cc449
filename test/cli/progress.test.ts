// The progress view (src/cli/progress.ts): plain lines carry a UTC timestamp
// and are rate-limited; on a terminal, a notice is printed above the live
// lines (erased and redrawn), and the view never hides the cursor.

import { describe, expect, it } from "vitest";
import type { Io } from "../../src/cli/io.js";
import { ProgressView } from "../../src/cli/progress.js";

function captureIo(isTTY: boolean): Io & { errText: () => string } {
  let err = "";
  return {
    out: () => {},
    err: (t) => {
      err += t;
    },
    isTTY,
    drained: () => Promise.resolve(),
    errText: () => err,
  };
}

describe("ProgressView", () => {
  it("plain: timestamped lines, at most one per task every 2 s, the last one flushed at the end", () => {
    const io = captureIo(false);
    const view = new ProgressView(io, ["apply t"]);
    view.update(0, "done 1\nETA after 5 mailboxes");
    view.update(0, "done 2\nETA after 5 mailboxes");
    view.notice("a message\n");
    view.end();
    const lines = io.errText().trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ apply t: done 1 · ETA after 5 mailboxes$/,
    );
    expect(lines[1]).toBe("a message");
    expect(lines[2]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ apply t: done 2 · /);
  });

  it("a followed task's text is asked for when drawn: the last state is printed at the end", () => {
    const io = captureIo(false);
    const view = new ProgressView(io, ["apply t"]);
    let n = 0;
    view.follow(0, () => `done ${n}`);
    n = 7;
    view.end();
    expect(io.errText()).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ apply t: done 7\n$/);
    const tty = captureIo(true);
    const live = new ProgressView(tty, ["apply t"]);
    live.follow(0, () => `done ${n}`);
    n = 9;
    live.end();
    expect(tty.errText()).toMatch(/• apply t: done 9\n$/);
  });

  it("terminal: a notice goes above the live lines, which are redrawn; no cursor hiding", () => {
    const io = captureIo(true);
    const view = new ProgressView(io, ["apply t"]);
    view.update(0, "done 1\nETA after 5 mailboxes");
    view.notice("Ctrl-C: starting no new mailboxes\n");
    view.end();
    const text = io.errText();
    // The notice erases the drawn lines (move up, clear down), then redraws below itself.
    expect(text).toMatch(
      /\x1b\[\d+F\x1b\[JCtrl-C: starting no new mailboxes\n[\s\S]*apply t: done 1\n {4}ETA after 5 mailboxes\n$/,
    );
    expect(text).not.toContain("\x1b[?25l");
  });
});
