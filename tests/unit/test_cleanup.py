"""Cleaner's local checks on real files: what may be deleted, and a delete that backs out.

A source is deletable only while its identity on disk (st_dev, st_ino, size, mtime_ns,
ctime_ns) is the one recorded when it was hashed (``Scanner.unchanged``); the delete itself
goes through the deletion journal (``engine.deletion_journal``).

The vouching half (live answers from other nodes) is exercised on real processes in
tests/cluster/test_disk_pressure.py (and without a Node in test_cleanup_parts.py); here the
Cleaner has a real DataRoot, manifest and scanner.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from engine import deletion_journal
from engine.hashing import sha256_file
from engine.daemons.cleanup import Cleaner
from engine.inflight import InFlight
from engine.manifest import Artifact, ClusterManifest
from engine.manifest.store import stat_identity
from engine.openfiles import open_inodes, opened_elsewhere
from engine.paths import DataRoot
from engine.scanner import Scanner


VOUCHED = ["coord", "cpu-1"]


@pytest.fixture
def cleaner(tmp_path: Path):
    data = DataRoot(tmp_path / "root")
    data.create()
    manifest = ClusterManifest(data.state / "manifest.db", "gpu-1")
    emitted: list = []

    async def measure() -> dict:
        raise AssertionError("these tests never run a whole cleanup")

    cleaner = Cleaner("gpu-1", 2, 80.0, 0.0, data=data, manifest=manifest,
                      scanner=Scanner(data, "gpu-1", [], 0.0), inflight=InFlight(),
                      vouches=None, measure=measure,  # type: ignore[arg-type]
                      note_stored=lambda delta: None, emit=emitted.append)
    cleaner.emitted = emitted  # type: ignore[attr-defined]
    yield cleaner
    manifest.close()


def _journal(cleaner: Cleaner) -> list[str]:
    """What is left in ``.ringsync/deleting/``."""
    trash = cleaner.data.state / "deleting"
    return sorted(p.name for p in trash.iterdir()) if trash.is_dir() else []


def _artifact(cleaner: Cleaner, rel: str, data: bytes | None = None) -> tuple[Path, Artifact]:
    data_type, path = rel.split("/", 1)
    file = cleaner.data.root / rel
    file.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        file.write_bytes(data)
    st = file.stat()
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns - 5 * 10**9))  # idle for 5 s
    st = file.stat()
    dev, ino, size, mtime_ns, ctime_ns = stat_identity(st)
    return file, Artifact(data_type, path, "k", size, sha256_file(file), st.st_mtime, "gpu-1",
                          size, mtime_ns, dev, ino, ctime_ns)


def test_an_unchanged_closed_file_is_deletable_and_goes(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    assert cleaner._deletable(art)
    done = cleaner._delete(art, VOUCHED)
    assert done is not None
    freed, intent = done
    assert freed == 1000
    assert not file.exists()
    # the intent stays until the manifest has the deletion (a crash here is recovered)
    assert _journal(cleaner) == [intent.intent.name]
    cleaner._deleted(art, VOUCHED, freed, "disk_pressure", intent)
    assert _journal(cleaner) == []
    assert cleaner.manifest.deleted_sources("gpu-1") == {art.ident}
    (row,) = cleaner.manifest.deletions()
    assert (row["sha256"], row["vouched_by"], row["size"]) == (art.sha256, VOUCHED, art.size)
    (event,) = cleaner.emitted
    assert (event.artifact, event.bytes, event.vouched_by) == ("npz/k/a.npz", 1000, VOUCHED)


def test_a_file_changed_since_it_was_hashed_is_not_deletable(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    file.write_bytes(b"y" * 1000)  # same size, new mtime
    assert not cleaner._deletable(art)


def test_a_file_touched_back_to_its_mtime_is_not_deletable(cleaner: Cleaner) -> None:
    """``utime`` can put size and mtime back; ctime moves on anyway."""
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    st = file.stat()
    file.write_bytes(b"y" * 1000)
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (file.stat().st_size, file.stat().st_mtime_ns) == (art.source_size,
                                                               art.source_mtime_ns)
    assert not cleaner._deletable(art)
    assert cleaner._delete(art, VOUCHED) is None
    assert file.read_bytes() == b"y" * 1000


def test_a_replaced_file_is_not_deletable(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    st = file.stat()
    other = file.with_name("new")
    other.write_bytes(b"x" * 1000)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(other, file)  # another inode under the name, same size and mtime
    assert not cleaner._deletable(art)
    assert cleaner._delete(art, VOUCHED) is None
    assert file.exists()


def test_a_file_changed_before_the_delete_is_left_alone(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    assert cleaner._deletable(art)
    with open(file, "ab") as fh:  # a writer gets in between the check and the delete
        fh.write(b"more")
    assert cleaner._delete(art, VOUCHED) is None
    assert file.read_bytes() == b"x" * 1000 + b"more"
    assert _journal(cleaner) == []


def test_a_file_changed_during_the_delete_is_put_back(cleaner: Cleaner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    real_begin = deletion_journal.begin

    def begin_then_write(*args, **kwargs):  # a writer gets in after the intent is written
        intent = real_begin(*args, **kwargs)
        with open(file, "ab") as fh:
            fh.write(b"more")
        return intent

    monkeypatch.setattr(deletion_journal, "begin", begin_then_write)
    assert cleaner._delete(art, VOUCHED) is None
    assert file.read_bytes() == b"x" * 1000 + b"more"  # put back under its name
    assert _journal(cleaner) == []
    assert cleaner.manifest.deleted_sources("gpu-1") == set()


def test_a_file_any_process_holds_open_is_not_deleted(cleaner: Cleaner) -> None:
    file, art = _artifact(cleaner, "npz/k/a.npz", b"x" * 1000)
    with open(file, "rb"):
        assert not cleaner._deletable(art)
        assert cleaner._delete(art, VOUCHED) is None  # the delete re-checks after its rename
        assert file.exists()
        assert _journal(cleaner) == []
    # the rename and put-back moved its ctime: the old identity no longer matches, so the
    # scanner hashes it again before any deletion; with the identity re-read it is deletable
    assert not cleaner._deletable(art)
    dev, ino, size, mtime_ns, ctime_ns = stat_identity(file.stat())
    assert (dev, ino, size, mtime_ns) == (art.source_dev, art.source_ino, art.source_size,
                                          art.source_mtime_ns)  # the same inode, put back
    again = Artifact(**{**art.__dict__, "source_ctime_ns": ctime_ns})
    assert cleaner._deletable(again)


def test_a_database_with_any_sidecar_is_not_deletable(cleaner: Cleaner) -> None:
    file = cleaner.data.root / "games/k/g.db"
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
    cleaner.finished_after = 60.0
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


def test_a_file_rewritten_in_place_after_the_last_stat_is_put_back(
        cleaner: Cleaner, monkeypatch: pytest.MonkeyPatch) -> None:
    """cp -p over the file (same inode, size and mtime) right before the rename: the rename
    changes ctime anyway, so only the bytes tell; they are hashed again once the file is out
    of every writer's reach, and it is put back."""
    file, art = _artifact(cleaner, "npz/k/inplace.npz", b"x" * 1000)
    st = file.stat()
    real_rename = os.rename

    def rewrite_then_rename(src, dst):
        if Path(src) == file:
            with open(file, "r+b") as fh:  # the same inode, rewritten in place
                fh.write(b"y" * 1000)
            os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rewrite_then_rename)
    assert cleaner._delete(art, ["coord", "cpu-1"]) is None
    monkeypatch.undo()
    assert file.read_bytes() == b"y" * 1000  # put back, never unlinked
    assert not list((cleaner.data.state / "deleting").glob("*.trash"))
