"""engine.scanner.Scanner: what counts as finished, and consistent database snapshots."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from engine.manifest import Artifact
from engine.manifest.store import stat_identity
from engine.paths import DataRoot
from engine.scanner import (Candidate, Scanner, UnreadableArtifact, is_database,
                            live_snapshot_database, snapshot_database)

pytestmark = pytest.mark.unit

LATER = time.time() + 3600  # "now" for tests that want every file old enough


@pytest.fixture
def data(tmp_path: Path) -> DataRoot:
    d = DataRoot(tmp_path / "root")
    d.create()
    return d


def scanner(data: DataRoot, exclude: list[str] | None = None, finished_after: float = 10.0) -> Scanner:
    return Scanner(data, "gpu-1", ["*.tmp", ".rsync-partial/*"] if exclude is None else exclude,
                   finished_after)


def write(data: DataRoot, data_type: str, rel: str, content: bytes = b"payload") -> Path:
    path = data.root / data_type / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def make_db(path: Path, rows: int = 50, wal: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS games (id INTEGER PRIMARY KEY, moves TEXT)")
        with conn:
            conn.executemany("INSERT INTO games (moves) VALUES (?)",
                             [(f"e2e4 {i} " * 20,) for i in range(rows)])
    finally:
        conn.close()


def names(cands: list[Candidate]) -> set[str]:
    return {f"{c.data_type}/{c.path}" for c in cands}


def listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


# -- finished or not --------------------------------------------------------------------------

def test_young_files_are_not_candidates(data: DataRoot) -> None:
    f = write(data, "npz", "hex8_2p/a.npz")
    s = scanner(data, finished_after=10.0)
    assert s.candidates({}, now=time.time()) == []
    mtime = f.stat().st_mtime
    assert s.candidates({}, now=mtime + 9.5) == []
    (cand,) = s.candidates({}, now=mtime + 10.5)
    st = f.stat()
    assert cand == Candidate("npz", "hex8_2p/a.npz", f, st.st_size, st.st_mtime_ns,
                             stat_identity(st))


def test_finished_after_zero_makes_everything_finished(data: DataRoot) -> None:
    write(data, "models", "m.pt")
    assert names(scanner(data, finished_after=0).candidates({})) == {"models/m.pt"}


def test_all_data_types_and_nested_paths(data: DataRoot) -> None:
    write(data, "games", "hex8_2p/x/g.db.bin")
    write(data, "npz", "n.npz")
    write(data, "models", "sq8_4p/best.pt")
    write(data, "unknown_type", "z.npz")  # not a data type directory: never looked at
    (data.state / "manifest.db").write_bytes(b"state")  # engine state: never an artifact
    (data.snapshots / "snap.db").write_bytes(b"state")
    assert names(scanner(data).candidates({}, now=LATER)) == {
        "games/hex8_2p/x/g.db.bin", "npz/n.npz", "models/sq8_4p/best.pt"}


def test_db_with_open_wal_writer_is_not_a_candidate_until_closed(data: DataRoot) -> None:
    db = data.root / "games" / "hex8_2p" / "live.db"
    db.parent.mkdir(parents=True)
    writer = sqlite3.connect(db)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("CREATE TABLE t (x)")
        with writer:
            writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
        wal = db.with_name("live.db-wal")
        assert wal.stat().st_size > 0
        assert scanner(data).candidates({}, now=LATER) == []
    finally:
        writer.close()
    assert not wal.exists() or wal.stat().st_size == 0
    assert names(scanner(data).candidates({}, now=LATER)) == {"games/hex8_2p/live.db"}


def test_db_with_hot_rollback_journal_is_not_a_candidate(data: DataRoot) -> None:
    db = data.root / "games" / "j.sqlite"
    make_db(db, wal=False)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany("INSERT INTO games (moves) VALUES (?)", [("x" * 500,)] * 200)
        journal = db.with_name("j.sqlite-journal")
        assert journal.exists() and journal.stat().st_size > 0
        assert scanner(data).candidates({}, now=LATER) == []
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert names(scanner(data).candidates({}, now=LATER)) == {"games/j.sqlite"}


def test_empty_sidecar_does_not_block(data: DataRoot) -> None:
    db = data.root / "games" / "e.db"
    make_db(db, wal=False)
    db.with_name("e.db-wal").write_bytes(b"")
    db.with_name("e.db-journal").write_bytes(b"")
    assert names(scanner(data).candidates({}, now=LATER)) == {"games/e.db"}


def test_sidecars_themselves_are_never_candidates(data: DataRoot) -> None:
    write(data, "games", "a.db-wal", b"x")
    write(data, "games", "a.db-shm", b"x")
    write(data, "games", "a.db-journal", b"x")
    assert scanner(data).candidates({}, now=LATER) == []


def test_sidecar_of_non_database_does_not_matter(data: DataRoot) -> None:
    write(data, "npz", "a.npz")
    write(data, "npz", "a.npz-wal", b"junk")
    assert names(scanner(data).candidates({}, now=LATER)) == {"npz/a.npz"}


def test_hidden_tmp_and_excluded_files_are_skipped(data: DataRoot) -> None:
    write(data, "games", "hex8_2p/keep.db.bin")
    write(data, "games", "hex8_2p/.gpu-1_000002.db.tmp")   # writer's temp file, hidden
    write(data, "games", "hex8_2p/.hidden.db")             # hidden file
    write(data, "games", ".cache/inside.npz")              # hidden directory
    write(data, "games", "hex8_2p/.deep/x/inside.npz")     # hidden directory deeper down
    write(data, "npz", "hex8_2p/batch.npz.tmp")            # *.tmp (default exclude)
    write(data, "npz", "hex8_2p/keep.npz")
    write(data, "npz", ".rsync-partial/half.npz")          # excluded (and hidden)
    write(data, "models", "scratch/old.pt")
    write(data, "models", "best.pt")
    s = scanner(data, exclude=["*.tmp", ".rsync-partial/*", "scratch/*", "*.bak"])
    write(data, "models", "best.pt.bak")
    assert names(s.candidates({}, now=LATER)) == {
        "games/hex8_2p/keep.db.bin", "npz/hex8_2p/keep.npz", "models/best.pt"}


def test_excluded_matches_full_path_or_name(data: DataRoot) -> None:
    s = scanner(data, exclude=["*.tmp", "hex8_2p/old_*"])
    assert s.excluded("a/b/c.tmp")
    assert s.excluded("c.tmp")
    assert s.excluded("hex8_2p/old_1.db")
    assert not s.excluded("sq8/old_1.db")
    assert not s.excluded("hex8_2p/new.db")


def test_known_unchanged_is_skipped_changed_is_not(data: DataRoot) -> None:
    f = write(data, "npz", "a.npz", b"one")
    g = write(data, "npz", "b.npz", b"two")
    st = f.stat()
    s = scanner(data)
    gid = stat_identity(g.stat())
    known = {("npz", "a.npz"): stat_identity(st),
             ("npz", "b.npz"): (*gid[:3], gid[3] + 1, gid[4])}  # mtime differs
    assert names(s.candidates(known, now=LATER)) == {"npz/b.npz"}
    # same size, new mtime: a change
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert names(s.candidates(known, now=LATER)) == {"npz/a.npz", "npz/b.npz"}
    # (None, ...): known to the manifest but never hashed from a source here
    assert names(s.candidates({("npz", "a.npz"): (None,) * 5}, now=LATER)) >= {"npz/a.npz"}


def test_a_source_whose_ctime_or_inode_changed_is_changed(data: DataRoot) -> None:
    """(size, mtime) can be forged with ``utime``; the identity also holds st_dev, st_ino and
    st_ctime_ns, which cannot be."""
    f = write(data, "npz", "a.npz", b"one")
    s = scanner(data)
    st = f.stat()
    known = {("npz", "a.npz"): stat_identity(st)}
    assert s.candidates(known, now=LATER) == []
    # the same bytes written again and the mtime put back: size and mtime equal, ctime newer
    time.sleep(0.01)
    f.write_bytes(b"two")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = f.stat()
    assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert now.st_ctime_ns != st.st_ctime_ns
    (cand,) = s.candidates(known, now=LATER)
    assert cand.identity == stat_identity(now)
    # replaced by another file (a new inode) with the same size and mtime
    known = {("npz", "a.npz"): stat_identity(now)}
    other = f.with_name("a.npz.new")
    other.write_bytes(b"two")
    os.utime(other, ns=(now.st_atime_ns, now.st_mtime_ns))
    os.rename(other, f)
    assert f.stat().st_ino != now.st_ino
    assert names(s.candidates(known, now=LATER)) == {"npz/a.npz"}


def test_known_none_is_still_returned_by_candidates(data: DataRoot) -> None:
    """``known[key] = None`` marks someone else's artifact stored here. candidates() skips only
    exact (size, mtime) matches, so it still returns it; the caller (AutoSyncDaemon.scan) is the
    one that skips None entries."""
    write(data, "games", "hex8_2p/theirs.db.bin")
    cands = scanner(data).candidates({("games", "hex8_2p/theirs.db.bin"): None}, now=LATER)
    assert names(cands) == {"games/hex8_2p/theirs.db.bin"}


# -- prepare ----------------------------------------------------------------------------------

def test_prepare_plain_file(data: DataRoot) -> None:
    content = os.urandom(300_000)
    f = write(data, "npz", "hex8_2p/batch_1.npz", content)
    s = scanner(data)
    (cand,) = s.candidates({}, now=LATER)
    a = s.prepare(cand)
    assert a == Artifact("npz", "hex8_2p/batch_1.npz", "hex8_2p", len(content),
                         hashlib.sha256(content).hexdigest(), cand.mtime_ns / 1e9, "gpu-1",
                         len(content), f.stat().st_mtime_ns, f.stat().st_dev, f.stat().st_ino,
                         f.stat().st_ctime_ns)
    assert a.source_identity == stat_identity(f.stat())
    assert Scanner.unchanged(a, f.stat())
    assert s.push_source(a) == f
    assert list(data.snapshots.iterdir()) == []  # only databases are snapshotted


def test_prepare_database_makes_a_sound_snapshot_and_leaves_source_alone(data: DataRoot) -> None:
    src = data.root / "games" / "hex8_2p" / "gpu-1_000001.db"
    make_db(src, rows=300, wal=True)
    assert src.read_bytes()[18:20] == b"\x02\x02"  # the source is a WAL-mode database
    before_bytes = src.read_bytes()
    before_dir = listing(src.parent)
    assert set(before_dir) == {"gpu-1_000001.db"}

    s = scanner(data)
    (cand,) = s.candidates({}, now=LATER)
    a = s.prepare(cand)
    assert a is not None

    # the source: same bytes, nothing new beside it (no -wal, -shm, -journal)
    assert src.read_bytes() == before_bytes
    assert listing(src.parent) == before_dir

    snap = s.snapshot_path("games", cand.path)
    assert s.push_source(a) == snap
    assert snap.parent == data.snapshots
    assert snap.is_file()
    raw = snap.read_bytes()
    assert a.sha256 == hashlib.sha256(raw).hexdigest()
    assert a.size == len(raw)
    assert raw[18:20] == b"\x01\x01"  # rollback journal, not WAL
    assert (a.source_size, a.source_mtime_ns) == (cand.size, cand.mtime_ns)
    assert a.config_key == "hex8_2p" and a.origin == "gpu-1"
    assert not [p for p in data.snapshots.iterdir() if p.name.startswith(".")]  # no temp left

    conn = sqlite3.connect(f"{snap.as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
        assert conn.execute("SELECT COUNT(*) FROM games").fetchone()[0] == 300
    finally:
        conn.close()


def test_prepare_database_contents_match_source(data: DataRoot) -> None:
    src = data.root / "games" / "g.db"
    make_db(src, rows=20, wal=False)
    s = scanner(data)
    (cand,) = s.candidates({}, now=LATER)
    a = s.prepare(cand)
    assert a is not None and a.config_key is None  # a top-level file has no config key

    def dump(p: Path) -> list:
        c = sqlite3.connect(f"{p.as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            return c.execute("SELECT * FROM games ORDER BY id").fetchall()
        finally:
            c.close()

    assert dump(s.snapshot_path("games", "g.db")) == dump(src)


def test_prepare_file_changed_after_candidates_returns_none(data: DataRoot) -> None:
    f = write(data, "npz", "a.npz", b"first")
    s = scanner(data)
    (cand,) = s.candidates({}, now=LATER)
    with open(f, "ab") as fh:
        fh.write(b" and more")
    assert s.prepare(cand) is None


def test_prepare_file_touched_after_candidates_returns_none(data: DataRoot) -> None:
    f = write(data, "npz", "a.npz", b"first")
    s = scanner(data)
    (cand,) = s.candidates({}, now=LATER)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same size, new mtime
    assert s.prepare(cand) is None


def test_prepare_database_changed_after_candidates_returns_none(data: DataRoot) -> None:
    src = data.root / "games" / "hex8_2p" / "g.db"
    make_db(src, rows=10, wal=True)
    s = scanner(data)
    (cand,) = s.candidates({}, now=LATER)
    make_db(src, rows=500, wal=True)  # the writer came back and added rows
    assert src.stat().st_size != cand.size
    assert s.prepare(cand) is None


def test_config_key_is_first_path_segment(data: DataRoot) -> None:
    write(data, "npz", "hex8_2p/a.npz")
    write(data, "npz", "sq19_4p/deep/er/b.npz")
    write(data, "npz", "c.npz")
    s = scanner(data)
    keys = {c.path: s.prepare(c).config_key for c in s.candidates({}, now=LATER)}  # type: ignore[union-attr]
    assert keys == {"hex8_2p/a.npz": "hex8_2p", "sq19_4p/deep/er/b.npz": "sq19_4p", "c.npz": None}


def test_snapshot_paths_differ_per_artifact(data: DataRoot) -> None:
    s = scanner(data)
    paths = {s.snapshot_path(t, p) for t in ("games", "npz") for p in ("a.db", "b/a.db", "c.db")}
    assert len(paths) == 6
    assert all(p.parent == data.snapshots for p in paths)


def test_is_database() -> None:
    assert is_database("a.db") and is_database("x/a.sqlite") and is_database("a.sqlite3")
    assert not is_database("a.npz") and not is_database("a.db.bak") and not is_database("db")


def _corrupt_db(path: Path) -> None:
    make_db(path, rows=400, wal=False)
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) > 4 * page
    raw[2 * page: 4 * page] = b"\xff" * (2 * page)  # trash two b-tree pages
    path.write_bytes(bytes(raw))


def test_snapshot_database_refuses_a_corrupt_source(data: DataRoot, tmp_path: Path) -> None:
    """Documented contract: returns False and leaves no file when the copy is not sound."""
    src = tmp_path / "src.db"
    _corrupt_db(src)
    target = data.snapshots / "t.db"
    assert snapshot_database(src, target) is False
    assert not target.exists()
    assert [p.name for p in data.snapshots.iterdir()] == []


def test_prepare_of_a_corrupt_database_raises_unreadable(data: DataRoot) -> None:
    """A corrupt finished database is reported as UnreadableArtifact (the daemon turns that into
    a DATA_SYNC_FAILED event and goes on); it leaves no snapshot behind."""
    _corrupt_db(data.root / "games" / "hex8_2p" / "bad.db")
    write(data, "npz", "hex8_2p/good.npz")
    s = scanner(data)
    cands = {c.path: c for c in s.candidates({}, now=LATER)}
    assert set(cands) == {"hex8_2p/bad.db", "hex8_2p/good.npz"}
    with pytest.raises(UnreadableArtifact):
        s.prepare(cands["hex8_2p/bad.db"])
    assert s.prepare(cands["hex8_2p/good.npz"]) is not None
    assert [p.name for p in data.snapshots.iterdir()] == []


def test_a_dropped_snapshot_is_remade_byte_identical_unless_the_source_changed(
        data: DataRoot) -> None:
    source = data.root / "games" / "k" / "g.db"
    make_db(source)
    s = scanner(data)
    (cand,) = s.candidates({}, now=LATER)
    art = s.prepare(cand)
    assert art is not None
    snap = s.snapshot_path("games", "k/g.db")
    snap.unlink()  # dropped once its first targets held it
    assert s.restore_snapshot(art) and hashlib.sha256(snap.read_bytes()).hexdigest() == art.sha256
    snap.unlink()
    make_db(source, rows=5)  # changed since it was registered
    assert not s.restore_snapshot(art) and not snap.exists()
    source.unlink()
    assert not s.restore_snapshot(art)


# -- live snapshots of databases still being written ------------------------------------------

def rows_in(path: Path) -> int:
    c = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return c.execute("SELECT COUNT(*) FROM games").fetchone()[0]
    finally:
        c.close()


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if not p.name.endswith("-shm")}


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback"])
def test_live_snapshot_is_the_committed_state_and_leaves_the_writer_alone(
        data: DataRoot, wal: bool) -> None:
    src = data.root / "games" / "hex8_2p" / "live.db"
    make_db(src, rows=120, wal=wal)
    writer = sqlite3.connect(src, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a write under way: RESERVED lock, -wal or -journal
        writer.executemany("INSERT INTO games (moves) VALUES (?)", [("x" * 300,)] * 80)
        before = file_bytes(src.parent)
        target = data.live_snapshots / "live.db"
        target.parent.mkdir(parents=True)
        assert live_snapshot_database(src, target, busy_timeout=1.0)
        assert rows_in(target) == 120  # the uncommitted 80 rows are not in it
        assert target.read_bytes()[18:20] == b"\x01\x01"  # the copy left WAL mode
        assert file_bytes(src.parent) == before  # source and its journal untouched
        writer.execute("COMMIT")
        assert live_snapshot_database(src, target, busy_timeout=1.0)
        assert rows_in(target) == 200
        assert [p.name for p in target.parent.iterdir()] == ["live.db"]  # no temp left
        mode = writer.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == ("wal" if wal else "delete")
    finally:
        writer.close()


def test_live_snapshot_gives_up_on_a_lock_held_too_long(data: DataRoot) -> None:
    src = data.root / "games" / "busy.db"
    make_db(src, rows=10, wal=False)
    writer = sqlite3.connect(src, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # not even readers get in
        target = data.live_snapshots / "busy.db"
        target.parent.mkdir(parents=True)
        began = time.monotonic()
        assert live_snapshot_database(src, target, busy_timeout=0.2) is False
        assert time.monotonic() - began < 2.0
        assert list(target.parent.iterdir()) == []
    finally:
        writer.close()


def test_live_snapshot_of_a_closed_wal_database_creates_no_sidecars(data: DataRoot) -> None:
    src = data.root / "games" / "closed.db"
    make_db(src, rows=30, wal=True)  # writer closed: no -wal, no -shm
    assert src.read_bytes()[18:20] == b"\x02\x02"
    before = listing(src.parent)
    target = data.live_snapshots / "closed.db"
    target.parent.mkdir(parents=True)
    assert live_snapshot_database(src, target)
    assert listing(src.parent) == before
    assert rows_in(target) == 30


def test_live_databases_are_the_unfinished_ones_under_games(data: DataRoot) -> None:
    now = time.time()
    make_db(data.root / "games" / "k" / "fresh.db", rows=1, wal=False)       # just written
    old = data.root / "games" / "k" / "old.db"
    make_db(old, rows=1, wal=False)
    os.utime(old, (now - 100, now - 100))                                    # finished
    held = data.root / "games" / "k" / "held.sqlite"
    make_db(held, rows=1, wal=False)
    os.utime(held, (now - 100, now - 100))
    held.with_name("held.sqlite-journal").write_bytes(b"j")                  # open writer
    write(data, "games", "k/.hidden.db")
    write(data, "games", "k/skip.db.tmp")
    write(data, "games", "k/notes.txt")
    write(data, "npz", "k/fresh.db")                                         # not games/
    found = scanner(data).live_databases(now=now)
    assert sorted(rel for rel, _ in found) == ["k/fresh.db", "k/held.sqlite"]
    assert dict(found)["k/fresh.db"] == data.root / "games" / "k" / "fresh.db"
