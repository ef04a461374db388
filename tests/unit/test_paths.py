"""engine.paths: the one place a name from outside becomes a path; refuses every escape."""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath

import pytest

from engine.paths import (DATA_TYPES, DataRoot, UnsafePath, check_relative, claimed_base,
                          claimed_path, staged_name)

pytestmark = pytest.mark.unit

UNSAFE = [
    "",
    "/etc/passwd",
    "/",
    "//server/share",
    "..",
    "../x",
    "a/../b",
    "a/b/..",
    "a/../../x",
    ".",
    "./a",
    "a/./b",
    ".hidden",
    "a/.hidden/b",
    "a/.ringsync",
    ".ringsync/incoming/x.part",
    "..hidden",
    "a\\b",
    "..\\..\\etc",
    "a\x00b",
    "a\x00",
    "a//b",
    "a/",
    "/a",
    "a/b/",
    "x" * 1025,
    "/".join(["d"] * 600),  # 1199 characters
]
SAFE = [
    "a",
    "game.db",
    "hex8_2p/gpu-1_000001.db",
    "hex8_2p/sub/dir/file.npz",
    "a..b",
    "a.b.c",
    "name with spaces.db",
    "ünïcode/файл.npz",
    "x" * 200,
    "/".join(["d"] * 100),
]


@pytest.fixture
def data(tmp_path: Path) -> DataRoot:
    d = DataRoot(tmp_path / "root")
    d.create()
    return d


@pytest.mark.parametrize("rel", UNSAFE, ids=repr)
def test_check_relative_refuses(rel: str) -> None:
    with pytest.raises(UnsafePath):
        check_relative(rel)


@pytest.mark.parametrize("rel", UNSAFE, ids=repr)
def test_object_path_refuses(data: DataRoot, rel: str) -> None:
    for data_type in DATA_TYPES:
        with pytest.raises(UnsafePath):
            data.object_path(data_type, rel)


@pytest.mark.parametrize("rel", SAFE, ids=repr)
def test_normal_paths_accepted(data: DataRoot, rel: str) -> None:
    assert check_relative(rel) == PurePosixPath(rel)
    for data_type in DATA_TYPES:
        p = data.object_path(data_type, rel)
        assert p == data.root / data_type / Path(*rel.split("/"))
        assert p.is_relative_to(data.root / data_type)


def test_a_segment_longer_than_the_filesystem_allows_is_refused(data: DataRoot) -> None:
    """A name the filesystem cannot hold (NAME_MAX is 255 bytes) is 'overly long': it must be
    refused up front (HTTP 400) rather than accepted, streamed into incoming/, and then failing
    with ENAMETOOLONG when published."""
    for rel in ("x" * 256, "hex8_2p/" + "y" * 300 + ".db", "é" * 200):  # "é"*200 is 400 bytes
        with pytest.raises(UnsafePath):
            data.object_path("games", rel)


@pytest.mark.parametrize("data_type", ["", "other", "Games", "..", "../games", ".ringsync",
                                       "games/..", "games/x"])
def test_unknown_data_types_refused(data: DataRoot, data_type: str) -> None:
    with pytest.raises(UnsafePath):
        data.object_path(data_type, "a.db")
    with pytest.raises(UnsafePath):
        data.type_dir(data_type)


def test_unsafe_path_is_a_value_error() -> None:
    assert issubclass(UnsafePath, ValueError)


def test_layout(data: DataRoot) -> None:
    assert data.root.is_absolute()
    assert data.state == data.root / ".ringsync"
    assert data.incoming.is_dir() and data.snapshots.is_dir()
    assert data.incoming.is_relative_to(data.state) and data.snapshots.is_relative_to(data.state)
    for t in DATA_TYPES:
        assert (data.root / t).is_dir()
        assert data.type_dir(t) == data.root / t


def test_symlinked_file_pointing_outside_is_refused(data: DataRoot, tmp_path: Path) -> None:
    outside = tmp_path / "outside.db"
    outside.write_bytes(b"secret")
    (data.root / "games" / "link.db").symlink_to(outside)
    with pytest.raises(UnsafePath):
        data.object_path("games", "link.db")


def test_symlinked_directory_pointing_outside_is_refused(data: DataRoot, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (data.root / "games" / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath):
        data.object_path("games", "sub/new.db")  # the file need not exist yet
    with pytest.raises(UnsafePath):
        data.object_path("games", "sub/deeper/new.db")


def test_symlink_to_another_data_type_is_refused(data: DataRoot) -> None:
    (data.root / "models" / "m.pt").write_bytes(b"model")
    (data.root / "games" / "cross").symlink_to(data.root / "models", target_is_directory=True)
    with pytest.raises(UnsafePath):
        data.object_path("games", "cross/m.pt")


def test_symlink_into_engine_state_is_refused(data: DataRoot) -> None:
    (data.root / "npz" / "in").symlink_to(data.incoming, target_is_directory=True)
    with pytest.raises(UnsafePath):
        data.object_path("npz", "in/x.part")


def test_symlink_staying_inside_is_accepted(data: DataRoot) -> None:
    real = data.root / "games" / "real"
    real.mkdir()
    (data.root / "games" / "alias").symlink_to(real, target_is_directory=True)
    assert data.object_path("games", "alias/x.db") == data.root / "games" / "alias" / "x.db"


def test_partial_path_inside_incoming_and_distinct(data: DataRoot) -> None:
    sha1, sha2 = "1" * 64, "2" * 64
    p1 = data.partial_path("games", "hex8_2p/a.db", sha1)
    p2 = data.partial_path("games", "hex8_2p/a.db", sha2)
    assert p1.parent == data.incoming and p2.parent == data.incoming
    assert p1.is_relative_to(data.root / ".ringsync" / "incoming")
    assert p1 != p2  # two senders declaring different content never share a part file
    assert p1 == data.partial_path("games", "hex8_2p/a.db", sha1)  # stable: resumable
    assert p1.name.endswith(".part")
    # other name or other data type: other part file
    assert data.partial_path("npz", "hex8_2p/a.db", sha1) != p1
    assert data.partial_path("games", "hex8_2p/b.db", sha1) != p1
    # the name carries no part of the requested path
    assert "/" not in p1.name and "a.db" not in p1.name


def test_partial_path_for_hostile_names_stays_inside_incoming(data: DataRoot) -> None:
    for rel in ("../../etc/passwd", "/abs", "a\x00b", "x" * 5000):
        p = data.partial_path("games", rel, "f" * 64)
        assert p.parent == data.incoming
        assert os.path.realpath(p).startswith(os.path.realpath(data.incoming) + os.sep)


def _allocated(*paths: Path) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in paths)


