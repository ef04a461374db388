"""Cleaner's local checks on real files: what may be deleted, and a delete that backs out.

The vouching half (live answers from other nodes) is exercised on real processes in
tests/cluster/test_disk_pressure.py; here the node is a stand-in holding a real DataRoot.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.daemons.cleanup import Cleaner
from engine.manifest import Artifact
from engine.openfiles import open_inodes, opened_elsewhere
from engine.paths import DataRoot
from engine.scanner import Scanner


@pytest.fixture
def cleaner(tmp_path: Path) -> Cleaner:
    data = DataRoot(tmp_path / "root")
    data.create()
    node = SimpleNamespace(
        name="gpu-1", data=data,
        config=SimpleNamespace(transfer=SimpleNamespace(finished_after_seconds=0.0),
                               push=SimpleNamespace(min_copies_before_delete=2)),
        daemon=SimpleNamespace(scanner=Scanner(data, "gpu-1", [], 0.0)))
    return Cleaner(node)  # type: ignore[arg-type]


def _artifact(cleaner: Cleaner, rel: str, data: bytes | None = None) -> tuple[Path, Artifact]:
    data_type, path = rel.split("/", 1)
    file = cleaner.node.data.root / rel
    file.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        file.write_bytes(data)
    st = file.stat()
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns - 5 * 10**9))  # idle for 5 s
    st = file.stat()
    return file, Artifact(data_type, path, "k", st.st_size, "0" * 64, st.st_mtime, "gpu-1",
                          st.st_size, st.st_mtime_ns)


def test_an_unchanged_closed_file_is_deletable_and_goes(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    assert cleaner._deletable(art)
    assert cleaner._delete(art) == 1000
    assert not file.exists()
    assert list((cleaner.node.data.state / "deleting").iterdir()) == []


def test_a_file_changed_since_it_was_hashed_is_not_deletable(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    file.write_bytes(b"y" * 1000)  # same size, new mtime
    assert not cleaner._deletable(art)


def test_a_file_changed_during_the_delete_is_put_back(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    assert cleaner._deletable(art)
    with open(file, "ab") as fh:  # a writer gets in between the check and the delete
        fh.write(b"more")
    assert cleaner._delete(art) is None
    assert file.read_bytes() == b"x" * 1000 + b"more"
    assert list((cleaner.node.data.state / "deleting").iterdir()) == []


def test_a_file_any_process_holds_open_is_not_deleted(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    with open(file, "rb"):
        assert not cleaner._deletable(art)
        assert cleaner._delete(art) is None  # and the delete re-checks after its rename
        assert file.exists()
    assert cleaner._deletable(art)


def test_a_database_with_any_sidecar_is_not_deletable(cleaner: Cleaner) -> None:
    file = cleaner.node.data.root / "games/k/g.db"
    file.parent.mkdir(parents=True)
    db = sqlite3.connect(file)
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    file, art = _artifact(cleaner, "games/k/g.db")
    assert cleaner._deletable(art)
    for suffix in ("-wal", "-journal", "-shm"):
        side = file.with_name(file.name + suffix)
        side.write_bytes(b"")  # even an empty one: a connection may still be open
        assert not cleaner._deletable(art), suffix
        side.unlink()


def test_a_recent_file_is_not_deletable(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 10)
    cleaner.node.config.transfer.finished_after_seconds = 60.0
    assert not cleaner._deletable(art)


def test_opened_elsewhere_by_lease_and_by_proc(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"x")
    assert not opened_elsewhere(file)
    with open(file, "rb"):
        assert opened_elsewhere(file)
        st = file.stat()
        assert (st.st_dev, st.st_ino) in open_inodes()  # the fallback sees it too
    assert not opened_elsewhere(file)
