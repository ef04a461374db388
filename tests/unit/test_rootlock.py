"""engine.rootlock: a data root's permanent id, and the lock that lets one node run on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.rootlock import LOCK_FILE, ROOT_ID_FILE, RootInUse, RootLock, root_id

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_root_id_is_made_once_and_stable(tmp_path: Path) -> None:
    state = tmp_path / "root" / ".ringsync"  # created on first use
    first = root_id(state)
    assert len(first) == 32 and int(first, 16) >= 0
    assert root_id(state) == first == root_id(state)
    assert (state / ROOT_ID_FILE).read_text().strip() == first
    assert [p.name for p in state.iterdir()] == [ROOT_ID_FILE]  # no temp file left


def test_every_root_gets_its_own_id(tmp_path: Path) -> None:
    ids = {root_id(tmp_path / f"r{i}" / ".ringsync") for i in range(5)}
    assert len(ids) == 5


def test_an_existing_id_is_never_replaced(tmp_path: Path) -> None:
    state = tmp_path / ".ringsync"
    state.mkdir()
    (state / ROOT_ID_FILE).write_text("cafe" * 8 + "\n")
    assert root_id(state) == "cafe" * 8


def test_a_copied_root_keeps_the_id_it_was_copied_with(tmp_path: Path) -> None:
    """A cloned data root (rsync, a disk image) carries the id: its copies are then not
    distinct (the vouch counting takes one per root id)."""
    one = tmp_path / "one" / ".ringsync"
    ident = root_id(one)
    two = tmp_path / "two" / ".ringsync"
    two.mkdir(parents=True)
    (two / ROOT_ID_FILE).write_bytes((one / ROOT_ID_FILE).read_bytes())
    assert root_id(two) == ident


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process, node gpu-1, holding the lock of a data root (until killed)."""
    state = tmp_path / "root" / ".ringsync"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from engine.rootlock import RootLock
            lock = RootLock(Path({str(state)!r}), "gpu-1")
            lock.acquire()
            print("locked", flush=True)
            sys.stdin.read()
        """)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield state, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_a_second_node_on_a_locked_root_refuses_naming_the_first(
        holder: tuple[Path, subprocess.Popen[str]]) -> None:
    state, proc = holder
    info = json.loads((state / LOCK_FILE).read_text())
    assert (info["node"], info["pid"]) == ("gpu-1", proc.pid)
    second = RootLock(state, "gpu-2")
    with pytest.raises(RootInUse) as raised:
        second.acquire()
    message = str(raised.value)
    assert "node gpu-1" in message and f"pid {proc.pid}" in message
    assert "gpu-2 refuses to start" in message and str(state.parent) in message
    assert "\n" not in message  # one line
    # refusing changed nothing: the holder is still named
    assert json.loads((state / LOCK_FILE).read_text())["node"] == "gpu-1"


def test_the_lock_goes_with_the_process_even_on_sigkill(
        holder: tuple[Path, subprocess.Popen[str]]) -> None:
    state, proc = holder
    with pytest.raises(RootInUse):
        RootLock(state, "gpu-2").acquire()
    proc.kill()
    proc.wait(timeout=10)
    lock = RootLock(state, "gpu-2")
    lock.acquire()  # the kernel dropped the flock with the process
    try:
        info = json.loads((state / LOCK_FILE).read_text())
        assert (info["node"], info["pid"]) == ("gpu-2", os.getpid())
    finally:
        lock.release()


def test_one_process_cannot_take_the_lock_twice_and_release_frees_it(tmp_path: Path) -> None:
    state = tmp_path / ".ringsync"
    first = RootLock(state, "gpu-1")
    first.acquire()
    try:
        with pytest.raises(RootInUse, match="node gpu-1"):
            RootLock(state, "gpu-1-again").acquire()
    finally:
        first.release()
    first.release()  # a second release is harmless
    again = RootLock(state, "gpu-3")
    again.acquire()
    again.release()


def test_a_lock_file_without_a_name_still_refuses(tmp_path: Path) -> None:
    """A holder that has not written its name yet is still a holder."""
    import fcntl

    state = tmp_path / ".ringsync"
    state.mkdir()
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(RootInUse, match="another ringsync node"):
            RootLock(state, "gpu-2").acquire()
    finally:
        os.close(fd)
