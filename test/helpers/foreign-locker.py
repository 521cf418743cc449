#!/usr/bin/env python3
"""Stand-in for a Cyrus 2.3 process (fcntl build) taking its mailbox-file locks.

Takes classic POSIX record locks exactly as lib/lock_fcntl.c does: exclusive
F_WRLCK, SEEK_SET, start 0, len 0 (whole file), via fcntl.lockf, which CPython
implements with fcntl(F_SETLK / F_SETLKW). The file is opened O_RDWR and must
exist. Locks are per process: they go away when this process exits or is killed.

Usage (stdout carries the result lines below, flushed; errors go to stderr, exit 1):
  foreign-locker.py hold PATH SECONDS
      blocking lock; print "locked"; hold SECONDS (float); unlock; print "released"; exit 0.
      Kill the process (SIGTERM) to release early.
  foreign-locker.py try PATH
      one non-blocking attempt; print "busy" or "acquired"; exit 0.
  foreign-locker.py wait PATH
      open, print "opened ino=<ino>" on stderr (the fd now names that inode), then
      block until the lock is granted; print
      "acquired ino=<inode of the fd> pathino=<inode the path names now>"; exit 0.
      ino != pathino means the file was replaced while we waited (Cyrus re-opens then).
"""

import errno
import fcntl
import os
import sys
import time


def main(argv):
    if len(argv) < 3 or argv[1] not in ("hold", "try", "wait"):
        sys.stderr.write(__doc__)
        return 2
    mode, path = argv[1], argv[2]
    fd = os.open(path, os.O_RDWR)
    if mode == "hold":
        seconds = float(argv[3])
        fcntl.lockf(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(seconds)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        print("released", flush=True)
    elif mode == "try":
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                print("busy", flush=True)
                return 0
            raise
        print("acquired", flush=True)
    else:
        print("opened ino=%d" % os.fstat(fd).st_ino, file=sys.stderr, flush=True)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        print(
            "acquired ino=%d pathino=%d" % (os.fstat(fd).st_ino, os.stat(path).st_ino),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except OSError as e:
        sys.stderr.write("foreign-locker: %s\n" % e)
        sys.exit(1)