def test_used_bytes_counts_allocated_blocks_under_root(data: DataRoot) -> None:
    assert data.used_bytes() == 0
    a, b = data.root / "games" / "a.db", data.root / "npz" / "sub" / "b.npz"
    a.write_bytes(b"x" * 100)
    b.parent.mkdir()
    b.write_bytes(os.urandom(50_000))
    part = data.partial_path("games", "c.db", "0" * 64)
    part.write_bytes(b"z" * 25)
    assert data.used_bytes() == _allocated(a, b, part) >= 100 + 50_000 + 25
    (data.state / "manifest.db").write_bytes(b"m" * 1000)  # bookkeeping: not data held
    snap = data.snapshots / "s.db"
    snap.write_bytes(b"s" * 10)        # a snapshot is data
    assert data.used_bytes() == _allocated(a, b, part, snap)


def test_used_bytes_counts_what_an_interrupted_upload_reserved(data: DataRoot) -> None:
    from engine import diskio

    part = data.partial_path("npz", "big.npz", "1" * 64)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        diskio.reserve(fd, 0, 8 << 20)  # what receive_body does before the body arrives
        os.write(fd, b"only a little arrived")
    finally:
        os.close(fd)
    if os.stat(part).st_blocks * 512 < 8 << 20:
        pytest.skip("this filesystem does not reserve blocks (no fallocate KEEP_SIZE)")
    assert part.stat().st_size == 21
    assert data.used_bytes() >= 8 << 20  # by st_size it would be 21 bytes


def test_used_bytes_follows_a_symlinked_data_type_tree(data: DataRoot, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-disk" / "games"
    elsewhere.mkdir(parents=True)
    db = elsewhere / "g.db"
    db.write_bytes(os.urandom(20_000))
    (data.root / "games").rmdir()
    (data.root / "games").symlink_to(elsewhere)
    assert data.used_bytes() == _allocated(db) > 0


def test_prune_partials_removes_only_old_idle_parts(tmp_path: Path) -> None:
    data = DataRoot(tmp_path / "root")
    data.create()
    old, fresh, busy = (data.incoming / f"{n}.part" for n in ("old", "fresh", "busy"))
    for part in (old, busy):
        part.write_bytes(b"x")
    time.sleep(0.6)
    fresh.write_bytes(b"x")
    removed = data.prune_partials(max_age=0.5, keep={busy}, now=time.time())
    assert removed == [old]
    assert not old.exists() and fresh.exists() and busy.exists()


def test_a_staged_file_with_its_sources_old_mtime_is_not_abandoned(tmp_path: Path) -> None:
    """rsync --times gives a staged file its source's mtime (days old, for a re-homed
    orphan); it was just put there (its ctime): not abandoned. A claimed file of a staged
    name someone holds is kept like that name."""
    data = DataRoot(tmp_path / "root")
    data.create()
    staged = data.incoming / staged_name("npz", "k/a.npz", "ab" * 32, "gpu-1")
    staged.write_bytes(b"x")
    os.utime(staged, (1000.0, 1000.0))
    held = data.incoming / staged_name("npz", "k/b.npz", "cd" * 32, "gpu-1")
    claimed = claimed_path(held, "0123abcd")
    claimed.write_bytes(b"y")
    assert claimed_base(claimed) == held and claimed_base(staged) is None
    assert data.prune_partials(max_age=3600, keep=set(), now=time.time()) == []
    time.sleep(0.6)
    assert data.prune_partials(max_age=0.5, keep={held}, now=time.time()) == [staged]
    assert claimed.exists()


def test_quarantine_path_keeps_the_relative_path_and_never_reuses_a_name(data: DataRoot) -> None:
    first = data.quarantine_path("npz", "k/x.npz")
    assert first == data.root / ".ringsync" / "quarantine" / "npz" / "k" / "x.npz"
    first.parent.mkdir(parents=True)
    first.write_bytes(b"1")
    second = data.quarantine_path("npz", "k/x.npz")
    assert second == first.with_name("x.npz.1")
    second.write_bytes(b"2")
    assert data.quarantine_path("npz", "k/x.npz") == first.with_name("x.npz.2")
    for rel in ("../x", "/etc/passwd", "k/../../x"):
        with pytest.raises(UnsafePath):
            data.quarantine_path("npz", rel)
    with pytest.raises(UnsafePath):
        data.quarantine_path("../games", "x")
