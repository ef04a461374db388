"""Faults injected into a running node with ``strace -e inject=...`` (real syscalls fail)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def attach(pid: int, out: Path, calls: str, inject: str | None = None,
           path: Path | None = None) -> subprocess.Popen:
    """Attach strace to ``pid`` and its threads: ``calls`` (on ``path`` or a descriptor of
    it, when given) are traced to ``out``, descriptors shown with their paths, and get
    ``inject`` when given (e.g. ``error=EIO:when=1``)."""
    where = ["-P", str(path)] if path is not None else []
    faults = ["-e", f"inject={calls}:{inject}"] if inject else []
    proc = subprocess.Popen(["strace", "-f", "-qq", "-y", "-p", str(pid), "-o", str(out),
                             *where, "-e", f"trace={calls}", *faults],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return proc


def strace_fsync(pid: int, out: Path, error: str) -> subprocess.Popen:
    """The first fsync of ``pid`` after attaching fails with ``error``."""
    return attach(pid, out, "fsync", f"error={error}:when=1")


def strace_path(pid: int, out: Path, path: Path, calls: str,
                when: str = "1") -> subprocess.Popen:
    """``calls`` on ``path`` fail with EIO: the first after attaching (``when="1"``), or
    every one (``when="1+"``)."""
    return attach(pid, out, calls, f"error=EIO:when={when}", path)


def stop_strace(proc: subprocess.Popen) -> None:
    """Detach (the tracee runs on untouched)."""
    proc.terminate()
    proc.wait(10)


def injected(out: Path) -> list[str]:
    """The trace's lines for calls that were made to fail."""
    return [line for line in out.read_text().splitlines() if "INJECTED" in line]
