"""The identity of a data root, and the lock that lets exactly one node run on it.

A copy counts towards a deletion only when it lies on a data root that is really distinct
from the others, so every data root gets a permanent random id the first time a node runs
on it (``<data_root>/.ringsync/root_id``, written once, fsynced, never changed). Vouches
carry it, and a deletion needs ``min_copies_before_delete`` distinct ids: two hosts that
share one root (an NFS export mounted twice, a config typo) count once.

While a node runs on a root it holds an exclusive ``flock`` on ``.ringsync/lock`` (the
kernel drops it when the process dies, SIGKILL included); the lock file names the holder.
A second node on the same root refuses to start with one line naming both.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
from pathlib import Path

from engine.diskio import fsync_dir

ROOT_ID_FILE = "root_id"
LOCK_FILE = "lock"


class RootInUse(RuntimeError):
    """Another node runs on this data root."""


def root_id(state: Path) -> str:
    """The data root's permanent id, created on first use (``state`` is its ``.ringsync``)."""
    path = state / ROOT_ID_FILE
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    if value:
        return value
    state.mkdir(parents=True, exist_ok=True)
    tmp = state / f".{ROOT_ID_FILE}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(secrets.token_hex(16) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # never over an id another process wrote first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(state)
    return path.read_text().strip()


class RootLock:
    """An exclusive lock on one data root, held from ``acquire`` until ``release``."""

    def __init__(self, state: Path, node: str) -> None:
        self.state = state
        self.node = node
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise RootInUse naming the node that holds it."""
        self.state.mkdir(parents=True, exist_ok=True)
        path = self.state / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(path)
            os.close(fd)
            raise RootInUse(f"data root {self.state.parent} is in use by {holder}; node"
                            f" {self.node} refuses to start on it") from None
        self._fd = fd
        try:  # who holds it, for the other node's error line; a full disk may refuse it
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"node": self.node, "pid": os.getpid(),
                                      "host": socket.gethostname()}).encode() + b"\n", 0)
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closes the flock with it


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("node"):
        return "another ringsync node"
    return f"node {info['node']} (pid {info.get('pid', '?')} on {info.get('host', '?')})"
