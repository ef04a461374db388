"""Scanner: finds this node's finished artifacts and prepares their bytes for pushing.

Finished (the rule generator writers follow, see docs/architecture.md):
  * the file lives under ``<data_root>/<data_type>/`` with no hidden path segment and
    matches none of ``sync_routing.exclude_patterns``;
  * it has not been modified for ``transfer.finished_after_seconds``;
  * a SQLite database (``.db``) additionally has no ``-wal`` or ``-journal`` sidecar
    with content, i.e. its writer closed it.

A database is never pushed as a file: its bytes for pushing are a consistent snapshot
made with SQLite's online backup API in one step into ``.ringsync/snapshots/`` (the
source is opened read-only and immutable, so not even a -wal/-shm file appears
next to it; the source's size and mtime must be the same before and after). The artifact's size and SHA-256
are the snapshot's; the source's size and mtime are kept to notice later changes.

A database that is not finished yet can still be protected by a live snapshot
(``live_snapshot_database``, used by ``engine.daemons.live_snapshots``): the same one-step
backup, but inside one read transaction of a read-only (not immutable) connection, so the
live writer's locks are respected and the copy is a committed state.

Names that are not valid UTF-8 (issue 12): POSIX lets a file or directory be named with
any bytes; Python surrogate-escapes what does not decode, and such a ``str`` cannot be
encoded for SQLite, JSON or HTTP. The scanner refuses those names one by one: a file whose
name (or a directory whose name) cannot be encoded as UTF-8 is skipped, with everything
below such a directory, and every other file is scanned as usual. The refused names seen
by the latest full scan are in ``Scanner.refused`` (shown escaped, ``bad\\xff.db``, see
``display_name``). The AutoSyncDaemon reports each refused name once (a DATA_SYNC_FAILED
with reason "scan" and a warning log line, the path of an unreadable file) and lists them
in its /health details. A refused name does not make the node unhealthy (nothing of it
can be lost by the engine, and the rest of the node syncs), but the health message says
"auto sync running; N file name(s) refused" so an operator sees it and renames the file.
Hidden files, SQLite sidecars and trees of received copies are skipped before this check,
as ever.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from engine.hashing import sha256_file
from engine.manifest import Artifact
from engine.manifest.store import stat_identity
from engine.openfiles import opened_elsewhere
from engine.paths import COPY_PREFIX, DATA_TYPES, DataRoot
from engine.sqlite_check import readonly_uri

DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SIDECARS = ("-wal", "-journal")
LIVE_BUSY_TIMEOUT = 5.0
"""Seconds a live snapshot waits for a writer's lock before giving up (tried again later)."""


class UnreadableArtifact(Exception):
    """A finished file that cannot be prepared (e.g. a corrupt database)."""


@dataclass(frozen=True)
class Candidate:
    """A finished file whose identity on disk the manifest has not seen."""

    data_type: str
    path: str
    file: Path
    size: int
    mtime_ns: int
    identity: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    """(st_dev, st_ino, size, mtime_ns, ctime_ns) when it was found."""


def is_database(path: str) -> bool:
    return path.endswith(DB_SUFFIXES)


def encodable(name: str) -> bool:
    """``name`` can be encoded as UTF-8 (a name read from disk that was not valid UTF-8
    holds surrogate escapes and cannot)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_name(name: str) -> str:
    """A refused name made printable and encodable: its undecodable bytes as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


REFUSED_REASON = "file name is not valid UTF-8; rename it to sync it"


