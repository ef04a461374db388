"""The cluster harness removes what libfaketime left in /dev/shm for processes that are gone
(a SIGKILLed node under libfaketime leaves its segment and semaphore behind)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cluster import sweep_faketime_shm

pytestmark = pytest.mark.unit


def test_only_the_leftovers_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead, alive = 2**22 + 7, os.getpid()  # above any pid_max: no such process
    names = [f"faketime_shm_{dead}", f"sem.faketime_sem_{dead}",
             f"faketime_shm_{alive}", f"sem.faketime_sem_{alive}", "faketime_shm_x", "other_1"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    sweep_faketime_shm(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])
