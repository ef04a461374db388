"""Is some process still holding this file open? The last word before cleanup deletes it.

``opened_elsewhere(path)`` takes a write lease (Linux ``F_SETLEASE``): the kernel grants one
only while no other open file description of the file exists, in any process, and the check
costs microseconds. Where leases are not available (another filesystem, another OS, a file
this user does not own) it falls back to looking through ``/proc/*/fd`` (every process this
user may inspect); where that is missing too the answer is False and the other checks
(sidecars, size and mtime) stand alone.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

PROC = "/proc"


def opened_elsewhere(path: Path) -> bool:
    """True when a file description other than this call's own refers to ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return True
            st = os.fstat(fd)  # no leases here: look in /proc (our own fd is skipped below)
            return (st.st_dev, st.st_ino) in open_inodes(skip=(os.getpid(), fd))
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def open_inodes(proc: str = PROC, skip: tuple[int, int] | None = None) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every file any process we may inspect has open, leaving out the
    descriptor ``skip`` = (pid, fd)."""
    found: set[tuple[int, int]] = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            if skip is not None and (int(pid), int(fd)) == skip:
                continue
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            found.add((st.st_dev, st.st_ino))
    return found