class Scanner:
    """Walks one data root; all methods are blocking and meant for a worker thread."""

    def __init__(self, data: DataRoot, node: str, exclude_patterns: list[str],
                 finished_after: float) -> None:
        self.data = data
        self.node = node
        self.exclude_patterns = list(exclude_patterns)
        self.finished_after = finished_after
        self.refused: dict[str, str] = {}
        """Refused names (``<data_type>/<rel>`` made printable by ``display_name``) of the
        latest full scan (``candidates``) -> why; see the module docstring."""

    def excluded(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p)
                   for p in self.exclude_patterns)

    def _refuse(self, refused: dict[str, str] | None, data_type: str, dirpath: str,
                base: Path, name: str) -> None:
        if refused is None:
            return
        rel = Path(dirpath, name).relative_to(base).as_posix()
        refused[display_name(f"{data_type}/{rel}")] = REFUSED_REASON

    def _walk(self, data_type: str, refused: dict[str, str] | None = None
              ) -> Iterator[tuple[str, Path]]:
        """Every visible, non-excluded file of ``data_type`` but SQLite sidecars: (rel, path).
        Names that cannot be encoded as UTF-8 are left out (a directory with all below it)
        and added to ``refused`` when given."""
        base = self.data.root / data_type
        for dirpath, dirnames, filenames in os.walk(base):
            top = dirpath == str(base)
            # hidden directories, and at the top the trees of copies received from others
            keep = []
            for d in dirnames:
                if d.startswith(".") or (top and d.startswith(COPY_PREFIX)):
                    continue
                if not encodable(d):
                    self._refuse(refused, data_type, dirpath, base, d)
                    continue
                keep.append(d)
            dirnames[:] = keep
            for name in filenames:
                if name.startswith(".") or name.endswith(SIDECARS) or name.endswith("-shm"):
                    continue
                if not encodable(name):
                    self._refuse(refused, data_type, dirpath, base, name)
                    continue
                file = Path(dirpath, name)
                rel = file.relative_to(base).as_posix()
                if not self.excluded(rel):
                    yield rel, file

    def _finished(self, file: Path, mtime: float, now: float) -> bool:
        return now - mtime >= self.finished_after and self._closed(file) and \
            not self._open_database(file)

    @staticmethod
    def _open_database(file: Path) -> bool:
        """A database some process still has open is not finished, however idle it looks
        (a rollback-journal database held open leaves no sidecar between transactions)."""
        if not is_database(file.name):
            return False
        try:
            return opened_elsewhere(file)
        except OSError:
            return True

    def candidates(self, known: dict[tuple[str, str], tuple[int | None, ...]],
                   now: float | None = None) -> list[Candidate]:
        """Finished files that are new or changed since ``known`` (key -> the source's
        identity when it was hashed: a changed ctime, inode or device counts as changed)."""
        now = time.time() if now is None else now
        found: list[Candidate] = []
        refused: dict[str, str] = {}
        for data_type in DATA_TYPES:
            for rel, file in self._walk(data_type, refused):
                try:
                    st = file.stat()
                except OSError:
                    continue
                identity = stat_identity(st)
                if known.get((data_type, rel)) == identity:
                    continue
                if not self._finished(file, st.st_mtime, now):
                    continue
                found.append(Candidate(data_type, rel, file, st.st_size, st.st_mtime_ns,
                                       identity))
        self.refused = refused
        return found

    def live_databases(self, now: float | None = None) -> list[tuple[str, Path]]:
        """Databases under ``games/`` still being written (not finished by the rule above):
        (path relative to games/, file). Whose they are is the caller's question."""
        now = time.time() if now is None else now
        found = []
        for rel, file in self._walk("games"):
            if not is_database(rel):
                continue
            try:
                mtime = file.stat().st_mtime
            except OSError:
                continue
            if not self._finished(file, mtime, now):
                found.append((rel, file))
        return found

    @staticmethod
    def _closed(file: Path) -> bool:
        if not is_database(file.name):
            return True
        for suffix in SIDECARS:
            side = file.with_name(file.name + suffix)
            try:
                if side.stat().st_size > 0:
                    return False
            except FileNotFoundError:
                continue
        return True

    def snapshot_path(self, data_type: str, rel: str) -> Path:
        digest = hashlib.sha256(f"{data_type}/{rel}".encode()).hexdigest()[:32]
        return self.data.snapshots / f"{digest}.db"

    def push_source(self, art: Artifact) -> Path:
        """The file whose bytes a push of this node's own ``art`` sends."""
        if is_database(art.path):
            return self.snapshot_path(art.data_type, art.path)
        return self.data.source_path(art.data_type, art.path)

    def source_back(self, art: Artifact) -> bool:
        """A source recorded as deleted is on disk again with the same bytes (the scanner
        registered its new identity): it is an own source like any other again."""
        try:
            return self.unchanged(art, self.data.source_path(art.data_type, art.path).stat())
        except (OSError, ValueError):
            return False

    @staticmethod
    def unchanged(art: Artifact, st: os.stat_result) -> bool:
        """The source is exactly the file that was hashed as ``art`` (identity on disk)."""
        return art.source_identity == stat_identity(st)

    def restore_snapshot(self, art: Artifact) -> bool:
        """Re-make the snapshot of an own database whose snapshot was dropped after it reached
        its first targets; True when the new snapshot has ``art``'s SHA-256 (a snapshot of an
        unchanged database is byte-identical). False, leaving no snapshot, when the source is
        gone, unsound or changed since it was registered (the scanner re-registers it)."""
        source = self.data.source_path(art.data_type, art.path)
        target = self.snapshot_path(art.data_type, art.path)
        try:
            st = source.stat()
        except FileNotFoundError:
            return False
        if not self.unchanged(art, st):
            return False
        if not snapshot_database(source, target):
            return False
        if sha256_file(target) != art.sha256:
            target.unlink(missing_ok=True)
            return False
        return True

    def prepare(self, cand: Candidate) -> Artifact | None:
        """Hash (and for databases snapshot) a candidate; None if it changed meanwhile.

        Raises UnreadableArtifact when a database's snapshot is not sound.
        """
        if is_database(cand.path):
            target = self.snapshot_path(cand.data_type, cand.path)
            if not snapshot_database(cand.file, target):
                raise UnreadableArtifact(f"{cand.data_type}/{cand.path} is not a sound SQLite"
                                         " database (backup or quick_check failed)")
            digest, size = sha256_file(target), target.stat().st_size
        else:
            digest, size = sha256_file(cand.file), cand.size
        st = cand.file.stat()
        if stat_identity(st) != cand.identity:
            return None  # written to (or replaced) while we looked: not finished after all
        parts = cand.path.split("/")
        dev, ino, _size, _mtime, ctime_ns = cand.identity
        return Artifact(cand.data_type, cand.path, parts[0] if len(parts) > 1 else None, size,
                        digest, cand.mtime_ns / 1e9, self.node, cand.size, cand.mtime_ns,
                        dev, ino, ctime_ns)


