"""The generator's ledger: what was produced, and whether a copy of it is still intact.

The ledger is a JSONL file that lives OUTSIDE every data root, so ringsync never sees, syncs
or deletes it. Each synthetic generator appends one line per finished artifact:

* ``{"node", "data_type": "games", "path": "<config_key>/<file>.db", "game_ids": [...], "finished_at"}``
  after the games DB's connection has been closed;
* ``{"node", "data_type": "npz", "path": "<config_key>/<file>.npz", "sha256", "size", "finished_at"}``
  after the NPZ has been renamed into place.

Paths are relative to ``DATA_ROOT/<data_type>/`` and use ``/``. The demo uses the ledger as
its ground truth: "generated" is the number of entries, and an entry is "safe" while at least
one data root holds an intact copy (:func:`find_intact_copy`).

Checks here never modify what they inspect: a games DB is opened read-only *and* immutable
(no locks, no ``-wal``/``-shm`` files created next to it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["LedgerEntry", "append_ledger", "sha256_file", "read_ledger", "is_intact",
           "find_intact_copy", "intact_copies", "stored_files"]

_CHUNK = 1024 * 1024
_ID_BATCH = 500  # stay far below SQLite's host-parameter limit


@dataclass(frozen=True)
class LedgerEntry:
    """One finished artifact as recorded by the generator that wrote it."""

    node: str
    data_type: str
    path: str
    game_ids: list[str] | None
    sha256: str | None
    size: int | None
    finished_at: float


def append_ledger(ledger: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single O_APPEND write, then fsync it.

    If a previous writer died mid-line (the file does not end in a newline), a newline is
    written first so the torn fragment stays on a line of its own.
    """
    data = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(ledger, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _entry(obj: dict[str, Any]) -> LedgerEntry:
    ids = obj.get("game_ids")
    size = obj.get("size")
    return LedgerEntry(
        node=str(obj["node"]),
        data_type=str(obj["data_type"]),
        path=str(obj["path"]),
        game_ids=[str(g) for g in ids] if ids is not None else None,
        sha256=obj.get("sha256"),
        size=int(size) if size is not None else None,
        finished_at=float(obj["finished_at"]),
    )


def read_ledger(path: Path | str) -> list[LedgerEntry]:
    """Parse a ledger. A missing file is an empty ledger.

    A torn line (a write cut short by a crash: not valid JSON) is skipped, wherever it is,
    because a restarted writer appends after it. A line that is valid JSON but not a ledger
    record raises ``ValueError``: that is a bug, not a tear.
    """
    p = Path(path)
    if not p.exists():
        return []
    entries: list[LedgerEntry] = []
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # torn write
            try:
                entries.append(_entry(obj))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{p}:{lineno}: not a ledger record: {exc!r}") from exc
    return entries


def _games_intact(file_path: Path, game_ids: list[str]) -> bool:
    for suffix in ("-wal", "-journal"):
        side = file_path.with_name(file_path.name + suffix)
        if side.exists() and side.stat().st_size > 0:
            return False  # a writer is (or was) mid-flight: the file alone is not the data
    uri = f"{file_path.resolve().as_uri()}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    try:
        if conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]:
            return False
        for i in range(0, len(game_ids), _ID_BATCH):
            batch = game_ids[i:i + _ID_BATCH]
            marks = ",".join("?" * len(batch))
            rows = conn.execute(
                f"SELECT g.game_id, g.num_moves,"
                f" (SELECT COUNT(*) FROM moves m WHERE m.game_id = g.game_id)"
                f" FROM games g WHERE g.game_id IN ({marks})",
                batch,
            ).fetchall()
            if len(rows) != len(set(batch)) or any(n != c for _, n, c in rows):
                return False
        return True
    finally:
        conn.close()


def sha256_file(file_path: Path) -> str:
    """SHA-256 hex digest of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with file_path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_intact(file_path: Path, entry: LedgerEntry) -> bool:
    """True if ``file_path`` holds everything ``entry`` recorded. Never raises, never writes.

    games: opens read-only, ``PRAGMA integrity_check`` is ``ok``, every recorded game id is in
    ``games`` with exactly ``num_moves`` rows in ``moves``. npz: SHA-256 (and size, if recorded)
    match. Any error means not intact.
    """
    try:
        file_path = Path(file_path)
        if not file_path.is_file():
            return False
        if entry.data_type == "games":
            return entry.game_ids is not None and _games_intact(file_path, entry.game_ids)
        if entry.sha256 is None:
            return False
        if entry.size is not None and file_path.stat().st_size != entry.size:
            return False
        return sha256_file(file_path) == entry.sha256
    except Exception:  # noqa: BLE001 - by contract: any failure means "not intact"
        return False


def stored_files(root: Path, entry: LedgerEntry) -> list[Path]:
    """Every file under data root ``root`` that may hold ``entry``: the origin's own source
    (``<data_type>/<path>``) and every stored version of it received from ``entry.node``
    (``<data_type>/@<node>/<dir>/<stem>.v<sha16><suffix>``, see ``engine.paths``)."""
    rel = PurePosixPath(entry.path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return []
    if entry.data_type in ("", ".", "..") or "/" in entry.data_type or "\\" in entry.data_type:
        return []
    base = Path(root) / entry.data_type
    found = [base / Path(*rel.parts)]
    stem, dot, suffix = rel.name.rpartition(".")
    pattern = f"{stem}.v{'[0-9a-f]' * 16}.{suffix}" if dot and stem else f"{rel.name}.v*"
    versions = base / f"@{entry.node}" / Path(*rel.parts[:-1]) if len(rel.parts) > 1 \
        else base / f"@{entry.node}"
    if versions.is_dir():
        found += sorted(versions.glob(pattern))
    return [p for p in found if p.is_file()]


def intact_copies(entry: LedgerEntry, data_roots: list[Path]) -> list[Path]:
    """One intact file per data root that holds ``entry`` (a later version of a database
    that contains the entry's games counts)."""
    out = []
    for root in data_roots:
        for candidate in stored_files(root, entry):
            if is_intact(candidate, entry):
                out.append(candidate)
                break
    return out


def find_intact_copy(entry: LedgerEntry, data_roots: list[Path]) -> Path | None:
    """The first intact file of ``entry`` among ``data_roots`` (``stored_files``)."""
    found = intact_copies(entry, data_roots)
    return found[0] if found else None
