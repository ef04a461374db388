"""The chaos generator's ledger and the oracle's view of copies on disk.

The ledger lives OUTSIDE every data root (a JSONL file in the run's directory) and records each
artifact version the generator finished: origin node, data type, relative path and, for plain
files, the SHA-256 of the bytes; for databases the rows committed when it was finished
(``game_id -> sha256(moves)[:16]``, so a row whose bytes rotted does not count either).

Everything here reads files on disk only; nothing asks a node or reads a manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def is_db(rel: str) -> bool:
    return rel.endswith(DB_SUFFIXES)


@dataclass
class Entry:
    """One finished version of one artifact."""

    id: int
    origin: str
    data_type: str
    rel: str
    t: float                      # when the generator finished it (time.time of the harness)
    version: int                  # 1, 2, ... per (origin, data_type, rel)
    sha256: str | None = None     # plain files
    rows: dict[str, str] | None = None   # databases: game_id -> row digest
    why: str = "generated"        # generated | replaced_same_size | rows_appended | collision

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.origin, self.data_type, self.rel)

    def label(self) -> str:
        return f"{self.origin}:{self.data_type}/{self.rel}@v{self.version}"


class Ledger:
    """Append-only JSONL ledger plus an in-memory index (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[Entry] = []
        self.by_key: dict[tuple[str, str, str], list[Entry]] = {}
        self._lock = threading.Lock()
        self._file = open(path, "a", buffering=1)

    def add(self, origin: str, data_type: str, rel: str, *, sha256: str | None = None,
            rows: dict[str, str] | None = None, why: str = "generated") -> Entry:
        with self._lock:
            versions = self.by_key.setdefault((origin, data_type, rel), [])
            entry = Entry(len(self.entries), origin, data_type, rel, time.time(),
                          len(versions) + 1, sha256, rows, why)
            self.entries.append(entry)
            versions.append(entry)
            self._file.write(json.dumps(asdict(entry), separators=(",", ":")) + "\n")
            return entry

    def latest(self, key: tuple[str, str, str]) -> Entry | None:
        with self._lock:
            versions = self.by_key.get(key)
            return versions[-1] if versions else None

    def versions(self, key: tuple[str, str, str]) -> list[Entry]:
        with self._lock:
            return list(self.by_key.get(key, []))

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self.entries)

    def close(self) -> None:
        self._file.close()


# -- reading files ----------------------------------------------------------------------------
def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    # ctime is part of the key: every fault the injector makes (utime back to the old mtime
    # included) moves ctime, so a cached answer is never reused for changed bytes.
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def row_digest(moves: bytes) -> str:
    return hashlib.sha256(moves).hexdigest()[:16]


class DiskReader:
    """SHA-256 of files and the rows of sound databases, cached by (ino, size, mtime, ctime)."""

    def __init__(self) -> None:
        self._sha: dict[str, tuple[tuple, str]] = {}
        self._rows: dict[str, tuple[tuple, dict[str, str] | None]] = {}
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str | None:
        try:
            st = path.stat()
            key = _stat_key(st)
            with self._lock:
                hit = self._sha.get(str(path))
            if hit and hit[0] == key:
                return hit[1]
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            digest = h.hexdigest()
            with self._lock:
                self._sha[str(path)] = (key, digest)
            return digest
        except OSError:
            return None

    def db_rows(self, path: Path) -> dict[str, str] | None:
        """Rows of a database that passes ``PRAGMA integrity_check``; None when unsound/absent."""
        try:
            key = _stat_key(path.stat())
        except OSError:
            return None
        with self._lock:
            hit = self._rows.get(str(path))
        if hit and hit[0] == key:
            return hit[1]
        rows: dict[str, str] | None = None
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=1)
            try:
                if db.execute("PRAGMA integrity_check").fetchone()[0] == "ok":
                    rows = {gid: row_digest(moves)
                            for gid, moves in db.execute("SELECT game_id, moves FROM games")}
            finally:
                db.close()
        except (sqlite3.Error, OSError):
            rows = None
        with self._lock:
            self._rows[str(path)] = (key, rows)
        return rows


# -- where copies live ------------------------------------------------------------------------
def source_path(root: Path, e: Entry) -> Path:
    return root / e.data_type / e.rel


def copy_paths(root: Path, origin: str, data_type: str, rel: str) -> list[Path]:
    """Every place a holder may keep a copy of ``origin``'s ``data_type/rel``.

    The documented layout (the lead's): ``<root>/<dt>/@<origin>/<rel_dir>/<stem>.v<sha16><suffix>``.
    The older layout (a received copy under the same relative path) is also looked at, so the
    oracle works on engine commits from before the change."""
    out: list[Path] = []
    old = root / data_type / rel
    if old.is_file():
        out.append(old)
    p = PurePosixPath(rel)
    new_dir = root / data_type / f"@{origin}" / p.parent
    if new_dir.is_dir():
        out.extend(sorted(new_dir.glob(f"{p.stem}.v*{p.suffix}")))
    return out


def intact(reader: DiskReader, path: Path, e: Entry) -> bool:
    """Does the file at ``path`` hold version ``e`` (or, for a DB, all its rows)?"""
    if e.rows is not None:
        rows = reader.db_rows(path)
        return rows is not None and all(rows.get(k) == v for k, v in e.rows.items())
    return reader.sha256(path) == e.sha256


def visible_files(root: Path) -> list[Path]:
    """Final-named files of a data root: not under ``.ringsync/``, no hidden segment, no
    SQLite sidecar."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or name.endswith(SIDE_SUFFIXES):
                continue
            out.append(Path(dirpath) / name)
    return out


@dataclass
class CopyCount:
    roots: set[str] = field(default_factory=set)       # nodes (other than origin) with an intact copy
    source: bool = False                              # the origin's own file is this version
    where: list[str] = field(default_factory=list)

    def total(self) -> int:
        return len(self.roots) + (1 if self.source else 0)


def count_copies(reader: DiskReader, roots: dict[str, Path], e: Entry,
                 include_later: bool = True, ledger: Ledger | None = None) -> CopyCount:
    """Intact copies of ``e`` on disk. A DB copy of any version of the same path counts when
    it holds all of ``e``'s rows (a later version contains the earlier one's)."""
    cc = CopyCount()
    for node, root in roots.items():
        if node == e.origin:
            src = source_path(root, e)
            if src.is_file() and intact(reader, src, e):
                cc.source = True
            continue
        for path in copy_paths(root, e.origin, e.data_type, e.rel):
            if intact(reader, path, e):
                cc.roots.add(node)
                cc.where.append(str(path.relative_to(root.parent)))
                break
    return cc


def describe(cc: CopyCount) -> dict[str, Any]:
    return {"source": cc.source, "roots": sorted(cc.roots), "where": cc.where}