def snapshot_database(source: Path, target: Path) -> bool:
    """A consistent copy of a finished SQLite database, made in one backup step.

    The source is opened ``mode=ro&immutable=1``: SQLite then creates no -wal/-shm
    files and takes no locks, so nothing next to the source changes. That is only
    sound for a file nobody is changing, so the caller checks the source's size and
    mtime before and after, and the copy must pass ``PRAGMA quick_check``.
    Returns False (and leaves no file) when the copy is not sound.
    """
    try:
        src = sqlite3.connect(readonly_uri(source), uri=True)
    except sqlite3.Error:
        return False
    try:
        return _copy_out(src, target, durable=True)
    finally:
        src.close()


_COPY_LOCKS: dict[Path, threading.Lock] = {}
_COPY_LOCKS_GUARD = threading.Lock()


def _copy_lock(target: Path) -> threading.Lock:
    """One lock per snapshot path: two threads making the same snapshot (a cycle, a gossip
    send, a recovery run) take turns instead of sharing its temp file."""
    with _COPY_LOCKS_GUARD:
        return _COPY_LOCKS.setdefault(target, threading.Lock())


def _copy_out(src: sqlite3.Connection, target: Path, durable: bool) -> bool:
    """Back ``src`` up into ``target`` in one step, through a temp file beside it (one
    thread at a time per target). Our own copy (never the source) leaves WAL mode, so readers
    of the replica never create -wal/-shm files next to it, and must pass ``PRAGMA
    quick_check``. ``durable`` fsyncs it before the rename. False, leaving no new file, when
    the copy could not be made or is not sound."""
    with _copy_lock(target):
        return _copy_out_locked(src, target, durable)


def _copy_out_locked(src: sqlite3.Connection, target: Path, durable: bool) -> bool:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            sound = dst.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            dst.close()
    except sqlite3.Error:
        sound = False
    if not sound:
        tmp.unlink(missing_ok=True)
        return False
    if durable:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, target)
    return True


def _wal_format(source: Path) -> bool:
    """True when the database header says WAL mode (file format bytes 18 and 19 are 2)."""
    with open(source, "rb") as fh:
        header = fh.read(20)
    return len(header) == 20 and header[18] == 2 and header[19] == 2


def live_snapshot_database(source: Path, target: Path,
                           busy_timeout: float = LIVE_BUSY_TIMEOUT) -> bool:
    """A consistent copy of a database a writer may be changing right now, in one backup step.

    The source is opened ``mode=ro`` (not immutable: the writer is live) with a busy timeout;
    one read transaction (a shared lock, or a WAL read mark) spans the whole
    ``backup(pages=-1)``, so the copy is one committed state and the writer's locks are
    respected: waiting for them is bounded by ``busy_timeout``. Nothing is executed on the
    source but ``BEGIN`` and one read; it is never written, checkpointed, vacuumed nor
    switched to another journal mode. The copy leaves WAL mode and must pass
    ``PRAGMA quick_check``; it replaces ``target``. Returns False (leaving no new file)
    when the copy could not be made or is not sound.

    A WAL database with no -wal/-shm file has no writer now; a read-only connection would
    create those files next to it, so it is read immutable instead (``snapshot_database``)
    and must show the same size and mtime before and after.
    """
    side = [source.with_name(source.name + s) for s in ("-wal", "-shm")]
    try:
        if _wal_format(source) and not all(p.exists() for p in side):
            before = source.stat()
            if not snapshot_database(source, target):
                return False
            after = source.stat()
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                target.unlink(missing_ok=True)
                return False
            return True
    except OSError:
        return False
    try:
        src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True,
                              timeout=busy_timeout, isolation_level=None)
        try:
            src.execute("BEGIN")  # deferred: the read below takes the read lock, no write lock
            src.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            # inside our read transaction: one committed state, no lock to wait for; no fsync,
            # the copy lives only until it has been pushed
            return _copy_out(src, target, durable=False)
        finally:
            src.close()  # ends the read transaction
    except sqlite3.Error:
        return False
