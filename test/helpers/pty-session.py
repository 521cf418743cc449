#!/usr/bin/env python3
"""Runs one command in a real pseudo-terminal and plays a script against it.

Used by the terminal tests (test/cli/ctrl-c-pty.test.ts): what a person at a
terminal does, not a pipe. The command gets the pty as stdin, stdout and
stderr and as its controlling terminal, in its own session, so it is the
terminal's foreground process group: a ^C byte written to the pty master makes
the line discipline send SIGINT to it and to every process of that group
(the agents a local controller started included), exactly as a keyboard does.

Usage: pty-session.py SPEC_JSON   (prints one JSON line: the result)

SPEC: {"argv": [...], "cwd": "...", "env": {...}, "cols": 100, "rows": 30,
       "timeoutSec": 120,
       "steps": [{"waitFile": PATH} | {"waitText": REGEX} | {"send": TEXT}
                 | {"touch": PATH}]}
Steps run in order; waitText searches everything the command wrote so far
(escape sequences included) from the end of the previous waitText match.

Result: {"code": exit code or null, "signal": number or null, "output": text,
         "stepsDone": n, "timedOut": bool, "termiosRestored": bool,
         "lflag": {"ECHO": bool, "ICANON": bool, "ISIG": bool},
         "cursorHidden": bool}
cursorHidden: the last cursor visibility sequence the command wrote was
"hide" (ESC[?25l), i.e. it left the terminal without a visible cursor.
termiosRestored: the terminal's modes after the command equal those before.
"""

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time


def main() -> int:
    spec = json.loads(sys.argv[1])
    master, slave = os.openpty()
    cols, rows = spec.get("cols", 100), spec.get("rows", 30)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    before = termios.tcgetattr(slave)

    def become_foreground():
        # start_new_session already made us a session leader; take the pty
        # as controlling terminal so its ^C reaches our process group.
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = dict(os.environ)
    env.update(spec.get("env", {}))
    env.setdefault("TERM", "xterm-256color")
    env["COLUMNS"] = str(cols)
    env["LINES"] = str(rows)
    proc = subprocess.Popen(
        spec["argv"],
        cwd=spec.get("cwd"),
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=become_foreground,
        close_fds=True,
    )
    deadline = time.monotonic() + spec.get("timeoutSec", 120)
    output = bytearray()
    steps = spec.get("steps", [])
    step = 0
    search_from = 0
    timed_out = False

    def pump(timeout: float) -> None:
        ready, _, _ = select.select([master], [], [], timeout)
        if ready:
            try:
                output.extend(os.read(master, 65536))
            except OSError:
                pass

    while True:
        if step < len(steps):
            s = steps[step]
            if "send" in s:
                os.write(master, s["send"].encode())
                step += 1
                continue
            if "touch" in s:
                open(s["touch"], "a").close()
                step += 1
                continue
            if "waitFile" in s and os.path.exists(s["waitFile"]):
                step += 1
                continue
            if "waitText" in s:
                text = output.decode("utf-8", "replace")
                m = re.compile(s["waitText"]).search(text, search_from)
                if m:
                    search_from = m.end()
                    step += 1
                    continue
        if proc.poll() is not None:
            break
        if time.monotonic() > deadline:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        pump(0.05)
    # Whatever is still buffered in the pty after the exit.
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        output.extend(chunk)
    after = termios.tcgetattr(slave)
    lflag = after[3]
    text = output.decode("utf-8", "replace")
    cursor = re.findall(r"\x1b\[\?25([lh])", text)
    rc = proc.returncode
    print(
        json.dumps(
            {
                "code": rc if rc is not None and rc >= 0 else None,
                "signal": -rc if rc is not None and rc < 0 else None,
                "output": text,
                "stepsDone": step,
                "timedOut": timed_out,
                "termiosRestored": before == after,
                "lflag": {
                    "ECHO": bool(lflag & termios.ECHO),
                    "ICANON": bool(lflag & termios.ICANON),
                    "ISIG": bool(lflag & termios.ISIG),
                },
                "cursorHidden": bool(cursor) and cursor[-1] == "l",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
