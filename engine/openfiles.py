"""Which files some process has open right now (Linux ``/proc``), by (device, inode).

Cleanup uses it as the last word on "is anybody still writing this?": a file any
visible process holds open is not deleted, whatever its age or sidecars say. Where
``/proc`` is missing (not Linux) the answer is empty and the other checks stand alone.
"""

from __future__ import annotations

import os

PROC = "/proc"


def open_inodes(proc: str = PROC) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every file any process we may inspect has open."""
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
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            found.add((st.st_dev, st.st_ino))
    return found
