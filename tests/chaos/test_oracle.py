"""The chaos oracle's reading of files on disk, on hand-made data roots (no cluster)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from tests.chaos.ledger import (DiskReader, Ledger, copy_paths, count_copies, intact, row_digest,
                                visible_files)


def _db(path: Path, rows: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS games(game_id TEXT PRIMARY KEY, moves BLOB)")
    db.executemany("INSERT INTO games VALUES (?, ?)", rows.items())
    db.commit()
    db.close()


def test_a_copy_with_one_flipped_byte_and_the_same_mtime_is_not_intact(tmp_path: Path) -> None:
    roots = {n: tmp_path / n for n in ("gpu-1", "coord", "cpu-1")}
    data = os.urandom(4096)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    e = ledger.add("gpu-1", "npz", "k/a.npz", sha256=hashlib.sha256(data).hexdigest())
    src = roots["gpu-1"] / "npz/k/a.npz"
    new = roots["coord"] / "npz/@gpu-1/k" / f"a.v{e.sha256[:16]}.npz"
    old = roots["cpu-1"] / "npz/k/a.npz"
    for p in (src, new, old):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    reader = DiskReader()
    cc = count_copies(reader, roots, e)
    assert cc.source and cc.roots == {"coord", "cpu-1"}
    assert reader.sha256(new) == e.sha256   # cached now
    st = new.stat()
    with open(new, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not intact(reader, new, e)          # the cache keys on ctime too
    assert count_copies(reader, roots, e).roots == {"cpu-1"}


def test_database_copies_count_by_rows_and_a_later_version_holds_the_earlier(tmp_path: Path) -> None:
    roots = {n: tmp_path / n for n in ("gpu-1", "coord")}
    rows = {"g1": b"x" * 500, "g2": b"y" * 700}
    ledger = Ledger(tmp_path / "ledger.jsonl")
    v1 = ledger.add("gpu-1", "games", "k/d.db", rows={k: row_digest(v) for k, v in rows.items()})
    more = {**rows, "g3": b"z" * 300}
    v2 = ledger.add("gpu-1", "games", "k/d.db", rows={k: row_digest(v) for k, v in more.items()})
    _db(roots["coord"] / "games/@gpu-1/k/d.v0123456789abcdef.db", more)
    reader = DiskReader()
    assert count_copies(reader, roots, v1).roots == {"coord"}
    assert count_copies(reader, roots, v2).roots == {"coord"}
    partial = roots["coord"] / "games/@gpu-1/k/d.v0123456789abcdef.db"
    partial.unlink()
    _db(partial, rows)          # only v1's rows
    assert count_copies(reader, roots, v1).roots == {"coord"}
    assert count_copies(reader, roots, v2).roots == set()
    partial.write_bytes(b"not a database" * 100)
    assert count_copies(reader, roots, v1).roots == set()


def test_visible_files_skip_engine_state_hidden_names_and_sidecars(tmp_path: Path) -> None:
    for rel in ("npz/k/a.npz", "npz/k/.a.npz.tmp", ".ringsync/incoming/x.part",
                "games/k/d.db", "games/k/d.db-wal", "npz/@gpu-1/k/b.v00.npz"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"1")
    got = sorted(str(p.relative_to(tmp_path)) for p in visible_files(tmp_path))
    assert got == ["games/k/d.db", "npz/@gpu-1/k/b.v00.npz", "npz/k/a.npz"]
    assert [p.name for p in copy_paths(tmp_path, "gpu-1", "npz", "k/b.npz")] == ["b.v00.npz"]
